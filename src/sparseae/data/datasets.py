"""The data set registry: name -> loader returning a `Dataset` in memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import SparseAEError
from . import fashion_mnist


@dataclass
class Dataset:
    """A data set held in memory as float32 tensors (examples x features)."""

    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    image_shape: tuple[int, ...] | None = None
    """Shape of one example as an image (H, W) or (H, W, C); None if not images."""

    @property
    def input_dim(self) -> int:
        return self.train.shape[1]


def _fashion_mnist(data_dir: str | None = None, **_: object) -> Dataset:
    root = fashion_mnist.locate(data_dir)
    xs, ys = [], []
    for split in ("train", "t10k"):
        images, labels = fashion_mnist.load_split(root, split)
        xs.append(torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0))
        ys.append(torch.from_numpy(labels.astype(np.int64)))
    return Dataset(xs[0], xs[1], ys[0], ys[1], image_shape=(28, 28))


DATASETS: dict[str, Callable[..., Dataset]] = {
    "fashion-mnist": _fashion_mnist,
}


def load_dataset(name: str, data_dir: str | None = None, **options: object) -> Dataset:
    if name not in DATASETS:
        raise SparseAEError(f"unknown dataset '{name}'; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](data_dir=data_dir, **options)
