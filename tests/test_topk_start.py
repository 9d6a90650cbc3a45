"""JumpReLU's TopK start (sparsity.topk_start): the first share of the steps trains a per-example TopK code of
families.topk_start_k(target L0) units with no penalty and the L0 controller waiting; the first step after it sets
every threshold from its batch. The default on long runs on small inputs with a target L0, and what it refuses."""
import json

import numpy as np
import pytest
import torch

from sparseae.cli import main
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.errors import SparseAEError
from sparseae.families import topk_start_k
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective


def _resolved(input_dim=64, rows=96_000, hidden=512, penalty="jumprelu", dataset="array", target_l0=5, beta=None,
              principal_start=None, **sparsity):
    k = 8 if penalty in ("topk", "batchtopk") else None
    return resolve(RunConfig(ModelConfig(hidden=[hidden], k=k, principal_start=principal_start),
                             SparsityConfig(penalty=penalty, target_l0=None if k else target_l0, beta=beta,
                                            **sparsity),
                             TrainConfig(dataset=dataset, data="x.npy" if dataset == "array" else None, epochs=5)),
                   rows=rows, input_dim=input_dim)


def test_jumprelu_starts_as_topk_on_long_runs_on_small_inputs_with_a_target():
    assert _resolved().sparsity.topk_start == 0.75  # 1,875 steps x 512 latents: a long run
    assert _resolved(rows=2000, hidden=128).sparsity.topk_start == 0.0  # a short run (a real set's)
    assert _resolved(input_dim=784, rows=60_000).sparsity.topk_start == 0.0  # FashionMNIST's recipe as it was
    assert _resolved(input_dim=784, rows=60_000, dataset="fashion-mnist", target_l0=None).sparsity.topk_start == 0.0
    assert _resolved(target_l0=None, beta=1e-3).sparsity.topk_start == 0.0  # a beta: no target to take k from
    assert _resolved(target_l0=None).sparsity.target_l0 == 8  # the default target (input_dim / 8) counts
    assert _resolved(target_l0=None).sparsity.topk_start == 0.75
    assert _resolved(principal_start=True).sparsity.topk_start == 0.0  # a start at a solution keeps it
    for family in ("l1", "topk", "batchtopk"):
        assert _resolved(penalty=family).sparsity.topk_start == 0.0
    assert _resolved(topk_start=0.0).sparsity.topk_start == 0.0  # a stated value wins
    assert _resolved(rows=2000, hidden=128, topk_start=0.5).sparsity.topk_start == 0.5


def test_its_k_is_twice_the_target_rounded():
    assert [topk_start_k(t) for t in (0.2, 3, 5, 5.3, 8, 16)] == [1, 6, 10, 11, 16, 32]


@pytest.mark.parametrize("penalty,extra", [("jumprelu", {"beta": 1e-3}), ("l1", {"target_l0": 3})])
def test_it_needs_a_jumprelu_code_and_a_target(penalty, extra):
    with pytest.raises(SparseAEError, match="sparsity.topk_start needs a jumprelu code with a target L0"):
        resolve(RunConfig(ModelConfig(hidden=[32]), SparsityConfig(penalty=penalty, topk_start=0.5, **extra),
                          TrainConfig(dataset="array", data="x.npy")), rows=1000, input_dim=16)


def _model():
    torch.manual_seed(0)
    return SparseAutoencoder(ModelConfig(input_dim=6, hidden=[12], topk="jumprelu", activation="relu",
                                         output_activation="linear", jumprelu_threshold=0.1, pre_bias=False,
                                         bias_init="default", jumprelu_bandwidth=0.05)).train()


def test_the_start_keeps_each_examples_k_largest_units_then_the_thresholds_open_as_wide():
    model, x = _model(), torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    z = model.encoder[0](x).detach()  # no transform, no pre-bias: the pre-activations
    model.start_k, model.per_example_topk = 3, True
    code = model(x).hidden[-1].detach()
    expected = torch.zeros_like(z).scatter_(1, z.topk(3, dim=1).indices, z.topk(3, dim=1).values.clamp_min(0))
    assert torch.equal(code, expected)
    assert torch.equal(model.threshold, torch.full((12,), 0.1))  # untouched while the start lasts
    model.per_example_topk, model.thresholds_pending = False, True
    model(x)
    kth = z.topk(3, dim=1).values[:, -1].clamp_min(0).mean()
    assert torch.allclose(model.threshold, kth.expand(12), rtol=1e-5)
    assert not model.thresholds_pending  # once
    assert (model(x).hidden[-1] != 0).sum(1).float().mean() == pytest.approx(3, abs=1.0)  # about as wide


def test_no_penalty_is_paid_during_the_start():
    model, x = _model(), torch.rand(50, 6)
    objective = Objective(SparsityConfig(penalty="jumprelu", beta=1e-2))
    model.start_k, model.per_example_topk = 3, True
    out = model(x)
    assert objective.starting(model) and float(objective.penalty(out.hidden, model, out)) == 0.0
    model.per_example_topk = False
    out = model(x)
    assert not objective.starting(model) and float(objective.penalty(out.hidden, model, out)) > 0.0


def test_a_cli_run_records_it_and_ends_near_its_target(tmp_path):
    x = np.abs(np.random.default_rng(0).normal(size=(2000, 16))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "array", "--data", str(tmp_path / "x.npy"), "--penalty", "jumprelu",
                 "--hidden", "32", "--epochs", "4", "--l0", "3", "--topk-start", "0.5", "--quiet",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["sparsity"]["topk_start"] == 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert 1.5 < summary["l0"] < 6  # from a TopK code of 6 the thresholds closed towards 3
