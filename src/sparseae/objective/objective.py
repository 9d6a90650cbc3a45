"""The training objective: reconstruction + sparsity penalty + weight decay."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..config import SparsityConfig
from ..model import AutoencoderOutput, SparseAutoencoder
from ..model.collectives import ONE_PROCESS, Collectives
from .auxk import auxk_loss
from .penalties import RunningMean, kl_penalty, l1_penalty, weight_decay


class LossParts(NamedTuple):
    total: torch.Tensor
    recon: torch.Tensor
    sparsity: torch.Tensor
    decay: torch.Tensor


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """'mse': mean over examples and features; 'half_sse': Ng's 1/(2m) sum ||h(x) - x||^2."""
    sq = (recon - x).pow(2)
    return sq.mean() if kind == "mse" else 0.5 * sq.sum(dim=1).mean()


def kl_term(objective: "Objective", layer: int, h: torch.Tensor) -> torch.Tensor:
    """Ng's sum_j KL(rho || rho_hat_j), rho_hat over the (global) batch, or its running estimate."""
    rho_hat = objective.collectives.mean_activation(h)
    if layer in objective.running:
        rho_hat = objective.running[layer](rho_hat)
    return kl_penalty(h, objective.sparsity.rho, rho_hat)


def l1_term(objective: "Objective", layer: int, h: torch.Tensor) -> torch.Tensor:
    return l1_penalty(h)


# penalty name -> its term on one penalised layer's activations (times beta in the objective).
# 'none' and 'topk' (sparse by construction) add no term. A new penalty is one function here
# and its name in config.PENALTIES (docs/architecture.md).
PENALTY_TERMS: dict[str, Callable[["Objective", int, torch.Tensor], torch.Tensor]] = {
    "kl": kl_term,
    "l1": l1_term,
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

    def penalty(self, hidden: tuple[torch.Tensor, ...]) -> torch.Tensor:
        s = self.sparsity
        total = hidden[-1].new_zeros((), dtype=torch.promote_types(hidden[-1].dtype, torch.float32))
        term = PENALTY_TERMS.get(s.penalty)
        if term is None or s.beta == 0:
            return total
        for i in s.layers:
            # in float32 after a bf16 forward pass: the KL of a bf16 mean is coarse
            total = total + term(self, i, hidden[i].to(total.dtype))
        return s.beta * total

    def auxk(self, model: SparseAutoencoder, out: AutoencoderOutput) -> torch.Tensor:
        """AuxK (counted in the sparsity part): dead units learn to explain what the live ones miss."""
        w, dim = model.code_decoder_param()
        w = w if dim == 0 else w.t()  # out x code
        k_aux = self.sparsity.k_aux or max(1, model.config.input_dim // 2)
        return auxk_loss(out.code_preact, model.dead_mask(), out.target - out.recon, w, k_aux,
                         self.collectives.total)

    def __call__(self, model: SparseAutoencoder, out: AutoencoderOutput) -> LossParts:
        rec = reconstruction_loss(out.recon, out.target, self.recon)
        pen = self.penalty(out.hidden)
        if self.sparsity.auxk and model.training and out.code_preact is not None:
            pen = pen + self.sparsity.auxk_coef * self.auxk(model, out)
        dec = weight_decay(model.weights(), self.sparsity.weight_decay) if self.sparsity.weight_decay \
            else rec.new_zeros(())
        return LossParts(rec + pen + dec, rec, pen, dec)
