"""Checkpoints: a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sparseae.training.checkpoint import Checkpointer
from sparseae.cli import main
from sparseae.config import SparsityConfig
from sparseae.objective import Objective
from sparseae.run import RunDir

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count in every process: same float sums
# Running rho_hat and a TopK-free KL model: the optimizer, RNG and running estimates must all come back;
# the learning rate decays over the last 60% of the steps (from epoch 2 on), across the kill.
ARGS = ["--dataset", "array", "--hidden", "12", "--activation", "sigmoid", "--output-activation", "linear",
        "--rho-hat", "running", "--input-transform", "standardize", "--epochs", "3", "--batch-size", "16",
        "--checkpoint-every", "7", "--quiet", "--seed", "3", "--lr-decay", "0.6"]

# Runs the CLI in a child that SIGKILLs itself: either halfway through writing the n-th checkpoint's
# tensor file (a torn write) or right after its k-th training step, between checkpoints ("step-settled": once
# the background writer has written the end-of-epoch checkpoint it was given).
KILLER = r"""
import os, signal, sys, time
import sparseae.training.checkpoint as ck
import sparseae.data.batches as bt
mode, n = sys.argv[1], int(sys.argv[2])
calls = [0]
if mode == "write":
    real = ck.write_bytes_synced
    def torn(path, data):
        calls[0] += 1
        if calls[0] == n:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, data)
    ck.write_bytes_synced = torn
else:
    real_epoch = bt.TensorBatches.epoch
    def epoch(self, g, start_step=0):
        for xb in real_epoch(self, g, start_step):
            calls[0] += 1
            if calls[0] == n + 1:
                if mode == "step-settled":  # the end of an epoch's checkpoint, written beside training, on disk
                    state = os.path.join(sys.argv[sys.argv.index("--out") + 1], "checkpoint", "state.json")
                    for _ in range(600):
                        if os.path.exists(state):
                            break
                        time.sleep(0.1)
                os.kill(os.getpid(), signal.SIGKILL)
            yield xb
    bt.TensorBatches.epoch = epoch
from sparseae.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "x.npy"
    rng = np.random.default_rng(1)
    np.save(path, (rng.normal(size=(330, 10)) @ rng.normal(size=(10, 10))).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the children (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(npy, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *ARGS, "--data", str(npy), "--out", str(out)]) == 0
    return out


def _resume(out):
    assert main(["train", "--resume", str(out), "--quiet"]) == 0


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def _assert_same_run(run, reference):
    a, b = _weights(run), _weights(reference)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cols = ("train_loss", "val_mse")
    rows = [[{c: r[c] for c in cols} for r in RunDir(p).read_metrics()] for p in (run, reference)]
    assert rows[0] == rows[1]


def _checkpoint_is_sound(run):
    meta = json.loads((run / "checkpoint" / "state.json").read_text())
    data = (run / "checkpoint" / meta["tensors"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    return meta


# ("step", 30) kills between checkpoints; the external kill below covers that case too.
@pytest.mark.parametrize("mode,n", [("write", 6)])
def test_sigkill_then_resume_equals_uninterrupted_run(npy, reference, tmp_path, mode, n):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", KILLER, mode, str(n), "train", *ARGS, "--data", str(npy), "--out", str(out)]
    proc = subprocess.run(cmd, env=ENV)
    assert proc.returncode == -signal.SIGKILL
    meta = _checkpoint_is_sound(out)
    assert meta["epoch"] == 2 and 0 < meta["step"] < 19 and not meta["finished"]  # killed mid-epoch 2
    _resume(out)
    _assert_same_run(out, reference)
    assert not list((out / "checkpoint").glob(".*.tmp"))  # the torn temp file is cleaned up
    assert len(list((out / "checkpoint").glob("*.safetensors"))) == 1


def test_external_sigkill_at_a_random_moment(npy, reference, tmp_path):
    out = tmp_path / "run"
    args = [a if a != "7" else "1" for a in ARGS]  # checkpoint every step: the kill likely lands in a write
    proc = subprocess.Popen([sys.executable, "-m", "sparseae", "train", *args, "--data", str(npy),
                             "--out", str(out)], env=ENV)
    deadline = time.time() + 120
    while not (out / "checkpoint" / "state.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _checkpoint_is_sound(out)
    _resume(out)
    # Same weights as the reference, although it checkpointed every 7 steps and this run every step.
    a, b = _weights(out), _weights(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_after_an_epochs_checkpoint_resumes_with_the_next_epochs_order(npy, reference, tmp_path):
    """Checkpoints only at the ends of epochs (the default): the resumed epoch must draw the next epoch's
    order, not the one before it again (a fresh generator has drawn nothing)."""
    out = tmp_path / "run"
    args = [a if a != "7" else "0" for a in ARGS]  # --checkpoint-every 0
    # 297 training rows at batch 16: 19 steps an epoch; killed after 25, in epoch 2, between checkpoints
    cmd = [sys.executable, "-c", KILLER, "step-settled", "25", "train", *args, "--data", str(npy), "--out", str(out)]
    assert subprocess.run(cmd, env=ENV).returncode == -signal.SIGKILL
    meta = _checkpoint_is_sound(out)
    assert (meta["epoch"], meta["step"]) == (2, 0)
    _resume(out)
    _assert_same_run(out, reference)


def _digest(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_resume_with_other_settings_is_refused_and_touches_nothing(reference, capsys):
    before = _digest(reference)
    assert main(["train", "--resume", str(reference), "--lr", "0.01", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "train.lr" in err and err.count("\n") == 1
    assert _digest(reference) == before


def test_resume_without_checkpoint_is_refused(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "error" in capsys.readouterr().err


def test_corrupt_checkpoint_is_detected(reference, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    meta = json.loads((run / "checkpoint" / "state.json").read_text())
    f = run / "checkpoint" / meta["tensors"]
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    from sparseae import SparseAEError
    from sparseae.config import ModelConfig
    from sparseae.model import SparseAutoencoder

    model = SparseAutoencoder(ModelConfig(input_dim=10, hidden=[12], output_activation="linear"))
    with pytest.raises(SparseAEError, match="corrupt"):
        Checkpointer(RunDir(run)).load(model, torch.optim.Adam(model.parameters()), None)


def test_resuming_a_finished_run_changes_no_weights(reference):
    before = _weights(reference)
    assert main(["train", "--resume", str(reference), "--quiet"]) == 0
    after = _weights(reference)
    assert all(torch.equal(before[k], after[k]) for k in before)


# Every sparsity family, killed (SIGKILL) right after a checkpoint and resumed, ends with the bytes of the
# uninterrupted run. 2000 x 16 rows (1800 trained on), batch 128: 15 steps an epoch, 3 epochs, 45 steps;
# a checkpoint every 5 steps of an epoch (global steps 5, 10, 20, 25, 35, 40).
FAMILY_ARGS = {
    "kl": ["--penalty", "kl"],
    "kl-running": ["--penalty", "kl", "--rho-hat", "running"],
    "l1": ["--penalty", "l1"],
    "jumprelu": ["--penalty", "jumprelu"],
    # a stated L0: beta adapted at every step after a 3-step warm-up, its state in the checkpoint
    "l1-l0": ["--penalty", "l1", "--l0", "3", "--beta-warmup", "3"],
    "jumprelu-l0": ["--penalty", "jumprelu", "--l0", "3", "--beta-warmup", "3"],
    # the pre-activation loss on latents silent for 256 examples: the firing counters are in the checkpoint
    "l1-revive": ["--penalty", "l1", "--l0", "2", "--beta-warmup", "3", "--dead-window", "256"],
    "jumprelu-revive": ["--penalty", "jumprelu", "--l0", "2", "--beta-warmup", "3", "--dead-window", "256"],
    "topk": ["--penalty", "topk", "--k", "4"],
    "batchtopk": ["--penalty", "batchtopk", "--k", "4"],
    "matryoshka": ["--penalty", "matryoshka", "--k", "4", "--prefixes", "8,16"],
    # its small-input defaults: prefixes code/4 and /2, AuxK 1/2, per-example warm-up, as config.json records them
    "matryoshka-defaults": ["--penalty", "matryoshka", "--k", "4"],
    # 45 steps x 16,384 latents: a run that is not short, with JumpReLU's long-run settings (families.is_long_run)
    "jumprelu-long": ["--penalty", "jumprelu", "--l0", "3", "--hidden", "16384"],
    # the decoder refitted after the last epoch's steps (L1's long runs take it by default): a run killed in its
    # last epoch refits on resuming, to the same bytes
    "l1-refit": ["--penalty", "l1", "--l0", "3", "--refit-decoder", "yes"],
    # and with unit-norm columns, whose norms the refit moves into the encoder rows and thresholds
    "jumprelu-refit": ["--penalty", "jumprelu", "--l0", "3", "--unit-norm-decoder", "yes", "--refit-decoder", "yes"],
    # JumpReLU's TopK start (half the 45 steps; its long-run default): killed inside it (step 7), just after it
    # (step 22: resumed at 20, the thresholds set on the resumed run's step 22) and near the end (step 42)
    "jumprelu-topk-start": ["--penalty", "jumprelu", "--l0", "3", "--topk-start", "0.5"],
    "mp": ["--penalty", "mp", "--k", "4"],
    "none": ["--penalty", "none"],
    # from the principal directions (a start fitted on the training rows, then the rate 5e-4): the resumed run must
    # not fit it again over its trained weights
    "batchtopk-principal": ["--penalty", "batchtopk", "--k", "4", "--principal-start", "yes"],
    "l1-principal": ["--penalty", "l1", "--l0", "3", "--principal-start", "yes"],
    "jumprelu-principal": ["--penalty", "jumprelu", "--l0", "3", "--principal-start", "yes"],
}
SMALL = ["--dataset", "array", "--hidden", "32", "--epochs", "3", "--batch-size", "128", "--checkpoint-every",
         "5", "--quiet", "--seed", "3"]
# kill after global step 7: resumed from step 5, inside l1's and jumprelu's beta warm-up (200 steps);
# after step 42: resumed from step 40 (epoch 3, step 10), inside the TopK families' lr decay (steps 36-44).
WARMUP, DECAY = 7, 42
CASES = [(family, WARMUP) for family in FAMILY_ARGS] + [(f, DECAY) for f in ("topk", "batchtopk", "matryoshka", "mp",
                                                                             "l1-l0", "jumprelu-l0",
                                                                             "l1-revive", "jumprelu-revive",
                                                                             "batchtopk-principal",
                                                                             "matryoshka-defaults", "l1-refit",
                                                                             "jumprelu-refit", "jumprelu-topk-start")]
CASES.append(("jumprelu-topk-start", 22))


@pytest.fixture(scope="module")
def family_npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("families") / "x.npy"
    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16)), 0) * rng.random((2000, 16))
    np.save(path, x.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def family_reference(family_npy, tmp_path_factory, one_thread):
    runs = {}

    def run(family):
        if family not in runs:
            out = tmp_path_factory.mktemp(f"ref-{family}") / "run"
            assert main(["train", *SMALL, *FAMILY_ARGS[family], "--data", str(family_npy), "--out", str(out)]) == 0
            runs[family] = out
        return runs[family]

    return run


@pytest.mark.parametrize("family,kill_after", CASES)
def test_every_family_resumes_exactly(family_npy, family_reference, tmp_path, family, kill_after):
    out = tmp_path / "run"
    args = ["train", *SMALL, *FAMILY_ARGS[family], "--data", str(family_npy), "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", KILLER, "step", str(kill_after), *args], env=ENV)
    assert proc.returncode == -signal.SIGKILL
    meta = _checkpoint_is_sound(out)
    assert (meta["epoch"] - 1) * 15 + meta["step"] == kill_after // 5 * 5 and not meta["finished"]
    _resume(out)
    assert (out / "model.safetensors").read_bytes() == (family_reference(family) / "model.safetensors").read_bytes()
    _assert_same_run(out, family_reference(family))


def test_beta_warmup_is_a_function_of_the_global_step():
    """Nothing counts steps: the loop gives the step, so a resumed run continues the warm-up; without a
    step (gradient check, L-BFGS) the full beta."""
    objective = Objective(SparsityConfig(penalty="l1", beta=0.2, beta_warmup=4))
    assert [objective.beta(s) for s in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2], rel=1e-12)
    assert objective.beta() == 0.2 and objective.step is None
