"""L1 with a stated L0 on inputs of fewer than 784 columns: its recipe (families.py) and the L0 controller's rate
set by the run's length (objective.L0_RUN_RATE); 784 columns keep FashionMNIST's recipe and rate."""
import math

import pytest
import torch

from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.objective.objective import L0_RATE, L0_RUN_RATE


def _resolved(input_dim, **sparsity):
    return resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty="l1", target_l0=4, **sparsity),
                             TrainConfig(dataset="array", data="x.npy")), input_dim=input_dim)


def test_small_inputs_take_the_fast_recipe_and_784_columns_keep_fashion_mnists():
    small, big = _resolved(64), _resolved(784)
    assert (small.train.lr, small.sparsity.beta_warmup, small.sparsity.preact_coef, small.train.lr_decay) \
        == (2e-2, 0, 5e-4, 0.2)
    assert (big.train.lr, big.sparsity.beta_warmup, big.sparsity.preact_coef, big.train.lr_decay) \
        == (3e-3, 200, 0.0, 0.0)
    assert small.sparsity.beta == big.sparsity.beta == 1e-3
    explicit = _resolved(64, beta_warmup=50)  # a stated value wins
    assert explicit.sparsity.beta_warmup == 50


def _steered(input_dim, total_steps, penalty="l1", steps=3):
    """An objective steering beta toward L0 1 on a code that stays at L0 4, for `steps` steps."""
    torch.manual_seed(0)
    cfg = dict(topk="jumprelu", jumprelu_threshold=0.1, jumprelu_bandwidth=0.05) if penalty == "jumprelu" else {}
    model = SparseAutoencoder(ModelConfig(input_dim=input_dim, hidden=[8], activation="relu",
                                          output_activation="linear", **cfg)).train()
    obj = Objective(SparsityConfig(penalty=penalty, beta=1e-3, beta_warmup=0, target_l0=1.0))
    obj.total_steps = total_steps
    code = torch.zeros(5, 8)
    code[:, :4] = 1.0  # L0 4 on every row
    for step in range(steps):
        obj.step = step
        obj.penalty((code,), model)
        obj.adapt_beta(step)
    return obj


def test_the_l0_controllers_rate_on_small_inputs_is_set_by_the_runs_length():
    error = math.log(4.5 / 1.5)  # log((L0 + 1/2) / (target + 1/2)) per step
    for total_steps, rate in ((250, L0_RUN_RATE / 250), (2000, L0_RUN_RATE / 2000), (50, 0.05)):
        obj = _steered(64, total_steps)
        assert obj.l0_rate == pytest.approx(rate)
        assert float(obj.log_gain) == pytest.approx(3 * rate * error)
        assert obj.adapted_beta() == pytest.approx(1e-3 * math.exp(3 * rate * error))
    # 784 columns (FashionMNIST) and JumpReLU keep the fixed rate
    for obj in (_steered(784, 250), _steered(64, 250, penalty="jumprelu")):
        assert obj.l0_rate == L0_RATE
        assert float(obj.log_gain) == pytest.approx(3 * L0_RATE * error)


def test_a_resumed_run_takes_the_same_rate():
    first = _steered(64, 400, steps=2)
    resumed = Objective(SparsityConfig(penalty="l1", beta=1e-3, beta_warmup=0, target_l0=1.0))
    resumed.load_state_tensors(first.state_tensors(), torch.device("cpu"))
    resumed.total_steps = 400
    model = SparseAutoencoder(ModelConfig(input_dim=64, hidden=[8], activation="relu", output_activation="linear"))
    code = torch.zeros(5, 8)
    code[:, :4] = 1.0
    resumed.step = 2
    resumed.penalty((code,), model.train())
    resumed.adapt_beta(2)
    assert float(resumed.log_gain) == pytest.approx(float(_steered(64, 400, steps=3).log_gain))
