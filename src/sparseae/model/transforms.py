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

The gain is that ratio rounded to the nearest power of two, 2**round(log2(TARGET_RMS / rms)) (the spread
then lands within a factor sqrt(2) of TARGET_RMS, which a penalty weight does not notice). Multiplying or
dividing a float by a power of two changes its exponent, not one bit of its mantissa, so a model with the
gain folded into its weights (W_enc * g, W_dec / g, b_dec / g: a SAELens export, apps/ecosystem.py) computes
bit for bit the numbers this one computes, on data of any magnitude; an arbitrary gain rounds every folded
weight and the two drift apart by about 1e-7 of the data's scale.

A transcoder's rows are its input followed by its target (`split`: the input's width), which may be on
scales far apart (an MLP's input and output): each part gets its own gain, `gain` = [input's, target's],
fitted on its own columns, so that the reconstruction error, which is measured on the target, is at
TARGET_RMS as the penalty weights expect. The model's output is in the target's space: inverse_transform
divides by the target's gain.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

TARGET_RMS = 0.3
"""Root-mean-square distance of a feature to its mean after rescaling (FashionMNIST's pixels: 0.295)."""


def power_of_two_gain(rms: float) -> float:
    """The power of two nearest (in log scale) to TARGET_RMS / rms: exact to fold into weights (module
    docstring); 1 for constant data (rms 0), left as it is."""
    if not rms > 0 or not math.isfinite(rms):
        return 1.0
    return math.ldexp(1.0, round(math.log2(TARGET_RMS / rms)))


class InputTransform(nn.Module):
    """y = (x - mean) @ matrix.T (zca) or (x - mean) / scale (standardize), or x; times `gain` with `rescale`.

    `kind` is ModelConfig.input_transform, checked there (config.INPUT_TRANSFORMS).
    """

    def __init__(self, kind: str, dim: int, eps: float = 0.1, rescale: bool = False, split: int | None = None):
        super().__init__()
        self.kind, self.eps, self.rescale, self.split = kind, eps, rescale, split
        if rescale:
            self.register_buffer("gain", torch.ones(()) if split is None else torch.ones(2))
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
            parts = [variances] if self.split is None else [variances[:self.split], variances[self.split:]]
            gains = [power_of_two_gain(v.mean().sqrt().item()) for v in parts]
            self.gain.copy_(torch.tensor(gains if self.split is not None else gains[0]))

    def input_gain(self) -> torch.Tensor:
        """The gain of the input's columns (1 without `rescale`)."""
        if not self.rescale:
            return torch.ones(())
        return self.gain if self.split is None else self.gain[0]

    def output_gain(self) -> torch.Tensor:
        """The gain of what the model outputs: the target's columns for a transcoder, else the input's."""
        if not self.rescale:
            return torch.ones(())
        return self.gain if self.split is None else self.gain[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._base(x)
        if not self.rescale:
            return y
        if self.split is None or y.shape[-1] == self.split:  # (a transcoder's input alone)
            return y * self.input_gain().to(y.dtype)
        return torch.cat([y[..., :self.split] * self.gain[0].to(y.dtype),
                          y[..., self.split:] * self.gain[1].to(y.dtype)], dim=-1)

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
            weight = weight * self.input_gain().to(weight.dtype)
        if self.kind == "zca":
            return weight @ self.matrix.to(weight.dtype)
        if self.kind == "standardize":
            return weight / self.scale.to(weight.dtype)
        return weight

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        if self.rescale:
            y = y / self.output_gain().to(y.dtype)
        if self.kind == "none":
            return y
        if self.kind == "standardize":
            return y * self.scale + self.mean
        return y @ self.inverse.T + self.mean
