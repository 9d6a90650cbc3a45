"""A tensor's elements in the order they lie in memory, for code that needs a contiguous tensor."""
from __future__ import annotations

import torch


def storage_view(t: torch.Tensor) -> torch.Tensor:
    """`t` itself if contiguous; else, for a tensor whose dimensions are a permutation of a contiguous one
    (a transpose, as a code-major decoder weight is), the permuted view that is contiguous: the same
    memory in row order, for elementwise kernels and collectives that need contiguous tensors. Any other
    layout: `t` unchanged (the caller's kernel copies as it would have)."""
    if t.is_contiguous():
        return t
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    view = t.permute(order)
    return view if view.is_contiguous() else t
