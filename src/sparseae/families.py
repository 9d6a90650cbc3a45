"""The sparsity families: one record each, the one place a family's name and knowledge live.

A family says how a code is made sparse (a penalty term, or a selection in the code layer), which
settings it brings for whatever the user leaves unset (its best measured recipe:
docs/sparsity_families.md has the commands and numbers), the setting a sweep varies, the flag that
sweep takes, its extra rules and its help. Everything else is derived from FAMILIES: config.py's
choices and `resolve`, the objective's term, the sweep's families and the CLI's grid flags. Adding a
family = one `Family` record here (plus its term in objective/objective.py if it adds a penalty) and
its tests; docs/architecture.md shows a worked example.

No torch here: the schema layer (config.py) and `sparseae --help` read this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import SparseAEError

# The family names, and the code layers (model.topk) that share four of them.
KL, L1, NONE, TOPK, BATCHTOPK, JUMPRELU, MATRYOSHKA = (
    "kl", "l1", "none", "topk", "batchtopk", "jumprelu", "matryoshka")
MP = "mp"
CODE_LAYERS = (NONE, TOPK, BATCHTOPK, JUMPRELU, MP)
# Activations whose values lie in (0, 1): the only ones a KL penalty is defined on.
BOUNDED_ACTIVATIONS = ("sigmoid",)
K_CODES = (TOPK, BATCHTOPK, MP)  # code layers that keep k units per example (AuxK, sparse kernels, model.k)

# What a setting takes when neither the user nor the family sets it: sparsity off, Ng's sigmoid model.
OFF: dict[str, dict[str, Any]] = {
    "model": {"activation": "sigmoid", "output_activation": "sigmoid", "unit_norm_decoder": False,
              "pre_bias": False, "bias_init": "default", "dead_window": 60000, "encode_alpha": 1.0,
              "input_scale": False, "principal_start": False},
    "sparsity": {"beta": 0.0, "auxk": False, "decoder_norm_l1": False, "beta_warmup": 0, "preact_coef": 0.0,
                 "jumprelu_tanh": 0.0, "auxk_coef": 0.125, "batchtopk_warmup": 0.0, "topk_start": 0.0},
    "train": {"recon": "mse", "lr": 1e-3, "lr_decay": 0.0, "refit_decoder": False},
}


PRINCIPAL_LR = 5e-4
"""Every family's rate from a principal start (the PRINCIPAL_START layer): the run starts at a solution (a penalty
family at its target L0: model/init.py), and steps refine it; a larger rate adds noise. Tennessee Eastman, seeds
0-2, FVU / PCA: TopK (128 latents) 0.51 at 5e-4, 0.55 at 1e-3, 0.61 at 1.5e-3, 1.28 at its own 5.8e-3; at 32
latents and the default L0, l1 0.94 at 5e-4, 1.22 at 7e-3, 2.69 at its own 2e-2; jumprelu 0.79 at 5e-4, 1.83 at
its own 7e-3 (docs/sparsity_families.md, 'Data whose variance lies in a few directions')."""


def topk_lr(model: Any) -> float:
    """The TopK families' learning rate for the code's width and the input's size: 1.5e-3 up to 1,024 latents,
    then falling as 1 / sqrt(latents) (the rule of OpenAI's and EleutherAI's SAEs). 1.5e-3 with the last fifth of
    the steps decaying to 0 took 1024 latents, k 32, 5 epochs from FVU 0.0942 to 0.0888, none dead; 2e-3 left
    4-13% dead there, and 1.5e-3 left 34% of a 4096-latent code (k 64) dead (docs/sparsity_families.md).

    Inputs of fewer than 784 columns (FashionMNIST's, where the rate was tuned) take sqrt(784 / input_dim) times
    it, at most 4x: Adam moves every weight by about lr a step, so a unit-norm encoder row of d weights turns by
    about lr * sqrt(d) a step, and with 64 inputs the features formed 3.5x slower (planted features, 512
    latents, 5 epochs: TopK's MMCS 0.956 -> 0.994, BatchTopK's 0.741 -> 0.963). Wide codes die at a higher rate
    (1,024 latents: 2x to 3x the rate left 29-48% never firing), so the factor is also at most
    (1024 / latents)^2: none at 1,024 latents and more, 4x at 512 (docs/sparsity_families.md, 'A rate for
    the input's size')."""
    small_input = min(4.0, max(1.0, (784 / model.input_dim) ** 0.5), max(1.0, (1024 / model.hidden[-1]) ** 2))
    return 1.5e-3 * min(1.0, (1024 / model.hidden[-1]) ** 0.5) * small_input


# Data with values outside [0, 1] for a family whose output would be Ng's sigmoid (kl, none): a sigmoid cannot
# reach them (raw Tennessee Eastman: FVU 19,200). UFLDL's linear decoder instead (the seed's own variant for such
# data), on inputs rescaled to FashionMNIST's spread (model.input_scale) and, in a one-layer model, centred by
# b_dec starting at the data mean (model.pre_bias) as the other families' are, so the sigmoid code units start
# unsaturated. config.resolve layers it under the family's own settings.
OUTSIDE_UNIT_INTERVAL: dict[str, dict[str, Any]] = {"model": {
    "output_activation": "linear", "input_scale": True, "pre_bias": lambda model: model.one_layer(),
    "bias_init": lambda model: "mean" if model.one_layer() else "default"}}


L0_RATE = 0.02
"""The L0 controller's step of log(beta) per unit of log(L0 / target) (sparsity.l0_rate): a 10x too dense code
raises beta 4.7% a step; slow against the code's response, which lags beta until the weights have moved."""
L0_RUN_RATE = 5.0
"""L1 on inputs of fewer than 784 columns: the controller's rate is this / the run's steps (at most 0.05) on a short
run (is_short_run), L0_LONG_RUN_RATE / steps on a longer one, so that it takes the same share of any run to reach its
target: 0.02 a step on a 250-step run. L0_RATE squeezed the code of long runs faster than its features formed
(planted d 64 at lr 2e-2, seeds 0-1: MMCS 0.92 / 0.90 with L0_RATE, 0.95 / 0.95 with this; 1,024 latents in 128
dimensions at lr 5e-3, seed 0: 0.83 with L0_RATE, 0.92 with this; docs/sparsity_families.md, 'Penalty families on
small inputs')."""
L0_LONG_RUN_RATE = 2.5
"""The same on a run that is not short: half as fast again (planted features, 1,875 steps, lr 1e-2, seeds 0-2, MMCS
with --l0 at the planted density: d 64 0.965 -> 0.977, correlated groups 0.923 -> 0.944, d 128 --l0 8 0.914 ->
0.956, the L0 reached within 5% of the target but on d 128, 6.8 for 8). On the short real runs (digits, patches) it
reached only L0 10-11 for 8; 1.25 left the long runs' L0 a quarter above the target (docs/sparsity_families.md,
"L1's rate on small inputs")."""


def l0_rate(family: "Family", model: Any, steps: int | None) -> float:
    """The L0 controller's rate of a run of `steps` minibatch steps (None: not known before training). Where the
    family has a run rate (Family.l0_run_rate) and the input is small: that / steps on a short run (is_short_run),
    L0_LONG_RUN_RATE / steps on a longer one, at most 0.05; else L0_RATE."""
    if family.l0_run_rate is None or not steps or model is None or not small_input(model):
        return L0_RATE
    return min(0.05, (family.l0_run_rate if is_short_run(model, steps) else L0_LONG_RUN_RATE) / steps)


PRINCIPAL_SHARE = 0.9
"""The share of the training rows' variance that k (or the target L0's) principal components must hold for a run to
start from them (principal_start; TopK asks TOPK_PRINCIPAL_SHARE). Tennessee Eastman holds 0.996 at k 8; the
heavy-tailed set 0.96 at 16, digits 0.67, patches 0.49, the planted sets 0.11-0.16 (benchmarks/any_data.py
--spectrum): forced on those below 0.9, the start lost the planted features (d 64: TopK MMCS 0.99 -> 0.53) and left
more latents never firing (digits 31% -> 68%). On the heavy-tailed set it helped (seeds 0-2, FVU / PCA): l1 0.93 ->
0.47, jumprelu 0.53 -> 0.48, batchtopk 0.36 -> 0.22, matryoshka 0.36 -> 0.22 (docs/sparsity_families.md, 'Data
whose variance lies in a few directions')."""
TOPK_PRINCIPAL_SHARE = 0.99
"""TopK's share: from the principal directions on the heavy-tailed set (0.96 at k 16) 26% of its latents never fired
(2.2% from a random start), where BatchTopK's batch selection and the penalty families' thresholds left at most 1%."""


def can_start_principal(family: "Family", model: Any) -> bool:
    """The shape model.principal_start needs: a family whose code can start so (Family.principal_share) on its own
    code layer (with k where it selects k), one untied layer with a linear output on inputs of fewer than 784
    columns (the encoder rows are the decoder's signed principal directions), and no per-column input transform
    (the rule reads the raw rows' spectrum, whose shares one gain keeps and a standardisation or whitening does
    not). An unset output_activation counts as linear: the families that can start so default to it."""
    code_ok = bool(model.k) if model.topk in K_CODES else \
        (model.code_activation or model.activation) in (None, "relu")  # None: before the family's defaults
    return family.principal_share is not None and model.topk == family.code and code_ok and model.one_layer() \
        and not model.tied and model.output_activation in (None, "linear") and bool(model.input_dim) \
        and small_input(model) and model.target_dim is None and model.input_transform == "none"


# What a principal start (model.principal_start) asks of any family, above the family's own settings (its short
# run's too): the one rate from a start at a solution (and no TopK start, sparsity.topk_start, which would leave
# it). fill_defaults layers it first.
PRINCIPAL_START: dict[str, dict[str, Any]] = {"train": {"lr": PRINCIPAL_LR}, "sparsity": {"topk_start": 0.0}}


def principal_start(family: "Family", model: Any, spectrum: list[float], l0: float | None = None) -> bool:
    """Whether a run starts from the principal directions (model.principal_start): a code that can
    (can_start_principal) on data whose k (or `l0`, an l1 or jumprelu run's target L0) leading principal
    components hold the family's principal_share of the training rows' variance (`spectrum`: the covariance's
    eigenvalues, largest first). Tennessee Eastman (8 components hold 99.6%): from a random start a TopK code spent
    its 310 steps finding that subspace (FVU 6x PCA's at k; 1.1x after 50 epochs); from the principal directions 0.5x
    (docs/sparsity_families.md, 'Data whose variance lies in a few directions')."""
    total = sum(spectrum)
    k = int(round(model.k or l0 or 0))  # l0: an l1 or jumprelu run's target, where it has one
    return can_start_principal(family, model) and k > 0 and total > 0 \
        and sum(spectrum[:k]) >= family.principal_share * total


def default_l0(model: Any) -> float:
    """The L0 an l1 or jumprelu run aims at on data other than FashionMNIST when the user states neither beta
    nor an L0: input_dim / 8 (1 to 64), at most a quarter of the code. A beta's meaning depends on the data
    (on planted features in 64 dimensions the FashionMNIST beta gave L0 174 for 5 true features per row); an
    L0 does not. input_dim / 8 is where the TopK runs of docs/sparsity_families.md sit (k 8 on 52-64 inputs, 16
    on 128): a code a few times sparser than the input, as the field's SAEs use."""
    return float(max(1, min(64, round(model.input_dim / 8), model.hidden[-1] // 4)))


def small_input(model: Any) -> bool:
    """Fewer input columns than FashionMNIST's 784, where the recipes were tuned: the one boundary of the
    small-input rules (by_input_size, is_short_run, l0_rate)."""
    return model.input_dim < 784


COLLAPSED_NORM = 0.2
"""A latent whose free decoder column's norm is under this share of the median counts for AuxK as dead
(jumprelu_auxk): such a latent still fires now and then, so no dead window catches it, but it adds nothing."""


def jumprelu_auxk(model: Any) -> bool:
    """AuxK for JumpReLU on inputs of fewer than 128 columns (one-layer codes), over its dead latents and those whose
    decoder column collapsed (COLLAPSED_NORM). On planted features in groups that fire together, latents learn the
    group's sum first; 7% of them (36 of 512) then end as collapsed columns, and only 352 of the 512 features were
    recovered (MMCS 0.892); AuxK turns them back to what the live latents miss: MMCS 0.921, d 32 0.960 -> 0.984. At
    128 inputs (heavy-tailed, 1,024 latents) it cost FVU (docs/sparsity_families.md, 'JumpReLU')."""
    return model.input_dim < 128


def by_input_size(small: Any, other: Any) -> Callable[[Any], Any]:
    """A default that is `small` on inputs of fewer than 784 columns, else `other` (the value tuned on
    FashionMNIST's 784 pixels, kept there bit for bit). L1 and JumpReLU with a stated L0 on planted features
    (64 inputs) learned their features only with these, and the same settings cost FashionMNIST reconstruction
    (docs/sparsity_families.md, 'Penalty families on small inputs'); measured on 52-128 inputs, not derived."""
    return lambda model: small if small_input(model) else other


def batchtopk_auxk_coef(model: Any) -> float:
    """BatchTopK's AuxK weight: 1/8 (the TopK families' measured weight on FashionMNIST) for inputs of 128 columns
    and more, rising as (128 / input_dim)^3 to 1 at 64 columns and fewer. With few inputs and a small k a unit must
    beat the batch's k*B-th largest value to train at all, and at 1/8 many never did: planted features in 32
    dimensions (256 latents, k 3) ended with 37% of the latents never firing and MMCS 0.835, at 1 none and 0.916;
    in 64 dimensions 0.959 -> 0.972. At 128 inputs (the heavy-tailed set, 1,024 latents) a larger weight cost FVU
    and at 784 (FashionMNIST, 1,024 latents, k 32) 1 gave FVU 0.0874 for 0.0862 (docs/sparsity_families.md,
    'Every family on data it was not tuned on'). Matryoshka takes it up to 1/2 (matryoshka_auxk_coef)."""
    return min(1.0, 0.125 * max(1.0, 128 / model.input_dim) ** 3)


def _check_kl(model: Any, sparsity: Any) -> None:
    acts, n = model.layer_activations(), len(model.hidden)
    for i in sparsity.layers:
        if acts[i] not in BOUNDED_ACTIVATIONS:
            raise SparseAEError(
                f"the KL penalty needs activations in (0, 1) but layer {i % n} uses '{acts[i]}'; "
                "set model.activation (or model.code_activation) to 'sigmoid', or penalty to 'l1'")


SHORT_RUN = 500_000
"""Latent-steps (training steps x code units) below which a run on small inputs is short (a family's `short_run`
settings). JumpReLU's fast start (docs/sparsity_families.md, 'A faster start for short runs'), measured on
planted features and real sets: better at 128 latents for 310-630 steps (Tennessee Eastman), 256 latents for 195-500
(patches, digits) and 1,875 (planted, equal), 512 latents for 705 (planted), 1,024 latents for 195-250 (patches,
digits); worse at 512 latents for 1,875 steps, 1,024 for 705-1,875 (planted) and 900 (heavy-tailed): the
boundary lies between 480,000 and 705,000 latent-steps."""


def is_short_run(model: Any, steps: int | None) -> bool:
    """A run of `steps` minibatch steps (None when not known before training: streamed data, full-batch
    optimizers) times code units under SHORT_RUN, on inputs of fewer than 784 columns."""
    return model is not None and steps is not None and small_input(model) and steps * model.hidden[-1] < SHORT_RUN


def is_long_run(model: Any, steps: int | None) -> bool:
    """A run on inputs of fewer than 784 columns whose length is known and that is not short (a family's `long_run`
    settings). `steps` are counted at the batch size the run would have without them (config.resolve)."""
    return model is not None and steps is not None and small_input(model) and not is_short_run(model, steps)


REFIT_MAX_LATENTS = 4096
"""The widest code whose decoder train.refit_decoder fits: its normal equations are latents x latents in float64
(128 MiB and a second's solve at 4,096)."""


def refit_decoder(model: Any) -> bool:
    """L1's decoder refit on long runs on small inputs (its `long_run` layer): L1 shrinks every value it keeps, and
    a decoder trained beside that code takes in part of what the shrunk units leave out, most where features fire
    together. Refitted by least squares once the steps are done (training/refit.py), at codes of at most
    REFIT_MAX_LATENTS latents. Seeds 0-2, MMCS with --l0 at the planted density: correlated groups 0.944 -> 0.953,
    d 128 (--l0 8) 0.956 -> 0.960, others equal or up; held-out FVU 7-11% lower with --l0 (3-6% at the default L0)
    on the long planted runs, 21% on the heavy-tailed set. On a short real run it cost (Tennessee Eastman, 500 rows:
    FVU / PCA 0.94 -> 1.01, over PCA's), hence the scope (docs/sparsity_families.md, "L1's decoder refit on long
    runs")."""
    return refit_obstacle(model) is None


def refit_obstacle(model: Any) -> str | None:
    """Why a model's decoder cannot be refitted (train.refit_decoder), or None: it needs one decoder matrix read
    linearly from a ReLU or JumpReLU code, where which units fire does not depend on their scale (unit-norm columns
    are kept by moving each column's norm into its unit's encoder row; a TopK code's selection would change)."""
    if not model.one_layer() or model.tied or model.output_activation != "linear":
        return "one untied layer with a linear output (model.hidden of one size, model.tied no, " \
               "model.output_activation 'linear')"
    if model.topk not in (NONE, JUMPRELU) or (model.code_activation or model.activation) != "relu":
        return "a ReLU or JumpReLU code (the l1 and jumprelu families), whose units fire whatever their scale"
    if model.hidden[-1] > REFIT_MAX_LATENTS:
        return f"at most {REFIT_MAX_LATENTS} latents (its normal equations are latents x latents); got " \
               f"{model.hidden[-1]}"
    return None


TOPK_START_FACTOR = 2
"""JumpReLU's TopK start (sparsity.topk_start) keeps this many times the target L0 per example."""


def topk_start_k(target_l0: float) -> int:
    """The k of JumpReLU's TopK start: TOPK_START_FACTOR times the target L0, rounded. At the target itself
    (factor 1) the start lost features once the thresholds took over (planted d 128 with --l0 8: MMCS 0.929 and 0.946
    against 0.977 without the start; the scaled planted set 0.981 against 0.991); from twice the target the
    thresholds reach it by closing, not by moving units out of the code (docs/sparsity_families.md, 'JumpReLU')."""
    return max(1, round(TOPK_START_FACTOR * target_l0))


def _check_jumprelu(model: Any, sparsity: Any) -> None:
    if model.topk != JUMPRELU:
        raise SparseAEError(f"penalty 'jumprelu' needs model.topk 'jumprelu'; got '{model.topk}'")


def _check_matryoshka(model: Any, sparsity: Any) -> None:
    if model.topk not in K_CODES or not model.one_layer() or model.tied:
        raise SparseAEError("penalty 'matryoshka' needs a one-layer, untied topk or batchtopk model")
    if model.output_activation != "linear":
        raise SparseAEError("penalty 'matryoshka' needs model.output_activation 'linear' (a prefix's "
                            "reconstruction is a partial sum of decoder columns)")
    bad = [p for p in sparsity.prefixes or [] if p >= model.hidden[-1]]
    if bad:
        raise SparseAEError(f"sparsity.prefixes must be smaller than the code size {model.hidden[-1]}; "
                            f"got {','.join(map(str, sparsity.prefixes))}")


def _check_mp(model: Any, sparsity: Any) -> None:
    if model.topk != MP or not model.one_layer() or model.output_activation != "linear":
        raise SparseAEError("penalty 'mp' needs a one-layer model with model.topk 'mp' and model.output_activation "
                            "'linear' (the code is a pursuit over the decoder's columns)")
    if model.layer_activations()[-1] not in ("relu", "linear"):
        raise SparseAEError("penalty 'mp' needs model.code_activation 'relu' (non-negative code) or 'linear'")


@dataclass(frozen=True)
class Family:
    """One sparsity family (the value of sparsity.penalty)."""

    name: str
    help: str
    code: str = NONE
    """The code layer the family implies when model.topk is 'none' (`--penalty topk --k K`)."""
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    """section -> setting -> value (or a function of the ModelConfig, e.g. lr by width) for every model."""
    one_layer: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Further defaults for one hidden layer without decoder layers (the modern SAE shape); a deep or
    stacked model keeps its plain decoder."""
    term: str | None = None
    """Its penalty on the code (objective.PENALTY_TERMS), times beta; None: sparse by construction."""
    reconstruction: str | None = None
    """A reconstruction loss of its own (objective.RECONSTRUCTIONS); None: the configured one."""
    swept: str | None = None
    """What a sweep varies: 'k' or 'beta' (None: not in sweeps)."""
    sweep_flag: str | None = None
    """The sweep command's grid flag for this family."""
    check: Callable[[Any, Any], None] | None = None
    """Its own rules on (model, sparsity), after the settings' checks."""
    adapts_beta: bool = False
    """sparsity.target_l0 (`--l0`) can steer its beta to a stated L0."""
    short_run: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Defaults that replace its others on a short run on small inputs (is_short_run)."""
    long_run: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Defaults that replace its others on a run on small inputs that is not short (is_long_run)."""
    l0_run_rate: float | None = None
    """On small inputs, its L0 controller's rate is this / the run's steps on a short run, L0_LONG_RUN_RATE / steps
    on a longer one (l0_rate); None: L0_RATE."""
    principal_share: float | None = None
    """Its code can start from the data's signed principal directions (can_start_principal) where its k (or target
    L0's) principal components hold this share of the variance (principal_start); None: it cannot. Each unit a ReLU
    of one direction's coefficient, kept by a selection (k), a threshold or L1's shrinkage. Not KL's sigmoid
    code (never 0, bounded), nor MP's pursuit, whose code does not come from the encoder."""


# The modern TopK SAE (Gao et al. 2024; EleutherAI sparsify): ReLU after the selection, linear output,
# unit-norm decoder columns with the parallel gradient removed, encoder starting as the decoder's
# transpose, b_dec starting at the data mean and subtracted before the encoder, AuxK on, the batch's
# FVU as the loss, lr by width falling linearly to 0 over the last fifth of the steps.
# Inputs rescaled to FashionMNIST's spread on any other data (model.input_scale; config.resolve keeps it off
# on fashion-mnist itself), so that the recipes' settings mean the same there.
_MODERN = {"model": {"activation": "relu", "output_activation": "linear", "input_scale": True},
           "train": {"recon": "fvu", "lr": topk_lr, "lr_decay": 0.2}}
_MODERN_ONE_LAYER = {"model": {"unit_norm_decoder": True, "pre_bias": True, "bias_init": "mean",
                               "dead_window": 2000},
                     "sparsity": {"auxk": True}}
# BatchTopK below 784 inputs trains its first three quarters per example (sparsity.batchtopk_warmup): a unit half
# aligned with a feature is seldom among the batch's k*B largest, so it got no gradient and the features formed
# slowly (planted MMCS 0.921 -> 0.975 on d 32, 0.905 -> 0.955 with correlated features, 0.823 -> 0.958 on d 128).
# A share of 0.5 left d 128 at 0.940 and one correlated seed at 0.948, and cost less on patches (FVU / PCA 0.38
# against 0.45; docs/sparsity_families.md, "BatchTopK on small inputs starts per example").
_BATCHTOPK_ONE_LAYER = {**_MODERN_ONE_LAYER, "sparsity": {"auxk": True, "auxk_coef": batchtopk_auxk_coef,
                                                           "batchtopk_warmup": by_input_size(0.75, 0.0)}}


def matryoshka_warmup(model: Any) -> float:
    """Matryoshka's per-example share (sparsity.batchtopk_warmup): BatchTopK's 3/4 below 784 inputs on its
    BatchTopK code (0 on a TopK one, which has no batch selection to warm up). Without it AuxK's revivals left
    latents firing on a few training rows only (heavy-tailed set: 5.6-9.4% of 1,024 latents never fired on the
    held-out rows; AuxK off fixed that but lost the planted features). Seeds 0-2: heavy-tailed never firing 6.9%
    -> 0.5%; planted MMCS 0.814 -> 0.914 (d 64), 0.741 -> 0.834 (d 32), 0.698 -> 0.825 (correlated); FVU / PCA
    heavy-tailed 0.32 -> 0.40, patches 0.36 -> 0.38, never firing there 2.2% -> 4.0% (docs/sparsity_families.md,
    'Matryoshka')."""
    return 0.75 if small_input(model) and model.topk == BATCHTOPK else 0.0


MATRYOSHKA_DIVISORS = (16, 8, 4, 2)
"""Matryoshka's nested prefixes are the code size divided by these (halvings, as in Bussmann et al.) on inputs of
FashionMNIST's 784 columns and more; below, by SMALL_MATRYOSHKA_DIVISORS (matryoshka_prefixes)."""
SMALL_MATRYOSHKA_DIVISORS = (4, 2)


def matryoshka_prefixes(model: Any) -> list[int] | None:
    """Matryoshka's nested dictionary sizes (sparsity.prefixes) below the full code: code / 4 and / 2 on inputs of
    fewer than 784 columns; None from 784 on, which SparsityConfig.prefix_sizes reads as code / 16, / 8, / 4, / 2
    (so a FashionMNIST run's config.json is as it was). With few inputs the smallest prefixes (16 of 256
    latents in 32 dimensions) must carry mixtures of the data's features, and the latents behind them learned too
    little to fire on more than a few rows: planted d 32 never firing 6.5% -> 3.4%, MMCS 0.834 -> 0.881
    (docs/sparsity_families.md, 'Matryoshka')."""
    sizes = [model.hidden[-1] // d for d in SMALL_MATRYOSHKA_DIVISORS if model.hidden[-1] >= d]
    return sizes if small_input(model) and sizes else None


def matryoshka_auxk_coef(model: Any) -> float:
    """Matryoshka's AuxK weight: BatchTopK's (batchtopk_auxk_coef) up to 1/2. Its full weight of 1 at 64 inputs and
    fewer brought back every latent but lowered the planted MMCS (d 32: 0.881 -> 0.82); 1/2 with the small prefixes
    left 1.7% never firing on d 32 (3.4% at 1/8) at MMCS 0.872 (docs/sparsity_families.md, 'Matryoshka')."""
    return min(0.5, batchtopk_auxk_coef(model))


_MATRYOSHKA_ONE_LAYER = {**_MODERN_ONE_LAYER, "sparsity": {
    "auxk": True, "auxk_coef": matryoshka_auxk_coef, "batchtopk_warmup": matryoshka_warmup,
    "prefixes": matryoshka_prefixes}}

FAMILIES: dict[str, Family] = {f.name: f for f in (
    # Ng's sparse autoencoder, unchanged: sigmoid units and output, beta 0.003 (the tutorial's 0.001 leaves a
    # 256-unit sigmoid code at a mean activation of 0.072 for rho 0.05 after 10 epochs, 0.003 brings it to 0.058).
    Family(KL, "Bernoulli KL of each unit's mean activation to a target rate rho (Ng)",
           defaults={"sparsity": {"beta": 0.003}}, term="kl_divergence", swept="beta", sweep_flag="--kl-beta",
           check=_check_kl),
    # Anthropic's April 2024 update: ReLU, linear output, L1 of each |h_j| times its decoder column's norm (no
    # unit-norm constraint), beta warmed up from 0; b_dec at the data mean and subtracted (not subtracted,
    # 53-58% of the units never fired on non-negative pixels). 256 units, 3 epochs, beta 3e-4: L0 66.6, FVU /
    # PCA's at that L0 1.014 with lr 1e-3; 0.845 with 3e-3.
    # Below 784 inputs: lr 2e-2, no warm-up, pre-activation loss 5e-4 (and the L0 controller's rate set by the
    # run's length, L0_RUN_RATE). At 5e-3 with a 200-step warm-up the code could not follow beta, which
    # rose 15-30x and reached the stated L0 by shrinking every value (heavy-tailed set: beta 1.8e-2 at the end,
    # 1.2e-3 at lr 3e-2): FVU / PCA 1.67 digits, 8.6 heavy-tailed; now 0.66, 0.80. preact 1e-3 kept the heavy-tailed set
    # above PCA (its rare latents count as dead), 1e-4 lost planted features (d 64 MMCS 0.93), lr 2.5e-2 too (0.90);
    # docs/sparsity_families.md, 'Penalty families on small inputs'. That rate was measured on short runs (digits,
    # patches); longer runs on small inputs (is_short_run false) take 1e-2: planted MMCS with --l0 at the planted
    # density 0.950 -> 0.965 (d 64), 0.934 -> 0.966 (x100 + 50), 0.885 -> 0.923 (correlated), 0.845 -> 0.914 (d 128,
    # --l0 8); 1.5e-2 and 7e-3 gave less on d 128, and on the short real runs 1e-2 cost FVU (digits FVU / PCA 0.65 ->
    # 0.71, patches 0.60 -> 0.69). Long runs on small inputs also end with their decoder refitted (refit_decoder).
    Family(L1, "L1 of the code (ReLU units), each unit weighted by its decoder column's norm",
           defaults={"model": {"activation": "relu", "output_activation": "linear", "input_scale": True},
                     "sparsity": {"beta": 1e-3, "decoder_norm_l1": True, "beta_warmup": by_input_size(0, 200)},
                     "train": {"lr": by_input_size(1e-2, 3e-3), "lr_decay": by_input_size(0.2, 0.0)}},
           one_layer={"model": {"pre_bias": True, "bias_init": "mean", "dead_window": 2000},
                      "sparsity": {"preact_coef": by_input_size(5e-4, 0.0)}},
           short_run={"train": {"lr": 2e-2}}, long_run={"train": {"refit_decoder": refit_decoder}},
           term="abs_sum", swept="beta", sweep_flag="--l1-beta", adapts_beta=True, l0_run_rate=L0_RUN_RATE,
           principal_share=PRINCIPAL_SHARE),
    Family(NONE, "no sparsity: the plain autoencoder"),
    Family(TOPK, "the k largest units of each example (no penalty term)", code=TOPK, defaults=_MODERN,
           one_layer=_MODERN_ONE_LAYER, swept="k", sweep_flag="--k-grid",
           principal_share=TOPK_PRINCIPAL_SHARE),
    Family(BATCHTOPK, "the k * batch largest units of the batch, a learned threshold at inference",
           code=BATCHTOPK, defaults=_MODERN, one_layer=_BATCHTOPK_ONE_LAYER, swept="k",
           sweep_flag="--batchtopk-grid", principal_share=PRINCIPAL_SHARE),
    # Rajamanoharan et al. 2024: thresholds learned through a straight-through estimator, L0 penalty. beta
    # 1e-3: L0 42.5, ratio to PCA 0.757 with lr 1e-3; L0 33.1, 0.633 with 3e-3 (256 units). Below 784 inputs
    # (by_input_size) Anthropic's January 2025 form: a tanh penalty, free decoder norms, the pre-activation loss.
    # tanh's c 0.75: 0.5 gave planted MMCS 0.979 / 0.965 (d 64 / d 32) and real-set FVU / PCA 0.67 patches, 1.00
    # digits; 0.75 0.976 / 0.958, 0.65, 0.93; 1 kept d 32 under 0.95 (docs/sparsity_families.md).
    # Short runs on small inputs (is_short_run) start faster: lr 7e-3, beta 1e-2, a 30-step warm-up. Small real sets
    # give 195-630 steps, and at 3e-3 the code reached its L0 late and stayed half trained (Tennessee Eastman FVU
    # 0.42; 0.036 with 20 epochs). With it: FVU / PCA 0.46 patches, 0.58 digits, Tennessee Eastman FVU 0.17 (lr
    # 8e-3: Tennessee Eastman 0.10, but planted d 32 under 0.95 on 2 seeds of 6). Longer runs (is_long_run) learn
    # their features slowly: batch 128 (twice the steps) and tanh's c 0.5 took planted MMCS with --l0 from 0.981 to
    # 0.989 (d 64), 0.962 -> 0.980 (d 128), 0.921 -> 0.945 (correlated groups); on short runs they cost much
    # (digits FVU / PCA 0.55 -> 0.90; docs/sparsity_families.md, 'JumpReLU'). Their first three quarters train a
    # per-example TopK code of twice the target L0 (sparsity.topk_start, topk_start_k): a threshold code learned
    # features that fire together slowly (correlated groups 0.945 at 5 epochs, 0.957 at 10), a TopK code fast:
    # with the start 0.965, the other long planted runs equal or up with --l0 (d 128 at its default L0 16: 0.984 ->
    # 0.977).
    Family(JUMPRELU, "an L0 penalty on a code with learned per-unit thresholds", code=JUMPRELU,
           defaults={"model": {"activation": "relu", "output_activation": "linear", "jumprelu_threshold": 0.1,
                               "jumprelu_bandwidth": 0.05, "input_scale": True},
                     "sparsity": {"beta": 1e-3, "beta_warmup": 200, "jumprelu_tanh": by_input_size(0.75, 0.0)},
                     "train": {"recon": by_input_size("mse", "fvu"), "lr": 3e-3,
                               "lr_decay": by_input_size(0.2, 0.0)}},
           one_layer={"model": {"unit_norm_decoder": by_input_size(False, True), "pre_bias": True,
                                "bias_init": "mean", "dead_window": 2000},
                      "sparsity": {"preact_coef": by_input_size(1e-2, 0.0), "auxk": jumprelu_auxk}},
           short_run={"sparsity": {"beta": 1e-2, "beta_warmup": 30}, "train": {"lr": 7e-3}},
           long_run={"sparsity": {"jumprelu_tanh": 0.5, "topk_start": 0.75}, "train": {"batch_size": 128}},
           term="gate_count", swept="beta", sweep_flag="--jumprelu-beta", check=_check_jumprelu, adapts_beta=True,
           principal_share=PRINCIPAL_SHARE),
    Family(MATRYOSHKA, "BatchTopK trained to reconstruct from nested prefixes of the dictionary",
           code=BATCHTOPK, defaults=_MODERN, one_layer=_MATRYOSHKA_ONE_LAYER, reconstruction="nested_prefixes",
           swept="k", sweep_flag="--matryoshka-grid", check=_check_matryoshka, principal_share=PRINCIPAL_SHARE),
    # Costa et al. 2025 (MP-SAE): the code is k matching-pursuit steps over the unit-norm decoder columns in
    # the forward pass (model/pursuit.py), trained end to end; the encoder's weights are not used.
    Family(MP, "k greedy matching-pursuit steps over the decoder's columns (MP-SAE)", code=MP,
           defaults=_MODERN, one_layer=_MODERN_ONE_LAYER, swept="k", sweep_flag="--mp-grid", check=_check_mp),
)}
NAMES = tuple(FAMILIES)
SWEPT = {name: f.swept for name, f in FAMILIES.items() if f.swept}  # family -> the setting a sweep varies


def family_of(model: Any, sparsity: Any) -> Family:
    """The family whose defaults a run takes: its penalty's; for a penalty without a code layer of its own
    ('none', or the old spelling '--topk batchtopk --penalty topk') the family named like the model's code
    layer. A model on its own (`sparsity` None) takes its code layer's."""
    penalty = NONE if sparsity is None else sparsity.penalty
    code = model.topk if model is not None else NONE
    if penalty in (NONE, TOPK) and code in FAMILIES and code != NONE:
        return FAMILIES[code]
    return FAMILIES[penalty]


def fill_defaults(family: Family, model: Any, sections: dict[str, Any], data: dict[str, dict[str, Any]] | None = None,
                  steps: int | None = None) -> None:
    """Set every unset (None) setting of the dataclasses in `sections` (section name -> config) to
    PRINCIPAL_START's when the model starts from the principal directions, then `family`'s default (its short-run
    settings first on a run of `steps` that is_short_run, its long-run ones on one that is_long_run), then `data`'s
    (what the data asks of any family, e.g. OUTSIDE_UNIT_INTERVAL), then OFF's. Values given as functions are of
    the (resolved so far) model."""
    layers = [PRINCIPAL_START if model is not None and model.principal_start else {},
              family.short_run if is_short_run(model, steps) else {},
              family.long_run if is_long_run(model, steps) else {}, family.defaults,
              family.one_layer if model is not None and model.one_layer() else {}, data or {}, OFF]
    for section, obj in sections.items():
        for values in (layer.get(section, {}) for layer in layers):
            for name, value in values.items():
                if getattr(obj, name) is None:
                    setattr(obj, name, value(model) if callable(value) else value)
