"""What a forward pass returns: a leaf module, so the model, the objective and the
training code can all name the type without importing one another."""
from __future__ import annotations

from typing import NamedTuple

import torch


class AutoencoderOutput(NamedTuple):
    recon: torch.Tensor
    """Reconstruction of the input, same shape."""
    hidden: tuple[torch.Tensor, ...]
    """Activations of each encoder layer; the last is the code."""
    target: torch.Tensor
    """What `recon` should match: the input after the model's input transform."""
    code_preact: torch.Tensor | None = None
    """Pre-selection code of a training pass: TopK/BatchTopK (what AuxK picks dead units from), one-layer
    ReLU and JumpReLU codes (their pre-activation loss on dead units)."""
    kept_min: torch.Tensor | None = None
    """BatchTopK training pass: the smallest positive activation kept (feeds the inference threshold)."""
    fired: torch.Tensor | None = None
    """Per code unit, whether it fired in this batch, when the forward pass knows it cheaply (the sparse
    kernel); None: read off the code."""
    gate_l0: torch.Tensor | None = None
    """JumpReLU training pass: per example, the number of open gates, differentiable in the thresholds
    through the straight-through estimator (what its L0 penalty is computed from)."""
    topk_support: tuple[torch.Tensor, torch.Tensor] | None = None
    """Per-example TopK code: (the k kept values, their unit indices) of each example, distinct per row;
    the code is zero elsewhere. Counting and summing the code from it reads k values a row, not the
    whole code's (firing counters, evaluation)."""
