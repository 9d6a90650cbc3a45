"""The data set registry: name -> loader returning a `DataSource` (data/dataset.py)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import SparseAEError
from . import fashion_mnist, patches
from .arrays import ArrayData
from .dataset import DataSource, Dataset


def _fashion_mnist(data_dir: str | None = None, **_: object) -> Dataset:
    a = {k: torch.from_numpy(v) for k, v in fashion_mnist.load_arrays(fashion_mnist.locate(data_dir)).items()}
    return Dataset(a["train-images"], a["t10k-images"], a["train-labels"], a["t10k-labels"], image_shape=(28, 28))


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
           val_fraction: float = 0.1, limit_train: int | None = None, stream: str = "auto",
           check: bool = True, covariance: bool = False, target: str | None = None, target_key: str | None = None,
           **_: object) -> DataSource:
    """Your own array file (arrays.py): in memory when it fits (a `Dataset`), else streamed.
    `check`: every value is checked to be finite first; `covariance`: a streamed file's scan also
    computes the covariance (for a ZCA transform); `target`: a transcoder's targets, row for row."""
    if not path:
        raise SparseAEError("dataset 'array' needs a file: --data PATH")
    return ArrayData(path, key, val_fraction, limit_train, target, target_key).prepare(stream, check, covariance)


DATASETS: dict[str, Callable[..., DataSource]] = {
    "array": _array,
    "fashion-mnist": _fashion_mnist,
    "patches": _patches,
}


def load_dataset(name: str, data_dir: str | None = None, **options: object) -> DataSource:
    if name not in DATASETS:
        raise SparseAEError(f"unknown dataset '{name}'; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](data_dir=data_dir, **options)
