"""Weight initialisations beyond PyTorch's default."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

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
