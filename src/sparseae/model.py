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

from .config import BOUNDED_ACTIVATIONS, ModelConfig
from .topk import (batchtopk_activation, normalize_columns_, remove_parallel_grad_, threshold_activation,
                   topk_activation)
from .transforms import InputTransform

_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "linear": lambda z: z,
    "leaky_relu": F.leaky_relu,
    "softplus": F.softplus,
}


def _this_process(fired: torch.Tensor, rows: int) -> tuple[torch.Tensor, int]:
    return fired, rows


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
        self._init_code_layer()

    # --- code layer: TopK / BatchTopK, unit-norm decoder columns, firing statistics ---

    def _init_code_layer(self) -> None:
        c = self.config
        # Training examples since each code unit last fired (not saved: a statistic of this session).
        self.register_buffer("examples_since_fired", torch.zeros(c.hidden[-1]), persistent=False)
        self.code_preact: torch.Tensor | None = None  # last training batch's pre-TopK code, for AuxK
        # BatchTopK's selection; data-parallel training puts in one over the global batch (distributed.py)
        self.batch_selection = batchtopk_activation
        # (fired, rows) of this process -> of the global batch; data-parallel training puts in an all-reduce
        self.firing_across = _this_process
        if c.topk == "batchtopk":
            # Learned inference threshold; negative means "not learned yet" (fall back to per-example TopK).
            self.register_buffer("batchtopk_threshold", torch.tensor(-1.0))
        if c.unit_norm_decoder:
            w, dim = self.code_decoder_param()
            normalize_columns_(w, dim)
            if not c.tied and len(c.hidden) == 1:
                with torch.no_grad():  # encoder starts as the decoder's transpose (modern SAE recipe)
                    self.encoder[0].weight.copy_(self.decoder[0].weight.t())

    @property
    def active_threshold(self) -> float:
        """|h| above this counts as firing: 1e-2 for sigmoid codes (never exactly 0), else 0."""
        t = self.config.active_threshold
        if t is not None:
            return t
        return 1e-2 if self.config.layer_activations()[-1] in BOUNDED_ACTIVATIONS else 0.0

    def code_decoder_param(self) -> tuple[nn.Parameter, int]:
        """The weight that maps the code out, and the dim along which one unit's column runs."""
        if self.config.tied:
            return self.encoder[-1].weight, 1  # code x in, used transposed
        return self.decoder[0].weight, 0  # out x code

    def output_bias(self) -> torch.Tensor:
        """b_dec: the bias of the last decoder layer."""
        return self.decoder_bias[-1] if self.config.tied else self.decoder[-1].bias

    def before_step(self) -> None:
        """Called between backward() and optimizer.step()."""
        if self.config.unit_norm_decoder:
            remove_parallel_grad_(*self.code_decoder_param())

    def after_step(self) -> None:
        """Called after optimizer.step()."""
        if self.config.unit_norm_decoder:
            normalize_columns_(*self.code_decoder_param())

    def dead_mask(self) -> torch.Tensor:
        """Code units that have not fired for `dead_window` training examples."""
        return self.examples_since_fired >= self.config.dead_window

    def firing_stats(self) -> dict[str, float]:
        return {"dead_window_fraction": self.dead_mask().float().mean().item()}

    @torch.no_grad()
    def count_firing(self, fired: torch.Tensor, rows: int) -> None:
        """Update the counters behind dead_mask: `fired` (per unit) says which units fired in `rows` rows."""
        fired, rows = self.firing_across(fired, rows)
        self.examples_since_fired.add_(rows).masked_fill_(fired, 0)

    @torch.no_grad()
    def _track_firing(self, code: torch.Tensor) -> None:
        self.count_firing((code.detach().abs() > self.active_threshold).any(dim=0), code.shape[0])

    def _code(self, z: torch.Tensor, act, k: int | None) -> torch.Tensor:
        mode = self.config.topk
        if mode == "none":
            return act(z)
        if self.training:
            self.code_preact = z
        if mode == "batchtopk":
            if self.training:
                code, smallest = self.batch_selection(z, self.config.k, act)
                with torch.no_grad():
                    t = self.batchtopk_threshold
                    t.copy_(smallest if t < 0 else 0.99 * t + 0.01 * smallest)
                return code
            if self.batchtopk_threshold >= 0:
                return threshold_activation(z, self.batchtopk_threshold, act)
        return topk_activation(z, k or self.config.k, act)

    def decoder_weights(self) -> list[torch.Tensor]:
        """Decoder weight matrices (out x in), whether tied or not."""
        if self.config.tied:
            return [layer.weight.t() for layer in reversed(self.encoder)]
        return [layer.weight for layer in self.decoder]

    def weights(self) -> list[torch.Tensor]:
        """Every weight matrix once (the parameters weight decay applies to)."""
        ws = [layer.weight for layer in self.encoder]
        return ws if self.config.tied else ws + [layer.weight for layer in self.decoder]

    def encode_all(self, x: torch.Tensor, transformed: bool = False,
                   k: int | None = None) -> tuple[torch.Tensor, ...]:
        """Activations of every encoder layer for raw input `x` (or already transformed input).

        `k` overrides the number of units a TopK code keeps.
        """
        hidden = []
        h = x if transformed else self.input_transform(x)
        if self.config.pre_bias:
            h = h - self.output_bias()
        last = len(self.encoder) - 1
        for i, (layer, act) in enumerate(zip(self.encoder, self._enc_acts)):
            h = self._code(layer(h), act, k) if i == last else act(layer(h))
            hidden.append(h)
        if self.training:
            self._track_firing(h)
        return tuple(hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code (innermost layer's activations) of raw input `x`: the learned features.

        Outside training a TopK code keeps the top encode_alpha * k units.
        """
        k = None
        if self.config.topk == "topk" and not self.training:
            k = min(self.config.hidden[-1], int(round(self.config.encode_alpha * self.config.k)))
        return self.encode_all(x, k=k)[-1]

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
        if self.config.topk_kernel == "sparse" and self.training:
            from .kernels import sparse_topk_forward  # wide TopK: work only on the k active latents
            return sparse_topk_forward(self, x)
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

    @torch.no_grad()
    def reset_parameters_he(self, generator: torch.Generator | None = None) -> None:
        """He (Kaiming normal) weights for layers followed by a ReLU-family activation, zero biases.

        PyTorch's default init shrinks the signal through a deep ReLU stack; He's keeps
        its scale, which lets the tutorial's 10-layer model converge in a fraction of the steps.
        """
        relu_like = ("relu", "leaky_relu")
        acts = self.config.layer_activations() + [self.config.activation] * (len(self.decoder) - 1) + [
            self.config.output_activation]
        for layer, act in zip(list(self.encoder) + list(self.decoder), acts):
            if act in relu_like:
                n_in = layer.weight.shape[1]
                layer.weight.normal_(0.0, math.sqrt(2.0 / n_in), generator=generator)
                layer.bias.zero_()

    def initialize(self, scheme: str, generator: torch.Generator | None = None) -> None:
        """Re-initialise the weights: 'default' (PyTorch's, kept), 'ng' or 'he'."""
        if scheme == "ng":
            self.reset_parameters_ng(generator)
        elif scheme == "he":
            self.reset_parameters_he(generator)
