"""Input transforms stored with the model (as buffers, so they travel in
model.safetensors): the model encodes raw data and reconstructs the
transformed data it was trained on.

- 'none': identity.
- 'standardize': (x - mean) / std per feature.
- 'zca': ZCA whitening, U diag(1/sqrt(S + eps)) U^T (x - mean) (UFLDL linear decoder).

With `rescale` (ModelConfig.input_scale) the result is also multiplied by one number, the gain, fitted so
that the training rows' mean squared distance to their mean is input_dim * TARGET_RMS^2. A penalty weight
trades reconstruction against code size in the data's units, so it only transfers between data sets at one
scale: SAELens and OpenAI scale inputs to a fixed mean norm (sqrt(d_in)) for the same reason. The spread is
measured about the mean, not from 0, so that a shifted copy of the data gets the same gain; TARGET_RMS is
FashionMNIST's own spread (0.295 per pixel), where the families' betas were tuned.
"""
from __future__ import annotations

import torch
import torch.nn as nn

TARGET_RMS = 0.3
"""Root-mean-square distance of a feature to its mean after rescaling (FashionMNIST's pixels: 0.295)."""


class InputTransform(nn.Module):
    """y = (x - mean) @ matrix.T (zca) or (x - mean) / scale (standardize), or x; times `gain` with `rescale`.

    `kind` is ModelConfig.input_transform, checked there (config.INPUT_TRANSFORMS).
    """

    def __init__(self, kind: str, dim: int, eps: float = 0.1, rescale: bool = False):
        super().__init__()
        self.kind, self.eps, self.rescale = kind, eps, rescale
        if rescale:
            self.register_buffer("gain", torch.ones(()))
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
        if self.kind == "none" and not self.rescale:
            return self
        x = x.double()
        mean = x.mean(0)
        if self.kind == "zca":
            xc = x - mean
            self.set_statistics(mean, covariance=xc.T @ xc / x.shape[0])
        else:
            self.set_statistics(mean, x.std(0, unbiased=False))
        return self

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor | None = None,
                       covariance: torch.Tensor | None = None) -> None:
        """Set mean and std (none, standardize) or covariance (zca), e.g. from a one-pass streaming estimate;
        with `rescale`, the gain from the spread they give the transformed rows."""
        if self.kind == "none":
            variances = std.double().pow(2)
        else:
            self.mean.copy_(mean.to(self.mean))
        if self.kind == "standardize":
            std = std.double()
            self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)).to(self.scale))  # constant features
            variances = (std > 0).double()
        elif self.kind == "zca":
            s, u = torch.linalg.eigh(covariance.double())
            s = s.clamp_min(0)
            self.matrix.copy_((u @ torch.diag(1 / torch.sqrt(s + self.eps)) @ u.T).to(self.matrix))
            self.inverse.copy_((u @ torch.diag(torch.sqrt(s + self.eps)) @ u.T).to(self.inverse))
            variances = s / (s + self.eps)  # the whitened rows' variance along each eigenvector
        if self.rescale:
            rms = variances.mean().sqrt()
            self.gain.fill_(TARGET_RMS / rms.item() if rms > 0 else 1.0)  # constant data: left as it is

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._base(x)
        return y * self.gain.to(y.dtype) if self.rescale else y

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        if self.kind == "standardize":
            return (x - self.mean) / self.scale
        return (x - self.mean) @ self.matrix.T

    def compose(self, weight: torch.Tensor) -> torch.Tensor:
        """First-layer weights (units x features) as filters on the raw input: W @ ZCA for 'zca'
        (UFLDL's display of a whitened model), W / scale for 'standardize'; times the gain."""
        if self.rescale:
            weight = weight * self.gain.to(weight.dtype)
        if self.kind == "zca":
            return weight @ self.matrix.to(weight.dtype)
        if self.kind == "standardize":
            return weight / self.scale.to(weight.dtype)
        return weight

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        if self.rescale:
            y = y / self.gain.to(y.dtype)
        if self.kind == "none":
            return y
        if self.kind == "standardize":
            return y * self.scale + self.mean
        return y @ self.inverse.T + self.mean
