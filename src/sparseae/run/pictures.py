"""The pictures of a run: loss curves, reconstructions, learned features.

Drawn with matplotlib's object-oriented API (a `Figure` saved to a file) and imported inside the
functions: no pyplot, so no global figure registry and no backend switched under a notebook's
user, and `import sparseae...` does not load matplotlib.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .files import atomic_write


def tile(images: np.ndarray, cols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Arrange N images (N x H x W or N x H x W x C, values in [0, 1]) in a grid."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / cols)
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad) + images.shape[3:]
    grid = np.full(shape, fill, dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[k]
    return grid


def _save_image(path, grid: np.ndarray, scale: int = 3) -> None:
    from matplotlib.image import imsave

    grid = np.clip(grid, 0.0, 1.0)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)  # crisp pixels when viewed
    cmap = "gray" if grid.ndim == 2 else None
    atomic_write(path, lambda tmp: imsave(tmp, grid, cmap=cmap, vmin=0.0, vmax=1.0, format="png"))


def _figure(width: float, height: float):
    """A figure with one axes, outside pyplot: freed with its last reference, no close needed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def _save_figure(fig, path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def save_reconstructions(originals: np.ndarray, recons: np.ndarray, image_shape: Sequence[int], path) -> None:
    """Originals on the top row, their reconstructions below."""
    n = len(originals)
    imgs = np.concatenate([originals, recons]).reshape(2 * n, *image_shape)
    _save_image(path, tile(imgs, cols=n))


def feature_tiles(weights: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Each hidden unit's input weights as an image, Ng's display.

    The input that maximally activates unit i under ||x|| <= 1 is
    x_j = W_ij / sqrt(sum_j W_ij^2); each tile is then scaled by its own
    largest |value| so mid-grey is zero.
    """
    w = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
    w = w / np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12)
    return ((w + 1.0) / 2.0).reshape(len(w), *image_shape)


def save_features(weights: np.ndarray, image_shape: Sequence[int], path, max_units: int = 400) -> None:
    tiles = feature_tiles(weights[:max_units], image_shape)
    _save_image(path, tile(tiles, cols=math.ceil(math.sqrt(len(tiles))), fill=0.0))


def save_loss_plot(rows: list[dict[str, Any]], path) -> None:
    """Training loss (with penalty) and validation MSE (without) per epoch (or full-batch iteration)."""
    step = "epoch" if "epoch" in rows[0] else "iteration"
    epochs = [r[step] for r in rows]
    fig, ax = _figure(6, 4)
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss (recon + penalty)")
    ax.plot(epochs, [r["train_recon"] for r in rows], "s--", label="train reconstruction")
    ax.plot(epochs, [r["val_mse"] for r in rows], "^-", label="validation MSE (no penalty)")
    ax.set_xlabel(step)
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save_figure(fig, path)


def save_feature_density(frequency, path, floor: float = 1e-7) -> None:
    """Histogram of log10(firing frequency) over code units; never-firing units drawn at log10(floor)."""
    freq = np.asarray(frequency, dtype=np.float64)
    logf = np.log10(np.maximum(freq, floor))
    fig, ax = _figure(6, 4)
    ax.hist(logf, bins=50, range=(math.log10(floor) - 0.5, 0.0), color="tab:blue")
    ax.set_xlabel("log10(fraction of examples on which the unit fires)")
    ax.set_ylabel("code units")
    ax.set_title(f"feature density: {int((freq == 0).sum())} of {len(freq)} units never fire")
    _save_figure(fig, path)


def save_tradeoff_plot(rows: list[dict[str, Any]], path, x: str = "l0", y: str = "fvu") -> None:
    """Sparsity-reconstruction trade-off: `y` against `x`, one curve per rows' 'method'."""
    fig, ax = _figure(6, 4.5)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r[x], r[y]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("mean L0 per example (active code units)")
    ax.set_ylabel("FVU (fraction of variance unexplained)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save_figure(fig, path)
