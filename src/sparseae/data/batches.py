"""Where the training loop's minibatches come from.

A batch source has `num_rows`, `steps()` and `epoch(generator, start_step)`,
which yields the epoch's batches from step `start_step` on. The training loop
(trainer.fit) is the same for data held on the device (`TensorBatches`) and
data streamed from a file (`arrays.StreamBatches`).
"""
from __future__ import annotations

import math
from typing import Iterator, Protocol

import torch


class BatchSource(Protocol):
    batch_size: int

    @property
    def num_rows(self) -> int: ...

    def steps(self) -> int: ...

    def epoch(self, generator: torch.Generator, start_step: int = 0) -> Iterator[torch.Tensor]: ...


class TensorBatches:
    """Minibatches of a tensor held on the device: a batch is a slice of a shuffled index."""

    def __init__(self, x: torch.Tensor, batch_size: int):
        self.x, self.batch_size = x, batch_size

    @property
    def num_rows(self) -> int:
        return self.x.shape[0]

    def steps(self) -> int:
        return math.ceil(self.num_rows / self.batch_size)

    def epoch(self, generator: torch.Generator, start_step: int = 0) -> Iterator[torch.Tensor]:
        n, bs = self.num_rows, self.batch_size
        perm = torch.randperm(n, generator=generator).to(self.x.device)
        for i in range(start_step * bs, n, bs):
            yield self.x.index_select(0, perm[i:i + bs])
