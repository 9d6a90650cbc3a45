"""The decoder refitted by least squares once the steps are done (train.refit_decoder).

A penalty that shrinks the code (L1) leaves a decoder trained beside it biased: each column takes in part of what
the shrunk units leave out of the rows it fires on. With the encoder fixed the code is fixed, and the decoder that
reconstructs the training rows best from it is a linear least-squares fit: the normal equations
(C^T C) W^T = C^T (X - b) over the rows, summed in float64 one minibatch at a time, b the output bias (kept: with
model.pre_bias the encoder reads the input less it, so changing it would change the code).
"""

from __future__ import annotations

import torch

from ..data.batches import BatchSource
from ..families import JUMPRELU
from ..model import SparseAutoencoder
from ..model.collectives import ONE_PROCESS, Collectives

RIDGE = 1e-6
"""The normal equations' ridge, relative to their mean diagonal: units that fire together on every row they fire on
would make them singular."""


@torch.no_grad()
def refit_decoder(model: SparseAutoencoder, batches: BatchSource, collectives: Collectives = ONE_PROCESS) -> None:
    """Set the decoder columns of the units that fire on the training rows (`batches`, read once in a fixed order)
    to the least-squares fit of the rows less the output bias from the code; a unit that fired on none keeps its
    column. The output bias and which units fire on which rows are unchanged; so is the encoder, unless the model
    keeps unit-norm decoder columns (`_unit_columns`)."""
    was_training = model.training
    model.eval()
    weight = model.decoder[0].weight  # output x code
    bias = model.output_bias().double()
    units = weight.shape[1]
    gram = torch.zeros(units, units, dtype=torch.float64, device=weight.device)
    cross = torch.zeros(units, weight.shape[0], dtype=torch.float64, device=weight.device)
    for xb in batches.epoch(torch.Generator().manual_seed(0)):
        out = model(collectives.shard(xb))
        code = out.hidden[-1].double()
        gram += code.T @ code
        cross += code.T @ (out.target.double() - bias)
    collectives.sum_(gram)
    collectives.sum_(cross)
    fired = gram.diagonal() > 0
    if bool(fired.any()):
        g = gram[fired][:, fired]
        g += RIDGE * g.diagonal().mean() * torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
        columns = torch.linalg.solve(g, cross[fired]).T  # output x fired units
        if model.config.unit_norm_decoder:
            columns = _unit_columns(model, columns, fired)
        weight[:, fired] = columns.to(weight.dtype)
    model.train(was_training)


def _unit_columns(model: SparseAutoencoder, columns: torch.Tensor, fired: torch.Tensor) -> torch.Tensor:
    """`columns` at unit norm, each norm moved into its unit's encoder row, bias and (JumpReLU) threshold: the unit
    fires on the same rows (a ReLU or JumpReLU code scales with its pre-activation) with its value times the norm,
    so the reconstruction is the fit's."""
    norms = columns.norm(dim=0)
    scale = torch.where(norms > 0, norms, torch.ones_like(norms))  # an all-zero column stays as it is
    encoder = model.encoder[0]
    index = fired.nonzero().squeeze(1)
    encoder.weight[index] *= scale.to(encoder.weight.dtype).unsqueeze(1)
    encoder.bias[index] *= scale.to(encoder.bias.dtype)
    if model.config.topk == JUMPRELU:
        model.threshold[index] *= scale.to(model.threshold.dtype)
    return columns / scale
