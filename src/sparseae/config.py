"""Typed configuration: what a model is and how it is trained.

The dataclasses are the single source of truth for defaults; the CLI mirrors
them and `config.json` in a run folder is `asdict()` of them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import SparseAEError

# Activations whose values lie in (0, 1): the only ones a KL penalty is defined on.
BOUNDED_ACTIVATIONS = ("sigmoid",)
ACTIVATIONS = ("sigmoid", "relu", "tanh", "linear", "leaky_relu", "softplus")
PENALTIES = ("kl", "l1", "none")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class ModelConfig:
    """Architecture of a (possibly deep) autoencoder."""

    input_dim: int = 784
    """Number of input features (784 for 28x28 images)."""
    hidden: list[int] = field(default_factory=lambda: [256])
    """Encoder layer sizes; the last one is the code."""
    decoder: list[int] | None = None
    """Decoder hidden sizes (between code and output); default: encoder mirrored."""
    activation: str = "sigmoid"
    """Activation of the hidden layers."""
    code_activation: str | None = None
    """Activation of the code (innermost) layer; default: `activation`."""
    output_activation: str = "sigmoid"
    """Activation of the output layer ('linear' for a linear decoder)."""
    tied: bool = False
    """Decoder weights are the encoder weights transposed (needs a mirrored decoder)."""
    image_shape: list[int] | None = None
    """Shape of one input as an image (e.g. [28, 28]), for pictures; None if not images."""
    input_transform: str = "none"
    """Transform fitted on the training data and stored with the model: none, standardize or zca."""
    zca_epsilon: float = 0.1
    """Regulariser of ZCA whitening, U diag(1/sqrt(S + eps)) U^T."""

    def decoder_sizes(self) -> list[int]:
        return list(reversed(self.hidden[:-1])) if self.decoder is None else list(self.decoder)

    def layer_activations(self) -> list[str]:
        """Activation after each encoder layer."""
        acts = [self.activation] * len(self.hidden)
        acts[-1] = self.code_activation or self.activation
        return acts

    def validate(self) -> None:
        if self.input_dim <= 0:
            raise SparseAEError(f"input_dim must be positive, got {self.input_dim}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise SparseAEError(f"hidden sizes must be positive integers, got {self.hidden}")
        for name in ("activation", "output_activation"):
            _check_choice(name, getattr(self, name), ACTIVATIONS)
        if self.code_activation is not None:
            _check_choice("code_activation", self.code_activation, ACTIVATIONS)
        if self.decoder is not None and any(h <= 0 for h in self.decoder):
            raise SparseAEError(f"decoder sizes must be positive integers, got {self.decoder}")
        if self.tied and self.decoder_sizes() != list(reversed(self.hidden[:-1])):
            raise SparseAEError("tied weights need the decoder to mirror the encoder (leave decoder unset)")


@dataclass
class SparsityConfig:
    """The penalty on hidden activations and the weight decay."""

    penalty: str = "kl"
    """'kl' (Bernoulli KL to a target rate rho), 'l1', or 'none'."""
    rho: float = 0.05
    """Target mean activation of each penalised unit (KL)."""
    beta: float = 0.001
    """Weight of the sparsity penalty (KL or L1)."""
    layers: list[int] = field(default_factory=lambda: [-1])
    """Encoder layers penalised (indices into `hidden`); default: the code layer."""
    rho_hat: str = "batch"
    """How rho_hat is estimated: 'batch' (mean over the batch) or 'running' (EMA across batches)."""
    rho_momentum: float = 0.9
    """EMA momentum of the running rho_hat estimate."""
    weight_decay: float = 0.0
    """lambda in Ng's lambda/2 * sum ||W||^2 (weights only, not biases)."""

    def validate(self, model: ModelConfig) -> None:
        _check_choice("penalty", self.penalty, PENALTIES)
        _check_choice("rho_hat", self.rho_hat, ("batch", "running"))
        if not (0.0 < self.rho < 1.0) or not math.isfinite(self.rho):
            raise SparseAEError(f"rho must be in (0, 1), got {self.rho}")
        if not (self.beta >= 0.0) or not math.isfinite(self.beta):
            raise SparseAEError(f"beta must be >= 0, got {self.beta}")
        if not (self.weight_decay >= 0.0) or not math.isfinite(self.weight_decay):
            raise SparseAEError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (0.0 <= self.rho_momentum < 1.0):
            raise SparseAEError(f"rho_momentum must be in [0, 1), got {self.rho_momentum}")
        n = len(model.hidden)
        for i in self.layers:
            if not -n <= i < n:
                raise SparseAEError(f"penalised layer {i} does not exist: the encoder has {n} hidden layers")
        if self.penalty == "kl":
            acts = model.layer_activations()
            for i in self.layers:
                if acts[i] not in BOUNDED_ACTIVATIONS:
                    raise SparseAEError(
                        f"the KL penalty needs activations in (0, 1) but layer {i % n} uses "
                        f"'{acts[i]}'; use --activation sigmoid (or --code-activation sigmoid), "
                        "or --penalty l1")


@dataclass
class TrainConfig:
    """How a model is trained."""

    dataset: str = "fashion-mnist"
    """Name of the data set."""
    data_dir: str | None = None
    """Where the data files are (default: search the usual places)."""
    epochs: int = 10
    """Number of passes over the training data."""
    batch_size: int = 256
    """Examples per step."""
    lr: float = 1e-3
    """Learning rate."""
    optimizer: str = "adam"
    """'adam' or 'sgd'."""
    momentum: float = 0.9
    """SGD momentum."""
    recon: str = "mse"
    """Reconstruction loss: 'mse' (mean over examples and features, as nn.MSELoss) or
    'half_sse' (Ng: 1/2 * squared error summed over features, mean over examples)."""
    seed: int = 0
    """Seed for initialisation and shuffling."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""
    target_val_mse: float | None = None
    """Stop as soon as the validation MSE is at or below this value."""
    limit_train: int | None = None
    """Use only the first N training examples."""
    dead_threshold: float = 1e-3
    """A unit whose mean activation is below this is counted as near-dead."""

    def validate(self) -> None:
        if self.epochs <= 0:
            raise SparseAEError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise SparseAEError(f"batch_size must be positive, got {self.batch_size}")
        if not (self.lr > 0.0) or not math.isfinite(self.lr):
            raise SparseAEError(f"lr must be positive, got {self.lr}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("recon", self.recon, ("mse", "half_sse"))
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))
        if self.limit_train is not None and self.limit_train <= 0:
            raise SparseAEError(f"limit_train must be positive, got {self.limit_train}")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.model.validate()
        self.sparsity.validate(self.model)
        self.train.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return cls(model=_build(ModelConfig, d.get("model", {})),
                   sparsity=_build(SparsityConfig, d.get("sparsity", {})),
                   train=_build(TrainConfig, d.get("train", {})))


def _build(cls, d: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise SparseAEError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
    return cls(**d)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SparseAEError(f"{name} must be one of {', '.join(allowed)}; got '{value}'")


# The seed tutorial's network (784-256-128-64-32-16, mirrored) with a correct KL:
# ReLU hidden layers as in the tutorial, a sigmoid code layer so that the KL is
# defined, a sigmoid output for pixels in [0, 1].
PRESETS: dict[str, dict[str, Any]] = {
    "tutorial": {
        "model": {"hidden": [256, 128, 64, 32, 16], "activation": "relu",
                  "code_activation": "sigmoid", "output_activation": "sigmoid"},
        "sparsity": {"penalty": "kl", "rho": 0.05, "beta": 0.001},
    },
}
