"""The decoder refitted by least squares after the last epoch (train.refit_decoder, training/refit.py): the fit
itself against an independent solve, what it leaves alone, when L1 takes it by default, and what it refuses."""
import json

import numpy as np
import pytest
import torch

from sparseae.cli import main
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.data.batches import TensorBatches
from sparseae.errors import SparseAEError
from sparseae.families import REFIT_MAX_LATENTS
from sparseae.model import SparseAutoencoder
from sparseae.training.refit import refit_decoder


def _model(hidden=12, **kw):
    torch.manual_seed(0)
    return SparseAutoencoder(ModelConfig(input_dim=6, hidden=[hidden], activation="relu", output_activation="linear",
                                         pre_bias=True, **kw))


def _rows(n=300):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.5


def test_the_decoder_becomes_the_least_squares_fit_from_the_unchanged_code():
    model, x = _model(), _rows()
    with torch.no_grad():
        model.output_bias().copy_(x.mean(0))  # b_dec away from 0: the fit is of the rows less it
    code_before = model.eval().encode(x).clone()
    encoder = [p.detach().clone() for p in model.encoder.parameters()]
    bias = model.output_bias().detach().clone()
    refit_decoder(model, TensorBatches(x, 64))
    assert torch.equal(model.encode(x), code_before)  # the encoder and b_dec (which it reads) are as they were
    assert all(torch.equal(a, b) for a, b in zip(encoder, model.encoder.parameters()))
    assert torch.equal(model.output_bias(), bias)
    c = code_before.double()
    fired = c.abs().sum(0) > 0
    expected = torch.linalg.lstsq(c[:, fired], (x - bias).double()).solution.T  # output x fired units
    assert torch.allclose(model.decoder[0].weight[:, fired].double(), expected, rtol=1e-3, atol=1e-4)


def test_the_refit_reconstructs_the_training_rows_no_worse_and_keeps_silent_units_columns():
    model, x = _model(), _rows()
    with torch.no_grad():
        model.encoder[0].bias[:3] = -1e3  # three units that fire on no row
    silent = model.decoder[0].weight[:, :3].detach().clone()
    model.eval()
    err_before = float((model(x).recon - x).pow(2).sum())
    refit_decoder(model, TensorBatches(x, 64))
    err_after = float((model(x).recon - x).pow(2).sum())
    assert torch.equal(model.decoder[0].weight[:, :3], silent)
    assert err_after <= err_before * (1 + 1e-6) and err_after < 0.9 * err_before


@pytest.mark.parametrize("topk", ["none", "jumprelu"])
def test_unit_norm_columns_stay_unit_and_their_norms_move_into_the_encoder(topk):
    """The same fit as with free columns: each unit fires on the same rows, its value times its column's norm."""
    extra = {"jumprelu_threshold": 0.05, "jumprelu_bandwidth": 0.05} if topk == "jumprelu" else {}
    free, unit = _model(topk=topk, **extra), _model(topk=topk, unit_norm_decoder=True, **extra)
    with torch.no_grad():  # the same weights in both
        for a, b in zip(free.parameters(), unit.parameters()):
            a.copy_(b)
    x = _rows()
    fired_before = unit.eval().encode(x) != 0
    refit_decoder(free, TensorBatches(x, 64))
    refit_decoder(unit, TensorBatches(x, 64))
    norms = unit.decoder[0].weight.norm(dim=0)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert torch.equal(unit.encode(x) != 0, fired_before)
    assert torch.allclose(unit.reconstruct(x), free.eval().reconstruct(x), rtol=1e-4, atol=1e-4)
    assert torch.allclose(unit.encode(x) * norms, free.encode(x) * free.decoder[0].weight.norm(dim=0),
                          rtol=1e-4, atol=1e-5)


def test_the_fit_does_not_depend_on_the_batch_size_beyond_rounding():
    x = _rows()
    a, b = _model(), _model()
    refit_decoder(a, TensorBatches(x, 16))
    refit_decoder(b, TensorBatches(x, 300))
    assert torch.allclose(a.decoder[0].weight, b.decoder[0].weight, rtol=1e-4, atol=1e-5)


def _resolved(input_dim=64, rows=96_000, hidden=512, penalty="l1", **train):
    k = 8 if penalty in ("topk", "batchtopk") else None
    return resolve(RunConfig(ModelConfig(hidden=[hidden], k=k), SparsityConfig(penalty=penalty),
                             TrainConfig(dataset="array", data="x.npy", epochs=5, **train)),
                   rows=rows, input_dim=input_dim)


def test_l1_refits_on_long_runs_on_small_inputs_only():
    assert _resolved().train.refit_decoder is True  # 1,875 steps x 512 latents: a long run
    assert _resolved(rows=2000).train.refit_decoder is False  # a short run (real sets of a few thousand rows)
    assert _resolved(input_dim=784, rows=60_000).train.refit_decoder is False  # FashionMNIST's recipe as it was
    assert _resolved(hidden=REFIT_MAX_LATENTS).train.refit_decoder is True
    assert _resolved(hidden=REFIT_MAX_LATENTS * 2).train.refit_decoder is False  # normal equations too large
    for family in ("jumprelu", "topk", "batchtopk"):
        assert _resolved(penalty=family).train.refit_decoder is False
    assert _resolved(refit_decoder=False).train.refit_decoder is False  # a stated value wins
    assert _resolved(rows=2000, refit_decoder=True).train.refit_decoder is True


@pytest.mark.parametrize("model,train,message", [
    ({"tied": True}, {}, "one untied layer"),
    ({"hidden": [32, 16]}, {}, "one untied layer"),
    ({"topk": "topk", "k": 4}, {}, "a ReLU or JumpReLU code"),
    ({"activation": "sigmoid"}, {}, "a ReLU or JumpReLU code"),
    ({"hidden": [REFIT_MAX_LATENTS + 1]}, {}, f"at most {REFIT_MAX_LATENTS} latents"),
    ({}, {"optimizer": "lbfgs"}, "a minibatch optimizer"),
])
def test_models_it_cannot_refit_are_refused(model, train, message):
    config = RunConfig(ModelConfig(**{"hidden": [32], **model}), SparsityConfig(penalty="l1", beta=1e-3),
                       TrainConfig(dataset="array", data="x.npy", refit_decoder=True, **train))
    with pytest.raises(SparseAEError, match=message):
        resolve(config, rows=1000, input_dim=16)


def test_a_cli_run_with_the_refit_writes_the_refitted_decoder(tmp_path, capsys):
    x = np.abs(np.random.default_rng(0).normal(size=(600, 8))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    runs = {}
    for flag in ("no", "yes"):
        out = tmp_path / flag
        args = ["train", "--dataset", "array", "--data", str(tmp_path / "x.npy"), "--penalty", "l1", "--hidden",
                "16", "--epochs", "2", "--quiet", "--refit-decoder", flag, "--out", str(out)]
        assert main(args) == 0
        runs[flag] = out
    config = json.loads((runs["yes"] / "config.json").read_text())
    assert config["train"]["refit_decoder"] is True
    assert "refit_decoder" not in json.loads((runs["no"] / "config.json").read_text())["train"]  # as before
    summary = {k: json.loads((runs[k] / "summary.json").read_text()) for k in runs}
    assert summary["yes"]["l0"] == pytest.approx(summary["no"]["l0"], rel=1e-6)  # same code, same steps
    assert summary["yes"]["val_mse"] < summary["no"]["val_mse"]
