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
# 'topk', 'batchtopk' and 'matryoshka' add no penalty term: sparsity comes by construction from
# ModelConfig.topk; 'jumprelu' is an L0 penalty on a thresholded code (ModelConfig.topk 'jumprelu').
PENALTIES = ("kl", "l1", "none", "topk", "batchtopk", "jumprelu", "matryoshka")
TOPK_MODES = ("none", "topk", "batchtopk", "jumprelu")
# The code layer a penalty implies when model.topk is 'none' (the short spelling `--penalty topk --k K`).
PENALTY_CODES = {"topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu", "matryoshka": "batchtopk"}
BIAS_INITS = ("default", "mean")
RECONS = ("mse", "half_sse", "fvu")
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


# --- the sparsity families' defaults ------------------------------------------------------------------

# What each family gives for the settings left unset (None): its best measured recipe
# (docs/sparsity_families.md has the commands and numbers). "model" and "sparsity" apply to every
# model of the family, "one_layer" only to one hidden layer without decoder layers (the modern SAE:
# a stack or a deep model keeps its plain decoder). Whatever is still unset after the family's
# entry takes OFF. An explicit value (flag, preset, config.json, Python) always wins.
OFF: dict[str, dict[str, Any]] = {
    "model": {"activation": "sigmoid", "output_activation": "sigmoid", "unit_norm_decoder": False,
              "pre_bias": False, "bias_init": "default", "dead_window": 60000, "encode_alpha": 1.0},
    "sparsity": {"beta": 0.0, "auxk": False, "decoder_norm_l1": False, "beta_warmup": 0},
    "train": {"recon": "mse", "lr": 1e-3, "lr_decay": 0.0},
}
# The modern TopK SAE (Gao et al. 2024; EleutherAI sparsify): ReLU after the selection, linear output,
# unit-norm decoder columns with the parallel gradient removed, encoder starting as the decoder's
# transpose, b_dec starting at the data mean and subtracted before the encoder, AuxK on.
_MODERN_ONE_LAYER = {"model": {"unit_norm_decoder": True, "pre_bias": True, "bias_init": "mean",
                               "dead_window": 2000},
                     "sparsity": {"auxk": True}}


def _topk_lr(model: "ModelConfig | None") -> float:
    """The TopK families' learning rate for the code's width: 1.5e-3 up to 1,024 latents, then falling as
    1 / sqrt(latents) (the rule of OpenAI's and EleutherAI's SAEs). 1.5e-3 with the last fifth of the steps
    decaying to 0 took 1024 latents, k 32, 5 epochs from FVU 0.0942 to 0.0888, none dead; 2e-3 left 4-13%
    dead there, and 1.5e-3 left 34% of a 4096-latent code (k 64) dead (docs/sparsity_families.md)."""
    width = model.hidden[-1] if model is not None else 1024
    return 1.5e-3 * min(1.0, (1024 / width) ** 0.5)


_MODERN = {"model": {"activation": "relu", "output_activation": "linear", "encode_alpha": 2.0},
           "train": {"recon": "fvu", "lr": _topk_lr, "lr_decay": 0.2},
           "one_layer": _MODERN_ONE_LAYER}
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # Ng's sparse autoencoder, unchanged: sigmoid units and output, beta 0.003 (SparsityConfig.beta).
    "kl": {"sparsity": {"beta": 0.003}},
    "none": {},
    "topk": _MODERN,
    "batchtopk": _MODERN,
    "matryoshka": _MODERN,
    # Anthropic's April 2024 update: ReLU, linear output, L1 of each |h_j| times its decoder column's
    # norm (no unit-norm constraint), beta warmed up from 0; b_dec at the data mean and subtracted (not
    # subtracted, 53-58% of the units never fired on non-negative pixels).
    "l1": {"model": {"activation": "relu", "output_activation": "linear"},
           "one_layer": {"model": {"pre_bias": True, "bias_init": "mean"}},
           "sparsity": {"beta": 1e-3, "decoder_norm_l1": True, "beta_warmup": 200},
           # 256 units, 3 epochs, beta 3e-4: L0 66.6, FVU / PCA's at that L0 1.014 with lr 1e-3; 0.845 with 3e-3
           "train": {"lr": 3e-3}},
    # Rajamanoharan et al. 2024: thresholds learned through a straight-through estimator, L0 penalty.
    "jumprelu": {"model": {"activation": "relu", "output_activation": "linear", "jumprelu_threshold": 0.1,
                           "jumprelu_bandwidth": 0.05},
                 "one_layer": {"model": {"unit_norm_decoder": True, "pre_bias": True, "bias_init": "mean"}},
                 "sparsity": {"beta": 1e-3, "beta_warmup": 200},
                 # beta 1e-3: L0 42.5, ratio to PCA 0.757 with lr 1e-3; L0 33.1, 0.633 with 3e-3 (256 units)
                 "train": {"recon": "fvu", "lr": 3e-3}},
}
# Settings added by issue 11 that only some families use, with the value that means "not used". A file
# written before them lacks them and was trained without them: from_dict reads a missing one as that
# value, and to_dict leaves it out while it has it, so an old config.json reads back as it is.
ADDED_LATER: dict[str, dict[str, Any]] = {
    "model": {"bias_init": "default", "jumprelu_threshold": None, "jumprelu_bandwidth": None},
    "sparsity": {"decoder_norm_l1": False, "beta_warmup": 0, "prefixes": None},
    "train": {"lr_decay": 0.0},
}
# The family of a model on its own (no sparsity section): its code layer's.
MODE_FAMILIES = {"topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu", "none": "kl"}


def family_of(model: "ModelConfig", sparsity: "SparsityConfig") -> str:
    """The family whose defaults a run takes: its penalty, or for penalty 'none' (or the old spelling
    '--topk batchtopk --penalty topk') its code layer's."""
    p = sparsity.penalty
    if p == "none" and model.topk != "none":
        return MODE_FAMILIES[model.topk]
    if p == "topk" and model.topk == "batchtopk":
        return "batchtopk"
    return p


def fill_family_defaults(model: "ModelConfig | None", sparsity: "SparsityConfig | None", family: str,
                         train: "TrainConfig | None" = None) -> None:
    """Set every unset (None) setting of `model` (and `sparsity`, `train`) to `family`'s default, then OFF's."""
    entry = FAMILY_DEFAULTS.get(family, {})  # an unknown penalty is refused by the field's check
    layers = [entry, entry.get("one_layer", {}) if model is not None and model.one_layer() else {}, OFF]
    if sparsity is not None and sparsity.auxk is None and model is not None and model.topk_kernel == "sparse":
        sparsity.auxk = False  # the sparse kernel never forms the dense pre-activations AuxK picks from
    for section, obj in (("model", model), ("sparsity", sparsity), ("train", train)):
        if obj is None:
            continue
        for values in (layer.get(section, {}) for layer in layers):
            for name, value in values.items():
                if getattr(obj, name) is None:
                    setattr(obj, name, value(model) if callable(value) else value)  # e.g. by the width


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
    activation: str | None = param(None, choices=ACTIVATIONS)
    """Activation of the hidden layers; default: the sparsity family's (sigmoid for kl and none, relu for
    the others; FAMILY_DEFAULTS)."""
    code_activation: str | None = param(None, choices=ACTIVATIONS)
    """Activation of the code (innermost) layer; default: `activation`."""
    output_activation: str | None = param(None, choices=ACTIVATIONS)
    """Activation of the output layer ('linear' for a linear decoder); default: the family's (sigmoid for
    kl and none, linear for the others)."""
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
    encode_alpha: float | None = param(None, ge=1)
    """At encode time (features) keep the top alpha*k units (alpha >= 1; Makhzani & Frey); default: 2 for
    topk models (a linear probe's test accuracy on 1000 units, k 40: 0.866 with 1, 0.875 with 2), else 1."""
    unit_norm_decoder: bool | None = None
    """Keep each code unit's decoder column at unit norm (renormalised after every step); default: yes for
    one-layer topk, batchtopk, jumprelu and matryoshka models."""
    pre_bias: bool | None = None
    """Subtract the output bias b_dec from the input before encoding; default: yes for one-layer topk,
    batchtopk, jumprelu and matryoshka models."""
    bias_init: str | None = param(None, choices=BIAS_INITS)
    """Output bias b_dec at the start: 'mean' (the mean of the first training batch; one-layer models with
    a linear output) or 'default' (the initialisation's); default: 'mean' for one-layer models of the
    families with a linear output."""
    jumprelu_threshold: float | None = param(None, gt=0)
    """JumpReLU: every code unit's learned threshold starts at this value; default 0.1."""
    jumprelu_bandwidth: float | None = param(None, gt=0)
    """JumpReLU: width of the straight-through estimator's rectangle kernel (the thresholds' gradient);
    default 0.05."""
    active_threshold: float | None = param(None, ge=0)
    """A code value counts as firing when |h| > this; default 1e-2 for sigmoid codes, else 0."""
    dead_window: int | None = param(None, gt=0)
    """A code unit that has not fired for this many training examples counts as dead (AuxK); default: 2000
    for one-layer topk, batchtopk and matryoshka models (AuxK revives a unit within a few steps), else
    60000 (one FashionMNIST epoch)."""
    topk_kernel: str = param("dense", choices=("dense", "sparse"))
    """Training step of a wide TopK model: 'dense' or 'sparse' (gathers only the k active latents'
    decoder rows; encoder gradients only for them; kernels.py)."""

    def one_layer(self) -> bool:
        """One hidden layer and no decoder layers: the shape of a modern SAE."""
        return len(self.hidden) == 1 and not self.decoder_sizes()

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
        fill_family_defaults(self, None, MODE_FAMILIES[self.topk] if self.topk in MODE_FAMILIES else "kl")
        check_fields(self, "model")
        if self.tied and self.decoder_sizes() != list(reversed(self.hidden[:-1])):
            raise SparseAEError("model.tied needs the decoder to mirror the encoder (leave model.decoder unset); "
                                f"got model.decoder {self.decoder}")
        if self.topk not in ("none", "jumprelu"):
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
    """The sparsity family: 'kl' (Bernoulli KL to a target rate rho), 'l1', 'none', 'topk' or 'batchtopk'
    (no penalty term: sparse by construction), 'jumprelu' (L0 penalty on a code with learned thresholds)
    or 'matryoshka' (BatchTopK trained to reconstruct from nested prefixes of the dictionary). Each brings
    its best measured recipe for the settings left unset (FAMILY_DEFAULTS, docs/sparsity_families.md) and
    sets model.topk to its code layer if that is 'none'."""
    rho: float = param(0.05, gt=0, lt=1)
    """Target mean activation of each penalised unit (KL)."""
    beta: float | None = param(None, ge=0)
    """Weight of the sparsity penalty (KL, L1 or JumpReLU's L0); default: the family's (kl 0.003: the
    tutorial's 0.001 leaves a 256-unit sigmoid code at a mean activation of 0.072 for rho 0.05 after 10
    epochs, 0.003 brings it to 0.058)."""
    layers: list[int] = field(default_factory=lambda: [-1])
    """Encoder layers penalised (indices into `hidden`); default: the code layer."""
    rho_hat: str = param("batch", choices=("batch", "running"))
    """How rho_hat is estimated: 'batch' (mean over the batch) or 'running' (EMA across batches)."""
    rho_momentum: float = param(0.9, ge=0, lt=1)
    """EMA momentum of the running rho_hat estimate."""
    weight_decay: float = param(0.0, ge=0)
    """lambda in Ng's lambda/2 * sum ||W||^2 (weights only, not biases)."""
    auxk: bool | None = None
    """AuxK loss: the top k_aux dead code units reconstruct the residual (needs a topk model); default:
    yes for one-layer topk, batchtopk and matryoshka models."""
    auxk_coef: float = param(1 / 8, ge=0)
    """Weight of the AuxK loss. 1/8 rather than OpenAI's 1/32: with the TopK defaults (lr 1.5e-3), 1/32 left
    1.6% of a 1024-latent FashionMNIST code never firing, 1/8 none (docs/sparsity_families.md)."""
    k_aux: int | None = param(None, gt=0)
    """Dead units used by AuxK; default input_dim / 2 (capped at the code size)."""
    decoder_norm_l1: bool | None = None
    """L1: weight each unit's |h_j| by the norm of its decoder column, so the penalty cannot be dodged by
    shrinking codes and growing columns; default: yes for penalty l1 (ignored by the others)."""
    beta_warmup: int | None = param(None, ge=0)
    """Training steps over which beta rises linearly from 0 (L1, JumpReLU); default: the family's."""
    prefixes: list[int] | None = param(None, gt=0, nonempty=True)
    """Matryoshka: the nested dictionary sizes each trained to reconstruct (the full size is always one);
    default: code size / 16, / 8, / 4, / 2."""

    def weight(self) -> float:
        """beta, or the family's default when unset."""
        return self.beta if self.beta is not None else FAMILY_DEFAULTS.get(self.penalty, {}).get(
            "sparsity", {}).get("beta", 0.0)

    def validate(self, model: ModelConfig) -> None:
        fill_family_defaults(model, self, family_of(model, self))
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
            if model.topk not in ("topk", "batchtopk") and self.penalty not in ("topk", "batchtopk", "matryoshka"):
                raise SparseAEError("sparsity.auxk needs a topk or batchtopk model (model.topk, or penalty 'topk', "
                                    "with model.k)")
        if self.penalty == "kl":
            acts = model.layer_activations()
            for i in self.layers:
                if acts[i] not in BOUNDED_ACTIVATIONS:
                    raise SparseAEError(
                        f"the KL penalty needs activations in (0, 1) but layer {i % n} uses '{acts[i]}'; "
                        "set model.activation (or model.code_activation) to 'sigmoid', or penalty to 'l1'")
        if self.penalty == "jumprelu" and model.topk != "jumprelu":
            raise SparseAEError(f"penalty 'jumprelu' needs model.topk 'jumprelu'; got '{model.topk}'")
        if self.penalty == "matryoshka":
            if model.topk not in ("topk", "batchtopk") or not model.one_layer() or model.tied:
                raise SparseAEError("penalty 'matryoshka' needs a one-layer, untied topk or batchtopk model")
            if model.output_activation != "linear":
                raise SparseAEError("penalty 'matryoshka' needs model.output_activation 'linear' (a prefix's "
                                    "reconstruction is a partial sum of decoder columns)")
            bad = [p for p in self.prefixes or [] if p >= model.hidden[-1]]
            if bad:
                raise SparseAEError(f"sparsity.prefixes must be smaller than the code size {model.hidden[-1]}; "
                                    f"got {show(self.prefixes)}")

    def prefix_sizes(self, code: int) -> list[int]:
        """Matryoshka's nested sizes, ascending, the full code last."""
        sizes = self.prefixes if self.prefixes is not None else [code // d for d in (16, 8, 4, 2)]
        return sorted({p for p in sizes if 0 < p < code}) + [code]


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
    lr: float | None = param(None, gt=0)
    """Learning rate; default: the family's (topk, batchtopk and matryoshka: 1.5e-3 up to 1,024 latents, then
    1.5e-3 * sqrt(1024 / latents); l1 and jumprelu: 3e-3), else 1e-3."""
    lr_decay: float | None = param(None, ge=0, le=1)
    """Share of the training steps, at the end, over which the learning rate falls linearly to 0 (minibatch
    optimizers); default: the family's (0.2 for topk, batchtopk and matryoshka), else 0 (constant)."""
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
    recon: str | None = param(None, choices=RECONS)
    """Reconstruction loss: 'mse' (mean over examples and features, as nn.MSELoss), 'half_sse' (Ng: 1/2 *
    squared error summed over features, mean over examples) or 'fvu' (the batch's squared error over its
    variance, as OpenAI's and EleutherAI's SAEs: scale-free, so AuxK's coefficient keeps its meaning);
    default: 'fvu' for the topk, batchtopk, matryoshka and jumprelu families, else 'mse'."""
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
        fill_family_defaults(None, None, "", self)  # on its own: OFF's (RunConfig.validate sets the family's)
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
        """Every rule a run's settings must satisfy, the machine aside (training/accel.py). Settings left
        unset (None) take the sparsity family's defaults here, so config.json records what was trained."""
        code = PENALTY_CODES.get(self.sparsity.penalty)
        if code is not None and self.model.topk == "none":
            self.model.topk = code  # --penalty topk --k K is the short spelling
        if self.train.optimizer in FULL_BATCH_OPTIMIZERS and self.sparsity.beta_warmup is None:
            self.sparsity.beta_warmup = 0  # a warm-up counts minibatch steps; L-BFGS needs one fixed cost
        fill_family_defaults(self.model, self.sparsity, family_of(self.model, self.sparsity), self.train)
        self.model.validate()
        self.sparsity.validate(self.model)
        self.train.validate()
        check_step_options(self.train, self.model, self.sparsity)
        if self.train.optimizer in FULL_BATCH_OPTIMIZERS:
            check_full_batch_model(self.model, self.sparsity)

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
        """asdict(), less the settings of ADDED_LATER that hold their "not used" value."""
        d = asdict(self)
        for section, values in ADDED_LATER.items():
            for name, off in values.items():
                value = d[section].get(name)
                if value is off or (value is not None and off is not None and value == off):
                    del d[section][name]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        """The configuration a parsed JSON object describes (config.json, or defaults and flags merged):
        every value's type is checked and unknown keys are refused; missing keys take their defaults.
        The rules come with validate(). A setting of ADDED_LATER that a file lacks takes its "not used"
        value (the run was trained before it existed); given as null, it takes the family's default."""
        if isinstance(d, dict):
            d = {**d}
            for section, values in ADDED_LATER.items():
                if isinstance(d.get(section), dict):
                    d[section] = {**values, **d[section]}
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
        if model.bias_init == "mean":
            reasons.append("model.bias_init 'mean' (set from the first batch, which graph recording's warm-up "
                           "undoes; use bias_init 'default')")
        if reasons:
            raise SparseAEError("train.cuda_graph cannot be used with " + "; ".join(reasons))


def check_full_batch_model(model: ModelConfig, sparsity: SparsityConfig | None = None) -> None:
    """What a full-batch optimizer (training/fullbatch.py) cannot train."""
    if sparsity is not None and sparsity.beta_warmup:
        raise SparseAEError("sparsity.beta_warmup counts minibatch steps; a full-batch optimizer needs one fixed "
                            "cost: set it to 0")
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
    # Makhzani & Frey's k-sparse autoencoder (2013): linear units, tied weights, linear output, none of
    # the modern recipe (`--preset ksparse --k 25 --hidden 1000`).
    "ksparse": {
        "model": {"activation": "linear", "output_activation": "linear", "tied": True, "topk": "topk",
                  "unit_norm_decoder": False, "pre_bias": False, "bias_init": "default"},
        "sparsity": {"penalty": "topk", "auxk": False},
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
