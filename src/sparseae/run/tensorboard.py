"""A run watched live in TensorBoard (`sparseae train --tensorboard DIR`, optional extra `sparseae[tensorboard]`).

After each epoch (or full-batch report), the row that goes to metrics.csv goes to TensorBoard too,
every number as a scalar at step = the epoch (iteration), grouped by what it measures:

    train/train_loss, train/train_recon, train/train_sparsity, train/train_decay   (with the penalty)
    validation/val_mse, validation/val_fvu                                         (no penalty)
    code/l0, code/mean_activation, code/dead_fraction, code/dead_window_fraction
    time/epoch_seconds, time/elapsed_seconds

and, for image data, two pictures: `reconstructions` (ten validation images over their
reconstructions, as reconstructions/epoch_NNN.png) and `features` (each first-layer unit's input
weights, as features.png). The event files are written by torch's `SummaryWriter`, which needs the
`tensorboard` package; without it the run stops before its first epoch with one line saying what
to install. A resumed run starts its log at its first new step with `purge_step`, so the steps
the killed run logged after its last checkpoint are dropped, not shown twice.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SparseAEError
from .pictures import feature_tiles, tile

MAX_FEATURES = 400  # units drawn in the features image, as in features.png


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metrics.csv column."""
    if key.startswith("train_"):
        return f"train/{key}"
    if key.startswith("val_"):
        return f"validation/{key}"
    if key.endswith("seconds"):
        return f"time/{key}"
    return f"code/{key}"


class TensorBoardLog:
    """Writes a run's per-epoch rows and pictures as TensorBoard events in `folder`."""

    def __init__(self, folder: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SparseAEError("TensorBoard logging needs the tensorboard package: "
                                "pip install 'sparseae[tensorboard]' (or pip install tensorboard)") from None
        self.folder = Path(folder)
        self._new_writer = SummaryWriter
        self._writer = None

    def log(self, row: dict[str, Any], originals: np.ndarray | None = None, recons: np.ndarray | None = None,
            weights: np.ndarray | None = None, image_shape: Sequence[int] | None = None) -> None:
        """One epoch: every number of `row` as a scalar; with an image shape, the reconstructions of
        `originals` and the first-layer `weights` (units x features) as pictures."""
        step = int(row["epoch"] if "epoch" in row else row["iteration"])
        if self._writer is None:
            self._writer = self._new_writer(str(self.folder), purge_step=step)
        for key, value in row.items():
            if key not in ("epoch", "iteration") and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(scalar_tag(key), value, step)
        if image_shape:
            form = "HW" if len(image_shape) == 2 else "HWC"
            if originals is not None and recons is not None:
                n = len(originals)
                grid = tile(np.concatenate([originals, recons]).reshape(2 * n, *image_shape), cols=n)
                self._writer.add_image("reconstructions", np.clip(grid, 0, 1), step, dataformats=form)
            if weights is not None:
                tiles = feature_tiles(weights[:MAX_FEATURES], image_shape)
                grid = tile(tiles, cols=math.ceil(math.sqrt(len(tiles))), fill=0.0)
                self._writer.add_image("features", grid, step, dataformats=form)
        self._writer.flush()  # readable now, by TensorBoard and by a run killed after this epoch

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
