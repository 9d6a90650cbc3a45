"""BatchTopK's AuxK weight by the input's size (families.batchtopk_auxk_coef): 1 on small inputs, where 1/8 left
a third of a planted-feature code never firing, and the measured 1/8 from 128 columns on (FashionMNIST's runs
unchanged); Matryoshka takes the same weight up to 1/2, the other families keep 1/8, an explicit weight wins, and
an objective built from settings that were never resolved still gets AuxK at 1/8."""

import pytest
import torch

from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective


def _coef(penalty: str, input_dim: int, **sparsity) -> float:
    c = RunConfig(ModelConfig(hidden=[256], k=8), SparsityConfig(penalty=penalty, **sparsity),
                  TrainConfig(dataset="array", data="rows.npy"))
    return resolve(c, rows=1000, input_dim=input_dim).sparsity.auxk_coef


@pytest.mark.parametrize("input_dim,coef", [(8, 1.0), (32, 1.0), (64, 1.0), (100, 0.125 * 1.28 ** 3),
                                            (128, 0.125), (784, 0.125), (4096, 0.125)])
def test_batchtopk_auxk_weight_falls_from_1_to_an_eighth_between_64_and_128_inputs(input_dim, coef):
    assert _coef("batchtopk", input_dim) == pytest.approx(coef, rel=1e-12)


@pytest.mark.parametrize("penalty", ["topk", "mp"])
def test_other_k_families_keep_an_eighth(penalty):
    assert _coef(penalty, 32) == 0.125
    assert _coef(penalty, 784) == 0.125


@pytest.mark.parametrize("input_dim,coef", [(8, 0.5), (32, 0.5), (64, 0.5), (80, 0.5), (100, 0.125 * 1.28 ** 3),
                                            (128, 0.125), (784, 0.125)])
def test_matryoshka_takes_batchtopks_weight_up_to_a_half(input_dim, coef):
    """(128 / 80)^3 / 8 = 0.512: from 80 columns down the cap holds."""
    assert _coef("matryoshka", input_dim) == pytest.approx(coef, rel=1e-12)


def test_fashion_mnist_defaults_keep_an_eighth():
    for penalty in ("topk", "batchtopk", "matryoshka"):
        assert resolve(RunConfig(ModelConfig(hidden=[1024], k=32), SparsityConfig(penalty=penalty))
                       ).sparsity.auxk_coef == 0.125


def test_an_explicit_weight_wins():
    assert _coef("batchtopk", 32, auxk_coef=0.25) == 0.25
    assert _coef("batchtopk", 32, auxk_coef=0.0) == 0.0


def test_the_resolved_weight_is_what_config_json_records():
    c = resolve(RunConfig(ModelConfig(hidden=[64], k=4), SparsityConfig(penalty="batchtopk"),
                          TrainConfig(dataset="array", data="rows.npy")), rows=500, input_dim=40)
    assert c.to_dict()["sparsity"]["auxk_coef"] == 1.0
    assert RunConfig.from_dict(c.to_dict()).sparsity.auxk_coef == 1.0


def test_an_unresolved_objective_uses_an_eighth():
    """AuxK's part with the weight unset equals it with 1/8 set, and it is not zero."""
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=12, hidden=[20], activation="relu", output_activation="linear",
                                          topk="topk", k=2, dead_window=1))
    model.train()
    x = torch.rand(32, 12)
    model(x)  # units that did not fire on this batch are dead for the next (dead_window 1)
    out = model(x)
    unset = Objective(SparsityConfig(penalty="topk", auxk=True))(model, out).sparsity
    eighth = Objective(SparsityConfig(penalty="topk", auxk=True, auxk_coef=0.125))(model, out).sparsity
    assert unset.item() > 0
    assert unset.item() == eighth.item()
