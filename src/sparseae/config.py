"""Typed configuration: what a model is and how it is trained.

The dataclasses are the single source of truth for defaults (and, through their
field docstrings, of the CLI's help); `config.json` in a run folder is `asdict()`
of them. Each field's type and rule are checked by the schema (schema.py) the
same way whether the value came from Python, a flag or a file; rules that tie
fields together are in the `validate()` methods, and `RunConfig.validate()` runs
them all: the one place a run's settings are checked.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SparseAEError
from .schema import build, check_choice, check_fields, param, show

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
INPUT_TRANSFORMS = ("none", "standardize", "zca")
PRECISIONS = ("fp32", "tf32", "bf16")
FINETUNE_MODES = ("unsupervised", "supervised", "none")  # apps/stacked.py
LIMIT_METHODS = ("kde", "theory")  # apps/monitor.py: control limits from a KDE or from theory
GRAPHS = ("karate",)  # apps/cluster.py: built-in graphs
FEATURE_SETS = ("wine", "iris", "digits")  # apps/cluster.py: built-in feature sets
# Float32 weights a model may have (8 GiB), checked before anything is allocated.
MAX_PARAMETERS = 2**31


# --- the settings --------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    """Architecture of a (possibly deep) autoencoder."""

    input_dim: int = param(784, gt=0)
    """Number of input features (784 for 28x28 images)."""
    hidden: list[int] = param(factory=lambda: [256], gt=0, nonempty=True)
    """Encoder layer sizes; the last one is the code."""
    decoder: list[int] | None = param(None, gt=0)
    """Decoder hidden sizes (between code and output); default: encoder mirrored."""
    activation: str = param("sigmoid", choices=ACTIVATIONS)
    """Activation of the hidden layers."""
    code_activation: str | None = param(None, choices=ACTIVATIONS)
    """Activation of the code (innermost) layer; default: `activation`."""
    output_activation: str = param("sigmoid", choices=ACTIVATIONS)
    """Activation of the output layer ('linear' for a linear decoder)."""
    tied: bool = False
    """Decoder weights are the encoder weights transposed (needs a mirrored decoder)."""
    image_shape: list[int] | None = param(None, gt=0)
    """Shape of one input as an image (e.g. [28, 28]), for pictures; None if not images."""
    input_transform: str = param("none", choices=INPUT_TRANSFORMS)
    """Transform fitted on the training data and stored with the model: none, standardize or zca."""
    zca_epsilon: float = param(0.1, gt=0)
    """Regulariser of ZCA whitening, U diag(1/sqrt(S + eps)) U^T."""
    topk: str = param("none", choices=TOPK_MODES)
    """Code-layer selection: 'none', 'topk' (k largest per example) or 'batchtopk' (k*batch largest per batch)."""
    k: int | None = param(None, gt=0)
    """Active code units per example for topk/batchtopk."""
    encode_alpha: float = param(1.0, ge=1)
    """At encode time (features) keep the top alpha*k units (alpha >= 1; Makhzani & Frey)."""
    unit_norm_decoder: bool = False
    """Keep each code unit's decoder column at unit norm (renormalised after every step)."""
    pre_bias: bool = False
    """Subtract the output bias b_dec from the input before encoding."""
    active_threshold: float | None = param(None, ge=0)
    """A code value counts as firing when |h| > this; default 1e-2 for sigmoid codes, else 0."""
    dead_window: int = param(60000, gt=0)
    """A code unit that has not fired for this many training examples counts as dead (AuxK)."""
    topk_kernel: str = param("dense", choices=("dense", "sparse"))
    """Training step of a wide TopK model: 'dense' or 'sparse' (gathers only the k active latents'
    decoder rows; encoder gradients only for them; kernels.py)."""

    def decoder_sizes(self) -> list[int]:
        return list(reversed(self.hidden[:-1])) if self.decoder is None else list(self.decoder)

    def layer_activations(self) -> list[str]:
        """Activation after each encoder layer."""
        acts = [self.activation] * len(self.hidden)
        acts[-1] = self.code_activation or self.activation
        return acts

    def parameter_count(self) -> int:
        """A rough size of the model: its layers' weights (in x out each), plus the two d x d
        matrices of a ZCA transform."""
        enc = [self.input_dim, *self.hidden]
        dec = [self.hidden[-1], *self.decoder_sizes(), self.input_dim]
        n = sum(a * b for a, b in zip(enc, enc[1:]))
        if not self.tied:
            n += sum(a * b for a, b in zip(dec, dec[1:]))
        if self.input_transform == "zca":
            n += 2 * self.input_dim ** 2
        return n

    def validate(self) -> None:
        check_fields(self, "model")
        if self.tied and self.decoder_sizes() != list(reversed(self.hidden[:-1])):
            raise SparseAEError("model.tied needs the decoder to mirror the encoder (leave model.decoder unset); "
                                f"got model.decoder {self.decoder}")
        if self.topk != "none":
            if self.k is None:
                raise SparseAEError(f"model.k must be a positive integer with topk '{self.topk}'; got None")
            if self.k > self.hidden[-1]:
                raise SparseAEError(f"model.k must be at most the code size {self.hidden[-1]}; got {self.k}")
        if self.topk_kernel == "sparse":
            check_sparse_kernel(self)
        n = self.parameter_count()
        if n > MAX_PARAMETERS:
            raise SparseAEError(
                f"model.input_dim {self.input_dim} with model.hidden {show(self.hidden)} makes a model of {n:,} "
                f"float32 weights ({4 * n / 2**30:.1f} GiB); at most {MAX_PARAMETERS:,} (2**31) are allowed")


@dataclass
class SparsityConfig:
    """The penalty on hidden activations and the weight decay."""

    penalty: str = param("kl", choices=PENALTIES)
    """'kl' (Bernoulli KL to a target rate rho), 'l1', 'none', or 'topk' (no penalty term:
    sparsity by construction; sets model.topk to 'topk' if it is 'none')."""
    rho: float = param(0.05, gt=0, lt=1)
    """Target mean activation of each penalised unit (KL)."""
    beta: float = param(0.003, ge=0)
    """Weight of the sparsity penalty (KL or L1). The tutorial's 0.001 leaves a 256-unit sigmoid code
    at a mean activation of 0.072 for rho 0.05 after 10 epochs; 0.003 brings it to 0.058."""
    layers: list[int] = field(default_factory=lambda: [-1])
    """Encoder layers penalised (indices into `hidden`); default: the code layer."""
    rho_hat: str = param("batch", choices=("batch", "running"))
    """How rho_hat is estimated: 'batch' (mean over the batch) or 'running' (EMA across batches)."""
    rho_momentum: float = param(0.9, ge=0, lt=1)
    """EMA momentum of the running rho_hat estimate."""
    weight_decay: float = param(0.0, ge=0)
    """lambda in Ng's lambda/2 * sum ||W||^2 (weights only, not biases)."""
    auxk: bool = False
    """AuxK loss: the top k_aux dead code units reconstruct the residual (needs a topk model)."""
    auxk_coef: float = param(1 / 32, ge=0)
    """Weight of the AuxK loss."""
    k_aux: int | None = param(None, gt=0)
    """Dead units used by AuxK; default input_dim / 2 (capped at the code size)."""

    def validate(self, model: ModelConfig) -> None:
        check_fields(self, "sparsity")
        n = len(model.hidden)
        for i in self.layers:
            if not -n <= i < n:
                raise SparseAEError(f"sparsity.layers: penalised layer {i} does not exist; model.hidden has {n} "
                                    f"layers (indices {-n} to {n - 1})")
        if self.auxk:
            if len(model.hidden) != 1 or model.decoder_sizes():
                raise SparseAEError("sparsity.auxk needs a single-layer autoencoder (one model.hidden size, "
                                    "no model.decoder layers)")
            if model.topk == "none" and self.penalty != "topk":
                raise SparseAEError("sparsity.auxk needs a topk or batchtopk model (model.topk, or penalty 'topk', "
                                    "with model.k)")
        if self.penalty == "kl":
            acts = model.layer_activations()
            for i in self.layers:
                if acts[i] not in BOUNDED_ACTIVATIONS:
                    raise SparseAEError(
                        f"the KL penalty needs activations in (0, 1) but layer {i % n} uses '{acts[i]}'; "
                        "set model.activation (or model.code_activation) to 'sigmoid', or penalty to 'l1'")


@dataclass
class TrainConfig:
    """How a model is trained."""

    dataset: str = "fashion-mnist"
    """Name of the data set."""
    data_dir: str | None = None
    """Where the data files are (default: search the usual places)."""
    epochs: int = param(10, gt=0)
    """Number of passes over the training data."""
    batch_size: int = param(256, gt=0)
    """Examples per step."""
    lr: float = param(1e-3, gt=0)
    """Learning rate."""
    optimizer: str = param("adam", choices=OPTIMIZERS)
    """'adam' or 'sgd' (minibatches), or 'lbfgs' or 'cg' (full batch, scipy; see max_iter)."""
    max_iter: int = param(400, gt=0)
    """Iterations of the full-batch optimizers (lbfgs, cg)."""
    threads: int | None = param(None, gt=0)
    """CPU threads the full-batch optimizers use (default: torch's setting); 1 is fastest for
    small models on a busy machine."""
    init: str = param("default", choices=INITS)
    """Weight initialisation: 'default' (PyTorch's), 'ng' (UFLDL: W ~ U[-r, r],
    r = sqrt(6 / (n_in + n_out + 1)), zero biases) or 'he' (Kaiming normal for ReLU layers)."""
    momentum: float = param(0.9, ge=0)
    """SGD momentum."""
    recon: str = param("mse", choices=("mse", "half_sse"))
    """Reconstruction loss: 'mse' (mean over examples and features, as nn.MSELoss) or
    'half_sse' (Ng: 1/2 * squared error summed over features, mean over examples)."""
    seed: int = param(0, ge=0, le=2**63 - 1)
    """Seed for initialisation and shuffling."""
    device: str = param("auto", choices=("auto", "cpu", "cuda"))
    """'auto', 'cpu' or 'cuda'."""
    target_val_mse: float | None = param(None, ge=0)
    """Stop as soon as the validation MSE is at or below this value."""
    limit_train: int | None = param(None, gt=0)
    """Use only the first N training examples."""
    dead_threshold: float = param(1e-3, ge=0)
    """A unit whose mean activation is below this is counted as near-dead."""
    classes: list[int] | None = param(None, ge=0, nonempty=True)
    """Train only on examples of these labels (e.g. 5,6,7,8,9 for self-taught learning)."""
    # The photos are a few hundred pixels on a side: larger patches or blocks leave nothing to cut.
    patch_size: int = param(8, ge=1, le=1024)
    """Side of the square patches (dataset 'patches')."""
    num_patches: int = param(10000, gt=0)
    """Training patches to cut (dataset 'patches'; plus num_patches / 5 held-out ones)."""
    patch_channels: int = param(1, choices=(1, 3))
    """1 (grey) or 3 (colour, e.g. for a linear decoder with ZCA) (dataset 'patches')."""
    whiten_images: bool = True
    """Flatten the photos' 1/f spectrum before cutting patches, like the exercise's IMAGES (dataset 'patches')."""
    image_downsample: int = param(2, ge=1, le=64)
    """Average the photos over d x d pixel blocks before cutting patches (dataset 'patches')."""
    patch_normalize: bool = True
    """Normalise patches as the exercise does (own mean removed, clipped at 3 std, mapped to
    [0.1, 0.9] for a sigmoid output); no: raw pixel values (dataset 'patches')."""
    data: str | None = None
    """Array file for dataset 'array': .npy, .npz, .safetensors, .parquet or .csv (examples x features)."""
    data_key: str | None = None
    """Which array of a .npz/.safetensors file, or comma-separated columns of a .parquet file (dataset 'array')."""
    val_fraction: float = param(0.1, gt=0, lt=1)
    """Share of the file's rows, taken from its end, used for validation (dataset 'array')."""
    stream: str = param("auto", choices=("auto", "yes", "no"))
    """Stream the array file in shuffled chunks: 'auto' (when it is larger than 1/4 of free memory), 'yes' or 'no'."""
    checkpoint_every: int = param(0, ge=0)
    """Also checkpoint every N steps (0: only after each epoch); checkpoints go to the run folder."""
    precision: str = param("fp32", choices=PRECISIONS)
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
        check_fields(self, "train")
        if self.dataset == "array" and not self.data:
            raise SparseAEError("dataset 'array' needs train.data, the path of the array file")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Every rule a run's settings must satisfy, the machine aside (training/accel.py)."""
        if self.sparsity.penalty == "topk" and self.model.topk == "none":
            self.model.topk = "topk"  # --penalty topk --k K is the short spelling
        self.model.validate()
        self.sparsity.validate(self.model)
        self.train.validate()
        check_step_options(self.train, self.model, self.sparsity)
        if self.train.optimizer in FULL_BATCH_OPTIMIZERS:
            check_full_batch_model(self.model)

    def validate_stack(self, finetune: str) -> None:
        """validate(), and what greedy layer-wise training (apps/stacked.py) needs."""
        self.validate()
        check_choice("finetune", finetune, FINETUNE_MODES)
        m = self.model
        if len(m.hidden) < 2:
            raise SparseAEError(f"a stack needs at least two hidden layers; got model.hidden {m.hidden}")
        if m.decoder is not None or m.pre_bias:
            raise SparseAEError("stacked training builds a mirrored decoder without pre_bias; "
                                "leave model.decoder and model.pre_bias unset")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        """The configuration a parsed JSON object describes (config.json, or defaults and flags merged):
        every value's type is checked and unknown keys are refused; missing keys take their defaults.
        The rules come with validate()."""
        return build(cls, d)




def check_sparse_kernel(model: ModelConfig) -> None:
    """The sparse path computes one relu TopK layer with a linear output (the modern SAE)."""
    if model.topk != "topk" or len(model.hidden) != 1 or model.decoder_sizes() or model.tied:
        raise SparseAEError("model.topk_kernel 'sparse' needs a single-layer, untied TopK model (model.topk "
                            "'topk' with model.k, one model.hidden size)")
    if model.layer_activations()[-1] != "relu" or model.output_activation != "linear":
        raise SparseAEError("model.topk_kernel 'sparse' needs model.code_activation 'relu' and "
                            "model.output_activation 'linear'")


def check_step_options(train: TrainConfig, model: ModelConfig, sparsity: SparsityConfig) -> None:
    """What the fast training step (training/accel.py) cannot do, on any machine."""
    if model.topk_kernel == "sparse" and sparsity.auxk:
        raise SparseAEError("model.topk_kernel 'sparse' does not compute AuxK (it needs every pre-activation); "
                            "use topk_kernel 'dense' with sparsity.auxk")
    if train.cuda_graph:
        reasons = []
        if sparsity.rho_hat == "running":
            reasons.append("sparsity.rho_hat 'running' (its estimate is replaced every step)")
        if model.topk == "batchtopk":
            reasons.append("model.topk 'batchtopk' (data-dependent selection size)")
        if sparsity.auxk:
            reasons.append("sparsity.auxk (counts dead units on the CPU)")
        if reasons:
            raise SparseAEError("train.cuda_graph cannot be used with " + "; ".join(reasons))


def check_full_batch_model(model: ModelConfig) -> None:
    """What a full-batch optimizer (training/fullbatch.py) cannot train."""
    if model.unit_norm_decoder:
        raise SparseAEError("model.unit_norm_decoder is a constraint applied between minibatch steps; "
                            "use optimizer 'adam' or 'sgd' with it")


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
