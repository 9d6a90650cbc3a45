"""TopK / BatchTopK code layers, unit-norm decoders, dead-unit tracking, AuxK."""
import pytest
import torch

from sparseae.cli import main
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.data import Dataset
from sparseae.errors import SparseAEError
from sparseae.objective.metrics import evaluate, unit_firing_frequency
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.model.codes import batchtopk_activation, remove_parallel_grad_, threshold_activation, topk_select
from sparseae.objective.auxk import auxk_loss
from sparseae.training import fit, train


def _data(n=256, d=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(6, d, generator=g)
    x = torch.rand(n, 6, generator=g) @ basis
    return torch.sigmoid(x)


def _fit(model, sparsity=None, epochs=3, x=None):
    x = _data() if x is None else x
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3).resolved()
    fit(model, Objective(sparsity or SparsityConfig(penalty="topk")), x, x[:64], cfg, progress=False)
    return x


def test_topk_activation_keeps_k_largest_and_gradient_only_through_support():
    z = torch.tensor([[0.3, -1.0, 2.0, 0.5, 0.1], [5.0, 4.0, -3.0, 0.0, 1.0]], requires_grad=True)
    h, values, indices = topk_select(z, 2, torch.relu)
    assert torch.equal(h.detach(), torch.tensor([[0.0, 0.0, 2.0, 0.5, 0.0], [5.0, 4.0, 0.0, 0.0, 0.0]]))
    # the support: each row's kept values at their indices (in no particular order)
    assert torch.equal(torch.zeros(2, 5).scatter(1, indices, values.detach()), h.detach())
    (h * torch.arange(1.0, 6.0)).sum().backward()
    assert torch.equal(z.grad, torch.tensor([[0.0, 0.0, 3.0, 4.0, 0.0], [1.0, 2.0, 0.0, 0.0, 0.0]]))


def test_topk_linear_keeps_negative_values_of_the_support():
    z = torch.tensor([[-3.0, -1.0, -2.0]])
    assert torch.equal(topk_select(z, 1, lambda v: v)[0], torch.tensor([[0.0, -1.0, 0.0]]))


def test_batchtopk_keeps_k_times_batch_over_the_batch():
    z = torch.tensor([[3.0, 2.0, 1.0], [0.5, 0.4, -1.0]])
    code, smallest = batchtopk_activation(z, 1, torch.relu)
    assert torch.equal(code, torch.tensor([[3.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    assert smallest.item() == 2.0
    assert torch.equal(threshold_activation(z, torch.tensor(0.45), torch.relu),
                       torch.tensor([[3.0, 2.0, 1.0], [0.5, 0.0, 0.0]]))


@pytest.mark.parametrize("variant", ["modern", "original"])
def test_trained_topk_model_encodes_at_most_k_units(variant):
    if variant == "modern":
        cfg = ModelConfig(input_dim=24, hidden=[40], activation="relu", output_activation="linear",
                          topk="topk", k=5, unit_norm_decoder=True, pre_bias=True, encode_alpha=1.0)
    else:  # Makhzani & Frey: linear units, tied weights
        cfg = ModelConfig(input_dim=24, hidden=[40], activation="linear", output_activation="linear",
                          topk="topk", k=5, tied=True, encode_alpha=1.0)
    model = SparseAutoencoder(cfg)
    x = _fit(model)
    model.eval()
    nnz = (model.encode(x) != 0).sum(1)
    assert nnz.max().item() <= 5
    assert evaluate(model, x)["l0"] <= 5


def test_encode_alpha_keeps_alpha_k_at_encode_time_only():
    model = SparseAutoencoder(ModelConfig(input_dim=24, hidden=[40], activation="linear", topk="topk", k=4,
                                          encode_alpha=2.5)).eval()
    x = _data(32)
    assert (model.encode(x) != 0).sum(1).max().item() == 10  # round(2.5 * 4)
    assert (model(x).hidden[-1] != 0).sum(1).max().item() == 4  # reconstruction still uses k


def test_unit_norm_decoder_columns_after_training():
    model = SparseAutoencoder(ModelConfig(input_dim=24, hidden=[40], activation="relu",
                                          output_activation="linear", topk="topk", k=5, unit_norm_decoder=True))
    # the encoder starts as the decoder's transpose
    assert torch.allclose(model.encoder[0].weight, model.decoder[0].weight.t())
    _fit(model, epochs=4)
    norms = model.decoder[0].weight.norm(dim=0)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_unit_norm_tied_decoder_rows_of_encoder():
    model = SparseAutoencoder(ModelConfig(input_dim=24, hidden=[30], activation="linear",
                                          output_activation="linear", topk="topk", k=4, tied=True,
                                          unit_norm_decoder=True))
    _fit(model, epochs=2)
    norms = model.encoder[0].weight.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_remove_parallel_grad_leaves_gradient_orthogonal_to_columns():
    w = torch.randn(6, 4, requires_grad=True)
    w.grad = torch.randn(6, 4)
    before = w.grad.clone()
    remove_parallel_grad_(w, 0)
    unit = w.detach() / w.detach().norm(dim=0)
    assert torch.allclose((w.grad * unit).sum(0), torch.zeros(4), atol=1e-6)
    # the orthogonal part is unchanged
    expect = before - (before * unit).sum(0) * unit
    assert torch.allclose(w.grad, expect, atol=1e-6)


def test_batchtopk_model_learns_threshold_and_uses_it_in_eval():
    model = SparseAutoencoder(ModelConfig(input_dim=24, hidden=[40], activation="relu",
                                          output_activation="linear", topk="batchtopk", k=4))
    assert model.batchtopk_threshold.item() < 0
    model.train()
    out = model(_data(32))
    assert (out.hidden[-1] != 0).sum().item() <= 4 * 32
    x = _fit(model, epochs=2)
    thr = model.batchtopk_threshold.item()
    assert thr > 0
    model.eval()
    code = model.encode(x)
    assert code[code != 0].min().item() > thr
    assert "batchtopk_threshold" in model.state_dict()  # saved with the model


def test_dead_unit_tracking_counts_examples_since_firing():
    model = SparseAutoencoder(ModelConfig(input_dim=3, hidden=[3], activation="relu", dead_window=10))
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.eye(3))
        model.encoder[0].bias.zero_()
    model.train()
    model(torch.tensor([[1.0, 0.0, 0.0]] * 4))
    assert model.examples_since_fired.tolist() == [0, 4, 4]
    model(torch.tensor([[0.0, 1.0, 0.0]] * 6))
    assert model.examples_since_fired.tolist() == [6, 0, 10]
    assert model.dead_mask().tolist() == [False, False, True]
    assert model.firing_stats()["dead_window_fraction"] == pytest.approx(1 / 3)
    model.eval()
    model(torch.ones(5, 3))  # evaluation does not count
    assert model.examples_since_fired.tolist() == [6, 0, 10]


def test_auxk_loss_hand_computed():
    pre = torch.tensor([[1.0, 3.0, -1.0, 2.0], [1.0, 3.0, -1.0, 2.0]])
    dead = torch.tensor([False, True, True, True])
    residual = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    w = torch.tensor([[1.0, 0.5, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])  # out x code
    # k_aux=2 dead units per row: units 1 (3.0) and 3 (2.0) -> e_hat = 3*w[:,1] + 2*w[:,3] = (3.5, 3)
    # sum ||e - e_hat||^2 = (2.5^2 + 3^2) + (3.5^2 + 3^2) = 36.5; sum ||e - mean e||^2 = 0.5
    expect = torch.tensor(36.5 / 0.5)
    assert torch.allclose(auxk_loss(pre, dead, residual, w, 2), expect)
    assert auxk_loss(pre, torch.zeros(4, dtype=torch.bool), residual, w, 2).item() == 0.0


def test_auxk_adds_to_the_sparsity_part_and_reaches_dead_units():
    model = SparseAutoencoder(ModelConfig(input_dim=24, hidden=[40], activation="relu",
                                          output_activation="linear", topk="topk", k=3, dead_window=1))
    model.train()
    x = _data(64)
    model(x)  # after one batch most units have not fired for >= 1 example: dead
    assert model.dead_mask().any()
    out = model(x)
    parts = Objective(SparsityConfig(penalty="topk", auxk=True))(model, out)
    assert parts.sparsity.item() > 0
    parts.total.backward()
    dead = model.dead_mask()
    assert model.encoder[0].weight.grad[dead].abs().sum().item() > 0


def test_sigmoid_l0_counts_values_above_threshold():
    model = SparseAutoencoder(ModelConfig(input_dim=4, hidden=[3], activation="sigmoid"))
    assert model.active_threshold == 1e-2
    with torch.no_grad():
        model.encoder[0].weight.zero_()
        model.encoder[0].bias.copy_(torch.tensor([-10.0, 0.0, 10.0]))  # sigmoid: 4.5e-5, 0.5, 1.0
    x = torch.rand(8, 4)
    assert evaluate(model, x)["l0"] == 2.0
    assert evaluate(model, x, active_threshold=0.0)["l0"] == 3.0
    assert unit_firing_frequency(model, x).tolist() == [0.0, 1.0, 1.0]


def test_train_writes_feature_density_and_dead_window_metric(tmp_path):
    x = _data(200)
    ds = Dataset(x, x[:50])
    config = RunConfig(ModelConfig(hidden=[16], activation="relu", output_activation="linear", k=3),
                       SparsityConfig(penalty="topk", auxk=True), TrainConfig(epochs=1, batch_size=50))
    res = train(config, tmp_path / "run", ds, progress=False)
    assert res.config.model.topk == "topk"  # --penalty topk implies the TopK code layer
    assert config.model.topk == "none"  # the caller's configuration is left as it is
    assert (tmp_path / "run" / "feature_density.png").stat().st_size > 0
    assert "dead_window_fraction" in res.history[-1]


@pytest.mark.parametrize("argv, needle", [
    (["--penalty", "topk", "--k", "300", "--hidden", "256"], "k must be at most the code size 256"),
    (["--penalty", "topk", "--k", "10", "--encode-alpha", "0.5"], "encode_alpha must be >= 1"),
    (["--topk", "topk"], "k must be a positive integer"),
    (["--topk", "sometimes", "--k", "3"], "topk must be one of"),
    (["--penalty", "l1", "--auxk"], "auxk needs a topk"),
])
def test_bad_topk_input_exits_2(argv, needle, capsys, tmp_path):
    assert main(["train", *argv, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_k_larger_than_hidden_library_error():
    with pytest.raises(SparseAEError, match="k must be at most"):
        SparseAutoencoder(ModelConfig(hidden=[8], topk="topk", k=9))
