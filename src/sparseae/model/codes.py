"""Sparsity by construction: TopK and BatchTopK code layers, unit-norm decoder columns.

TopK (Makhzani & Frey, 2013): keep the k largest code pre-activations of each
example, zero the rest; the gradient flows only through the kept units because
the output is a scatter of the kept values. BatchTopK keeps the k*B largest
activations of a batch of B examples (so examples may use more or fewer than
k); at inference it applies a threshold learned during training (an EMA of the
smallest kept activation), so an example's code does not depend on its batch.
"""
from __future__ import annotations

from typing import Callable

import torch

Activation = Callable[[torch.Tensor], torch.Tensor]


def topk_activation(z: torch.Tensor, k: int, act: Activation) -> torch.Tensor:
    """Per example: act() of the k largest entries of `z`, zero elsewhere (at most k non-zeros)."""
    k = min(k, z.shape[-1])
    vals, idx = z.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(z).scatter(-1, idx, act(vals))


def batchtopk_activation(z: torch.Tensor, k: int, act: Activation) -> tuple[torch.Tensor, torch.Tensor]:
    """Over the whole batch: keep the k * batch largest activations; returns (code, smallest kept value)."""
    a = act(z)
    n = min(k * a.shape[0], a.numel())
    vals, idx = a.flatten().topk(n, sorted=False)
    code = torch.zeros_like(a).flatten().scatter(0, idx, vals).view_as(a)
    kept = vals.detach()
    positive = kept[kept > 0]
    smallest = positive.min() if positive.numel() else kept.new_zeros(())
    return code, smallest


def threshold_activation(z: torch.Tensor, threshold: torch.Tensor, act: Activation) -> torch.Tensor:
    """BatchTopK at inference: keep activations above the learned threshold."""
    a = act(z)
    return a * (a > threshold)


@torch.no_grad()
def normalize_columns_(w: torch.Tensor, dim: int) -> None:
    """Scale `w` in place so that its norm along `dim` is 1 (each code unit's decoder direction)."""
    w.div_(w.norm(dim=dim, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def remove_parallel_grad_(w: torch.Tensor, dim: int) -> None:
    """Remove from w.grad its component along each unit-norm column of `w`.

    With columns renormalised after every step, a gradient along a column only
    changes its length, which the renormalisation undoes; removing it keeps
    the optimiser's moment estimates for the directions that matter.
    """
    if w.grad is None:
        return
    unit = w / w.norm(dim=dim, keepdim=True).clamp_min(1e-12)
    w.grad.sub_((w.grad * unit).sum(dim=dim, keepdim=True) * unit)
