"""The learning-rate decay (train.lr_decay): its factor by hand, the rate each optimizer step really
used, the families' defaults. A killed and resumed run continues the schedule: tests/test_resume.py trains
with a decay that spans the kill."""

import pytest
import torch

from sparseae.cli.args import training_config
from sparseae.config import ModelConfig, SparsityConfig, TrainConfig
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.training import fit
from sparseae.training.loop import decay_factor


def test_decay_factor_by_hand():
    # 100 steps, the last 20 decaying: constant up to step 80, then (100 - step) / 20
    assert [decay_factor(s, 100, 0.2) for s in (0, 79, 80, 81, 90, 99)] == [1.0, 1.0, 1.0, 0.95, 0.5, 0.05]
    # the whole run: from 1 down to 1/total at the last step, never 0 on a step taken
    assert [decay_factor(s, 10, 1.0) for s in (0, 5, 9)] == [1.0, 0.5, 0.1]
    assert decay_factor(0, 3, 0.01) == 1.0 and decay_factor(2, 3, 0.01) == 1.0  # shorter than a step: none


def _rates_used(monkeypatch, cfg: TrainConfig, x: torch.Tensor) -> list[float]:
    rates = []
    step = torch.optim.SGD.step

    def recording(self, *a, **k):
        rates.append(float(self.param_groups[0]["lr"]))
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=6, hidden=[4]))
    fit(model, Objective(SparsityConfig(penalty="none")), x, x[:8], cfg, progress=False)
    return rates


def test_each_step_uses_the_decayed_rate(monkeypatch):
    x = torch.rand(40, 6)
    cfg = TrainConfig(epochs=2, batch_size=10, optimizer="sgd", lr=0.1, lr_decay=0.5)
    rates = _rates_used(monkeypatch, cfg, x)  # 8 steps, the last 4 decaying: 4/4, 3/4, 2/4, 1/4
    assert rates == pytest.approx([0.1] * 5 + [0.075, 0.05, 0.025])
    assert _rates_used(monkeypatch, TrainConfig(epochs=2, batch_size=10, optimizer="sgd", lr=0.1, lr_decay=0.0),
                       x) == pytest.approx([0.1] * 8)


def _config(*argv: str):
    return training_config(argv)


@pytest.mark.parametrize("penalty,lr,decay", [("topk", 1.5e-3, 0.2), ("batchtopk", 1.5e-3, 0.2),
                                              ("matryoshka", 1.5e-3, 0.2), ("kl", 1e-3, 0.0), ("l1", 3e-3, 0.0),
                                              ("jumprelu", 3e-3, 0.0)])
def test_family_defaults(penalty, lr, decay):
    c = _config("--penalty", penalty, "--k", "8")
    assert (c.train.lr, c.train.lr_decay, c.sparsity.auxk_coef) == (lr, decay, 0.125)
    c = _config("--penalty", penalty, "--k", "8", "--lr", "0.01", "--lr-decay", "0.5")
    assert (c.train.lr, c.train.lr_decay) == (0.01, 0.5)  # explicit values win


def test_train_config_resolved_on_its_own_gets_the_plain_rate(monkeypatch):
    """A TrainConfig resolved without a sparsity family: lr 1e-3, constant."""
    rates = _rates_used(monkeypatch, TrainConfig(epochs=1, batch_size=10, optimizer="sgd").resolved(),
                        torch.rand(30, 6))
    assert rates == pytest.approx([1e-3] * 3)


def test_fit_refuses_an_unresolved_train_config():
    """Settings are filled in once (config.resolve); the loop does not fill them again."""
    model = SparseAutoencoder(ModelConfig(input_dim=6, hidden=[4]))
    x = torch.rand(30, 6)
    with pytest.raises(SparseAEError, match="resolved TrainConfig"):
        fit(model, Objective(SparsityConfig(penalty="none")), x, x[:8], TrainConfig(epochs=1), progress=False)


@pytest.mark.parametrize("hidden,lr", [("256", 1.5e-3), ("1024", 1.5e-3), ("4096", 7.5e-4), ("16384", 3.75e-4)])
def test_topk_rate_follows_the_width(hidden, lr):
    """1.5e-3 up to 1,024 latents, then 1.5e-3 * sqrt(1024 / latents)."""
    for family in ("topk", "batchtopk", "matryoshka"):
        assert _config("--penalty", family, "--k", "8", "--hidden", hidden).train.lr == pytest.approx(lr)
    assert _config("--penalty", "topk", "--k", "8", "--hidden", hidden, "--lr", "0.01").train.lr == 0.01
    assert _config("--penalty", "l1", "--hidden", hidden).train.lr == 3e-3  # not by width
