"""Evaluation metrics on a data split; no penalty, no gradients."""
from __future__ import annotations

import torch

from .model import SparseAutoencoder


@torch.no_grad()
def evaluate(model: SparseAutoencoder, x: torch.Tensor, dead_threshold: float = 1e-3,
             chunk: int = 8192) -> dict[str, float]:
    """Reconstruction and sparsity of the code layer over all rows of `x`.

    mse: mean squared error per feature; fvu: fraction of variance unexplained,
    sum ||x - x_hat||^2 / sum ||x - mean(x)||^2; mean_activation: mean code value
    over examples and units; dead_fraction: share of code units whose mean
    activation is below `dead_threshold`; l0: mean number of non-zero code values
    per example.
    """
    was_training = model.training
    model.eval()
    n = x.shape[0]
    sq_err = x.new_zeros((), dtype=torch.float64)
    l0 = x.new_zeros((), dtype=torch.float64)
    unit_sum = None
    for i in range(0, n, chunk):
        xb = x[i:i + chunk]
        out = model(xb)
        code = out.hidden[-1]
        sq_err += (out.recon.float() - out.target.float()).pow(2).sum().double()
        l0 += (code != 0).sum().double()
        s = code.float().sum(0).double()
        unit_sum = s if unit_sum is None else unit_sum + s
    model.train(was_training)
    xt = model.input_transform(x).double()  # errors and variance in the space the model reconstructs
    total_var = (xt - xt.mean(0)).pow(2).sum()
    unit_mean = unit_sum / n
    return {
        "mse": (sq_err / x.numel()).item(),
        "fvu": (sq_err / total_var.clamp_min(1e-30)).item(),
        "mean_activation": unit_mean.mean().item(),
        "dead_fraction": (unit_mean.abs() < dead_threshold).double().mean().item(),
        "l0": (l0 / n).item(),
    }
