"""The data-parallel seam: the few places where a statistic must cover the global batch.

A data-parallel run (training/distributed.py) splits each batch over processes.
Most of the loss is a mean over examples and needs nothing but summed gradients;
a few quantities need the other processes' rows: the KL penalty's rho_hat, the
BatchTopK selection, the firing counters behind AuxK's dead units, AuxK's sums.
The model and the objective take them from one `Collectives` object passed in
at construction or call time; `ONE_PROCESS` is the identity for a plain run, so
there is no "if distributed" anywhere in the model, the objective or the loop.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from .codes import batchtopk_activation

Activation = Callable[[torch.Tensor], torch.Tensor]


class Collectives(Protocol):
    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        """The process that writes files (rank 0)."""

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """Differentiable sum over processes."""

    def mean_activation(self, h: torch.Tensor) -> torch.Tensor:
        """rho_hat: each unit's mean activation over the global batch."""

    def batchtopk(self, z: torch.Tensor, k: int, act: Activation) -> tuple[torch.Tensor, torch.Tensor]:
        """BatchTopK over the global batch: (code, smallest positive kept value)."""

    def firing(self, fired: torch.Tensor, rows: int) -> tuple[torch.Tensor, int]:
        """(units that fired on any process, rows of the global batch)."""

    def shard(self, xb: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch."""

    def loss_weight(self, local_rows: int) -> float:
        """Weight of this process's loss so that the summed gradients are the global batch's."""

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients over processes."""

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Rank 0's values, on every process."""

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over processes (no gradient)."""

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every process."""


class SingleProcess:
    """The collectives of a run with one process: every operation is the identity."""

    rank, world, is_main = 0, 1, True

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def mean_activation(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=0)

    def batchtopk(self, z: torch.Tensor, k: int, act: Activation) -> tuple[torch.Tensor, torch.Tensor]:
        return batchtopk_activation(z, k, act)

    def firing(self, fired: torch.Tensor, rows: int) -> tuple[torch.Tensor, int]:
        return fired, rows

    def shard(self, xb: torch.Tensor) -> torch.Tensor:
        return xb

    def loss_weight(self, local_rows: int) -> float:
        return 1.0

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        pass

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        pass

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def agree(self, flag: bool) -> bool:
        return flag


ONE_PROCESS = SingleProcess()
