"""JumpReLU's start on inputs of fewer than 784 columns with codes under 512 latents: a higher rate, a 10x starting
beta and a 30-step warm-up, so that a short run (a few hundred steps on a small data set) reaches its L0 early; wider
codes, 784 columns and FashionMNIST keep the start they were tuned with."""
import pytest

from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.objective import Objective


def _resolved(input_dim, dataset="array", latents=128, **sparsity):
    return resolve(RunConfig(ModelConfig(hidden=[latents]), SparsityConfig(penalty="jumprelu", **sparsity),
                             TrainConfig(dataset=dataset, data="x.npy" if dataset == "array" else None)),
                   input_dim=input_dim)


def test_small_inputs_start_faster_and_784_columns_keep_the_fashion_mnist_start():
    small = _resolved(52, target_l0=8)
    assert (small.train.lr, small.sparsity.beta, small.sparsity.beta_warmup) == (7e-3, 1e-2, 30)
    # the rest of the small-input recipe is unchanged
    assert (small.sparsity.jumprelu_tanh, small.model.unit_norm_decoder, small.train.recon,
            small.train.lr_decay, small.sparsity.preact_coef) == (0.75, False, "mse", 0.2, 1e-2)
    assert (_resolved(64, latents=511, target_l0=8).train.lr, _resolved(52, latents=8, target_l0=1).train.lr) \
        == (7e-3, 7e-3)
    for big in (_resolved(784, target_l0=8), _resolved(784, dataset="fashion-mnist")):
        assert (big.train.lr, big.sparsity.beta, big.sparsity.beta_warmup) == (3e-3, 1e-3, 200)
        assert (big.sparsity.jumprelu_tanh, big.model.unit_norm_decoder, big.train.recon) == (0.0, True, "fvu")


@pytest.mark.parametrize("latents", [512, 1024])
def test_codes_of_512_latents_and_more_keep_the_plain_start_on_small_inputs(latents):
    wide = _resolved(64, latents=latents, target_l0=5)
    assert (wide.train.lr, wide.sparsity.beta, wide.sparsity.beta_warmup) == (3e-3, 1e-3, 200)
    # the rest of the small-input recipe still applies
    assert (wide.sparsity.jumprelu_tanh, wide.model.unit_norm_decoder, wide.train.recon) == (0.75, False, "mse")


def test_stated_settings_win_over_the_small_input_start():
    run = _resolved(64, target_l0=5, beta=1e-3, beta_warmup=200)
    assert (run.sparsity.beta, run.sparsity.beta_warmup) == (1e-3, 200)


@pytest.mark.parametrize("input_dim,beta,warmup", [(64, 1e-2, 30), (784, 1e-3, 200)])
def test_beta_warm_up_of_the_resolved_recipe(input_dim, beta, warmup):
    # beta(step) = beta * min(1, (step + 1) / warmup): hand-computed at a few steps
    obj = Objective(_resolved(input_dim, target_l0=8).sparsity, recon="mse")
    for step, expected in ((0, beta / warmup), (9, beta * 10 / warmup), (29, beta * min(1.0, 30 / warmup)),
                           (199, beta), (1000, beta)):
        assert obj.beta(step) == pytest.approx(expected, rel=1e-12)
