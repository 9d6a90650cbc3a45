"""The pictures of a run: loss curves, reconstructions, learned features.

Grids of images (reconstructions, features) are pixels: written by the report's PNG encoder
(feature_browser.png_bytes), a few milliseconds where matplotlib's imsave took a tenth of a second
and its import a quarter (issue 24). Plots are drawn with matplotlib's object-oriented API (a
`Figure` saved to a file), imported inside the functions: no pyplot, so no global figure registry
and no backend switched under a notebook's user, and `import sparseae...` does not load matplotlib.
"""
from __future__ import annotations

import math
from pathlib import Path
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


# matplotlib's 256-entry grey colour map as bytes (i / 255 * 255 truncated: 32 entries one below i)
_GREY = (np.linspace(0.0, 1.0, 256) * 255).astype(np.uint8)


def to_bytes(grid: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) as 8-bit levels, the bytes matplotlib's imsave wrote for them: grey
    through its colour map (entry floor(256 v), 1.0 -> 255), colour as floor(255 v); NaN as 0."""
    grid = np.clip(np.nan_to_num(grid, nan=0.0), 0.0, 1.0)
    if grid.ndim == 2:
        return _GREY[np.minimum(grid * 256.0, 255.0).astype(np.intp)]
    return (grid * 255.0).astype(np.uint8)


def _save_image(path, grid: np.ndarray, scale: int = 3) -> None:
    from .feature_browser import png_bytes

    pixels = to_bytes(grid)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)  # crisp pixels when viewed
    data = png_bytes(pixels)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def import_matplotlib() -> None:
    """Import what the plots need (a quarter of a second), e.g. in a background thread while training."""
    import matplotlib.backends.backend_agg  # noqa: F401  savefig's PNG canvas
    import matplotlib.figure  # noqa: F401


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


LOSS_PLOT_COLUMNS = ("train_loss", "train_recon", "val_mse")
"""The metrics.csv columns save_loss_plot draws (with "epoch" or "iteration")."""


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
    ax.set_title(f"feature density: {int((freq == 0).sum())} of {len(freq)} units dead (never fire on these rows)")
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
