"""The training objective: reconstruction + sparsity penalty + weight decay.

Each sparsity family's term is one function in PENALTY_TERMS; Matryoshka changes the reconstruction
itself (every nested prefix of the dictionary reconstructs), so it is one function in RECONSTRUCTIONS.

A stated L0 (sparsity.target_l0) steers beta: after the warm-up (or a tenth of the run, if sooner), every
step multiplies it by ((batch L0 + 1/2) / (target + 1/2))^rate, a multiplicative (integral) controller
on the measured L0 (the rate is sparsity.l0_rate: families.l0_rate resolves it). Its one piece of
state, log(beta / the configured beta), is a float64 tensor saved in the checkpoint, so a resumed run continues it.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..config import SparsityConfig
from ..errors import SparseAEError
from ..families import FAMILIES, JUMPRELU, L0_RATE, OFF
from ..model import AutoencoderOutput, SparseAutoencoder
from ..model.collectives import ONE_PROCESS, Collectives
from .auxk import ColumnLeaves, auxk_loss
from ..model.codes import column_norms
from .penalties import RunningMean, batch_spread, kl_penalty, l1_penalty, weight_decay

L0_GAIN_LIMIT = 14.0
"""|log(beta / configured beta)| at most this (a factor of 1.2e6): a target the data cannot reach stops there."""


class LossParts(NamedTuple):
    total: torch.Tensor
    recon: torch.Tensor
    sparsity: torch.Tensor
    decay: torch.Tensor


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, kind: str | None = "mse",
                        total=ONE_PROCESS.total) -> torch.Tensor:
    """'mse' (or None): mean over examples and features; 'half_sse': Ng's 1/(2m) sum ||h(x) - x||^2;
    'fvu': sum ||h(x) - x||^2 / sum ||x - mean(x)||^2 over the batch, the batch's spread a constant.
    With `total` (a sum over processes) the FVU is the global batch's: this process's squared error
    over the global spread, times global / local rows, so that the loop's loss weight (local / global
    rows) and the summed gradients give exactly the global batch's FVU."""
    sq = (recon - x).pow(2)
    if kind == "fvu":
        rows, spread = batch_spread(x, total)
        return sq.sum() * (rows / (x.shape[0] * spread))
    return 0.5 * sq.sum(dim=1).mean() if kind == "half_sse" else sq.mean()


def kl_term(objective: "Objective", layer: int, h: torch.Tensor, model=None, out=None) -> torch.Tensor:
    """Ng's sum_j KL(rho || rho_hat_j), rho_hat over the (global) batch, or its running estimate."""
    rho_hat = objective.collectives.mean_activation(h)
    if layer in objective.running:
        rho_hat = objective.running[layer](rho_hat)
    return kl_penalty(h, objective.sparsity.rho, rho_hat)


def decoder_norms(model: SparseAutoencoder, dtype: torch.dtype) -> torch.Tensor:
    """||d_j||, the norm of each code unit's decoder column (the weights of the decoder-norm penalties)."""
    return column_norms(model.decoder_weights()[0], 0).squeeze(0).to(dtype)


def l1_term(objective: "Objective", layer: int, h: torch.Tensor, model: SparseAutoencoder | None = None,
            out: AutoencoderOutput | None = None) -> torch.Tensor:
    """sum_j |h_j| (mean over examples); on the code with decoder_norm_l1, sum_j |h_j| ||d_j||: scaling a
    unit's code down and its decoder column up no longer lowers the penalty (Anthropic, April 2024)."""
    if model is not None and objective.sparsity.decoder_norm_l1 \
            and layer % len(model.config.hidden) == len(model.config.hidden) - 1:
        return (h.abs() @ decoder_norms(model, h.dtype)).mean()
    return l1_penalty(h)


def l0_term(objective: "Objective", layer: int, h: torch.Tensor, model: SparseAutoencoder | None = None,
            out: AutoencoderOutput | None = None) -> torch.Tensor:
    """JumpReLU: the mean number of open gates, its gradient in the thresholds through the STE; with
    sparsity.jumprelu_tanh c > 0, sum_j tanh(c h_j ||d_j||) instead (Anthropic, January 2025): near 1 for a
    large value, like the count, but its gradient also reaches the firing units' values, so a unit is pushed off
    the rows where its value is small (on planted features: MMCS 0.93 -> 0.98, docs/sparsity_families.md)."""
    c = objective.sparsity.jumprelu_tanh
    if c:
        norms = decoder_norms(model, h.dtype) if model is not None else 1.0
        # h, not |h| (h >= 0 here): the estimator reads the gradient at h = 0 for the rows just below a threshold
        return torch.tanh(c * h * norms).sum(-1).mean()
    if out is None or out.gate_l0 is None:  # evaluation pass: the count, no gradient
        return (h != 0).sum(-1).to(h.dtype).mean()
    return out.gate_l0.to(h.dtype).mean()


# A family's `term` (families.py) -> its penalty on one penalised layer's activations (times beta in the
# objective). Families sparse by construction have none. A new penalty is one function here and a family
# record naming it (docs/architecture.md).
PENALTY_TERMS: dict[str, Callable[..., torch.Tensor]] = {
    "kl_divergence": kl_term,
    "abs_sum": l1_term,
    "gate_count": l0_term,
}


def matryoshka_reconstruction(objective: "Objective", model: SparseAutoencoder,
                              out: AutoencoderOutput) -> torch.Tensor:
    """Matryoshka (Bussmann et al., 2025; Nabeshima, 2024): the mean, over the nested prefixes
    m_1 < ... < m_n = code size, of the loss of reconstructing from the first m_i units alone.

    The early units must carry the coarse structure on their own, so a prefix of the dictionary is a
    usable smaller dictionary. A prefix's reconstruction is b_dec plus a partial sum of decoder
    columns, so all n cost one decoder product: the groups between consecutive sizes, accumulated.
    """
    code, w = out.hidden[-1], model.decoder[0].weight  # out x code
    sizes = objective.sparsity.prefix_sizes(code.shape[1])
    recon = model.output_bias().to(code.dtype).expand(code.shape[0], -1)
    total, start = 0.0, 0
    for end in sizes:
        recon = recon + code[:, start:end] @ w[:, start:end].t()
        total = total + objective.reconstruction(recon, out.target)
        start = end
    return total / len(sizes)


# A family's `reconstruction` (families.py) -> the loss it trains on instead of the configured one.
RECONSTRUCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "nested_prefixes": matryoshka_reconstruction,
}


class Objective:
    """Callable `(model, out) -> LossParts`; holds the running rho_hat state if any.

    `collectives` forms rho_hat and AuxK's sums over the global batch of a data-parallel run
    (model/collectives.py); the default is a plain one-process run.
    """

    def __init__(self, sparsity: SparsityConfig, recon: str = "mse", collectives: Collectives = ONE_PROCESS):
        self.sparsity = sparsity
        family = FAMILIES[sparsity.penalty]
        self.term = PENALTY_TERMS[family.term] if family.term else None
        self.family_reconstruction = RECONSTRUCTIONS[family.reconstruction] if family.reconstruction else None
        if self.term is not None and sparsity.beta is None:
            raise SparseAEError("the objective needs a resolved SparsityConfig (beta set): config.resolve")
        self.recon = recon
        self.collectives = collectives
        self.running = {i: RunningMean(sparsity.rho_momentum) for i in sparsity.layers} \
            if sparsity.rho_hat == "running" else {}
        self.step: int | None = None
        """The global training step (0-based) of the pass in progress, set by the loop before each step:
        beta's warm-up is a function of it, so a resumed run continues it. None (gradient check, L-BFGS,
        evaluation): the full beta."""
        self.log_gain: torch.Tensor | None = None
        """With target_l0: log(beta / sparsity.beta), adapted by `adapt_beta` (float64, on the model's device)."""
        self.batch_l0: torch.Tensor | None = None
        """With target_l0: the last training batch's (global) L0, read by `adapt_beta`."""
        self.total_steps: int | None = None
        """The run's number of minibatch steps (set by the loop; a function of the settings and the data)."""
        self.column_leaves: ColumnLeaves | None = None
        """Set by the minibatch loop (which then calls its `add_grads` after each backward): AuxK's decoder
        columns as a leaf of their own instead of a selection through autograd (objective/auxk.py)."""

    def reconstruction(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The reconstruction loss of the configured kind, an FVU over the global batch."""
        return reconstruction_loss(recon, target, self.recon, self.collectives.total)

    def beta(self, step: int | None = None) -> float:
        """beta at the global training `step` (0-based): risen linearly from 0 over the first beta_warmup
        steps; the full beta without a step."""
        warmup = self.sparsity.beta_warmup or 0
        scale = min(1.0, (step + 1) / warmup) if warmup and step is not None else 1.0
        return self.sparsity.beta * scale

    def adapted_beta(self) -> float:
        """The configured beta times what the L0 controller has made of it (the configured beta without one)."""
        gain = 1.0 if self.log_gain is None else float(self.log_gain.exp())
        return self.sparsity.beta * gain

    def _measure_l0(self, code: torch.Tensor) -> None:
        """Keep the batch's L0 (over the global batch) for the controller, without a gradient."""
        with torch.no_grad():
            counts = torch.stack([(code != 0).sum().double(), code.new_tensor(code.shape[0], dtype=torch.float64)])
            counts = self.collectives.total(counts)
            self.batch_l0 = counts[0] / counts[1]
            if self.log_gain is None:
                self.log_gain = torch.zeros((), dtype=torch.float64, device=code.device)

    @staticmethod
    def starting(model: SparseAutoencoder | None) -> bool:
        """In JumpReLU's TopK start (sparsity.topk_start): the code is a TopK code, with no penalty to pay. (A
        gradient check's functional view of a model has no start.)"""
        return bool(getattr(model, "start_k", None)) and model.training and model.per_example_topk

    def adapt_beta(self, step: int) -> None:
        """After the training step `step` (0-based): move beta toward the stated L0, once the warm-up is over or
        a tenth of the run has passed (`total_steps`), whichever comes first. Features form before the code is
        squeezed (started at step 0, L1 on planted features recovered clearly fewer of them), and a
        short run is not all warm-up (10,000 patches at batch 256 for 5 epochs are 200 steps)."""
        target = self.sparsity.target_l0
        start = self.sparsity.beta_warmup or 0
        if self.total_steps is not None:
            start = min(start, self.total_steps // 10)
        if target is None or self.batch_l0 is None or step + 1 < start:
            return
        error = torch.log((self.batch_l0 + 0.5) / (target + 0.5))
        rate = self.sparsity.l0_rate or L0_RATE  # an unresolved configuration (a test's) has none
        self.log_gain = (self.log_gain + rate * error).clamp(-L0_GAIN_LIMIT, L0_GAIN_LIMIT)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of the objective beyond rho_hat: the L0 controller's state."""
        return {} if self.log_gain is None else {"objective.log_gain": self.log_gain}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        if "objective.log_gain" in tensors:
            self.log_gain = tensors["objective.log_gain"].to(device=device, dtype=torch.float64)

    def penalty(self, hidden: tuple[torch.Tensor, ...], model: SparseAutoencoder | None = None,
                out: AutoencoderOutput | None = None) -> torch.Tensor:
        """beta times the family's term on the penalised layers; `model` and `out` for the terms that need
        more than the activations (L1 weighted by decoder norms, JumpReLU's gates)."""
        s = self.sparsity
        total = hidden[-1].new_zeros((), dtype=torch.promote_types(hidden[-1].dtype, torch.float32))
        term = self.term
        if term is None:
            return total
        beta = self.beta(self.step)
        if s.target_l0 is not None and self.step is not None:
            self._measure_l0(hidden[-1])
        if beta == 0 or self.starting(model):
            return total
        for i in s.layers:
            # in float32 after a bf16 forward pass: the KL of a bf16 mean is coarse
            total = total + term(self, i, hidden[i].to(total.dtype), model, out)
        if self.log_gain is not None:
            return beta * self.log_gain.exp().to(total.dtype) * total
        return beta * total

    def auxk(self, model: SparseAutoencoder, out: AutoencoderOutput) -> torch.Tensor:
        """AuxK (counted in the sparsity part): dead units learn to explain what the live ones miss."""
        param, dim = model.code_decoder_param()
        w = param if dim == 0 else param.t()  # out x code
        k_aux = self.sparsity.k_aux or max(1, model.config.output_dim() // 2)
        leaves = self.column_leaves
        columns = None if leaves is None else (lambda cols: leaves.select(param, 1 - dim, cols))
        return auxk_loss(out.code_preact, model.auxk_mask(), out.target - out.recon, w, k_aux,
                         self.collectives.total, columns)

    def revival(self, model: SparseAutoencoder, out: AutoencoderOutput) -> torch.Tensor:
        """L1, JumpReLU (sparsity.preact_coef): sum_j relu(theta_j - z_j) ||d_j|| (mean over examples) over the
        latents that have not fired for model.dead_window training examples, theta_j JumpReLU's threshold (0 for
        L1's ReLU). The pre-activation loss of Anthropic's January 2025 JumpReLU update, there on every latent:
        the only gradient that reaches a latent whose pre-activations all lie below its threshold (raising them
        and lowering the threshold); a dead latent's weights otherwise never move again."""
        z = out.code_preact.to(torch.float32)
        norms = decoder_norms(model, z.dtype)
        theta = model.gate_threshold().to(z.dtype) if model.config.topk == JUMPRELU else z.new_zeros(())
        return (torch.relu(theta - z) @ (norms * model.dead_mask().to(z.dtype))).mean()

    def __call__(self, model: SparseAutoencoder, out: AutoencoderOutput) -> LossParts:
        family_recon = self.family_reconstruction
        rec = family_recon(self, model, out) if family_recon is not None else self.reconstruction(out.recon, out.target)
        s = self.sparsity
        pen = self.penalty(out.hidden, model, out)
        training = getattr(model, "training", False)  # the gradient check passes a view of the weights
        auxk_coef = OFF["sparsity"]["auxk_coef"] if s.auxk_coef is None else s.auxk_coef  # None: not resolved
        if s.auxk and auxk_coef and training and out.code_preact is not None:
            pen = pen + auxk_coef * self.auxk(model, out)
        if s.preact_coef and training and out.code_preact is not None:
            pen = pen + s.preact_coef * self.revival(model, out)
        dec = weight_decay(model.weights(), self.sparsity.weight_decay) if self.sparsity.weight_decay \
            else rec.new_zeros(())
        return LossParts(rec + pen + dec, rec, pen, dec)
