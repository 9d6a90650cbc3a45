"""The training objective: reconstruction + sparsity penalty + weight decay.

Each sparsity family's term is one function in PENALTY_TERMS; Matryoshka changes the reconstruction
itself (every nested prefix of the dictionary reconstructs), so it is one function in RECONSTRUCTIONS.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..config import SparsityConfig
from ..model import AutoencoderOutput, SparseAutoencoder
from ..model.collectives import ONE_PROCESS, Collectives
from .auxk import auxk_loss
from ..model.codes import column_norms
from .penalties import RunningMean, batch_spread, kl_penalty, l1_penalty, weight_decay


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


def l1_term(objective: "Objective", layer: int, h: torch.Tensor, model: SparseAutoencoder | None = None,
            out: AutoencoderOutput | None = None) -> torch.Tensor:
    """sum_j |h_j| (mean over examples); on the code with decoder_norm_l1, sum_j |h_j| ||d_j||: scaling a
    unit's code down and its decoder column up no longer lowers the penalty (Anthropic, April 2024)."""
    if model is not None and objective.sparsity.decoder_norm_l1 \
            and layer % len(model.config.hidden) == len(model.config.hidden) - 1:
        norms = column_norms(model.decoder_weights()[0], 0).squeeze(0).to(h.dtype)
        return (h.abs() @ norms).mean()
    return l1_penalty(h)


def l0_term(objective: "Objective", layer: int, h: torch.Tensor, model: SparseAutoencoder | None = None,
            out: AutoencoderOutput | None = None) -> torch.Tensor:
    """JumpReLU: the mean number of open gates, its gradient in the thresholds through the STE."""
    if out is None or out.gate_l0 is None:  # evaluation pass: the count, no gradient
        return (h != 0).sum(-1).to(h.dtype).mean()
    return out.gate_l0.to(h.dtype).mean()


# penalty name -> its term on one penalised layer's activations (times beta in the objective).
# 'none', 'topk', 'batchtopk' and 'matryoshka' (sparse by construction) add no term. A new penalty
# is one function here and its name in config.PENALTIES (docs/architecture.md).
PENALTY_TERMS: dict[str, Callable[..., torch.Tensor]] = {
    "kl": kl_term,
    "l1": l1_term,
    "jumprelu": l0_term,
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


RECONSTRUCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "matryoshka": matryoshka_reconstruction,
}


class Objective:
    """Callable `(model, out) -> LossParts`; holds the running rho_hat state if any.

    `collectives` forms rho_hat and AuxK's sums over the global batch of a data-parallel run
    (model/collectives.py); the default is a plain one-process run.
    """

    def __init__(self, sparsity: SparsityConfig, recon: str = "mse", collectives: Collectives = ONE_PROCESS):
        self.sparsity = sparsity
        self.recon = recon
        self.collectives = collectives
        self.running = {i: RunningMean(sparsity.rho_momentum) for i in sparsity.layers} \
            if sparsity.rho_hat == "running" else {}
        self.steps = 0  # training steps seen, for beta's warm-up (not checkpointed: a resumed run re-warms)

    def reconstruction(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The reconstruction loss of the configured kind, an FVU over the global batch."""
        return reconstruction_loss(recon, target, self.recon, self.collectives.total)

    def beta(self) -> float:
        """beta, risen linearly from 0 over the first beta_warmup training steps."""
        warmup = self.sparsity.beta_warmup or 0
        scale = min(1.0, (self.steps + 1) / warmup) if warmup else 1.0
        return self.sparsity.weight() * scale

    def penalty(self, hidden: tuple[torch.Tensor, ...], model: SparseAutoencoder | None = None,
                out: AutoencoderOutput | None = None) -> torch.Tensor:
        """beta times the family's term on the penalised layers; `model` and `out` for the terms that need
        more than the activations (L1 weighted by decoder norms, JumpReLU's gates)."""
        s = self.sparsity
        total = hidden[-1].new_zeros((), dtype=torch.promote_types(hidden[-1].dtype, torch.float32))
        term = PENALTY_TERMS.get(s.penalty)
        beta = self.beta()
        if term is None or beta == 0:
            return total
        for i in s.layers:
            # in float32 after a bf16 forward pass: the KL of a bf16 mean is coarse
            total = total + term(self, i, hidden[i].to(total.dtype), model, out)
        return beta * total

    def auxk(self, model: SparseAutoencoder, out: AutoencoderOutput) -> torch.Tensor:
        """AuxK (counted in the sparsity part): dead units learn to explain what the live ones miss."""
        w, dim = model.code_decoder_param()
        w = w if dim == 0 else w.t()  # out x code
        k_aux = self.sparsity.k_aux or max(1, model.config.input_dim // 2)
        return auxk_loss(out.code_preact, model.dead_mask(), out.target - out.recon, w, k_aux,
                         self.collectives.total)

    def __call__(self, model: SparseAutoencoder, out: AutoencoderOutput) -> LossParts:
        family_recon = RECONSTRUCTIONS.get(self.sparsity.penalty)
        rec = family_recon(self, model, out) if family_recon is not None else self.reconstruction(out.recon, out.target)
        s = self.sparsity
        # only the terms that need them get the model and the output: `penalty(hidden)` stays the
        # signature a subclass may override
        needs_model = s.penalty == "jumprelu" or (s.penalty == "l1" and s.decoder_norm_l1)
        pen = self.penalty(out.hidden, model, out) if needs_model else self.penalty(out.hidden)
        training = getattr(model, "training", False)  # the gradient check passes a view of the weights
        if training:
            self.steps += 1
        if s.auxk and s.auxk_coef and training and out.code_preact is not None:
            pen = pen + self.sparsity.auxk_coef * self.auxk(model, out)
        dec = weight_decay(model.weights(), self.sparsity.weight_decay) if self.sparsity.weight_decay \
            else rec.new_zeros(())
        return LossParts(rec + pen + dec, rec, pen, dec)
