"""The sparse autoencoder: an encoder stack, a decoder stack, nothing else.

`forward` returns the reconstruction *and* the hidden activations the sparsity
penalty needs, so the penalty is computed on the very values the model uses
(one forward pass; the seed tutorial ran a second, different pass).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .transforms import InputTransform

_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "linear": lambda z: z,
    "leaky_relu": F.leaky_relu,
    "softplus": F.softplus,
}


class AutoencoderOutput(NamedTuple):
    recon: torch.Tensor
    """Reconstruction of the input, same shape."""
    hidden: tuple[torch.Tensor, ...]
    """Activations of each encoder layer; the last is the code."""
    target: torch.Tensor
    """What `recon` should match: the input after the model's input transform."""


class SparseAutoencoder(nn.Module):
    """Encoder `input_dim -> hidden[0] -> ... -> hidden[-1]`, decoder back to `input_dim`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.input_transform = InputTransform(config.input_transform, config.input_dim, config.zca_epsilon)
        enc_sizes = [config.input_dim, *config.hidden]
        dec_sizes = [config.hidden[-1], *config.decoder_sizes(), config.input_dim]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc_sizes, enc_sizes[1:]))
        if config.tied:
            # Tied: decoder layer i uses encoder layer (n-1-i)'s weight transposed; own biases.
            self.decoder = nn.ModuleList()
            self.decoder_bias = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in dec_sizes[1:])
        else:
            self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec_sizes, dec_sizes[1:]))
        self._enc_acts = [_ACTIVATIONS[a] for a in config.layer_activations()]
        self._dec_acts = [_ACTIVATIONS[config.activation]] * (len(dec_sizes) - 2) + [
            _ACTIVATIONS[config.output_activation]]

    def decoder_weights(self) -> list[torch.Tensor]:
        """Decoder weight matrices (out x in), whether tied or not."""
        if self.config.tied:
            return [layer.weight.t() for layer in reversed(self.encoder)]
        return [layer.weight for layer in self.decoder]

    def weights(self) -> list[torch.Tensor]:
        """Every weight matrix once (the parameters weight decay applies to)."""
        ws = [layer.weight for layer in self.encoder]
        return ws if self.config.tied else ws + [layer.weight for layer in self.decoder]

    def encode_all(self, x: torch.Tensor, transformed: bool = False) -> tuple[torch.Tensor, ...]:
        """Activations of every encoder layer for raw input `x` (or already transformed input)."""
        hidden = []
        h = x if transformed else self.input_transform(x)
        for layer, act in zip(self.encoder, self._enc_acts):
            h = act(layer(h))
            hidden.append(h)
        return tuple(hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code (innermost layer's activations) of raw input `x`: the learned features."""
        return self.encode_all(x)[-1]

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        if self.config.tied:
            for w, b, act in zip(self.decoder_weights(), self.decoder_bias, self._dec_acts):
                h = act(F.linear(h, w, b))
        else:
            for layer, act in zip(self.decoder, self._dec_acts):
                h = act(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        target = self.input_transform(x)
        hidden = self.encode_all(target, transformed=True)
        return AutoencoderOutput(self.decode(hidden[-1]), hidden, target)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of raw `x`, mapped back through the inverse input transform."""
        return self.input_transform.inverse_transform(self.decode(self.encode(x)))

    @torch.no_grad()
    def reset_parameters_ng(self, generator: torch.Generator | None = None) -> None:
        """Ng's initialisation: W ~ U[-r, r], r = sqrt(6 / (n_in + n_out + 1)); zero biases."""
        layers = list(self.encoder) + list(self.decoder)
        for layer in layers:
            n_out, n_in = layer.weight.shape
            r = math.sqrt(6.0 / (n_in + n_out + 1))
            layer.weight.uniform_(-r, r, generator=generator)
            layer.bias.zero_()
        if self.config.tied:
            for b in self.decoder_bias:
                b.zero_()
