"""Where the training loop's minibatches come from.

A batch source has `num_rows`, `steps()` and `epoch(generator, start_step)`,
which yields the epoch's batches from step `start_step` on. The training loop
(training/loop.py) is the same for data held on the device (`TensorBatches`) and
data streamed from a file (`arrays.StreamBatches`); `DataSource.training` returns
one or the other. What needs every row at once (fitting an input transform, PCA,
L-BFGS) takes `tensor`, which only a source held in memory has.
"""
from __future__ import annotations

import math
from typing import Iterator, Protocol

import torch


class BatchSource(Protocol):
    batch_size: int
    tensor: torch.Tensor | None
    """All the rows as one tensor when they are held in memory; None when they are streamed."""

    @property
    def num_rows(self) -> int: ...

    def steps(self) -> int: ...

    def epoch(self, generator: torch.Generator, start_step: int = 0) -> Iterator[torch.Tensor]: ...


class TensorBatches:
    """Minibatches of a tensor held on the device: a batch is a slice of a shuffled index."""

    def __init__(self, tensor: torch.Tensor, batch_size: int):
        self.tensor, self.batch_size = tensor, batch_size

    @property
    def num_rows(self) -> int:
        return self.tensor.shape[0]

    def steps(self) -> int:
        return math.ceil(self.num_rows / self.batch_size)

    def epoch(self, generator: torch.Generator, start_step: int = 0) -> Iterator[torch.Tensor]:
        n, bs = self.num_rows, self.batch_size
        perm = torch.randperm(n, generator=generator).to(self.tensor.device)
        for i in range(start_step * bs, n, bs):
            yield self.tensor.index_select(0, perm[i:i + bs])
