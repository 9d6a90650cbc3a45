"""The data set registry: name -> loader returning a `Dataset` in memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import SparseAEError
from . import fashion_mnist, patches


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


def _patches(data_dir: str | None = None, patch_size: int = 8, num_patches: int = 10000,
             patch_channels: int = 1, whiten_images: bool = True, image_downsample: int = 2,
             normalize: bool = True, seed: int = 0, num_test: int | None = None,
             images: tuple[str, ...] = patches.DEFAULT_IMAGES, **_: object) -> Dataset:
    """UFLDL-style natural-image patches: `num_patches` for training and `num_test`
    (default num_patches / 5) held-out patches drawn with another seed, normalised
    (`normalize`) with the training patches' clip level, or left as pixel values."""
    if patch_size <= 0 or num_patches <= 0:
        raise SparseAEError(f"patch_size and num_patches must be positive, got {patch_size} and {num_patches}")
    if patch_channels not in (1, 3):
        raise SparseAEError(f"patch_channels must be 1 (grey) or 3 (colour), got {patch_channels}")
    if image_downsample <= 0:
        raise SparseAEError(f"image_downsample must be positive, got {image_downsample}")
    photos = [(name, patches.downsample_image(img, image_downsample))
              for name, img in patches.load_images(images, patch_channels)]
    if whiten_images:
        photos = [(name, patches.whiten_image(img)) for name, img in photos]
    num_test = max(1, num_patches // 5) if num_test is None else num_test
    train = patches.sample_patches(photos, num_patches, patch_size, np.random.default_rng([seed, 0]))
    test = patches.sample_patches(photos, num_test, patch_size, np.random.default_rng([seed, 1]))
    if normalize:
        train, pstd = patches.normalize_patches(train)
        test, _ = patches.normalize_patches(test, pstd)
    shape = (patch_size, patch_size) if patch_channels == 1 else (patch_size, patch_size, 3)
    return Dataset(torch.from_numpy(train.astype(np.float32)), torch.from_numpy(test.astype(np.float32)),
                   image_shape=shape)


def _array(data_dir: str | None = None, path: str | None = None, key: str | None = None,
           val_fraction: float = 0.1, limit_train: int | None = None, **_: object):
    """Your own array file (arrays.py); returns an `ArrayData`, loaded or streamed by the trainer."""
    from .arrays import ArrayData

    if not path:
        raise SparseAEError("dataset 'array' needs a file: --data PATH")
    return ArrayData(path, key, val_fraction, limit_train)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "array": _array,
    "fashion-mnist": _fashion_mnist,
    "patches": _patches,
}


def load_dataset(name: str, data_dir: str | None = None, **options: object) -> Dataset:
    if name not in DATASETS:
        raise SparseAEError(f"unknown dataset '{name}'; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](data_dir=data_dir, **options)


def select_classes(data: Dataset, classes: list[int]) -> Dataset:
    """The examples (train and test) whose label is in `classes`."""
    if data.train_labels is None or data.test_labels is None:
        raise SparseAEError("selecting classes needs a labelled data set")
    wanted = torch.tensor(sorted(set(classes)))
    keep_tr = torch.isin(data.train_labels, wanted)
    keep_te = torch.isin(data.test_labels, wanted)
    if not keep_tr.any():
        raise SparseAEError(f"no training examples with labels {sorted(set(classes))}")
    return Dataset(data.train[keep_tr], data.test[keep_te], data.train_labels[keep_tr],
                   data.test_labels[keep_te], data.image_shape)
