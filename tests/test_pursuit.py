"""Pursuit over a dictionary (model/pursuit.py), encode(method=...), the MP family and `eval --encode`."""
import json

import pytest
import torch

import sparseae
from sparseae import families
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, resolve
from sparseae.model import SparseAutoencoder
from sparseae.model.pursuit import ENCODE_METHODS, matching_pursuit, omp, pursuit_code, unit_atoms


def _orthonormal(d, n, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q[:, :n]


def _sparse_rows(n_rows, n_atoms, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    coef = torch.zeros(n_rows, n_atoms, dtype=torch.float64)
    for i in range(n_rows):
        idx = torch.randperm(n_atoms, generator=g)[:k]
        coef[i, idx] = (1 + torch.rand(k, generator=g, dtype=torch.float64)) * torch.where(
            torch.rand(k, generator=g) < 0.5, -1.0, 1.0).double()
    return coef


@pytest.mark.parametrize("method", ["omp", families.MP])
def test_an_exact_k_sparse_combination_of_orthonormal_atoms_is_recovered(method):
    atoms = _orthonormal(12, 10)
    coef = _sparse_rows(30, 10, 3)
    y = coef @ atoms.t()
    code = pursuit_code(y, atoms * 3.0, 3, method)  # columns of norm 3: the code is coef / 3
    torch.testing.assert_close(code * 3.0, coef)
    assert int((code != 0).sum(1).max()) == 3


def test_omp_residual_is_orthogonal_to_the_chosen_atoms():
    g = torch.Generator().manual_seed(4)
    atoms, _ = unit_atoms(torch.randn(8, 20, generator=g, dtype=torch.float64))
    y = torch.randn(16, 8, generator=g, dtype=torch.float64)
    coef, residual_sq = omp(y, atoms, 5)
    residual = y - coef @ atoms.t()
    chosen = coef != 0
    assert int(chosen.sum(1).min()) == 5
    dots = residual @ atoms  # correlation of the residual with every atom
    assert dots[chosen].abs().max() < 1e-8
    torch.testing.assert_close(residual_sq, residual.pow(2).sum(1))


def test_omp_warm_start_keeps_the_start_and_is_never_worse_than_least_squares_on_it():
    g = torch.Generator().manual_seed(5)
    atoms, _ = unit_atoms(torch.randn(8, 20, generator=g, dtype=torch.float64))
    y = torch.randn(16, 8, generator=g, dtype=torch.float64)
    start = torch.stack([torch.randperm(20, generator=g)[:2] for _ in range(16)])
    coef, residual_sq = omp(y, atoms, 4, start=start)
    assert bool((coef.gather(1, start) != 0).all()) and int((coef != 0).sum(1).max()) == 4
    ls, ls_residual = omp(y, atoms, 2, start=start)  # k == start: least squares on the start only
    assert bool((residual_sq <= ls_residual + 1e-12).all())
    # hand check of one row's least squares: the normal equations
    s = start[0]
    h = torch.linalg.solve(atoms[:, s].t() @ atoms[:, s], atoms[:, s].t() @ y[0])
    torch.testing.assert_close(ls[0, s], h, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("nonneg", [False, True])
def test_matching_pursuit_residual_norm_never_grows(nonneg):
    g = torch.Generator().manual_seed(6)
    weight = torch.randn(10, 40, generator=g, dtype=torch.float64)
    y = torch.randn(25, 10, generator=g, dtype=torch.float64)
    norms = [y.pow(2).sum(1)]
    for k in range(1, 9):
        code, _, (values, indices) = matching_pursuit(y, weight, k, nonneg)
        norms.append((y - code @ weight.t()).pow(2).sum(1))
        assert values.shape == indices.shape == (25, k)
        if nonneg:
            assert bool((code >= 0).all())
    for before, after in zip(norms, norms[1:]):
        assert bool((after <= before + 1e-10).all())
    assert bool((norms[-1] < norms[0]).all())


def test_matching_pursuit_gradient_matches_central_differences():
    """The MP family trains through its forward pass: the coefficients are differentiable in the
    input and the dictionary for a fixed choice of atoms (no tie within a step of the difference)."""
    g = torch.Generator().manual_seed(7)
    weight = torch.randn(6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)

    def loss(y, weight):
        code = matching_pursuit(y, weight, 3, nonneg=False)[0]
        return (y - code @ weight.t()).pow(2).sum() + code.pow(2).sum()

    assert torch.autograd.gradcheck(loss, (y, weight), eps=1e-6, atol=1e-5)


def _model(penalty, k=4, **model):
    config = resolve(RunConfig(ModelConfig(input_dim=12, hidden=[32], k=k, **model), SparsityConfig(penalty=penalty)))
    return SparseAutoencoder(config.model)


def test_encode_methods_keep_k_atoms_and_omp_beats_the_encoder():
    model = _model(families.TOPK).eval()
    x = torch.rand(200, 12)
    with torch.no_grad():
        target = model.input_transform(x)
        errors = {}
        for method in ENCODE_METHODS:
            code = model.encode(x, method=method)
            assert int((code != 0).sum(1).max()) <= 4
            errors[method] = (model.decode(code) - target).pow(2).sum().item()
        assert int((model.encode(x, method="omp", k=6) != 0).sum(1).max()) == 6
    # OMP is warm-started from the encoder's support: never worse than least squares on it
    assert errors["omp"] < errors[families.TOPK]


def test_mp_family_code_is_its_own_pursuit_and_trains():
    model = _model(families.MP)
    assert model.config.topk == families.MP and model.config.unit_norm_decoder
    x = torch.rand(64, 12)
    out = model(x)
    assert int((out.hidden[-1] != 0).sum(1).max()) <= 4
    (out.recon - out.target).pow(2).mean().backward()
    assert model.decoder[0].weight.grad is not None and model.decoder[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), model.encode(x, method=families.MP))
        torch.testing.assert_close(model.decode(model.encode(x)), model(x).recon, rtol=1e-5, atol=1e-6)


def test_pursuit_is_refused_in_one_line_for_a_deep_or_sigmoid_model():
    deep = SparseAutoencoder(ModelConfig(input_dim=12, hidden=[16, 8]))
    with pytest.raises(sparseae.SparseAEError, match="needs a one-layer model with a linear output"):
        deep.encode(torch.rand(3, 12), method="omp")
    kl = SparseAutoencoder(resolve(RunConfig(ModelConfig(input_dim=12, hidden=[16]))).model)
    with pytest.raises(sparseae.SparseAEError, match="linear output"):
        kl.encode(torch.rand(3, 12), method=families.MP)
    with pytest.raises(sparseae.SparseAEError, match="needs k between 1 and 16"):
        SparseAutoencoder(resolve(RunConfig(ModelConfig(input_dim=12, hidden=[16]),
                                            SparsityConfig(penalty=families.L1))).model).encode(
            torch.rand(3, 12), method="omp")
    with pytest.raises(sparseae.SparseAEError, match="encode method must be one of"):
        _model(families.TOPK).encode(torch.rand(3, 12), method="lasso")
    with pytest.raises(sparseae.SparseAEError, match="penalty 'mp' needs a one-layer model"):
        resolve(RunConfig(ModelConfig(input_dim=12, hidden=[16, 8], k=2), SparsityConfig(penalty=families.MP)))


def test_cli_encode_choices_are_the_models():
    from sparseae.cli import args as flags

    assert [families.TOPK, *flags.OTHER_FLAGS["--encode"]["choices"]] == list(ENCODE_METHODS)


def test_eval_encode_prints_both_fvus_and_refuses_a_kl_model(tmp_path, capsys):
    import numpy as np

    from sparseae.cli import main

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((400, 12)).astype(np.float32))
    data = ["--dataset", "array", "--data", str(path), "--epochs", "1", "--hidden", "16", "--quiet"]
    assert main(["train", *data, "--penalty", "topk", "--k", "3", "--out", str(tmp_path / "topk")]) == 0
    assert main(["train", *data, "--out", str(tmp_path / "kl")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "topk"), "--encode", "omp"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encode"]["method"] == "omp" and report["encode"]["l0"] <= 3
    assert 0 <= report["encode"]["fvu"] < report["fvu"]
    assert main(["eval", str(tmp_path / "kl"), "--encode", "omp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a one-layer model with a linear output" in err[0]
