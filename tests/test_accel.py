"""The GPU step options, run on the CPU where the same code runs: bf16 autocast, torch.compile, refusals."""
import shutil

import numpy as np
import pytest
import torch

from sparseae import SparseAEError
from sparseae.training import accel
from sparseae.training.accel import check_options
from sparseae.config import ModelConfig, SparsityConfig, TrainConfig
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.training import fit


def _train(**options):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(400, 10)).astype(np.float32))
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=10, hidden=[8], output_activation="linear"))
    cfg = TrainConfig(epochs=2, batch_size=50, **options).resolved()
    rows, _ = fit(model, Objective(SparsityConfig(beta=0.003)), x, x[:50], cfg, progress=False)
    return model, rows


def test_bf16_autocast_trains_close_to_float32():
    ref, ref_rows = _train()
    low, rows = _train(precision="bf16")
    assert rows[-1]["train_loss"] == pytest.approx(ref_rows[-1]["train_loss"], rel=1e-3)
    for a, b in zip(low.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")),
                    reason="torch.compile (inductor) needs a C compiler on the CPU")
def test_compiled_step_equals_eager():
    ref, _ = _train()
    comp, _ = _train(compile=True)
    for a, b in zip(comp.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_cuda_graph_refusals():
    cpu = torch.device("cpu")
    with pytest.raises(SparseAEError, match="CUDA device"):
        check_options(TrainConfig(cuda_graph=True), ModelConfig(), SparsityConfig(), cpu, False)
    cuda = torch.device("cuda")
    with pytest.raises(SparseAEError, match="running"):
        check_options(TrainConfig(cuda_graph=True), ModelConfig(), SparsityConfig(rho_hat="running"), cuda, False)
    with pytest.raises(SparseAEError, match="data-parallel"):
        check_options(TrainConfig(cuda_graph=True), ModelConfig(), SparsityConfig(), cuda, True)


class EagerGraphStep(accel.GraphStep):
    """GraphStep with the CUDA parts replaced by eager calls: the warm-up runs the step, the "graph"
    replays by calling it. Everything else (when to record, what is saved and put back) is the real code."""

    calls = 0

    def _warm_up(self, sums):
        for _ in range(self.warmup):
            self._counted(sums)

    def _capture(self, sums):
        return lambda: self._counted(sums)

    def _counted(self, sums):
        EagerGraphStep.calls += 1
        self.step(self.x, sums)


@pytest.mark.parametrize("kind", ["kl-adam", "topk-sgd", "topk-mean-bias"])
def test_graph_recording_leaves_training_unchanged(monkeypatch, kind):
    """The warm-up steps of graph recording are undone: parameters, buffers (firing counters), optimizer
    state (Adam's moments and step, SGD's momentum) and loss sums; the last, shorter batch runs eagerly.
    The first-batch init of b_dec (bias_init 'mean', the TopK default) is not undone with them."""
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(400, 10)).astype(np.float32))
    if kind == "kl-adam":
        mc = ModelConfig(input_dim=10, hidden=[8], activation="sigmoid", output_activation="linear")
        sc, tc = SparsityConfig(penalty="kl", beta=1.0, rho=0.1), dict(optimizer="adam", lr=1e-2)
    else:
        mc = ModelConfig(input_dim=10, hidden=[16], activation="relu", output_activation="linear", topk="topk",
                         k=3, unit_norm_decoder=True, pre_bias=True, bias_init="default")
        sc, tc = SparsityConfig(penalty="topk"), dict(optimizer="sgd", lr=0.05, momentum=0.9)
        if kind == "topk-mean-bias":
            mc.bias_init, tc = "mean", dict(optimizer="adam", lr=1e-2)

    def run(graph: bool):
        torch.manual_seed(0)
        model = SparseAutoencoder(mc)
        cfg = TrainConfig(epochs=2, batch_size=64, cuda_graph=graph, **tc).resolved()
        rows, _ = fit(model, Objective(sc), x, x[:50], cfg, progress=False)
        return model, rows

    monkeypatch.setattr(accel, "GraphStep", EagerGraphStep)
    EagerGraphStep.calls = 0
    ref, ref_rows = run(False)
    assert EagerGraphStep.calls == 0
    got, rows = run(True)
    assert EagerGraphStep.calls == 3 + 2 * 6  # warm-up, then 6 full batches of 64 per epoch replayed
    for (name, a), b in zip(got.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(got.examples_since_fired, ref.examples_since_fired, rtol=0, atol=0)
    for a, b in zip(rows, ref_rows):
        assert a["train_loss"] == b["train_loss"] and a["val_mse"] == b["val_mse"]


def test_beta_warmup_steps_are_not_recorded(monkeypatch):
    """A recorded step keeps the beta it was recorded with, so the steps of beta's warm-up run eagerly
    and recording starts with the first step after it: the same weights as without a graph."""
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(400, 10)).astype(np.float32))
    mc = ModelConfig(input_dim=10, hidden=[16], activation="relu", output_activation="linear")
    objective = Objective(SparsityConfig(penalty="l1", beta=0.5, beta_warmup=10))

    class FrozenBeta(EagerGraphStep):  # replays with the step (so the beta) seen when it was recorded
        def _capture(self, sums):
            recorded = objective.step
            return lambda: (setattr(objective, "step", recorded), self._counted(sums))

    def run(graph: bool):
        torch.manual_seed(0)
        model = SparseAutoencoder(mc)
        fit(model, objective, x, x[:50], TrainConfig(epochs=2, batch_size=64, cuda_graph=graph).resolved(),
            progress=False)
        return model

    monkeypatch.setattr(accel, "GraphStep", FrozenBeta)
    EagerGraphStep.calls = 0
    ref = run(False)
    got = run(True)
    # 7 steps an epoch (6 of 64 rows, one of 16): steps 0-9 eager, recorded at 10, replayed at 10-12
    assert EagerGraphStep.calls == 3 + 3
    for (name, a), b in zip(got.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("sparsity", ["auxk", "l1"])
def test_bf16_penalties_in_float32(sparsity):
    """After a bf16 forward pass the penalties run in float32 (AuxK's decoder product included) and
    training lands close to float32 training."""
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(400, 10)).astype(np.float32))
    if sparsity == "auxk":  # a short dead window so that units die and AuxK contributes
        mc = ModelConfig(input_dim=10, hidden=[32], activation="relu", output_activation="linear", topk="topk",
                         k=2, dead_window=40)
        sc = SparsityConfig(penalty="topk", auxk=True)
    else:
        mc = ModelConfig(input_dim=10, hidden=[8], activation="relu", output_activation="linear")
        sc = SparsityConfig(penalty="l1", beta=0.1)

    def run(precision):
        torch.manual_seed(0)
        model = SparseAutoencoder(mc)
        cfg = TrainConfig(epochs=2, batch_size=50, precision=precision).resolved()
        rows, _ = fit(model, Objective(sc), x, x[:50], cfg, progress=False)
        return rows

    ref, low = run("fp32"), run("bf16")
    assert min(r["train_sparsity"] for r in low) > 0
    assert low[-1]["train_loss"] == pytest.approx(ref[-1]["train_loss"], rel=2e-2)
