"""Typed configuration: what a model is and how it is trained.

The dataclasses are the single source of truth for defaults (and, through their
field docstrings, of the CLI's help); `config.json` in a run folder is `asdict()`
of them. Each field's type and rule are checked by the schema (schema.py) the
same way whether the value came from Python, a flag or a file.

A setting left unset (None) takes its sparsity family's default (families.py).
`resolve(requested)` fills them in, once, and checks the result (the `check()`
methods hold the rules that tie fields together); `validate()` checks what
`resolve` would give and changes nothing.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from . import families
from .errors import SparseAEError
from .families import K_CODES, family_of, fill_defaults
from .schema import build, check_choice, check_fields, param, show

ACTIVATIONS = ("sigmoid", "relu", "tanh", "linear", "leaky_relu", "softplus")
# The sparsity families (families.py) and the code layers four of them share.
PENALTIES = families.NAMES
TOPK_MODES = families.CODE_LAYERS
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


# --- the sparsity families -----------------------------------------------------------------------

# Settings added later that only some families use, with the value that means "not used". A file
# written before them lacks them and was trained without them: from_dict reads a missing one as that
# value, and to_dict leaves it out while it has it, so an old config.json reads back as it is.
ADDED_LATER: dict[str, dict[str, Any]] = {
    "model": {"bias_init": "default", "jumprelu_threshold": None, "jumprelu_bandwidth": None, "input_scale": False,
              "target_dim": None, "principal_start": False},
    "sparsity": {"decoder_norm_l1": False, "beta_warmup": 0, "prefixes": None, "target_l0": None,
                 "preact_coef": 0.0, "jumprelu_tanh": 0.0, "batchtopk_warmup": 0.0, "l0_rate": families.L0_RATE,
                 "topk_start": 0.0},
    "train": {"lr_decay": 0.0, "target": None, "target_key": None, "refit_decoder": False},
}
# Settings that are gone, which older files still hold: read and dropped. train.dead_threshold was a
# threshold on mean raw activations; a dead unit is now one that never fires (objective/metrics.py).
REMOVED: dict[str, tuple[str, ...]] = {"train": ("dead_threshold",)}


# --- the settings --------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    """Architecture of a (possibly deep) autoencoder."""

    input_dim: int = param(784, gt=0)
    """Number of input features (784 for 28x28 images)."""
    target_dim: int | None = param(None, gt=0)
    """A transcoder's output width: the features of train.target, which the model predicts from its input
    (filled in from the data); None: an autoencoder, which reconstructs its input."""
    hidden: list[int] = param(factory=lambda: [256], gt=0, nonempty=True)
    """Encoder layer sizes; the last one is the code."""
    decoder: list[int] | None = param(None, gt=0)
    """Decoder hidden sizes (between code and output); default: encoder mirrored."""
    activation: str | None = param(None, choices=ACTIVATIONS)
    """Activation of the hidden layers; default: the sparsity family's (sigmoid for kl and none, relu for
    the others; families.py)."""
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
    input_scale: bool | None = None
    """Also multiply the (transformed) inputs by one number fitted on the training rows, stored with the model
    and undone on output, so that their mean squared distance to their mean is about input_dim * 0.3^2
    (FashionMNIST's spread, where the defaults were tuned): a penalty weight then means the same on any data.
    The number is a power of two (within a factor sqrt(2) of the exact ratio), so that folding it into
    exported weights changes no bit; a transcoder's input and target get one each (model/transforms.py).
    Default: yes for the l1, jumprelu, topk, batchtopk and matryoshka families on any data but fashion-mnist
    (there the factor would be 1, and the recipes are measured without it)."""
    principal_start: bool | None = None
    """Start a one-layer code from the training rows' principal directions: b_dec at their mean, latents 2i and
    2i + 1 decoding +v_i and -v_i, encoder rows the same vectors with zero bias (a TopK code then keeps each row's
    k largest signed principal coefficients), the other latents' encoder rows at a tenth of their decoder columns;
    l1 and jumprelu also start at their target L0 (one threshold for every latent; L1's decoder columns rescaled
    against its shrinkage). The rate is then 5e-4. Default: yes when k (or the target L0) principal components hold
    90% of the training rows' variance (99% for topk) on fewer than 784 inputs held in memory
    (families.principal_start)."""
    zca_epsilon: float = param(0.1, gt=0)
    """Regulariser of ZCA whitening, U diag(1/sqrt(S + eps)) U^T."""
    topk: str = param(families.NONE, choices=TOPK_MODES)
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

    def output_dim(self) -> int:
        """Width of what the model outputs: the target's (a transcoder) or the input's."""
        return self.input_dim if self.target_dim is None else self.target_dim

    def parameter_count(self) -> int:
        """A rough size of the model: its layers' weights (in x out each), plus the two d x d
        matrices of a ZCA transform."""
        enc = [self.input_dim, *self.hidden]
        dec = [self.hidden[-1], *self.decoder_sizes(), self.output_dim()]
        n = sum(a * b for a, b in zip(enc, enc[1:]))
        if not self.tied:
            n += sum(a * b for a, b in zip(dec, dec[1:]))
        if self.input_transform == "zca":
            n += 2 * self.input_dim ** 2
        return n

    def resolved(self) -> "ModelConfig":
        """A copy with every unset setting filled in by its code layer's family (a model on its own,
        without a sparsity section), checked."""
        check_fields(self, "model")
        m = copy.deepcopy(self)
        if m.target_dim is not None and m.pre_bias is None:
            m.pre_bias = False  # a transcoder's b_dec is in the target's space (as in resolve)
        fill_defaults(family_of(m, None), m, {"model": m})
        m.check()
        return m

    def validate(self) -> None:
        """Check the settings as they would be used (resolved); changes nothing."""
        self.resolved()

    def check(self) -> None:
        """The rules of a resolved model configuration."""
        check_fields(self, "model")
        if self.tied and self.decoder_sizes() != list(reversed(self.hidden[:-1])):
            raise SparseAEError("model.tied needs the decoder to mirror the encoder (leave model.decoder unset); "
                                f"got model.decoder {self.decoder}")
        if self.topk in K_CODES:
            if self.k is None:
                raise SparseAEError(f"model.k must be a positive integer with topk '{self.topk}'; got None")
            if self.k > self.hidden[-1]:
                raise SparseAEError(f"model.k must be at most the code size {self.hidden[-1]}; got {self.k}")
        if self.topk_kernel == "sparse":
            check_sparse_kernel(self)
        if self.target_dim is not None:
            check_transcoder(self)
        n = self.parameter_count()
        if n > MAX_PARAMETERS:
            raise SparseAEError(
                f"model.input_dim {self.input_dim} with model.hidden {show(self.hidden)} makes a model of {n:,} "
                f"float32 weights ({4 * n / 2**30:.1f} GiB); at most {MAX_PARAMETERS:,} (2**31) are allowed")


@dataclass
class SparsityConfig:
    """The penalty on hidden activations and the weight decay."""

    penalty: str = param(families.KL, choices=PENALTIES)
    """The sparsity family: 'kl' (Bernoulli KL to a target rate rho), 'l1', 'none', 'topk' or 'batchtopk'
    (no penalty term: sparse by construction), 'jumprelu' (L0 penalty on a code with learned thresholds)
    or 'matryoshka' (BatchTopK trained to reconstruct from nested prefixes of the dictionary). Each brings
    its best measured recipe for the settings left unset (families.py, docs/sparsity_families.md) and
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
    auxk_coef: float | None = param(None, ge=0)
    """Weight of the AuxK loss; default 1/8 rather than OpenAI's 1/32: with the TopK defaults (lr 1.5e-3), 1/32 left
    1.6% of a 1024-latent FashionMNIST code never firing, 1/8 none (docs/sparsity_families.md). BatchTopK on
    inputs of fewer than 128 columns: 1/8 * (128 / input_dim)^3, at most 1 (1 at 64 columns and fewer, where 1/8
    left a third of a planted-feature code never firing)."""
    k_aux: int | None = param(None, gt=0)
    """Dead units used by AuxK; default input_dim / 2 (capped at the code size)."""
    decoder_norm_l1: bool | None = None
    """L1: weight each unit's |h_j| by the norm of its decoder column, so the penalty cannot be dodged by
    shrinking codes and growing columns; default: yes for penalty l1 (ignored by the others)."""
    beta_warmup: int | None = param(None, ge=0)
    """Training steps over which beta rises linearly from 0 (L1, JumpReLU); default: the family's."""
    target_l0: float | None = param(None, gt=0)
    """L1, JumpReLU: the code's L0 (firing units per example) to reach: beta starts at its value and is adapted
    at every step after the warm-up, multiplied by (batch L0 / target)^l0_rate (objective/objective.py), so
    a run asks for a sparsity instead of a weight whose meaning depends on the data."""
    l0_rate: float | None = param(None, gt=0)
    """With target_l0: the controller's step of log(beta) per unit of log(L0 / target); default
    families.l0_rate (0.02; L1 on inputs of fewer than 784 columns: 5 / the run's steps, at most 0.05, when the
    run's length is known before training)."""
    preact_coef: float | None = param(None, ge=0)
    """L1, JumpReLU: weight of the pre-activation loss on latents that have not fired for model.dead_window
    training examples, sum_j relu(threshold_j - z_j) ||d_j|| (threshold 0 for L1): it moves a dead latent's
    pre-activations up to its threshold; default: the family's (one-layer models on inputs of fewer than 784
    columns: jumprelu 1e-2, l1 1e-3; else 0)."""
    jumprelu_tanh: float | None = param(None, ge=0)
    """JumpReLU: 0 penalises the number of open gates (L0); c > 0 penalises sum_j tanh(c h_j ||d_j||) instead;
    default: the family's (0.75 on inputs of fewer than 784 columns, else 0)."""
    batchtopk_warmup: float | None = param(None, ge=0, le=1)
    """BatchTopK: the share of the training steps, from the start, on which each example keeps its own k largest
    units (per-example TopK) before the batch's k * batch largest take over; the inference threshold is
    learned from the batch steps only. default: the family's (one-layer batchtopk on inputs of fewer than
    784 columns 0.75, else 0)."""
    topk_start: float | None = param(None, ge=0, lt=1)
    """JumpReLU with a target L0: the share of the training steps, from the start, trained as a per-example TopK
    code of the round(TOPK_START_FACTOR * target_l0) largest units (families.topk_start_k), with no penalty, the L0
    controller waiting and the TopK families' rate for the shape (families.topk_lr); then every threshold starts at
    that batch's mean k-th largest pre-activation and JumpReLU trains as set. Default: the family's (0.75 on
    jumprelu runs on inputs of fewer than 784 columns that are not short and have a target L0; not from a principal
    start), else 0."""
    prefixes: list[int] | None = param(None, gt=0, nonempty=True)
    """Matryoshka: the nested dictionary sizes each trained to reconstruct (the full size is always one);
    default: code size / 16, / 8, / 4, / 2; on inputs of fewer than 784 columns code size / 4, / 2
    (families.matryoshka_prefixes)."""

    def validate(self, model: ModelConfig) -> None:
        """Check these settings with `model` as they would be trained (resolved); changes nothing."""
        resolve(RunConfig(model, self))

    def check(self, model: ModelConfig) -> None:
        """The rules of a resolved sparsity configuration with its resolved model."""
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
            if model.topk not in K_CODES and model.topk != families.JUMPRELU:
                raise SparseAEError("sparsity.auxk needs a topk, batchtopk or jumprelu model (model.topk, or penalty "
                                    "'topk' with model.k, or 'jumprelu')")
        if self.target_l0 is not None:
            if not families.FAMILIES[self.penalty].adapts_beta:
                names = ", ".join(n for n, f in families.FAMILIES.items() if f.adapts_beta)
                raise SparseAEError(f"sparsity.target_l0 adapts a penalty's beta ({names}); penalty "
                                    f"'{self.penalty}' has none to adapt: its sparsity is set by k or rho")
            if self.target_l0 >= model.hidden[-1]:
                raise SparseAEError(f"sparsity.target_l0 must be below the code size {model.hidden[-1]}; "
                                    f"got {self.target_l0:g}")
        if self.batchtopk_warmup and model.topk != families.BATCHTOPK:
            raise SparseAEError("sparsity.batchtopk_warmup needs a batchtopk code (it trains the first steps with "
                                f"per-example TopK); model.topk is '{model.topk}'")
        if self.topk_start and (model.topk != families.JUMPRELU or self.target_l0 is None):
            raise SparseAEError("sparsity.topk_start needs a jumprelu code with a target L0 (sparsity.target_l0, "
                                "--l0): its TopK code keeps a multiple of the target")
        if self.preact_coef and (self.penalty not in (families.L1, families.JUMPRELU) or not model.one_layer()):
            raise SparseAEError("sparsity.preact_coef needs a one-layer l1 or jumprelu model (it revives code "
                                f"units below their threshold); penalty is '{self.penalty}'")
        check = families.FAMILIES[self.penalty].check
        if check is not None:
            check(model, self)

    def prefix_sizes(self, code: int) -> list[int]:
        """Matryoshka's nested sizes, ascending, the full code last."""
        # None: a run resolved before the family set its prefixes (families.matryoshka_prefixes), which used these
        sizes = self.prefixes if self.prefixes is not None else [code // d for d in families.MATRYOSHKA_DIVISORS]
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
    batch_size: int | None = param(None, gt=0)
    """Examples per step; default 256, or for fewer than 8,192 training rows the power of two that gives an
    epoch 32 steps (at least 8): 500 rows at 256 make 2 steps an epoch, too few for any recipe."""
    lr: float | None = param(None, gt=0)
    """Learning rate; default: the family's (topk, batchtopk and matryoshka: 1.5e-3 up to 1,024 latents, then
    1.5e-3 * sqrt(1024 / latents); l1 and jumprelu: 3e-3), else 1e-3."""
    lr_decay: float | None = param(None, ge=0, le=1)
    """Share of the training steps, at the end, over which the learning rate falls linearly to 0 (minibatch
    optimizers); default: the family's (0.2 for topk, batchtopk and matryoshka), else 0 (constant)."""
    refit_decoder: bool | None = None
    """Once the last epoch's steps are done, set the decoder's weights to the least-squares fit of the training rows
    (less the output bias) from the trained code (training/refit.py): which units fire stays the same, the
    reconstruction from them is the best a linear decoder gives (unit-norm columns keep their norm 1, the encoder
    rows taking it). One untied layer with a linear output and a ReLU or JumpReLU code, minibatch optimizers, at
    most families.REFIT_MAX_LATENTS latents; a run stopped early by target_val_mse is not refitted. Default: the
    family's (l1 on long runs on inputs of fewer than 784 columns), else no."""
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
    target: str | None = None
    """Array file of targets, row for row with train.data (dataset 'array'): train a transcoder, a sparse code
    of each input row that predicts its target row (e.g. an MLP's output from its input); the loss and FVU
    are measured against the target."""
    target_key: str | None = None
    """Which array of train.target's .npz/.safetensors file, or its .parquet columns (as train.data_key)."""
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
                    "limit_train": self.limit_train, "stream": self.stream, "target": self.target,
                    "target_key": self.target_key}
        if self.dataset != "patches":
            return {}
        return {"patch_size": self.patch_size, "num_patches": self.num_patches,
                "patch_channels": self.patch_channels, "whiten_images": self.whiten_images,
                "image_downsample": self.image_downsample, "normalize": self.patch_normalize, "seed": self.seed}

    def resolved(self) -> "TrainConfig":
        """A copy with every unset setting at its value without a sparsity family (lr 1e-3, no decay,
        MSE), checked: for the training loop used on its own; a run resolves through `resolve`."""
        t = copy.deepcopy(self)
        check_fields(t, "train")
        fill_defaults(families.FAMILIES[families.NONE], None, {"train": t})
        t.batch_size = batch_size_for(None) if t.batch_size is None else t.batch_size
        t.check()
        return t

    def validate(self) -> None:
        """Check the settings as they would be used (resolved); changes nothing."""
        self.resolved()

    def check(self) -> None:
        """The rules of a resolved training configuration."""
        check_fields(self, "train")
        if self.dataset == "array" and not self.data:
            raise SparseAEError("dataset 'array' needs train.data, the path of the array file")
        if self.target is not None and self.dataset != "array":
            raise SparseAEError(f"train.target (a transcoder's targets) needs dataset 'array' with train.data, "
                                f"the inputs row for row; dataset '{self.dataset}' has no targets")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Every rule a run's settings must satisfy, the machine aside (training/accel.py), checked on the
        settings as they would be trained (`resolve`); changes nothing."""
        resolve(self)

    def check(self) -> None:
        """The rules of a resolved configuration."""
        self.model.check()
        self.sparsity.check(self.model)
        self.train.check()
        check_step_options(self.train, self.model, self.sparsity)
        if self.train.target is not None:
            check_transcoder(self.model)
        if self.train.optimizer in FULL_BATCH_OPTIMIZERS:
            check_full_batch_model(self.model, self.sparsity)
        if self.train.refit_decoder:
            check_refit(self.model, self.train)

    def validate_stack(self, finetune: str) -> None:
        """validate(), and what greedy layer-wise training (apps/stacked.py) needs."""
        check_choice("finetune", finetune, FINETUNE_MODES)
        if self.train.target is not None:
            raise SparseAEError("a stack of autoencoders reconstructs its input: train.target (a transcoder's "
                                "targets) cannot be used with it; use `sparseae train --target`")
        m = resolve(self).model
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
        return build(cls, without_removed(d))




def without_removed(d: Any) -> Any:
    """A parsed config object less the settings of REMOVED (an older file's); anything else as it is."""
    if not isinstance(d, dict):
        return d
    return {**d, **{section: {k: v for k, v in d[section].items() if k not in names}
                    for section, names in REMOVED.items() if isinstance(d.get(section), dict)}}


def batch_size_for(rows: int | None) -> int:
    """The batch size of a run that sets none, for `rows` training rows (None: not known, a large set)."""
    if rows is None or rows >= 32 * 256:
        return 256
    return max(8, 2 ** int(math.log2(max(rows // 32, 1))))


def run_steps(train: TrainConfig, rows: int | None) -> int | None:
    """The minibatch steps of a run on `rows` training rows held in memory, known before any batch is made, for
    the settings that depend on the run's length; None when the rows are not known (streamed data) or a full-batch
    optimizer counts iterations instead. training/loop.py counts the same steps from its BatchSource
    (ceil(rows / batch) an epoch), which also knows a streamed file's, and tests/test_jumprelu_small_inputs.py
    holds the two equal."""
    if rows is None or train.optimizer in FULL_BATCH_OPTIMIZERS:
        return None
    return train.epochs * math.ceil(rows / train.batch_size)


def aims_at_l0(family: families.Family, model: ModelConfig, train: TrainConfig) -> bool:
    """Whether a run that states neither beta nor an L0 aims at families.default_l0: a family whose beta can be
    steered, on data other than FashionMNIST (where its beta was tuned), one code layer of 4 units or more whose
    input size is known, minibatch steps and no CUDA graph (the steering changes beta at every step)."""
    return (family.adapts_beta and train.dataset != "fashion-mnist" and bool(model.input_dim) and model.one_layer()
            and model.hidden[-1] >= 4 and train.optimizer not in FULL_BATCH_OPTIMIZERS and not train.cuda_graph)


def resolve(requested: RunConfig, rows: int | None = None, input_dim: int | None = None,
            unit_interval: bool | None = None, spectrum: list[float] | None = None) -> RunConfig:
    """The configuration a run trains with: a copy of `requested` with every unset (None) setting filled in
    exactly once, by the sparsity family's record (families.py), then checked; the batch size from the
    training `rows`, the rates that depend on the input's size from `input_dim`, and a linear output for a
    sigmoid-output family when `unit_interval` is False (the training values do not all lie in [0, 1]), each
    when given (training/session.py knows them once the data is loaded). Pure: `requested` is
    left as it is. config.json records the result, so it says what was trained; an explicit value (flag, preset,
    config.json, Python) always wins. train, sweep, stack, monitor and the Python API all come through here."""
    for section in ("model", "sparsity", "train"):  # types and ranges first: the family is looked up by name
        check_fields(getattr(requested, section), section)
    c = copy.deepcopy(requested)
    m, s, t = c.model, c.sparsity, c.train
    m.input_dim = m.input_dim if input_dim is None else input_dim
    if m.topk == families.NONE:
        m.topk = families.FAMILIES[s.penalty].code  # --penalty topk --k K is the short spelling
    if t.optimizer in FULL_BATCH_OPTIMIZERS:  # a warm-up counts minibatch steps; L-BFGS needs one fixed cost
        s.beta_warmup = 0 if s.beta_warmup is None else s.beta_warmup
        s.batchtopk_warmup = 0.0 if s.batchtopk_warmup is None else s.batchtopk_warmup
        s.topk_start = 0.0 if s.topk_start is None else s.topk_start
    if s.auxk is None and m.topk_kernel == "sparse":
        s.auxk = False  # the sparse kernel never forms the dense pre-activations AuxK picks from
    if t.target is not None and m.pre_bias is None:
        m.pre_bias = False  # b_dec is in the target's space: it has no place in the input's
    if m.input_scale is None and t.dataset == "fashion-mnist":
        m.input_scale = False  # the data the recipes were tuned on, at the scale they were tuned at
    # the run's length at the batch it has without a family's long-run settings, which may set another one
    batch = batch_size_for(rows) if t.batch_size is None else t.batch_size
    family, steps = family_of(m, s), run_steps(dataclasses.replace(t, batch_size=batch), rows)
    if requested.sparsity.beta is None and s.target_l0 is None and aims_at_l0(family, m, t):
        s.target_l0 = families.default_l0(m)  # a beta means nothing on data it was not tuned on; an L0 does
    if s.topk_start is None and s.target_l0 is None:
        s.topk_start = 0.0  # JumpReLU's TopK start keeps a multiple of a target L0; with a beta there is none
    if m.principal_start is None and spectrum is not None:  # before the rates that depend on it
        m.principal_start = families.principal_start(family, m, spectrum, s.target_l0)
    fill_defaults(family, m, {"model": m, "sparsity": s, "train": t},
                  data=families.OUTSIDE_UNIT_INTERVAL if unit_interval is False else None, steps=steps)
    # a family's batch is a smaller one for more steps (JumpReLU's long runs), never above the small-data batch; a
    # stated batch is `batch` itself
    t.batch_size = batch if t.batch_size is None else min(t.batch_size, batch)
    if s.l0_rate is None:  # recorded only where it steers: a rate on a run without a target would mean nothing
        s.l0_rate = families.l0_rate(family, m, steps) if s.target_l0 is not None else families.L0_RATE
    c.check()
    return c


def check_sparse_kernel(model: ModelConfig) -> None:
    """The sparse path computes one relu TopK layer with a linear output (the modern SAE)."""
    if model.topk != families.TOPK or len(model.hidden) != 1 or model.decoder_sizes() or model.tied:
        raise SparseAEError("model.topk_kernel 'sparse' needs a single-layer, untied TopK model (model.topk "
                            "'topk' with model.k, one model.hidden size)")
    if model.layer_activations()[-1] != "relu" or model.output_activation != "linear":
        raise SparseAEError("model.topk_kernel 'sparse' needs model.code_activation 'relu' and "
                            "model.output_activation 'linear'")


def check_transcoder(model: ModelConfig) -> None:
    """What a transcoder (an input mapped to another target, train.target) cannot be."""
    why = None
    if model.tied:
        why = "model.tied (the decoder maps to the target, not back to the input)"
    elif model.pre_bias:
        why = "model.pre_bias (b_dec is the target's bias: it cannot be subtracted from the input)"
    elif model.input_transform != "none":
        why = f"model.input_transform '{model.input_transform}' (fitted on the input, not the target; " \
              "model.input_scale fits one gain to each)"
    elif model.output_activation not in (None, "linear"):
        why = f"model.output_activation '{model.output_activation}' (a module's output is not confined to its range)"
    elif model.topk == families.MP:
        why = "model.topk 'mp' (a pursuit over the decoder's columns codes the target, which encoding never sees)"
    elif model.topk_kernel == "sparse":
        why = "model.topk_kernel 'sparse'"
    if why is not None:
        raise SparseAEError(f"a transcoder (train.target) cannot be trained with {why}; use a one-layer untied "
                            "model with a linear output, e.g. --penalty topk --k K")


def check_step_options(train: TrainConfig, model: ModelConfig, sparsity: SparsityConfig) -> None:
    """What the fast training step (training/accel.py) cannot do, on any machine."""
    if model.topk_kernel == "sparse" and sparsity.auxk:
        raise SparseAEError("model.topk_kernel 'sparse' does not compute AuxK (it needs every pre-activation); "
                            "use topk_kernel 'dense' with sparsity.auxk")
    if train.cuda_graph:
        reasons = []
        if sparsity.rho_hat == "running":
            reasons.append("sparsity.rho_hat 'running' (its estimate is replaced every step)")
        if model.topk == families.BATCHTOPK:
            reasons.append("model.topk 'batchtopk' (data-dependent selection size)")
        if sparsity.auxk:
            reasons.append("sparsity.auxk (counts dead units on the CPU)")
        if sparsity.target_l0 is not None:
            reasons.append("sparsity.target_l0 (beta changes at every step)")
        if model.bias_init == "mean":
            reasons.append("model.bias_init 'mean' (set from the first batch, which graph recording's warm-up "
                           "undoes; use bias_init 'default')")
        if reasons:
            raise SparseAEError("train.cuda_graph cannot be used with " + "; ".join(reasons))


def check_refit(model: ModelConfig, train: TrainConfig) -> None:
    """What train.refit_decoder (training/refit.py) needs: a model whose decoder can be refitted
    (families.refit_obstacle), after minibatch steps."""
    why = families.refit_obstacle(model)
    if why is None and train.optimizer in FULL_BATCH_OPTIMIZERS:
        why = "a minibatch optimizer ('adam' or 'sgd'): it follows the last epoch's steps"
    if why is not None:
        raise SparseAEError(f"train.refit_decoder needs {why}")


def check_full_batch_model(model: ModelConfig, sparsity: SparsityConfig | None = None) -> None:
    """What a full-batch optimizer (training/fullbatch.py) cannot train."""
    if sparsity is not None and sparsity.target_l0 is not None:
        raise SparseAEError("sparsity.target_l0 adapts beta between minibatch steps; a full-batch optimizer "
                            "needs one fixed cost: use optimizer 'adam' or 'sgd'")
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
        "sparsity": {"penalty": families.KL, "rho": 0.05, "beta": 0.001},
        # He init keeps the signal's scale through the deep ReLU stack; with it, batch 128 and
        # Adam at 5e-3 pass the tutorial's 10-epoch validation MSE within the first epoch.
        "train": {"init": "he", "batch_size": 128, "lr": 5e-3},
    },
    # Makhzani & Frey's k-sparse autoencoder (2013): linear units, tied weights, linear output, none of
    # the modern recipe (`--preset ksparse --k 25 --hidden 1000`).
    "ksparse": {
        "model": {"activation": "linear", "output_activation": "linear", "tied": True, "topk": families.TOPK,
                  "unit_norm_decoder": False, "pre_bias": False, "bias_init": "default"},
        "sparsity": {"penalty": families.TOPK, "auxk": False},
    },
    # UFLDL sparse autoencoder exercise: 64-25-64 sigmoid on 8x8 natural-image patches,
    # J = 1/(2m) sum ||h(x)-x||^2 + lambda/2 sum ||W||^2 + beta sum KL, Ng's init, L-BFGS 400.
    # One thread: for models this small, more only add hand-offs (and lose on a shared machine).
    "ufldl": {
        "model": {"hidden": [25], "activation": "sigmoid", "output_activation": "sigmoid"},
        "sparsity": {"penalty": families.KL, "rho": 0.01, "beta": 3.0, "weight_decay": 1e-4},
        "train": {"dataset": "patches", "recon": "half_sse", "init": "ng", "optimizer": "lbfgs",
                  "max_iter": 400, "threads": 1},
    },
    # UFLDL linear decoder: 8x8x3 colour patches as pixel values in [0, 1], the dataset mean
    # removed and ZCA-whitened (eps 0.1) by the model, 192-400-192, linear output.
    "ufldl-linear": {
        "model": {"hidden": [400], "activation": "sigmoid", "output_activation": "linear",
                  "input_transform": "zca", "zca_epsilon": 0.1},
        "sparsity": {"penalty": families.KL, "rho": 0.035, "beta": 5.0, "weight_decay": 3e-3},
        "train": {"dataset": "patches", "patch_channels": 3, "whiten_images": False, "patch_normalize": False,
                  "recon": "half_sse", "init": "ng", "optimizer": "lbfgs", "max_iter": 400, "threads": 1},
    },
}
