import math

import pytest
import torch

from sparseae import ModelConfig, Objective, SparseAutoencoder, SparsityConfig, SparseAEError
from sparseae.objective.penalties import (RunningMean, kl_divergence, kl_penalty, l1_penalty, mean_activation,
                                         weight_decay)


def test_kl_reference_values():
    # ../shared/ANCHORS.md section 3 (Bernoulli KL), given to 6 decimals: within 1e-6 (the library's logs
    # may differ in the last bits by CPU; rounding would flip on a value near a rounding boundary)
    assert kl_divergence(0.05, 0.2).item() == pytest.approx(0.093943, abs=1e-6)
    assert kl_divergence(0.05, 0.5).item() == pytest.approx(0.494632, abs=1e-6)
    assert kl_divergence(0.1, 0.3).item() == pytest.approx(0.116322, abs=1e-6)
    assert kl_divergence(0.3, 0.3).item() == pytest.approx(0.0, abs=1e-15)


def test_kl_hand_computed():
    rho, q = 0.05, 0.2
    expected = rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))
    assert kl_divergence(rho, torch.tensor(q, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


def test_kl_finite_at_the_edges():
    q = torch.tensor([0.0, 1.0, 1e-30, 1 - 1e-12], dtype=torch.float32, requires_grad=True)
    v = kl_divergence(0.05, q)
    assert torch.isfinite(v).all()
    v.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("rho", [0.0, 1.0, -0.1, 1.5, float("nan"), torch.tensor([0.5, 1.0])])
def test_kl_rejects_rho_outside_unit_interval(rho):
    with pytest.raises(SparseAEError, match="rho"):
        kl_divergence(rho, 0.3)


def test_rho_hat_is_mean_over_examples_not_units():
    h = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.7, 0.5]])
    assert torch.allclose(mean_activation(h), torch.tensor([0.2, 0.8, 0.5]))
    expected = sum(kl_divergence(0.05, q).item() for q in (0.2, 0.8, 0.5))
    assert kl_penalty(h, 0.05).item() == pytest.approx(expected, rel=1e-6)


def test_penalties_do_not_grow_with_batch_size():
    h = torch.rand(8, 5)
    big = h.repeat(16, 1)  # same distribution of activations, 16x the examples
    assert kl_penalty(big, 0.05).item() == pytest.approx(kl_penalty(h, 0.05).item(), rel=1e-5)
    assert l1_penalty(big).item() == pytest.approx(l1_penalty(h).item(), rel=1e-5)


def test_kl_gradient_matches_central_differences():
    torch.manual_seed(1)
    h = torch.rand(6, 4, dtype=torch.float64) * 0.8 + 0.1
    h.requires_grad_(True)
    kl_penalty(h, 0.05).backward()
    eps = 1e-6
    num = torch.zeros_like(h)
    for idx in torch.cartesian_prod(torch.arange(6), torch.arange(4)):
        i, j = idx.tolist()
        hp, hm = h.detach().clone(), h.detach().clone()
        hp[i, j] += eps
        hm[i, j] -= eps
        num[i, j] = (kl_penalty(hp, 0.05) - kl_penalty(hm, 0.05)) / (2 * eps)
    assert torch.allclose(h.grad, num, rtol=1e-7, atol=1e-9)
    # Ng's closed form: d/dh_ij = (1/m) * (-rho/rho_hat_j + (1-rho)/(1-rho_hat_j))
    q = h.detach().mean(0)
    closed = ((-0.05 / q + 0.95 / (1 - q)) / 6).expand_as(h)
    assert torch.allclose(h.grad, closed, rtol=1e-10)


def test_l1_and_weight_decay_values():
    h = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert l1_penalty(h).item() == pytest.approx((3.0 + 0.5) / 2)
    w = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])]
    assert weight_decay(w, 0.1).item() == pytest.approx(0.05 * (1 + 4 + 9))


def test_running_mean_keeps_gradient_on_current_batch():
    rm = RunningMean(0.9)
    a = torch.tensor([0.2, 0.4])
    assert torch.equal(rm(a), a)
    b = torch.tensor([0.6, 0.0], requires_grad=True)
    est = rm(b)
    assert torch.allclose(est.detach(), 0.9 * a + 0.1 * b.detach())
    est.sum().backward()
    assert torch.allclose(b.grad, torch.full((2,), 0.1))


@pytest.mark.parametrize("penalty,activation", [("kl", "sigmoid"), ("l1", "relu"), ("none", "tanh")])
def test_gradcheck_full_loss(penalty, activation):
    torch.manual_seed(0)
    mc = ModelConfig(input_dim=5, hidden=[4, 3], activation=activation)
    model = SparseAutoencoder(mc).double()
    sc = SparsityConfig(penalty=penalty, rho=0.1, beta=0.7, weight_decay=0.01, decoder_norm_l1=False)
    sc.validate(mc)
    objective = Objective(sc)
    x = torch.rand(7, 5, dtype=torch.float64)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]

    def loss(*ps):
        out = torch.func.functional_call(model, dict(zip(names, ps)), (x,))
        return objective(model_view(model, names, ps), out).total

    def model_view(m, ns, ps):
        # weight decay must see the parameters gradcheck perturbs, not the module's own
        class View:
            def weights(self):
                d = dict(zip(ns, ps))
                return [d[n] for n in ns if n.endswith("weight")]
        return View()

    assert torch.autograd.gradcheck(loss, tuple(p.detach().requires_grad_(True) for p in params))


def test_kl_refuses_unbounded_activations():
    mc = ModelConfig(hidden=[32], activation="relu")
    with pytest.raises(SparseAEError, match="KL penalty needs activations in \\(0, 1\\)"):
        SparsityConfig(penalty="kl").validate(mc)
    SparsityConfig(penalty="l1").validate(mc)  # fine with L1


@pytest.mark.parametrize("kw,msg", [({"rho": 0.0}, "rho"), ({"rho": 1.2}, "rho"), ({"beta": -1.0}, "beta"),
                                    ({"weight_decay": -1e-3}, "weight_decay"), ({"penalty": "l2"}, "penalty"),
                                    ({"layers": [5]}, "layer")])
def test_sparsity_config_errors(kw, msg):
    with pytest.raises(SparseAEError, match=msg):
        SparsityConfig(**kw).validate(ModelConfig(hidden=[16]))
