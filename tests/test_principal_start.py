"""A code on data whose variance lies in a few directions starts from the training rows' principal directions
(model.principal_start, families.principal_start, model/init.principal_directions_): the TopK families at k, l1
and jumprelu at their target L0."""
import json

import numpy as np
import pytest
import torch

from sparseae import families
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.data.dataset import Dataset, variance_spectrum
from sparseae.model import SparseAutoencoder
from sparseae.model.init import principal_directions_


def _config(penalty="topk", input_dim=52, hidden=128, k=8, dataset="array", sparsity=None, **model):
    k_code = penalty in ("topk", "batchtopk", "matryoshka", "mp")
    return RunConfig(ModelConfig(input_dim=input_dim, hidden=[hidden], k=k if k_code else None, **model),
                     SparsityConfig(penalty=penalty, **(sparsity or {})),
                     TrainConfig(dataset=dataset, data="x.npy" if dataset == "array" else None, epochs=5))


CONCENTRATED = [100.0] * 8 + [0.01] * 44  # 8 components hold 99.95%
FLAT = [1.0] * 52


@pytest.mark.parametrize("penalty", ["topk", "batchtopk", "matryoshka"])
def test_a_concentrated_spectrum_starts_from_the_principal_directions_at_a_low_rate(penalty):
    run = resolve(_config(penalty), rows=500, spectrum=CONCENTRATED)
    assert run.model.principal_start is True
    assert run.train.lr == 5e-4
    plain = resolve(_config(penalty), rows=500, spectrum=FLAT)
    assert plain.model.principal_start is False
    assert plain.train.lr == pytest.approx(families.topk_lr(plain.model))
    assert plain.train.lr > 1e-3


def test_the_share_is_of_the_k_leading_components():
    # k 8: 98.9% of the variance in 8 components is not enough, 99% is
    below = [98.9 / 8] * 8 + [1.1 / 44] * 44
    at = [99.0 / 8] * 8 + [1.0 / 44] * 44
    assert resolve(_config(), rows=500, spectrum=below).model.principal_start is False
    assert resolve(_config(), rows=500, spectrum=at).model.principal_start is True
    assert resolve(_config(k=4), rows=500, spectrum=at).model.principal_start is False


@pytest.mark.parametrize("penalty", ["batchtopk", "matryoshka", "l1", "jumprelu"])
def test_the_other_families_ask_90_percent(penalty):
    # k (or the target L0) 8; topk would need 99%
    below = [89.9 / 8] * 8 + [10.1 / 44] * 44
    at = [90.1 / 8] * 8 + [9.9 / 44] * 44
    target = {} if penalty in ("batchtopk", "matryoshka") else {"target_l0": 8.0}
    config = _config(penalty, hidden=32, sparsity=target)
    assert resolve(config, rows=500, spectrum=below).model.principal_start is False
    assert resolve(config, rows=500, spectrum=at).model.principal_start is True
    assert resolve(_config("topk"), rows=500, spectrum=at).model.principal_start is False


@pytest.mark.parametrize("penalty,target,lr", [("l1", None, 2e-2), ("jumprelu", None, 7e-3), ("l1", 8.0, 2e-2),
                                              ("jumprelu", 8.0, 7e-3)])
def test_penalty_families_take_it_when_their_target_l0_components_hold_the_variance(penalty, target, lr):
    # 52 inputs: the default target is round(52 / 8) = 6; 6 components hold 99.9% here, 8 hold it for --l0 8
    k = 6 if target is None else 8
    spectrum = [100.0] * k + [0.001] * (52 - k)
    run = resolve(_config(penalty, hidden=32, sparsity={"target_l0": target}), rows=500, spectrum=spectrum)
    assert run.model.principal_start is True and run.train.lr == families.PRINCIPAL_LR
    flat = resolve(_config(penalty, hidden=32, sparsity={"target_l0": target}), rows=500, spectrum=FLAT)
    assert flat.model.principal_start is False and flat.train.lr == lr  # 32 latents x 315 steps: a short run
    beta = resolve(_config(penalty, hidden=32, sparsity={"beta": 1e-3}), rows=500, spectrum=spectrum)
    assert beta.model.principal_start is False  # a stated beta and no target: no L0 to count components for


@pytest.mark.parametrize("change", [dict(penalty="kl"), dict(penalty="mp", k=8), dict(penalty="none", activation="relu",
                                    output_activation="linear"), dict(input_dim=784), dict(tied=True),
                                    dict(input_transform="standardize"),
                                    dict(input_dim=784, dataset="fashion-mnist")])
def test_other_families_784_columns_and_tied_codes_never_take_it(change):
    run = resolve(_config(**change), rows=500, spectrum=[100.0] * 8 + [0.0] * (change.get("input_dim", 52) - 8))
    assert run.model.principal_start is False


def test_the_families_that_can_start_so_are_named_once_in_the_registry():
    able = {name for name, family in families.FAMILIES.items() if family.principal_share is not None}
    assert able == {"l1", "topk", "batchtopk", "jumprelu", "matryoshka"}
    for name in families.FAMILIES:  # the rule follows the record: every other family refuses the same shape
        config = resolve(_config(name, hidden=32), rows=500).model
        family = families.FAMILIES[name]
        assert families.can_start_principal(family, config) is (name in able)


def test_a_stated_value_wins():
    stated = _config(principal_start=False)
    assert resolve(stated, rows=500, spectrum=CONCENTRATED).model.principal_start is False
    assert resolve(_config(principal_start=True), rows=500, spectrum=FLAT).model.principal_start is True


@pytest.mark.parametrize("argv", [["--penalty", "kl"], ["--penalty", "topk", "--k", "4", "--stream", "yes"],
                                  ["--penalty", "topk", "--k", "4", "--tied", "yes"],
                                  ["--penalty", "topk", "--k", "4", "--input-transform", "zca"]])
def test_a_stated_start_the_run_cannot_take_is_refused_before_any_write(tmp_path, capsys, argv):
    from cli_helpers import refused

    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32))
    message = refused(capsys, "train", "--dataset", "array", "--data", str(tmp_path / "x.npy"), "--hidden", "32",
                      "--principal-start", "yes", "--out", str(tmp_path / "run"), *argv)
    assert ("model.principal_start needs a one-layer, untied code of one of l1, topk, batchtopk, jumprelu, "
            "matryoshka") in message
    assert not (tmp_path / "run").exists()


def test_variance_spectrum_is_the_covariance_eigenvalues_largest_first():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64)
    spectrum = variance_spectrum(Dataset(x.float(), x[:10].float()))
    centred = x - x.mean(0)
    reference = np.sort(np.linalg.eigvalsh((centred.T @ centred / x.shape[0]).numpy()))[::-1]
    assert spectrum == pytest.approx(list(reference), rel=1e-4)
    assert spectrum[0] == pytest.approx(9.0, rel=0.1) and spectrum[2] == pytest.approx(0.01, rel=0.1)


def test_the_start_codes_each_row_by_its_k_largest_signed_principal_coefficients():
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    coef = torch.randn(500, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.1],
                                                                                dtype=torch.float64)
    x = (coef @ basis.T + torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0], dtype=torch.float64)).float()
    # 12 latents: exactly the 6 signed pairs, so the code is each row's 3 largest |coefficients| and nothing else
    cfg = resolve(RunConfig(ModelConfig(input_dim=6, hidden=[12], k=3, principal_start=True, input_scale=False),
                            SparsityConfig(penalty="topk"), TrainConfig(dataset="array", data="x.npy")))
    model = SparseAutoencoder(cfg.model)
    principal_directions_(model, x)
    mean = x.double().mean(0)
    _, _, vt = torch.linalg.svd(x.double() - mean, full_matrices=False)
    vt = vt * torch.sign(vt.gather(1, vt.abs().argmax(1, keepdim=True)))  # v_i signed: its largest |entry| positive
    dec = model.decoder_weights()[0].detach().double()  # input_dim x latents
    for i in range(6):  # latents 2i, 2i + 1 decode +v_i, -v_i
        assert torch.allclose(dec[:, 2 * i], vt[i], atol=1e-5) and torch.allclose(dec[:, 2 * i + 1], -vt[i], atol=1e-5)
    assert torch.allclose(model.output_bias().double(), mean, atol=1e-5)
    # by hand: each row's principal coefficients, the 3 largest in magnitude kept with their signs
    c = (x.double() - mean) @ vt.T
    keep = c.abs().topk(3, dim=1).indices
    expected = mean + (torch.zeros_like(c).scatter(1, keep, c.gather(1, keep))) @ vt
    model.eval()
    with torch.no_grad():
        recon = model(x).recon.double()
    assert torch.allclose(recon, expected, atol=1e-4)


def test_a_run_on_concentrated_data_records_it_and_reconstructs_below_pca(tmp_path):
    from sparseae.training.session import train

    g = np.random.default_rng(0)
    scales = np.r_[np.full(4, 10.0), np.full(28, 0.01)]
    x = (g.standard_normal((600, 32)) * scales @ np.linalg.qr(g.standard_normal((32, 32)))[0]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    config = RunConfig(ModelConfig(hidden=[32], k=4), SparsityConfig(penalty="topk"),
                       TrainConfig(dataset="array", data=str(tmp_path / "x.npy"), epochs=2, val_fraction=0.2))
    result = train(config, out=tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["principal_start"] is True and saved["train"]["lr"] == 5e-4
    assert result.history[-1]["val_fvu"] < 1e-3  # 4 components carry all but 1e-5 of the variance


@pytest.mark.parametrize("penalty", ["l1", "jumprelu"])
def test_a_penalty_family_starts_at_its_target_l0(penalty):
    g = torch.Generator().manual_seed(2)
    basis, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    scales = torch.tensor([8.0, 6.0, 5.0, 4.0, 3.0, 2.0] + [1e-3] * 6, dtype=torch.float64)
    x = (torch.randn(2000, 12, generator=g, dtype=torch.float64) * scales @ basis.T).float()
    cfg = resolve(RunConfig(ModelConfig(input_dim=12, hidden=[24], principal_start=True, input_scale=False),
                            SparsityConfig(penalty=penalty, target_l0=3.0), TrainConfig(dataset="array", data="x.npy")))
    model = SparseAutoencoder(cfg.model)
    principal_directions_(model, x, target_l0=3.0)
    model.eval()
    with torch.no_grad():
        out = model(x)
    l0 = float((out.hidden[-1][:2048] != 0).sum(1).double().mean())
    assert l0 == pytest.approx(3.0, abs=0.05)  # one threshold at the start's L0 quantile of the first 2,048 rows
    fvu = float(((out.recon.double() - x.double()) ** 2).sum() / ((x.double() - x.double().mean(0)) ** 2).sum())
    assert fvu < 0.5  # the 3 largest of 6 significant coefficients a row (shrunk, for l1, then rescaled)
