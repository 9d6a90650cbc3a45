"""Input transforms stored with the model (as buffers, so they travel in
model.safetensors): the model encodes raw data and reconstructs the
transformed data it was trained on.

- 'none': identity.
- 'standardize': (x - mean) / std per feature.
- 'zca': ZCA whitening, U diag(1/sqrt(S + eps)) U^T (x - mean) (UFLDL linear decoder).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class InputTransform(nn.Module):
    """y = (x - mean) @ matrix.T (zca) or (x - mean) / scale (standardize), or x.

    `kind` is ModelConfig.input_transform, checked there (config.INPUT_TRANSFORMS).
    """

    def __init__(self, kind: str, dim: int, eps: float = 0.1):
        super().__init__()
        self.kind, self.eps = kind, eps
        if kind != "none":
            self.register_buffer("mean", torch.zeros(dim))
        if kind == "standardize":
            self.register_buffer("scale", torch.ones(dim))
        if kind == "zca":
            self.register_buffer("matrix", torch.eye(dim))
            self.register_buffer("inverse", torch.eye(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "InputTransform":
        """Estimate the statistics from the rows of `x` (all in memory)."""
        if self.kind == "none":
            return self
        x = x.double()
        mean = x.mean(0)
        if self.kind == "standardize":
            self.set_statistics(mean, x.std(0, unbiased=False))
        else:
            xc = x - mean
            self.set_statistics(mean, covariance=xc.T @ xc / x.shape[0])
        return self

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor | None = None,
                       covariance: torch.Tensor | None = None) -> None:
        """Set mean and std (standardize) or covariance (zca), e.g. from a one-pass streaming estimate."""
        self.mean.copy_(mean.to(self.mean))
        if self.kind == "standardize":
            std = std.double()
            self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)).to(self.scale))  # constant features
        elif self.kind == "zca":
            s, u = torch.linalg.eigh(covariance.double())
            s = s.clamp_min(0)
            self.matrix.copy_((u @ torch.diag(1 / torch.sqrt(s + self.eps)) @ u.T).to(self.matrix))
            self.inverse.copy_((u @ torch.diag(torch.sqrt(s + self.eps)) @ u.T).to(self.inverse))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        if self.kind == "standardize":
            return (x - self.mean) / self.scale
        return (x - self.mean) @ self.matrix.T

    def compose(self, weight: torch.Tensor) -> torch.Tensor:
        """First-layer weights (units x features) as filters on the raw input: W @ ZCA for 'zca'
        (UFLDL's display of a whitened model), W / scale for 'standardize'."""
        if self.kind == "zca":
            return weight @ self.matrix.to(weight.dtype)
        if self.kind == "standardize":
            return weight / self.scale.to(weight.dtype)
        return weight

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return y
        if self.kind == "standardize":
            return y * self.scale + self.mean
        return y @ self.inverse.T + self.mean
