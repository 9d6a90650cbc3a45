"""Weight initialisations beyond PyTorch's default."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..data.dataset import principal_axes

RELU_LIKE = ("relu", "leaky_relu")


def _fresh(weight: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor like `weight`: random draws fill it in row order whatever the
    weight's storage order (a TopK decoder is stored code-major), so a seed gives the same weights."""
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


@torch.no_grad()
def init_ng_(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Ng's initialisation: W ~ U[-r, r], r = sqrt(6 / (n_in + n_out + 1)); zero biases."""
    for layer in list(model.encoder) + list(model.decoder):
        n_out, n_in = layer.weight.shape
        r = math.sqrt(6.0 / (n_in + n_out + 1))
        layer.weight.copy_(_fresh(layer.weight).uniform_(-r, r, generator=generator))
        layer.bias.zero_()
    if model.config.tied:
        for b in model.decoder_bias:
            b.zero_()


@torch.no_grad()
def init_he_(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """He (Kaiming normal) weights for layers followed by a ReLU-family activation, zero biases.

    PyTorch's default init shrinks the signal through a deep ReLU stack; He's keeps
    its scale, which lets the tutorial's 10-layer model converge in a fraction of the steps.
    """
    c = model.config
    acts = c.layer_activations() + [c.activation] * (len(model.decoder) - 1) + [c.output_activation]
    for layer, act in zip(list(model.encoder) + list(model.decoder), acts):
        if act in RELU_LIKE:
            layer.weight.copy_(_fresh(layer.weight).normal_(0.0, math.sqrt(2.0 / layer.weight.shape[1]),
                                                            generator=generator))
            layer.bias.zero_()


def initialize(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """'default' keeps PyTorch's initialisation; 'ng' and 'he' as above."""
    if scheme == "ng":
        init_ng_(model, generator)
    elif scheme == "he":
        init_he_(model, generator)


@torch.no_grad()
def principal_directions_(model: nn.Module, x: torch.Tensor, target_l0: float | None = None) -> None:
    """ModelConfig.principal_start on transformed training rows `x` (with `target_l0`, a penalty family's
    stated or default L0: _start_at_l0_ too): b_dec := their mean; latents 2i and 2i + 1
    decode +v_i and -v_i (the i-th principal direction) for i < min(input_dim, latents / 2) and encode with the
    same vector and zero bias, so the ReLU code holds each row's signed principal coefficients and TopK keeps the
    k largest. The other latents keep their random decoder columns, with encoder rows at a tenth of them: they
    enter the code once training or AuxK has turned them, instead of displacing principal coefficients from the
    first step."""
    x = x.double()
    mean = x.mean(0)
    vt = principal_axes(x)[1]  # the decomposition variance_spectrum reads the share from
    dec, enc = model.decoder[0].weight, model.encoder[0]
    pairs = min(vt.shape[0], dec.shape[1] // 2)
    cols = dec.detach().double().clone()
    cols[:, 0:2 * pairs:2] = vt[:pairs].T
    cols[:, 1:2 * pairs:2] = -vt[:pairs].T
    cols /= cols.norm(dim=0, keepdim=True).clamp_min(1e-12)
    dec.copy_(cols.to(dec.dtype))
    enc.weight.copy_(cols.t().to(dec.dtype))
    enc.weight[2 * pairs:] *= 0.1
    enc.bias.zero_()
    model.output_bias().copy_(mean.to(dec.dtype))  # non-zero: the first batch's mean (observe_input) keeps it
    if target_l0:
        _start_at_l0_(model, (x - mean) @ enc.weight.double().t(), target_l0)


@torch.no_grad()
def _start_at_l0_(model: nn.Module, z: torch.Tensor, target_l0: float) -> None:
    """A penalty family's principal start (l1, jumprelu; `z` the start's pre-activations on the training rows):
    one threshold for every latent, the quantile of `z` above which the start's code has the stated L0 (a
    JumpReLU threshold; L1's encoder bias -t), so the run starts at its target instead of the controller
    spending the run cutting every row's coefficients down to it. L1's code is shrunk by t (relu(z - t)): each
    decoder column is scaled by its code's 1-D least-squares factor (1 to 10), which undoes most of the
    shrinkage (without it L1 stayed above PCA on Tennessee Eastman)."""
    dec, enc = model.decoder[0].weight, model.encoder[0]
    t = max(float(torch.quantile(z[:2048].flatten(), 1 - min(1.0, target_l0 / z.shape[1]))), 1e-3)
    if getattr(model, "threshold", None) is not None:
        model.threshold.fill_(t)
        return
    enc.bias.fill_(-t)
    h = torch.relu(z - t)
    dec.mul_(((h * z).sum(0) / (h * h).sum(0).clamp_min(1e-12)).clamp(1.0, 10.0).to(dec.dtype))
