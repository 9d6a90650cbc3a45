"""L1 and JumpReLU: the pre-activation loss on dead latents, JumpReLU's tanh penalty and the defaults that
depend on the input's size (families.by_input_size)."""
import pytest
import torch

from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective


def _jumprelu(dead_window=4):
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=6, hidden=[4], topk="jumprelu", activation="relu",
                                          output_activation="linear", jumprelu_threshold=0.1,
                                          jumprelu_bandwidth=0.05, dead_window=dead_window))
    with torch.no_grad():
        model.threshold.copy_(torch.tensor([0.1, 50.0, 0.1, 50.0]))  # units 1 and 3 far above any pre-activation
    return model.train()


def _objective(penalty="jumprelu", **settings):
    return Objective(SparsityConfig(penalty=penalty, beta=0.0, **settings))


def test_preact_loss_is_the_gap_to_the_threshold_on_dead_units_only():
    model = _jumprelu()
    x = torch.randn(8, 6)
    model.examples_since_fired.copy_(torch.tensor([0.0, 10.0, 0.0, 10.0]))  # 1 and 3 silent for 10 > 4 rows
    out = model(x)
    z = out.code_preact.detach()
    norms = model.decoder[0].weight.detach().norm(dim=0)
    theta = model.gate_threshold().detach()
    # the forward pass counted 8 more rows: units that stayed silent are dead, whatever they were before
    dead = (model.examples_since_fired >= 4).float()
    expected = (torch.relu(theta - z) * norms * dead).sum(1).mean()
    assert dead[1] == dead[3] == 1.0 and expected > 0
    assert _objective().revival(model, out).item() == pytest.approx(expected.item(), rel=1e-5)


def test_preact_loss_moves_a_dead_units_threshold_and_pre_activations():
    x = torch.randn(8, 6)
    grads = {}
    for coef in (0.0, 1e-2):
        model = _jumprelu()
        model.examples_since_fired.fill_(100.0)
        out = model(x)
        _objective(preact_coef=coef)(model, out).total.backward()
        grads[coef] = (model.threshold.grad.clone(), model.encoder[0].bias.grad.clone())
    theta0, bias0 = grads[0.0]
    theta1, bias1 = grads[1e-2]
    # no gradient from the reconstruction or the gates reaches units 1 and 3 (never above 50)
    assert theta0[[1, 3]].abs().max() == 0 and bias0[[1, 3]].abs().max() == 0
    # with the loss: the threshold falls (positive gradient) and the pre-activations rise (negative)
    assert (theta1[[1, 3]] > 0).all() and (bias1[[1, 3]] < 0).all()


def test_jumprelu_tanh_penalty_value():
    model = _jumprelu()
    out = model(torch.randn(8, 6))
    h = out.hidden[-1]
    norms = model.decoder[0].weight.detach().norm(dim=0)
    obj = Objective(SparsityConfig(penalty="jumprelu", beta=2.0, jumprelu_tanh=0.5))
    obj.step = None
    expected = 2.0 * torch.tanh(0.5 * h.detach() * norms).sum(1).mean()
    assert obj.penalty(out.hidden, model, out).item() == pytest.approx(expected.item(), rel=1e-5)
    count = Objective(SparsityConfig(penalty="jumprelu", beta=2.0, jumprelu_tanh=0.0))
    assert count.penalty(out.hidden, model, out).item() == pytest.approx(2.0 * (h != 0).sum(1).float().mean().item())


def _resolved(penalty, input_dim):
    return resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty=penalty, target_l0=4),
                             TrainConfig(dataset="array", data="x.npy")), input_dim=input_dim)


def test_small_inputs_take_their_own_recipe_and_784_columns_keep_fashion_mnists():
    small, big = _resolved("jumprelu", 64), _resolved("jumprelu", 784)
    assert (small.sparsity.jumprelu_tanh, small.model.unit_norm_decoder, small.train.recon, small.train.lr_decay) \
        == (0.75, False, "mse", 0.2)
    assert (big.sparsity.jumprelu_tanh, big.model.unit_norm_decoder, big.train.recon, big.train.lr_decay) \
        == (0.0, True, "fvu", 0.0)
    assert (small.sparsity.preact_coef, big.sparsity.preact_coef) == (1e-2, 0.0)
    small, big = _resolved("l1", 64), _resolved("l1", 784)
    assert (small.train.lr, small.train.lr_decay, big.train.lr, big.train.lr_decay) == (1e-2, 0.2, 3e-3, 0.0)
    assert (small.sparsity.preact_coef, big.sparsity.preact_coef, small.model.dead_window) == (5e-4, 0.0, 2000)


def test_preact_loss_needs_a_one_layer_l1_or_jumprelu_model():
    with pytest.raises(SparseAEError, match="preact_coef"):
        resolve(RunConfig(ModelConfig(hidden=[64], k=4), SparsityConfig(penalty="topk", preact_coef=1e-3),
                          TrainConfig(dataset="array", data="x.npy")), input_dim=16)
    deep = resolve(RunConfig(ModelConfig(hidden=[32, 16]), SparsityConfig(penalty="l1"),
                             TrainConfig(dataset="array", data="x.npy")), input_dim=16)
    assert deep.sparsity.preact_coef == 0.0  # a stacked model keeps the plain recipe
