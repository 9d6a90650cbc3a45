"""What every data set offers the rest of the package, whether held in memory or streamed.

`DataSource` is the protocol: training rows (a batch source, data/batches.py: rows
held on the device, or batches streamed from a file), validation rows (a tensor,
or chunks of a file), labels when there are any, the image shape when the rows
are images, and per-feature statistics of a streamed file (an in-memory set is
fitted directly). `Dataset` is the in-memory implementation; `arrays.ArrayData`
the streamed one. A leaf module: the loaders, the trainer and the analyses all
name it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol

import numpy as np
import torch

from ..errors import SparseAEError
from .batches import BatchSource, TensorBatches

if TYPE_CHECKING:
    from .arrays import RowStatistics


class DataSource(Protocol):
    image_shape: tuple[int, ...] | None
    train_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    target_dim: int
    """A transcoder's data: the last `target_dim` columns of each row are its target (0: none)."""

    @property
    def input_dim(self) -> int: ...

    @property
    def in_memory(self) -> bool:
        """True when `train` and `test` are tensors in memory; False for a streamed file."""

    @property
    def statistics(self) -> "RowStatistics | None":
        """Per-feature statistics of the training rows of a streamed file (None in memory)."""

    def training(self, device: torch.device, batch_size: int, limit: int | None = None) -> BatchSource:
        """Minibatches of the training rows (the first `limit`): held on `device` (its `tensor` has them
        all) or streamed from a file."""

    def validation(self, device: torch.device) -> torch.Tensor | Iterable[torch.Tensor]:
        """The validation rows: a tensor, or an iterable of row chunks with len() and head(n)."""


@dataclass
class Dataset:
    """A data set held in memory as float32 tensors (examples x features)."""

    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    image_shape: tuple[int, ...] | None = None
    """Shape of one example as an image (H, W) or (H, W, C); None if not images."""
    target_dim: int = 0
    """A transcoder's data: each row is the input, then this many target columns (data/arrays.py)."""

    @property
    def input_dim(self) -> int:
        return self.train.shape[1] - self.target_dim

    in_memory = True
    statistics = None

    def training(self, device: torch.device, batch_size: int, limit: int | None = None) -> TensorBatches:
        return TensorBatches(self.train[:limit].to(device), batch_size)

    def validation(self, device: torch.device) -> torch.Tensor:
        return self.test.to(device)


def within_unit_interval(data: DataSource, limit: int | None = None) -> bool | None:
    """Whether every training value (of the first `limit` rows) lies in [0, 1], where a sigmoid output can
    reach it; None when not known (a streamed file not scanned)."""
    if data.in_memory:
        rows = data.train[:limit]
        if rows.numel() == 0:
            return True
        low, high = torch.aminmax(rows)  # one pass over the rows at start-up, not two
        return bool(low >= 0 and high <= 1)
    st = data.statistics
    if st is None or st.low is None:
        return None
    return bool(st.low >= 0 and st.high <= 1)


SPECTRUM_ROWS = 65536
"""Rows the variance spectrum is estimated on (a d x d covariance: more rows change its leading shares little)."""


def variance_spectrum(data: DataSource, limit: int | None = None) -> list[float] | None:
    """The eigenvalues of the covariance of the first SPECTRUM_ROWS training rows (at most `limit`), largest
    first, for data held in memory (families.principal_start's rule); None otherwise."""
    if not data.in_memory or data.train.ndim != 2:
        return None
    rows = data.train[:min(limit or SPECTRUM_ROWS, SPECTRUM_ROWS)]
    if rows.shape[0] < 2:
        return None
    return principal_axes(rows)[0].tolist()


def principal_axes(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The covariance of `rows` decomposed, in float64: its eigenvalues, largest first, and its eigenvectors as rows
    in the same order, each signed so that its largest |entry| is positive (LAPACK's signs differ by machine; a
    principal start takes +v and -v in that order). A d x d problem: no n x d copy beyond the centred rows."""
    rows = rows.double()
    centred = rows - rows.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred / rows.shape[0])
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1).T
    return values, vectors * torch.sign(vectors.gather(1, vectors.abs().argmax(1, keepdim=True)))


def first_rows(rows: torch.Tensor | Iterable[torch.Tensor], n: int) -> torch.Tensor:
    """The first `n` of validation rows as a tensor, whether in memory or chunks of a file."""
    return rows[:n] if torch.is_tensor(rows) else rows.head(n)


def require_labels(data: DataSource, what: str) -> None:
    """Refuse, in one line, work that needs labels on a data set without them."""
    if data.train_labels is None or data.test_labels is None:
        raise SparseAEError(f"{what} needs a labelled data set (e.g. fashion-mnist); this one has no labels")


def require_in_memory(data: DataSource, what: str) -> Dataset:
    if not data.in_memory:
        raise SparseAEError(f"{what} needs the data in memory; the array file is streamed "
                            "(use --stream no if it fits)")
    return data  # type: ignore[return-value]


def select_classes(data: DataSource, classes: list[int]) -> Dataset:
    """The examples (train and test) whose label is in `classes`."""
    require_labels(data, "selecting classes")
    wanted = torch.tensor(sorted(set(classes)))
    keep_tr = torch.isin(data.train_labels, wanted)
    keep_te = torch.isin(data.test_labels, wanted)
    if not keep_tr.any():
        raise SparseAEError(f"no training examples with labels {sorted(set(classes))}")
    return Dataset(data.train[keep_tr], data.test[keep_te], data.train_labels[keep_tr],
                   data.test_labels[keep_te], data.image_shape, data.target_dim)


def as_float_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
