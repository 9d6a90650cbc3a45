"""L1 with a stated L0 on inputs of fewer than 784 columns: its recipe (families.py) and the L0 controller's rate
set by the run's length (families.l0_rate, resolved into sparsity.l0_rate); 784 columns keep FashionMNIST's
recipe and rate."""
import math

import pytest
import torch

from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.families import L0_LONG_RUN_RATE, L0_RATE, L0_RUN_RATE


def _resolved(input_dim, rows=None, epochs=5, **sparsity):
    return resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty="l1", target_l0=4, **sparsity),
                             TrainConfig(dataset="array", data="x.npy", epochs=epochs)), rows=rows,
                   input_dim=input_dim)


def test_small_inputs_take_the_fast_recipe_and_784_columns_keep_fashion_mnists():
    small, big = _resolved(64), _resolved(784)
    assert (small.train.lr, small.sparsity.beta_warmup, small.sparsity.preact_coef, small.train.lr_decay) \
        == (1e-2, 0, 5e-4, 0.2)
    assert (big.train.lr, big.sparsity.beta_warmup, big.sparsity.preact_coef, big.train.lr_decay) \
        == (3e-3, 200, 0.0, 0.0)
    assert small.sparsity.beta == big.sparsity.beta == 1e-3
    explicit = _resolved(64, beta_warmup=50)  # a stated value wins
    assert explicit.sparsity.beta_warmup == 50


def test_short_runs_on_small_inputs_keep_the_faster_rate():
    """64 latents: 500,000 latent-steps (families.SHORT_RUN) is 7,812 steps; at batch 256 and 5 epochs 400,000 rows
    give 7,815 (long), 399,000 give 7,795 (short); a stated rate wins either way."""
    assert _resolved(64, rows=399_000).train.lr == 2e-2
    assert _resolved(64, rows=400_000).train.lr == 1e-2
    assert _resolved(784, rows=399_000).train.lr == 3e-3  # FashionMNIST's size: no short-run rule
    stated = resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty="l1", target_l0=4),
                               TrainConfig(dataset="array", data="x.npy", epochs=5, lr=5e-3)),
                     rows=399_000, input_dim=64)
    assert stated.train.lr == 5e-3


def _steered(rate, steps=3):
    """An objective at controller rate `rate` steering beta toward L0 1 on a code that stays at L0 4."""
    model = SparseAutoencoder(ModelConfig(input_dim=64, hidden=[8], activation="relu", output_activation="linear"))
    obj = Objective(SparsityConfig(penalty="l1", beta=1e-3, beta_warmup=0, target_l0=1.0, l0_rate=rate))
    code = torch.zeros(5, 8)
    code[:, :4] = 1.0  # L0 4 on every row
    for step in range(steps):
        obj.step = step
        obj.penalty((code,), model.train())
        obj.adapt_beta(step)
    return obj


@pytest.mark.parametrize("rows,epochs,steps,per_run", [(2000, 5, 5 * 63, L0_RUN_RATE), (96000, 5, 5 * 375, L0_RUN_RATE),
                                                       (1000, 1, 63, L0_RUN_RATE),
                                                       (400_000, 5, 5 * 1563, L0_LONG_RUN_RATE)])
def test_the_l0_controllers_rate_on_small_inputs_is_set_by_the_runs_length(rows, epochs, steps, per_run):
    # batch 32 for 2,000 rows (63 steps an epoch), 256 for 96,000 (375), 16 for 1,000 (63): 5 / steps, at most 0.05;
    # 64 latents x 7,815 steps is past the short run's 500,000: 2.5 / steps
    run = _resolved(64, rows=rows, epochs=epochs)
    assert run.sparsity.l0_rate == pytest.approx(min(0.05, per_run / steps), rel=1e-12)


def test_784_columns_jumprelu_unknown_lengths_and_runs_without_a_target_keep_the_fixed_rate():
    assert _resolved(784, rows=2000).sparsity.l0_rate == L0_RATE
    assert _resolved(64).sparsity.l0_rate == L0_RATE  # streamed data: the length is not known before training
    jump = resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty="jumprelu", target_l0=4),
                             TrainConfig(dataset="array", data="x.npy", epochs=5)), rows=2000, input_dim=64)
    assert jump.sparsity.l0_rate == L0_RATE
    untargeted = resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty="l1", beta=1e-3),
                                   TrainConfig(dataset="array", data="x.npy", epochs=5)), rows=2000, input_dim=64)
    assert untargeted.sparsity.l0_rate == L0_RATE
    assert _resolved(64, rows=2000, l0_rate=0.1).sparsity.l0_rate == 0.1  # a stated rate wins


def test_the_controller_steps_log_beta_by_the_rate_times_the_log_l0_error():
    error = math.log(4.5 / 1.5)  # log((L0 + 1/2) / (target + 1/2)) per step
    for rate in (0.02, 0.004):
        obj = _steered(rate)
        assert float(obj.log_gain) == pytest.approx(3 * rate * error, rel=1e-12)
        assert obj.adapted_beta() == pytest.approx(1e-3 * math.exp(3 * rate * error), rel=1e-12)


def test_a_resumed_run_continues_the_controller():
    first = _steered(0.0125, steps=2)
    resumed = Objective(SparsityConfig(penalty="l1", beta=1e-3, beta_warmup=0, target_l0=1.0, l0_rate=0.0125))
    resumed.load_state_tensors(first.state_tensors(), torch.device("cpu"))
    model = SparseAutoencoder(ModelConfig(input_dim=64, hidden=[8], activation="relu", output_activation="linear"))
    code = torch.zeros(5, 8)
    code[:, :4] = 1.0
    resumed.step = 2
    resumed.penalty((code,), model.train())
    resumed.adapt_beta(2)
    assert float(resumed.log_gain) == pytest.approx(float(_steered(0.0125, steps=3).log_gain), rel=1e-12)
