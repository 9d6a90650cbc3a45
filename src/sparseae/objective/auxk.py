"""AuxK (Gao et al., 2024): dead latents of a TopK code learn to reconstruct what the live ones miss."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..model.collectives import ONE_PROCESS
from .penalties import batch_spread


def auxk_loss(code_preact: torch.Tensor, dead: torch.Tensor, residual: torch.Tensor,
              decoder_weight: torch.Tensor, k_aux: int,
              total: Callable[[torch.Tensor], torch.Tensor] = ONE_PROCESS.total) -> torch.Tensor:
    """AuxK: the top `k_aux` dead units of each example reconstruct the residual x - x_hat.

    Normalised like an FVU, sum ||e - e_hat||^2 / sum ||e - mean(e)||^2, so the
    coefficient (1/32 in OpenAI's sparse_autoencoder) does not depend on the
    data scale. `decoder_weight` is out x code; `dead` a boolean mask over code
    units; zero if no unit is dead. `total` sums a tensor over the processes of
    a data-parallel run (differentiably), so the sums are those of the global batch.
    """
    n_dead = int(dead.sum())
    if n_dead == 0:
        return residual.new_zeros(())
    # Only the dead units' pre-activations and decoder columns take part: with few dead units the
    # products are n_dead wide instead of the whole code's (the same values; no -inf masking needed).
    cols = dead.nonzero().squeeze(1)
    z = code_preact.to(residual.dtype).index_select(1, cols)  # in the loss's precision (float32 after bf16)
    vals, idx = z.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    h = torch.zeros_like(z).scatter_(-1, idx, torch.relu(vals))
    e = residual.detach()
    e_hat = F.linear(h, decoder_weight.index_select(1, cols))
    _, spread = batch_spread(e, total)
    return total((e_hat - e).pow(2).sum()) / spread
