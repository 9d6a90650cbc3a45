"""The four defects of the seed tutorial's KL term (../shared/ANCHORS.md section 1), one test each."""
import pytest
import torch

from sparseae import ModelConfig, Objective, SparseAutoencoder, SparsityConfig
from sparseae.objective.penalties import kl_divergence, kl_penalty


def deep_model():
    torch.manual_seed(0)
    return SparseAutoencoder(ModelConfig(input_dim=12, hidden=[10, 8, 4], activation="sigmoid"))


def test_defect_1_rho_hat_is_the_per_unit_mean_over_examples():
    h = torch.tensor([[0.9, 0.1], [0.7, 0.1], [0.8, 0.1]])
    # per unit over examples: (0.8, 0.1); the tutorial's mean over units of one sample would give 0.5, 0.4, 0.45
    expected = kl_divergence(0.05, torch.tensor(0.8)) + kl_divergence(0.05, torch.tensor(0.1))
    assert kl_penalty(h, 0.05).item() == pytest.approx(expected.item(), rel=1e-6)


def test_defect_2_penalty_uses_the_forward_pass_the_model_makes():
    model = deep_model()
    calls = []
    for layer in list(model.encoder) + list(model.decoder):
        layer.register_forward_hook(lambda m, i, o: calls.append(m))
    x = torch.rand(5, 12)
    objective = Objective(SparsityConfig(penalty="kl", rho=0.05, beta=1.0))
    out = model(x)
    parts = objective(model, out)
    n_layers = len(model.encoder) + len(model.decoder)
    assert len(calls) == n_layers  # one pass, no second pass for the penalty
    # and the penalty is the KL of exactly the code the model computed (with its activation)
    assert parts.sparsity.item() == pytest.approx(kl_penalty(out.hidden[-1], 0.05).item(), rel=1e-6)
    assert torch.allclose(out.hidden[-1], torch.sigmoid(model.encoder[2](out.hidden[1])))


def test_defect_3_only_the_code_layer_is_penalised_by_default():
    model = deep_model()
    out = model(torch.rand(6, 12))
    assert SparsityConfig().layers == [-1]
    objective = Objective(SparsityConfig(penalty="kl", rho=0.05, beta=1.0))
    assert objective.penalty(out.hidden).item() == pytest.approx(kl_penalty(out.hidden[-1], 0.05).item(), rel=1e-6)
    # gradients of the penalty reach the code layer's weights, not the output layer's
    objective.penalty(out.hidden).backward()
    assert model.decoder[-1].weight.grad is None
    assert model.encoder[-1].weight.grad.abs().sum() > 0
    # choosing layers explicitly penalises each of them
    both = Objective(SparsityConfig(penalty="kl", rho=0.05, beta=1.0, layers=[0, -1]))
    expected = kl_penalty(out.hidden[0], 0.05) + kl_penalty(out.hidden[-1], 0.05)
    assert both.penalty(out.hidden).item() == pytest.approx(expected.item(), rel=1e-6)


def test_defect_4_penalty_does_not_grow_with_batch_size():
    model = deep_model()
    objective = Objective(SparsityConfig(penalty="kl", rho=0.05, beta=1.0))
    x = torch.rand(8, 12)
    small = objective.penalty(model(x).hidden).item()
    large = objective.penalty(model(x.repeat(32, 1)).hidden).item()
    assert large == pytest.approx(small, rel=1e-5)
