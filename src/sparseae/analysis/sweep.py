"""Sparsity-reconstruction sweeps: one model per grid point, FVU against L0 per method.

Each family fixes what makes it that method and takes one swept value:
'topk' (k; ReLU code, no penalty), 'kl' (beta; sigmoid code, KL to rho),
'l1' (beta; ReLU code, L1). Everything else comes from the base config, so
the methods are compared at equal architecture and budget. L0 counts a code
value as active when |h| > the model's active_threshold (1e-2 for sigmoid
codes, which are never exactly zero; 0 for ReLU/TopK).
"""
from __future__ import annotations

import copy
import csv
import io
import math
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data import load_dataset
from ..data.dataset import DataSource, select_classes
from ..errors import SparseAEError
from ..run.pictures import save_tradeoff_plot
from ..run.files import atomic_write_text
from ..training.session import train

FAMILIES = ("topk", "kl", "l1")
COLUMNS = ["method", "param", "value", "l0", "fvu", "mse", "dead_fraction", "mean_activation", "seconds",
           "run_dir"]


def family_config(base: RunConfig, family: str, value: float) -> RunConfig:
    """The base config turned into one member of `family` at swept `value`."""
    c = copy.deepcopy(base)
    m, s = c.model, c.sparsity
    if family == "topk":
        m.code_activation, m.topk, m.k = "relu", "topk", int(value)
        s.penalty = "topk"
    elif family == "kl":
        m.code_activation, m.topk = "sigmoid", "none"
        s.penalty, s.beta = "kl", float(value)
    elif family == "l1":
        m.code_activation, m.topk = "relu", "none"
        s.penalty, s.beta = "l1", float(value)
    else:
        raise SparseAEError(f"sweep family must be one of {', '.join(FAMILIES)}; got '{family}'")
    s.auxk = s.auxk and family == "topk"
    return c


def check_grid(grid: dict[str, list[float]]) -> None:
    if not any(grid.values()):
        raise SparseAEError("empty grid: give at least one value of k (topk) or of beta (kl, l1)")
    for family, values in grid.items():
        if family not in FAMILIES:
            raise SparseAEError(f"sweep family must be one of {', '.join(FAMILIES)}; got '{family}'")
        for v in values:
            if not math.isfinite(v) or v < 0 or (family == "topk" and (v != int(v) or v < 1)):
                raise SparseAEError(f"bad {family} grid value {v}: k must be a positive integer, beta >= 0")


def run_sweep(base: RunConfig, grid: dict[str, list[float]], out: str | Path,
              dataset: DataSource | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train every grid point; writes out/<family>_<value>/ run folders, sweep.csv and fvu_vs_l0.png.

    The data set is loaded once and shared by every point: in memory, or a streamed file.
    """
    check_grid(grid)
    configs = [(f, v, family_config(base, f, v)) for f, values in grid.items() for v in values]
    for _, _, c in configs:  # every point is checked before the first one trains
        c.validate()
    if dataset is None:
        dataset = load_dataset(base.train.dataset, base.train.data_dir, **base.train.dataset_options())
    if base.train.classes:
        dataset = select_classes(dataset, base.train.classes)
    out = Path(out)
    rows: list[dict[str, Any]] = []
    for family, value, c in configs:
        c.train.classes = None
        label = f"{family}_{value:g}"
        res = train(c, out / label, dataset, progress)
        last = res.history[-1]
        rows.append({"method": family, "param": "k" if family == "topk" else "beta", "value": value,
                     "l0": last["l0"], "fvu": last["val_fvu"], "mse": last["val_mse"],
                     "dead_fraction": last["dead_fraction"], "mean_activation": last["mean_activation"],
                     "seconds": res.seconds, "run_dir": str(out / label)})
        write_sweep(rows, out)
    return rows


def write_sweep(rows: list[dict[str, Any]], out: str | Path) -> None:
    out = Path(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    save_tradeoff_plot(rows, out / "fvu_vs_l0.png")
