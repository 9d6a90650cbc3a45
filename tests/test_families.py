"""JumpReLU and Matryoshka: each family's defining property (issue 11)."""

import pytest
import torch

from sparseae.cli.args import training_config
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.data import Dataset
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder
from sparseae.model.codes import jumprelu_activation, jumprelu_l0
from sparseae.objective import Objective
from sparseae.objective.objective import reconstruction_loss
from sparseae.training import train


def _sparse_data(n=2048, d=32, atoms=48, active=3, seed=0):
    """Rows that are sums of `active` of `atoms` random directions with positive weights; atom i is drawn
    with probability ~ 1/(i+1) (a few common features, many rare ones, as in natural data)."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, d, generator=g), dim=1)
    p = 1.0 / torch.arange(1, atoms + 1)
    idx = torch.multinomial(p.expand(n, -1), active, replacement=False, generator=g)
    w = torch.zeros(n, atoms).scatter(1, idx, 0.5 + torch.rand(n, active, generator=g))
    return w @ dictionary + 0.5


def _config(*argv: str):
    return training_config(argv)


# --- JumpReLU ------------------------------------------------------------------------------------

def test_jumprelu_passes_values_above_each_units_threshold_and_zero_below():
    z = torch.tensor([[0.5, 0.05, 2.0], [-1.0, 0.3, 0.25]])
    theta = torch.tensor([0.4, 0.01, 3.0])
    h = jumprelu_activation(z, theta, 0.05)
    assert torch.equal(h, torch.tensor([[0.5, 0.05, 0.0], [0.0, 0.3, 0.0]]))  # no shrinkage above the threshold
    assert torch.equal(jumprelu_l0(z, theta, 0.05), torch.tensor([2.0, 1.0]))


def test_jumprelu_straight_through_gradients():
    eps = 0.1
    theta = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    z = torch.tensor([[1.02, 0.97, 2.0]], requires_grad=True)  # units 0 and 1 within eps/2 of the threshold
    jumprelu_activation(z, theta, eps).sum().backward()
    # d/dtheta z H(z - theta) ~ -(theta / eps) K((z - theta) / eps): only inside the band
    assert torch.allclose(theta.grad, torch.tensor([-10.0, -10.0, 0.0]))
    assert torch.equal(z.grad, torch.tensor([[1.0, 0.0, 1.0]]))
    theta.grad = None
    z.grad = None
    jumprelu_l0(z, theta, eps).sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([-10.0, -10.0, 0.0]))  # -(1/eps) K(...)
    assert z.grad is None or not z.grad.any()  # the count passes no gradient to the pre-activations


def test_jumprelu_l0_penalty_raises_thresholds_and_lowers_l0():
    x = _sparse_data()
    data = Dataset(x[:1792], x[1792:])
    l0 = {}
    for beta in (0.0, 3e-2):
        c = _config("--penalty", "jumprelu", "--hidden", "64", "--epochs", "6", "--batch-size", "64",
                    "--beta", str(beta), "--lr", "3e-3", "--device", "cpu")
        res = train(c, dataset=data, progress=False)
        l0[beta] = res.history[-1]["l0"]
        if beta:
            assert res.model.threshold.mean().item() > c.model.jumprelu_threshold  # pushed up by the penalty
    assert l0[3e-2] < 0.5 * l0[0.0]


def test_jumprelu_thresholds_are_saved_with_the_model(tmp_path):
    c = _config("--penalty", "jumprelu", "--hidden", "16", "--epochs", "1", "--batch-size", "64", "--device", "cpu")
    x = _sparse_data(n=256)
    res = train(c, out=tmp_path / "run", dataset=Dataset(x[:192], x[192:]), progress=False)
    from sparseae.run.rundir import load_run
    assert torch.equal(load_run(tmp_path / "run").threshold, res.model.threshold.detach())


def test_jumprelu_needs_its_code_layer():
    with pytest.raises(SparseAEError, match="jumprelu"):
        RunConfig(ModelConfig(hidden=[8], topk="topk", k=2), SparsityConfig(penalty="jumprelu")).validate()


# --- Matryoshka ----------------------------------------------------------------------------------

def test_matryoshka_loss_is_the_mean_over_nested_prefixes():
    c = RunConfig(ModelConfig(input_dim=6, hidden=[8], k=3), SparsityConfig(penalty="matryoshka", prefixes=[2, 4]))
    c.validate()
    model = SparseAutoencoder(c.model)
    model.train()
    x = torch.rand(5, 6)
    out = model(x)
    code, w, b = out.hidden[-1], model.decoder[0].weight, model.output_bias()
    expected = sum(reconstruction_loss(code[:, :m] @ w[:, :m].t() + b, out.target) for m in (2, 4, 8)) / 3
    assert Objective(c.sparsity)(model, out).recon.item() == pytest.approx(expected.item(), rel=1e-5)
    assert c.sparsity.prefix_sizes(64) == [2, 4, 64]
    assert SparsityConfig().prefix_sizes(64) == [4, 8, 16, 32, 64]


@pytest.mark.parametrize("input_dim,hidden,prefixes,sizes", [
    (32, 256, [64, 128], [64, 128, 256]),      # below 784 inputs: code / 4, / 2
    (783, 1024, [256, 512], [256, 512, 1024]),
    (32, 3, [1], [1, 3]),                      # too small a code for / 4
    (784, 1024, None, [64, 128, 256, 512, 1024]),  # FashionMNIST's size: None, read as the halvings from / 16
    (4096, 256, None, [16, 32, 64, 128, 256])])
def test_matryoshka_prefixes_by_input_size(input_dim, hidden, prefixes, sizes):
    c = resolve(RunConfig(ModelConfig(hidden=[hidden], k=1), SparsityConfig(penalty="matryoshka"),
                          TrainConfig(dataset="array", data="rows.npy")), rows=1000, input_dim=input_dim)
    assert c.sparsity.prefixes == prefixes
    assert c.sparsity.prefix_sizes(hidden) == sizes
    assert RunConfig.from_dict(c.to_dict()).sparsity.prefixes == prefixes  # what config.json records


def test_stated_matryoshka_prefixes_win_on_small_inputs():
    c = resolve(RunConfig(ModelConfig(hidden=[256], k=3), SparsityConfig(penalty="matryoshka", prefixes=[16, 32]),
                          TrainConfig(dataset="array", data="rows.npy")), rows=1000, input_dim=32)
    assert c.sparsity.prefix_sizes(256) == [16, 32, 256]


def test_fashion_mnist_matryoshka_config_keeps_no_prefixes():
    c = resolve(RunConfig(ModelConfig(hidden=[1024], k=32), SparsityConfig(penalty="matryoshka")))
    assert c.sparsity.prefixes is None
    assert "prefixes" not in c.to_dict()["sparsity"]


def _prefix_fvu(model, x, m):
    model.eval()
    with torch.no_grad():
        code = model.encode(x)
        code[:, m:] = 0
        rec = model.decode(code)
    return ((rec - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def test_matryoshka_prefix_reconstructs_alone_where_batchtopk_does_not():
    """The defining property: the first units of a Matryoshka dictionary are a usable small dictionary."""
    x = _sparse_data()
    data = Dataset(x[:1792], x[1792:])
    fvu = {}
    for family in ("batchtopk", "matryoshka"):
        c = _config("--penalty", family, "--k", "4", "--hidden", "64", "--epochs", "6", "--batch-size", "64",
                    "--lr", "3e-3", "--device", "cpu", *(["--prefixes", "8,16,32"] if family == "matryoshka" else []))
        res = train(c, dataset=data, progress=False)
        fvu[family] = (_prefix_fvu(res.model, data.test, 8), res.history[-1]["val_fvu"])
    assert fvu["matryoshka"][0] < 0.75 * fvu["batchtopk"][0]  # the 8-unit prefix alone
    assert fvu["matryoshka"][1] < 1.5 * fvu["batchtopk"][1] + 0.02  # at little cost to the full code


def test_matryoshka_needs_a_linear_one_layer_model():
    with pytest.raises(SparseAEError, match="matryoshka"):
        RunConfig(ModelConfig(hidden=[8], k=2, output_activation="sigmoid"),
                  SparsityConfig(penalty="matryoshka")).validate()
    with pytest.raises(SparseAEError, match="prefixes"):
        RunConfig(ModelConfig(hidden=[8], k=2), SparsityConfig(penalty="matryoshka", prefixes=[8])).validate()


def test_sweep_sets_every_family_against_pca(tmp_path):
    from sparseae.analysis.sweep import run_sweep

    x = _sparse_data(n=512)
    base = RunConfig(ModelConfig(hidden=[32]), train=TrainConfig(epochs=1, batch_size=64))
    grid = {"topk": [4], "batchtopk": [4], "matryoshka": [4], "jumprelu": [1e-3], "l1": [1e-3], "kl": [1e-3]}
    rows = run_sweep(base, grid, tmp_path / "sw", Dataset(x[:448], x[448:]), progress=False)
    assert [r["method"] for r in rows] == list(grid)
    for r in rows:
        assert r["pca_fvu"] > 0 and r["ratio_to_pca"] == pytest.approx(r["fvu"] / r["pca_fvu"])
    assert "ratio to PCA" in (tmp_path / "sw" / "sweep.md").read_text()
    assert (tmp_path / "sw" / "fvu_vs_l0.png").stat().st_size > 0
