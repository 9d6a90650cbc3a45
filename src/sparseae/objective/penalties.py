"""Sparsity penalties and weight decay: one implementation of each.

KL (Ng's sparse autoencoder notes): rho_hat_j is the mean activation of unit j
over the *examples* (dim 0), and the penalty is beta * sum_j KL(rho || rho_hat_j).
It does not grow with the batch size, because rho_hat is a mean.
"""
from __future__ import annotations

import torch

from ..errors import SparseAEError
from ..model.collectives import ONE_PROCESS


def kl_divergence(rho: float | torch.Tensor, rho_hat: float | torch.Tensor) -> torch.Tensor:
    """Elementwise Bernoulli KL(rho || q) = rho log(rho/q) + (1-rho) log((1-rho)/(1-q)).

    q is clamped into [eps, 1-eps] (eps: machine epsilon of its dtype) so the
    value stays finite as rho_hat approaches 0 or 1.
    """
    # a float rho is checked in Python: no data-dependent branch for torch.compile to break on
    out_of_range = not 0 < rho < 1 if isinstance(rho, (int, float)) else bool(torch.any((rho <= 0) | (rho >= 1)))
    if out_of_range:
        raise SparseAEError(f"rho must be in (0, 1), got {rho}")
    rho_t = torch.as_tensor(rho, dtype=torch.float64 if not torch.is_tensor(rho_hat) else rho_hat.dtype)
    q = torch.as_tensor(rho_hat, dtype=rho_t.dtype)
    eps = torch.finfo(q.dtype).eps
    q = q.clamp(eps, 1 - eps)
    return rho_t * torch.log(rho_t / q) + (1 - rho_t) * torch.log((1 - rho_t) / (1 - q))


@torch.no_grad()
def batch_spread(t: torch.Tensor, total=ONE_PROCESS.total) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, sum_i ||t_i - mean(t)||^2) of a batch; with `total`, a sum over the processes of a
    data-parallel run, those of the global batch. The denominator of an FVU (reconstruction, AuxK)."""
    t = t.detach()
    sums = total(torch.cat([t.sum(0), t.new_tensor([t.shape[0]])]))  # column sums and rows
    spread = total((t - sums[:-1] / sums[-1]).pow(2).sum())
    return sums[-1], spread.clamp_min(1e-12)


def mean_activation(h: torch.Tensor) -> torch.Tensor:
    """rho_hat: each unit's mean activation over the examples of the batch."""
    return h.mean(dim=0)


def kl_penalty(h: torch.Tensor, rho: float, rho_hat: torch.Tensor | None = None) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j); rho_hat defaults to the batch mean of `h` (examples x units)."""
    return kl_divergence(rho, mean_activation(h) if rho_hat is None else rho_hat).sum()


def l1_penalty(h: torch.Tensor) -> torch.Tensor:
    """Sum over units of |activation|, averaged over examples (independent of batch size)."""
    return h.abs().sum(dim=1).mean()


def weight_decay(weights: list[torch.Tensor], lam: float) -> torch.Tensor:
    """Ng's lambda/2 * sum of squared weights (biases excluded)."""
    return 0.5 * lam * sum(w.pow(2).sum() for w in weights)


class RunningMean:
    """EMA of rho_hat across batches, for small batches where one batch's mean is noisy.

    The value used in the penalty is m * past.detach() + (1 - m) * batch_mean:
    the history is a constant, the gradient flows through this batch's part.
    """

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.value: torch.Tensor | None = None

    def __call__(self, batch_mean: torch.Tensor) -> torch.Tensor:
        if self.value is None:
            est = batch_mean
        else:
            est = self.momentum * self.value + (1 - self.momentum) * batch_mean
        self.value = est.detach()
        return est
