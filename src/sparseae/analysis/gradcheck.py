"""Gradient checking, as in the UFLDL notes: compare backprop's gradient with central differences.

    numgrad_i = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps),  eps = 1e-4
    relative difference = ||numgrad - grad|| / ||numgrad + grad||

In double precision a correct gradient gives about 1e-9 or less. The cost is the
configured `Objective` (any penalty, any model) through `fullbatch.FlatObjective`,
the same function the full-batch optimizers minimise.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from ..errors import SparseAEError
from ..training.fullbatch import FlatObjective
from ..model import SparseAutoencoder
from ..objective import Objective

EPSILON = 1e-4


class GradientCheck(NamedTuple):
    relative_error: float
    """||numerical - analytic|| / ||numerical + analytic||."""
    analytic: np.ndarray
    numerical: np.ndarray


def numerical_gradient(cost: Callable[[np.ndarray], float], theta: np.ndarray,
                       epsilon: float = EPSILON) -> np.ndarray:
    """Central differences of `cost` at `theta`, one coordinate at a time."""
    grad = np.empty_like(theta)
    probe = theta.copy()
    for i in range(theta.size):
        probe[i] = theta[i] + epsilon
        up = cost(probe)
        probe[i] = theta[i] - epsilon
        down = cost(probe)
        probe[i] = theta[i]
        grad[i] = (up - down) / (2 * epsilon)
    return grad


def check_gradient(model: SparseAutoencoder, objective: Objective, x: torch.Tensor,
                   epsilon: float = EPSILON) -> GradientCheck:
    """Analytic vs numerical gradient of `objective` on data `x` at `model`'s parameters, in float64
    (on a copy: `model` is left as it is). rho_hat is the mean over all rows of `x`."""
    if not epsilon > 0:
        raise SparseAEError(f"epsilon must be positive, got {epsilon}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise SparseAEError(f"gradient check needs a non-empty (examples x features) array, got shape "
                            f"{tuple(x.shape)}")
    clone = SparseAutoencoder(model.config).to(next(model.parameters()).device)
    clone.load_state_dict(model.state_dict())
    model = clone.double().train(model.training)
    f = FlatObjective(model, objective, x.detach().double().to(next(model.parameters()).device))
    theta = f.get()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny evaluations: a thread hand-off costs more than the work
    try:
        _, analytic = f(theta)
        numerical = numerical_gradient(f.value, theta, epsilon)
    finally:
        torch.set_num_threads(threads)
    denom = np.linalg.norm(numerical + analytic)
    error = float(np.linalg.norm(numerical - analytic) / denom) if denom > 0 else 0.0
    return GradientCheck(error, analytic, numerical)


def relative_gradient_error(model: SparseAutoencoder, objective: Objective, x: torch.Tensor,
                            epsilon: float = EPSILON) -> float:
    """||numgrad - grad|| / ||numgrad + grad|| (Ng's check; < 1e-9 expected in float64)."""
    return check_gradient(model, objective, x, epsilon).relative_error
