"""AuxK (Gao et al., 2024): dead latents of a TopK code learn to reconstruct what the live ones miss."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..model.collectives import ONE_PROCESS
from .penalties import batch_spread


def auxk_loss(code_preact: torch.Tensor, dead: torch.Tensor, residual: torch.Tensor,
              decoder_weight: torch.Tensor, k_aux: int,
              total: Callable[[torch.Tensor], torch.Tensor] = ONE_PROCESS.total,
              columns: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """AuxK: the top `k_aux` dead units of each example reconstruct the residual x - x_hat.

    Normalised like an FVU, sum ||e - e_hat||^2 / sum ||e - mean(e)||^2, so the
    coefficient (1/32 in OpenAI's sparse_autoencoder) does not depend on the
    data scale. `decoder_weight` is out x code; `dead` a boolean mask over code
    units; zero if no unit is dead. `total` sums a tensor over the processes of
    a data-parallel run (differentiably), so the sums are those of the global batch.
    `columns(cols)`: the out x len(cols) decoder columns of the units `cols` (default: selected from
    `decoder_weight` through autograd; ColumnLeaves gives them as a leaf of their own).
    """
    n_dead = int(dead.sum())
    if n_dead == 0:
        return residual.new_zeros(())
    # Only the dead units' pre-activations and decoder columns take part: with few dead units the
    # products are n_dead wide instead of the whole code's (the same values; no -inf masking needed).
    cols = dead.nonzero().squeeze(1)
    z = code_preact.to(residual.dtype).index_select(1, cols)  # in the loss's precision (float32 after bf16)
    if k_aux >= n_dead:  # every dead unit is kept: the top-k would scatter relu(z) back where it was
        h = torch.relu(z)
    else:
        vals, idx = z.topk(k_aux, dim=-1, sorted=False)
        h = torch.zeros_like(z).scatter_(-1, idx, torch.relu(vals))
    e = residual.detach()
    e_hat = F.linear(h, decoder_weight.index_select(1, cols) if columns is None else columns(cols))
    _, spread = batch_spread(e, total)
    return total((e_hat - e).pow(2).sum()) / spread


class ColumnLeaves:
    """The dead units' decoder columns as a leaf tensor of their own, their gradient added into the
    decoder weight's after backward (`add_grads`).

    Selected through autograd, a few columns cost a decoder-sized gradient: zeros, the columns added
    in, then the whole of it added to the weight's gradient (three passes over 784 x 1024 floats a
    step, ~1 ms of a 23 ms CPU step). Added by hand, only the columns are touched; the sums are the
    same additions, so the weights are the same bit for bit. For the minibatch loop, which calls
    `add_grads` after every backward; elsewhere (a gradient check, L-BFGS's autograd.grad) AuxK
    selects through autograd.
    """

    def __init__(self) -> None:
        self.pending: tuple[torch.Tensor, int, torch.Tensor, torch.Tensor] | None = None

    def select(self, weight: torch.Tensor, unit_dim: int, cols: torch.Tensor) -> torch.Tensor:
        """The out x len(cols) columns of the units `cols` of `weight` (its units along `unit_dim`)."""
        leaf = weight.detach().index_select(unit_dim, cols).requires_grad_()
        self.pending = (weight, unit_dim, cols, leaf)  # one AuxK term a step: a new forward drops the last
        return leaf if unit_dim == 1 else leaf.t()

    @torch.no_grad()
    def add_grads(self) -> None:
        """After backward: the selected columns' gradient into their weight's gradient."""
        if self.pending is not None and self.pending[3].grad is not None:
            weight, unit_dim, cols, leaf = self.pending
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            weight.grad.index_add_(unit_dim, cols, leaf.grad)
        self.pending = None
