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
# 'topk' adds no penalty term: sparsity comes by construction from ModelConfig.topk.
PENALTIES = ("kl", "l1", "none", "topk")
TOPK_MODES = ("none", "topk", "batchtopk")
# lbfgs and cg are full-batch (fullbatch.py): every step sees the whole training set.
OPTIMIZERS = ("adam", "sgd", "lbfgs", "cg")
FULL_BATCH_OPTIMIZERS = ("lbfgs", "cg")
INITS = ("default", "ng", "he")


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
    topk: str = "none"
    """Code-layer selection: 'none', 'topk' (k largest per example) or 'batchtopk' (k*batch largest per batch)."""
    k: int | None = None
    """Active code units per example for topk/batchtopk."""
    encode_alpha: float = 1.0
    """At encode time (features) keep the top alpha*k units (alpha >= 1; Makhzani & Frey)."""
    unit_norm_decoder: bool = False
    """Keep each code unit's decoder column at unit norm (renormalised after every step)."""
    pre_bias: bool = False
    """Subtract the output bias b_dec from the input before encoding."""
    active_threshold: float | None = None
    """A code value counts as firing when |h| > this; default 1e-2 for sigmoid codes, else 0."""
    dead_window: int = 60000
    """A code unit that has not fired for this many training examples counts as dead (AuxK)."""
    topk_kernel: str = "dense"
    """Training step of a wide TopK model: 'dense' or 'sparse' (gathers only the k active latents'
    decoder rows; encoder gradients only for them; kernels.py)."""

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
        _check_choice("topk", self.topk, TOPK_MODES)
        if self.topk != "none":
            if self.k is None or self.k <= 0:
                raise SparseAEError(f"k must be a positive integer with topk '{self.topk}', got {self.k}")
            if self.k > self.hidden[-1]:
                raise SparseAEError(f"k must be at most the code size {self.hidden[-1]}, got {self.k}")
        if not (self.encode_alpha >= 1.0) or not math.isfinite(self.encode_alpha):
            raise SparseAEError(f"encode_alpha must be >= 1, got {self.encode_alpha}")
        if self.active_threshold is not None and not self.active_threshold >= 0.0:
            raise SparseAEError(f"active_threshold must be >= 0, got {self.active_threshold}")
        if self.dead_window <= 0:
            raise SparseAEError(f"dead_window must be positive, got {self.dead_window}")
        _check_choice("topk_kernel", self.topk_kernel, ("dense", "sparse"))
        if self.topk_kernel == "sparse":
            from .model.kernels import check_sparse_kernel
            check_sparse_kernel(self)


@dataclass
class SparsityConfig:
    """The penalty on hidden activations and the weight decay."""

    penalty: str = "kl"
    """'kl' (Bernoulli KL to a target rate rho), 'l1', 'none', or 'topk' (no penalty term:
    sparsity by construction; sets model.topk to 'topk' if it is 'none')."""
    rho: float = 0.05
    """Target mean activation of each penalised unit (KL)."""
    beta: float = 0.003
    """Weight of the sparsity penalty (KL or L1). The tutorial's 0.001 leaves a 256-unit sigmoid code
    at a mean activation of 0.072 for rho 0.05 after 10 epochs; 0.003 brings it to 0.058."""
    layers: list[int] = field(default_factory=lambda: [-1])
    """Encoder layers penalised (indices into `hidden`); default: the code layer."""
    rho_hat: str = "batch"
    """How rho_hat is estimated: 'batch' (mean over the batch) or 'running' (EMA across batches)."""
    rho_momentum: float = 0.9
    """EMA momentum of the running rho_hat estimate."""
    weight_decay: float = 0.0
    """lambda in Ng's lambda/2 * sum ||W||^2 (weights only, not biases)."""
    auxk: bool = False
    """AuxK loss: the top k_aux dead code units reconstruct the residual (needs a topk model)."""
    auxk_coef: float = 1 / 32
    """Weight of the AuxK loss."""
    k_aux: int | None = None
    """Dead units used by AuxK; default input_dim / 2 (capped at the code size)."""

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
        if self.auxk:
            if len(model.hidden) != 1 or model.decoder_sizes():
                raise SparseAEError("auxk needs a single-layer autoencoder (one hidden size, no decoder layers)")
            if model.topk == "none" and self.penalty != "topk":
                raise SparseAEError("auxk needs a topk or batchtopk model (--penalty topk --k K)")
            if not (self.auxk_coef >= 0.0) or not math.isfinite(self.auxk_coef):
                raise SparseAEError(f"auxk_coef must be >= 0, got {self.auxk_coef}")
            if self.k_aux is not None and self.k_aux <= 0:
                raise SparseAEError(f"k_aux must be positive, got {self.k_aux}")
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
    """'adam' or 'sgd' (minibatches), or 'lbfgs' or 'cg' (full batch, scipy; see max_iter)."""
    max_iter: int = 400
    """Iterations of the full-batch optimizers (lbfgs, cg)."""
    threads: int | None = None
    """CPU threads the full-batch optimizers use (default: torch's setting); 1 is fastest for
    small models on a busy machine."""
    init: str = "default"
    """Weight initialisation: 'default' (PyTorch's), 'ng' (UFLDL: W ~ U[-r, r],
    r = sqrt(6 / (n_in + n_out + 1)), zero biases) or 'he' (Kaiming normal for ReLU layers)."""
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
    classes: list[int] | None = None
    """Train only on examples of these labels (e.g. 5,6,7,8,9 for self-taught learning)."""
    patch_size: int = 8
    """Side of the square patches (dataset 'patches')."""
    num_patches: int = 10000
    """Training patches to cut (dataset 'patches'; plus num_patches / 5 held-out ones)."""
    patch_channels: int = 1
    """1 (grey) or 3 (colour, e.g. for a linear decoder with ZCA) (dataset 'patches')."""
    whiten_images: bool = True
    """Flatten the photos' 1/f spectrum before cutting patches, like the exercise's IMAGES (dataset 'patches')."""
    image_downsample: int = 2
    """Average the photos over d x d pixel blocks before cutting patches (dataset 'patches')."""
    patch_normalize: bool = True
    """Normalise patches as the exercise does (own mean removed, clipped at 3 std, mapped to
    [0.1, 0.9] for a sigmoid output); no: raw pixel values (dataset 'patches')."""
    data: str | None = None
    """Array file for dataset 'array': .npy, .npz, .safetensors, .parquet or .csv (examples x features)."""
    data_key: str | None = None
    """Which array of a .npz/.safetensors file, or comma-separated columns of a .parquet file (dataset 'array')."""
    val_fraction: float = 0.1
    """Share of the file's rows, taken from its end, used for validation (dataset 'array')."""
    stream: str = "auto"
    """Stream the array file in shuffled chunks: 'auto' (when it is larger than 1/4 of free memory), 'yes' or 'no'."""
    checkpoint_every: int = 0
    """Also checkpoint every N steps (0: only after each epoch); checkpoints go to the run folder."""
    precision: str = "fp32"
    """'fp32', 'tf32' (TensorFloat-32 matmuls on GPUs) or 'bf16' (autocast forward pass, float32 loss)."""
    compile: bool = False
    """Compile the forward pass and loss with torch.compile."""
    cuda_graph: bool = False
    """Record each training step as one CUDA graph and replay it (GPU only)."""

    def dataset_options(self) -> dict[str, Any]:
        """Keyword options for the data set's loader."""
        if self.dataset == "array":
            return {"path": self.data, "key": self.data_key, "val_fraction": self.val_fraction,
                    "limit_train": self.limit_train, "stream": self.stream}
        if self.dataset != "patches":
            return {}
        return {"patch_size": self.patch_size, "num_patches": self.num_patches,
                "patch_channels": self.patch_channels, "whiten_images": self.whiten_images,
                "image_downsample": self.image_downsample, "normalize": self.patch_normalize, "seed": self.seed}

    def validate(self) -> None:
        if self.max_iter <= 0:
            raise SparseAEError(f"max_iter must be positive, got {self.max_iter}")
        if self.threads is not None and self.threads <= 0:
            raise SparseAEError(f"threads must be positive, got {self.threads}")
        _check_choice("init", self.init, INITS)
        if self.patch_size <= 0:
            raise SparseAEError(f"patch_size must be positive, got {self.patch_size}")
        if self.num_patches <= 0:
            raise SparseAEError(f"num_patches must be positive, got {self.num_patches}")
        if self.patch_channels not in (1, 3):
            raise SparseAEError(f"patch_channels must be 1 or 3, got {self.patch_channels}")
        if self.image_downsample <= 0:
            raise SparseAEError(f"image_downsample must be positive, got {self.image_downsample}")
        if self.classes is not None and not self.classes:
            raise SparseAEError("classes must name at least one label")
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
        if self.dataset == "array" and not self.data:
            raise SparseAEError("dataset 'array' needs a file: --data PATH")
        if not (0.0 < self.val_fraction < 1.0):
            raise SparseAEError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _check_choice("stream", self.stream, ("auto", "yes", "no"))
        if self.checkpoint_every < 0:
            raise SparseAEError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        _check_choice("precision", self.precision, ("fp32", "tf32", "bf16"))


@dataclass
class RunConfig:
    """Everything that defines a run; saved as config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.sparsity.penalty == "topk" and self.model.topk == "none":
            self.model.topk = "topk"  # --penalty topk --k K is the short spelling
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
        # He init keeps the signal's scale through the deep ReLU stack; with it, batch 128 and
        # Adam at 5e-3 pass the tutorial's 10-epoch validation MSE within the first epoch.
        "train": {"init": "he", "batch_size": 128, "lr": 5e-3},
    },
    # UFLDL sparse autoencoder exercise: 64-25-64 sigmoid on 8x8 natural-image patches,
    # J = 1/(2m) sum ||h(x)-x||^2 + lambda/2 sum ||W||^2 + beta sum KL, Ng's init, L-BFGS 400.
    # One thread: for models this small, more only add hand-offs (and lose on a shared machine).
    "ufldl": {
        "model": {"hidden": [25], "activation": "sigmoid", "output_activation": "sigmoid"},
        "sparsity": {"penalty": "kl", "rho": 0.01, "beta": 3.0, "weight_decay": 1e-4},
        "train": {"dataset": "patches", "recon": "half_sse", "init": "ng", "optimizer": "lbfgs",
                  "max_iter": 400, "threads": 1},
    },
    # UFLDL linear decoder: 8x8x3 colour patches as pixel values in [0, 1], the dataset mean
    # removed and ZCA-whitened (eps 0.1) by the model, 192-400-192, linear output.
    "ufldl-linear": {
        "model": {"hidden": [400], "activation": "sigmoid", "output_activation": "linear",
                  "input_transform": "zca", "zca_epsilon": 0.1},
        "sparsity": {"penalty": "kl", "rho": 0.035, "beta": 5.0, "weight_decay": 3e-3},
        "train": {"dataset": "patches", "patch_channels": 3, "whiten_images": False, "patch_normalize": False,
                  "recon": "half_sse", "init": "ng", "optimizer": "lbfgs", "max_iter": 400, "threads": 1},
    },
}
