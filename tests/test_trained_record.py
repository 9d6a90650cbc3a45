"""The trained record is the truth: the settings a model was trained with are recorded in the metadata of
its weights (model.safetensors, and each checkpoint's tensor file), and a config.json edited since is
refused in one line by everything that reads the model (eval, probe, report, load_run, train --resume)."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

import sparseae
from sparseae import SparseAEError
from sparseae.cli import main
from sparseae.run.rundir import TRAINED_WITH

from cli_helpers import copy_run, digest as _digest, refused_naming as _refused
from conftest import FMNIST, needs_fmnist

TINY = ["--limit-train", "500", "--epochs", "1", "--hidden", "16", "--quiet"]
FIXTURES = Path(__file__).parent / "fixtures" / "runs_v0_1"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# Runs the CLI in a child that SIGKILLs itself as soon as its first checkpoint is written.
KILLER = r"""
import os, signal, sys
import sparseae.training.checkpoint as ck
real = ck.Checkpointer.save
def save(self, *args):
    real(self, *args)
    os.kill(os.getpid(), signal.SIGKILL)
ck.Checkpointer.save = save
from sparseae.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    if not os.path.isdir(FMNIST) and not os.environ.get("SPARSEAE_DATA"):
        pytest.skip("FashionMNIST files not installed")
    out = tmp_path_factory.mktemp("record") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(finished, tmp_path, capsys):
    return copy_run(finished, tmp_path, capsys)


def _edit(run, section, key, value):
    path = run / "config.json"
    config = json.loads(path.read_text())
    config[section][key] = value
    path.write_text(json.dumps(config, indent=2))


def _metadata(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


@needs_fmnist
def test_the_weights_record_the_settings_of_config_json(finished):
    config = json.loads((finished / "config.json").read_text())
    assert json.loads(_metadata(finished / "model.safetensors")[TRAINED_WITH]) == config
    state = json.loads((finished / "checkpoint" / "state.json").read_text())
    assert json.loads(_metadata(finished / "checkpoint" / state["tensors"])[TRAINED_WITH]) == config


@needs_fmnist
@pytest.mark.parametrize("command", ["eval", "probe", "report"])
def test_an_edited_beta_is_refused(run, capsys, tmp_path, command):
    _edit(run, "sparsity", "beta", 0.5)
    before = _digest(run)
    argv = {"eval": ["eval", str(run)], "probe": ["probe", str(run)],
            "report": ["report", str(run), "--out", str(tmp_path / "report.html")]}
    _refused(capsys, argv[command], f"{run / 'config.json'} says sparsity.beta 0.5, the model was trained with 0.003",
             str(run / "model.safetensors"))
    assert _digest(run) == before
    assert not (tmp_path / "report.html").exists()


@needs_fmnist
def test_load_run_refuses_an_edited_beta(run):
    _edit(run, "sparsity", "beta", 0.5)
    with pytest.raises(SparseAEError, match="says sparsity.beta 0.5, the model was trained with 0.003"):
        sparseae.load_run(run)


@needs_fmnist
@pytest.mark.parametrize("section, key, value, shown", [
    ("model", "output_activation", "linear", "'linear', the model was trained with 'sigmoid'"),
    ("sparsity", "rho", 0.2, "0.2, the model was trained with 0.05"),
    ("train", "seed", 7, "7, the model was trained with 0"),
])
def test_an_edit_that_keeps_the_shapes_is_refused(run, capsys, section, key, value, shown):
    _edit(run, section, key, value)
    with pytest.raises(SparseAEError, match=f"says {section}.{key} {shown}"):
        sparseae.load_run(run)
    _refused(capsys, ["eval", str(run)], f"says {section}.{key} {shown}")


@needs_fmnist
def test_an_untouched_run_loads_and_the_machine_may_change(run, capsys):
    model = sparseae.load_run(run)
    assert model.config.hidden == [16] and not model.training
    _edit(run, "train", "device", "cpu")  # where it runs, not what was trained
    _edit(run, "train", "data_dir", os.environ.get("SPARSEAE_DATA") or FMNIST)  # where the data lies
    assert main(["eval", str(run)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mse"] > 0


@needs_fmnist
def test_resume_of_a_killed_run_with_an_edited_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--batch-size", "64", "--checkpoint-every", "2", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", KILLER, *argv], env=ENV)
    assert proc.returncode == -signal.SIGKILL
    state = (out / "checkpoint" / "state.json").read_bytes()
    meta = json.loads(state)
    assert meta["step"] == 2 and not meta["finished"]  # killed after its first checkpoint
    _edit(out, "sparsity", "beta", 0.5)
    before = _digest(out)
    for check in ([], ["--check"]):  # --check says what the resume itself would
        _refused(capsys, ["train", "--resume", str(out), *check, "--quiet"],
                 f"{out / 'config.json'} says sparsity.beta 0.5, the model was trained with 0.003",
                 str(out / "checkpoint" / meta["tensors"]))
    assert (out / "checkpoint" / "state.json").read_bytes() == state
    assert _digest(out) == before
    # put back, it resumes, and the record still says how it was trained
    _edit(out, "sparsity", "beta", 0.003)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    meta = json.loads((out / "checkpoint" / "state.json").read_text())
    assert meta["finished"] and meta["config"]["sparsity"]["beta"] == 0.003
    record = json.loads(_metadata(out / "model.safetensors")[TRAINED_WITH])
    assert record["sparsity"]["beta"] == 0.003


@needs_fmnist
def test_resume_of_a_finished_run_with_an_edited_config_is_refused(run, capsys):
    _edit(run, "sparsity", "beta", 0.5)
    before = _digest(run)
    _refused(capsys, ["train", "--resume", str(run), "--quiet"],
             "says sparsity.beta 0.5, the model was trained with 0.003")
    assert _digest(run) == before


@pytest.mark.parametrize("name", ["batchtopk-done", "kl-killed"])
def test_a_run_written_before_the_record_still_loads(tmp_path, monkeypatch, name):
    shutil.copytree(FIXTURES, tmp_path / "runs")
    monkeypatch.chdir(tmp_path / "runs")
    assert TRAINED_WITH not in _metadata(Path(name, "model.safetensors"))
    model = sparseae.load_run(name)
    assert model.config.input_dim == 12 and not model.training
