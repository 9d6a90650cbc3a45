"""The sparse autoencoder: an encoder stack, a decoder stack, nothing else.

`forward` returns the reconstruction *and* the hidden activations the sparsity
penalty needs, so the penalty is computed on the very values the model uses
(one forward pass; the seed tutorial ran a second, different pass).

A transcoder (model.target_dim set, train.target) is the same model with a decoder of the target's width:
its rows are the input followed by the target (data/arrays.py), `_split` cuts them after the input
transform (input_scale's gains, one for each part), the code is computed from the input part and
the reconstruction is compared with the target part. encode, reconstruct and evaluate take either whole
rows or the input alone.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..families import BATCHTOPK, BOUNDED_ACTIVATIONS, COLLAPSED_NORM, JUMPRELU, K_CODES, MP, NONE, TOPK
from .codes import (jumprelu_activation, jumprelu_l0, normalize_columns_, remove_parallel_grad_,
                    support_firing_counts, threshold_activation, topk_select)
from ..errors import SparseAEError
from .collectives import ONE_PROCESS, Collectives
from .init import initialize
from .kernels import centered_linear, sparse_topk_forward
from .output import AutoencoderOutput
from .pursuit import ENCODE_METHODS, matching_pursuit, pursuit_code
from .transforms import InputTransform

_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "linear": lambda z: z,
    "leaky_relu": F.leaky_relu,
    "softplus": F.softplus,
}


class SparseAutoencoder(nn.Module):
    """Encoder `input_dim -> hidden[0] -> ... -> hidden[-1]`, decoder back to `input_dim`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config = self.config = config.resolved()  # a copy: the caller's configuration is left as it is
        row_dim = config.input_dim + (config.target_dim or 0)  # a transcoder's rows: input, then target
        self.input_transform = InputTransform(config.input_transform, row_dim, config.zca_epsilon,
                                              rescale=bool(config.input_scale),
                                              split=None if config.target_dim is None else config.input_dim)
        enc_sizes = [config.input_dim, *config.hidden]
        dec_sizes = [config.hidden[-1], *config.decoder_sizes(), config.output_dim()]
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
        if c.topk == BATCHTOPK:
            # Learned inference threshold; negative means "not learned yet" (fall back to per-example TopK).
            self.register_buffer("batchtopk_threshold", torch.tensor(-1.0))
        # BatchTopK trained with each example's own k (sparsity.batchtopk_warmup), JumpReLU with its start_k largest
        # units (sparsity.topk_start), and JumpReLU's thresholds set from the next batch after that start: the
        # training loop sets these.
        self.per_example_topk = False
        self.start_k: int | None = None
        self.thresholds_pending = False
        if c.topk == JUMPRELU:
            # JumpReLU's per-unit thresholds. Learned as they are, not in log space: Adam moves a parameter
            # by about lr per step, and a log threshold then takes thousands of steps to reach the scale
            # of the pre-activations (kept positive by a clamp where used).
            self.threshold = nn.Parameter(torch.full((c.hidden[-1],), c.jumprelu_threshold))
        # b_dec starts at the data mean (observe_input sets it from the first training batch); until then it
        # is 0, and a model whose weights came from a file (load_run, a checkpoint) never has an all-zero b_dec.
        self._bias_pending = c.bias_init == "mean" and c.one_layer() and c.output_activation == "linear"
        self._gather_ok = c.topk in (TOPK, MP) and c.one_layer() and not c.tied and c.output_activation == "linear"
        if c.topk == MP and not self.pursuit_applies():
            raise SparseAEError("model.topk 'mp' needs a one-layer model with model.output_activation 'linear'")
        if self._bias_pending:
            with torch.no_grad():
                self.output_bias().zero_()
        if c.unit_norm_decoder:
            w, dim = self.code_decoder_param()
            normalize_columns_(w, dim)
            if not c.tied and len(c.hidden) == 1 and c.target_dim is None:
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
        if self.config.unit_norm_decoder:  # columns at unit norm since construction and every after_step
            remove_parallel_grad_(*self.code_decoder_param(), unit_norm=True)

    def after_step(self) -> None:
        """Called after optimizer.step()."""
        if self.config.unit_norm_decoder:
            normalize_columns_(*self.code_decoder_param())

    @torch.no_grad()
    def set_decoder_layout(self, code_major: bool) -> None:
        """For CPU training of a model whose code is decoded by gathering columns (code_major True, set by the
        training loop and undone at its end): the decoder weight (out x code) kept in memory code-major,
        each unit's column contiguous, which is what the gathered decode reads (embedding_bag's rows) and
        what its gradient comes back as: no transposing copy of the weight or of its gradient each step
        (2 ms of a 23 ms step at 784 x 1024, one thread). The same shape, values and Parameter; files
        hold contiguous copies either way. Other models: nothing changes."""
        w = self.decoder[0].weight if self._gather_ok else None
        if w is not None and code_major and w.is_contiguous():
            w.data = w.data.t().contiguous().t()
        elif w is not None and not code_major:
            w.data = w.data.contiguous()

    def dead_mask(self) -> torch.Tensor:
        """Code units that have not fired for `dead_window` training examples."""
        return self.examples_since_fired >= self.config.dead_window

    def auxk_mask(self) -> torch.Tensor:
        """The latents AuxK trains: the dead ones and, with free decoder norms, those whose column collapsed
        (families.COLLAPSED_NORM of the median norm), which fire too seldom for the dead window to catch."""
        dead = self.dead_mask()
        if self.config.unit_norm_decoder:
            return dead
        w, dim = self.code_decoder_param()
        norms = w.detach().norm(dim=dim)
        return dead | (norms < COLLAPSED_NORM * norms.median())

    def firing_stats(self) -> dict[str, float]:
        return {"dead_window_fraction": self.dead_mask().float().mean().item()}

    @torch.no_grad()
    def count_firing(self, fired: torch.Tensor, rows: int, collectives: Collectives = ONE_PROCESS) -> None:
        """Update the counters behind dead_mask: `fired` (per unit) says which units fired in `rows` rows."""
        fired, rows = collectives.firing(fired, rows)
        self.examples_since_fired.add_(rows).masked_fill_(fired, 0)

    @torch.no_grad()
    def observe(self, out: AutoencoderOutput, collectives: Collectives = ONE_PROCESS) -> None:
        """The one place where a training forward pass changes the model's state (no gradient):

        - the firing counters behind `dead_mask` (AuxK's dead units) count this batch;
        - a BatchTopK model's inference threshold moves towards the batch's smallest kept
          activation (an EMA with weight 0.01; the first batch sets it).
        Neither is a parameter: both are statistics of training, so evaluation leaves them alone.
        (`observe_input` is the one state change made before a training pass: b_dec's data init.)
        """
        code, t = out.hidden[-1], self.active_threshold
        fired = out.fired
        if fired is None and out.topk_support is not None:  # the units kept with |h| > t, k a row
            fired = support_firing_counts(*out.topk_support, code.shape[1], t) > 0
        elif fired is None:  # |h| > t somewhere in the batch, as two reductions (no batch x code temporaries)
            c = code.detach()
            fired = (c.amax(dim=0) > t) | (c.amin(dim=0) < -t)
        self.count_firing(fired, code.shape[0], collectives)
        if out.kept_min is not None:
            t = self.batchtopk_threshold
            t.copy_(out.kept_min if t < 0 else 0.99 * t + 0.01 * out.kept_min)

    def gate_threshold(self) -> torch.Tensor:
        """JumpReLU's thresholds, at least 1e-6."""
        return self.threshold.clamp_min(1e-6)

    def prime(self, x: torch.Tensor, collectives: Collectives = ONE_PROCESS) -> None:
        """In training mode, the state a new model takes from its first batch `x` (raw input) before it
        trains on it: b_dec's data init (`observe_input`); nothing afterwards. forward calls it, and so
        does a CUDA graph's recording before it saves the state its warm-up steps must not change."""
        if self.training and self._bias_pending:
            self.observe_input(self._split(self.input_transform(x))[1], collectives)

    @torch.no_grad()
    def observe_input(self, target: torch.Tensor, collectives: Collectives = ONE_PROCESS) -> None:
        """Before the first training pass of a new model with bias_init 'mean': b_dec := the (global)
        batch mean, so the reconstruction starts from the mean input and the pre-encoder bias centres it
        (without centring, most ReLU units of a non-negative input start negative everywhere and die)."""
        self._bias_pending = False
        b = self.output_bias()
        if not bool(b.any()):
            b.copy_(collectives.mean_activation(target).to(b.dtype))

    def _split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the input the encoder reads, the target the output is compared with) of transformed rows `h`:
        both `h` for an autoencoder; a transcoder's rows cut after the input (target None for rows that
        hold only the input)."""
        c = self.config
        if c.target_dim is None:
            return h, h
        width = h.shape[-1]
        if width == c.input_dim + c.target_dim:
            return h[..., :c.input_dim], h[..., c.input_dim:]
        if width == c.input_dim:
            return h, None
        raise SparseAEError(f"this transcoder reads rows of {c.input_dim} input features (or {c.input_dim} + "
                            f"{c.target_dim} with the target); got {width}")

    def _code(self, z: torch.Tensor, act, k: int | None, collectives: Collectives
              ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """The code layer's selection: (code, BatchTopK's smallest kept value in training, else None,
        per-example TopK's (values, indices), else None)."""
        mode = self.config.topk
        if mode == NONE:
            return act(z), None, None
        if mode == JUMPRELU:
            if self.training and self.per_example_topk and self.start_k:
                return topk_select(z, self.start_k, act)[0], None, None
            if self.training and self.thresholds_pending:
                self._thresholds_after_start(z, collectives)
            return jumprelu_activation(z, self.gate_threshold(), self.config.jumprelu_bandwidth), None, None
        if mode == BATCHTOPK and not self.per_example_topk:
            if self.training:
                return *collectives.batchtopk(z, self.config.k, act), None
            if self.batchtopk_threshold >= 0:
                return threshold_activation(z, self.batchtopk_threshold, act), None, None
        code, values, indices = topk_select(z, k or self.config.k, act)
        return code, None, (values, indices)

    @torch.no_grad()
    def _thresholds_after_start(self, z: torch.Tensor, collectives: Collectives) -> None:
        """After a TopK start (sparsity.topk_start): every threshold at the (global) batch's mean start_k-th largest
        pre-activation, so the code opens about as wide as the TopK code it follows."""
        self.thresholds_pending = False
        kth = z.detach().float().topk(self.start_k, dim=-1).values[:, -1:].clamp_min(0)
        self.threshold.fill_(float(collectives.mean_activation(kth)[0]))

    def decoder_weights(self) -> list[torch.Tensor]:
        """Decoder weight matrices (out x in), whether tied or not."""
        if self.config.tied:
            return [layer.weight.t() for layer in reversed(self.encoder)]
        return [layer.weight for layer in self.decoder]

    def weights(self) -> list[torch.Tensor]:
        """Every weight matrix once (the parameters weight decay applies to)."""
        ws = [layer.weight for layer in self.encoder]
        return ws if self.config.tied else ws + [layer.weight for layer in self.decoder]

    def _encode(self, h: torch.Tensor, k: int | None, collectives: Collectives
                ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor | None, Any]:
        """(activations of every encoder layer, the code's pre-activation, BatchTopK's kept minimum,
        per-example TopK's (values, indices)) of transformed input `h`."""
        if self.config.topk == MP:  # the code is a pursuit over the decoder: the encoder's product is not needed
            code, preact, support = self._mp_code(h, k or self.config.k)
            return (code,), preact, None, support
        hidden = []
        last = len(self.encoder) - 1
        z, kept_min, support = h, None, None
        for i, (layer, act) in enumerate(zip(self.encoder, self._enc_acts)):
            if i == 0 and self.config.pre_bias and torch.is_autocast_enabled(h.device.type):
                z = layer(h - self.output_bias())  # bf16: autocast casts nn.Linear, not centered_linear's addmm
            elif i == 0 and self.config.pre_bias:
                z = centered_linear(h, layer.weight, layer.bias, self.output_bias())  # (h - b_dec) W^T + b_enc
            else:
                z = layer(h)
            h, kept_min, support = self._code(z, act, k, collectives) if i == last else (act(z), None, None)
            hidden.append(h)
        return tuple(hidden), z, kept_min, support

    def encode_all(self, x: torch.Tensor, transformed: bool = False,
                   k: int | None = None) -> tuple[torch.Tensor, ...]:
        """Activations of every encoder layer for raw input `x` (or already transformed input).

        `k` overrides the number of units a TopK code keeps.
        """
        h = x if transformed else self.input_transform(x)
        return self._encode(self._split(h)[0], k, ONE_PROCESS)[0]

    def encode(self, x: torch.Tensor, alpha: float | None = None, method: str = TOPK,
               k: int | None = None) -> torch.Tensor:
        """The code (innermost layer's activations) of raw input `x`: the learned features, the code the
        decoder reconstructs from (a TopK model's k units per example, as SAELens and sparsify give).

        `alpha` (>= 1; default: model.encode_alpha, 1 unless set when training) keeps the top alpha * k
        units of a TopK code outside training instead: Makhzani & Frey's features for a classifier.
        `method`: 'topk' (default), the model's own code; 'omp' or 'mp', `k` atoms (default: model.k) chosen
        by orthogonal / plain matching pursuit over the decoder's columns (model/pursuit.py), OMP warm-started
        from the encoder's choice (one-layer models with a linear output).
        """
        if method not in ENCODE_METHODS:
            raise SparseAEError(f"encode method must be one of {', '.join(ENCODE_METHODS)}; got {method!r}")
        if method != ENCODE_METHODS[0]:
            return self._pursue(x, method, k)
        alpha = self.config.encode_alpha if alpha is None else alpha
        if not alpha >= 1:
            raise SparseAEError(f"encode alpha must be >= 1; got {alpha}")
        if self.config.topk == TOPK and not self.training and alpha != 1:
            k = min(self.config.hidden[-1], int(round(alpha * self.config.k)))
        return self.encode_all(x, k=k)[-1]

    def pursuit_applies(self) -> bool:
        """Whether the reconstruction is b_dec + a sum of decoder columns (what pursuit needs)."""
        return self.config.one_layer() and self.config.output_activation == "linear" and self.config.target_dim is None

    def dictionary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the decoder's d x N columns, b_dec) of a one-layer model with a linear output."""
        return self.decoder_weights()[0], self.output_bias()

    def _mp_code(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The MP family's code layer: (code, the first correlations (AuxK's pre-activations), support)."""
        weight, bias = self.dictionary()
        return matching_pursuit(h - bias, weight, k, self._nonneg_pursuit())

    def _nonneg_pursuit(self) -> bool:
        return self.config.layer_activations()[-1] != "linear"

    def require_pursuit(self, method: str) -> None:
        """Refuse, in one line, a pursuit encode this model cannot take."""
        if not self.pursuit_applies():
            raise SparseAEError(f"encode method '{method}' needs a one-layer model with a linear output "
                                f"(this one: hidden {self.config.hidden}, output '{self.config.output_activation}')")

    @torch.no_grad()  # a code to use, not to train through (the MP family's own code layer is _mp_code)
    def _pursue(self, x: torch.Tensor, method: str, k: int | None) -> torch.Tensor:
        self.require_pursuit(method)
        k = k or self.config.k
        if not (isinstance(k, int) and 0 < k <= self.config.hidden[-1]):
            raise SparseAEError(f"encode method '{method}' needs k between 1 and {self.config.hidden[-1]} "
                                f"(k=, or a model trained with one); got {k}")
        h = self.input_transform(x)
        weight, bias = self.dictionary()
        start = None
        if method == "omp":  # warm start: the encoder's k largest units
            start = self.encode_all(h, transformed=True)[-1].abs().topk(k, dim=1).indices
        return pursuit_code(h - bias, weight, k, method, start, self._nonneg_pursuit())

    def forward_encoded(self, x: torch.Tensor, method: str, k: int | None = None) -> AutoencoderOutput:
        """forward's output (no state change) with the code from encode(x, method=method, k=k)."""
        code = self.encode(x, method=method, k=k)
        return AutoencoderOutput(self.decode(code), (code,), self._split(self.input_transform(x))[1], None, None)

    def with_encode_alpha(self, alpha: float | None) -> "SparseAutoencoder":
        """This model, its encode() keeping the top alpha * k units of a TopK code from now on (None: as
        trained); for `probe --encode-alpha` and `report --encode-alpha`. Changes no file."""
        if alpha is not None:
            if not alpha >= 1:
                raise SparseAEError(f"encode alpha must be >= 1; got {alpha}")
            self.config.encode_alpha = float(alpha)
        return self

    def _gather_decode(self, support: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor | None:
        """The reconstruction of a one-layer, untied, linear-output TopK code from its support (values,
        indices), or None where the dense product is the better choice. On the CPU, gathering the k chosen
        decoder columns (embedding_bag, forward and backward) takes 6.4 ms where the dense batch x code x
        input product takes 9.1 (256 rows, 1024 -> 784, one thread); GPUs and bf16 keep the dense product."""
        if support is None or not self._gather_ok:
            return None
        values, indices = support
        if values.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return None
        layer = self.decoder[0]  # embedding_bag reads rows: the weight's transpose (stored so: no copy)
        return F.embedding_bag(indices, layer.weight.t().contiguous(), per_sample_weights=values,
                               mode="sum") + layer.bias

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        if self.config.tied:
            for w, b, act in zip(self.decoder_weights(), self.decoder_bias, self._dec_acts):
                h = act(F.linear(h, w, b))
        else:
            for layer, act in zip(self.decoder, self._dec_acts):
                h = act(layer(h))
        return h

    def forward(self, x: torch.Tensor, collectives: Collectives = ONE_PROCESS) -> AutoencoderOutput:
        """Reconstruction, hidden activations and target of `x`; in training mode also updates the
        firing counters and BatchTopK's threshold (`observe`).

        `collectives`: how a data-parallel run's global-batch statistics are formed (model/collectives.py).
        A model configured with topk_kernel 'sparse' trains through the sparse kernels (same outputs).
        """
        self.prime(x, collectives)
        if self.training and self.config.topk_kernel == "sparse":
            out = sparse_topk_forward(self, x)
        else:
            inputs, target = self._split(self.input_transform(x))
            if target is None:
                raise SparseAEError(f"a transcoder's forward pass needs rows of input and target "
                                    f"({self.config.input_dim} + {self.config.target_dim} features)")
            hidden, preact, kept_min, support = self._encode(inputs, None, collectives)
            # the pre-activation for AuxK (TopK codes) and the pre-activation loss (one-layer L1, JumpReLU)
            top = self.training and (self.config.topk in K_CODES
                                     or self.config.one_layer() and self.config.topk in (JUMPRELU, NONE))
            gate_l0 = jumprelu_l0(preact, self.gate_threshold(), self.config.jumprelu_bandwidth) \
                if self.config.topk == JUMPRELU and self.training else None
            recon = self._gather_decode(support)
            out = AutoencoderOutput(self.decode(hidden[-1]) if recon is None else recon, hidden, target,
                                    preact if top else None, kept_min, gate_l0=gate_l0,
                                    topk_support=support if self.config.topk != MP else None)  # MP may repeat a unit
        if self.training:
            self.observe(out, collectives)
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of raw `x`, mapped back through the inverse input transform."""
        return self.input_transform.inverse_transform(self.decode(self.encode(x)))

    def initialize(self, scheme: str, generator: torch.Generator | None = None) -> None:
        """Re-initialise the weights: 'default' (PyTorch's, kept), 'ng' or 'he' (model/init.py)."""
        initialize(self, scheme, generator)
