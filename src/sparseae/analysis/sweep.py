"""Sparsity-reconstruction sweeps: one model per grid point, FVU against L0 per method, PCA as the floor.

Each family takes one swept value, its record's `swept` (families.py: k for the TopK families, beta for
the penalties). A point is exactly what `sparseae train --penalty FAMILY --k K` (or `--beta B`) builds
from the same settings: every family trains with its own default recipe for what the base leaves unset
(activations, decoder norm, pre-bias, AuxK, warm-up, learning rate), so a sweep compares the families as
a user gets them, and what the base sets (width, epochs, batch, data) they share. L0 counts a code value as active
when |h| > the model's active_threshold (1e-2 for sigmoid codes, which are never exactly zero; 0 else).

PCA with k components is the best linear code with k dense values per example, so each model's FVU
is set against PCA's at its own L0 (interpolated between whole numbers of components; fitted on the
training rows, scored on the validation rows like the models): a ratio below 1 is a sparse code
that beats the projection.
"""
from __future__ import annotations

import copy
import csv
import io
import math
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..families import NONE, SWEPT
from ..data import load_dataset
from ..data.dataset import DataSource, select_classes
from ..errors import SparseAEError
from ..run.files import atomic_write_text
from ..run.output import OutputFolder
from ..run.pictures import save_tradeoff_plot
from ..training.session import train
from ..objective.metrics import pca_fvu, pca_fvu_at

COLUMNS = ["method", "param", "value", "l0", "fvu", "pca_fvu", "ratio_to_pca", "mse", "dead_fraction",
           "mean_activation", "seconds", "run_dir"]
PCA_MAX = 256  # components of the reference curve


def family_config(base: RunConfig, family: str, value: float) -> RunConfig:
    """`base` as one member of `family` at swept `value`: the configuration `train` gets from the same
    settings with the family's penalty and its k or beta set to `value` (families.SWEPT), so a sweep point
    is the model `train` builds. `base` holds the settings as requested: unset (None) ones, such as the
    learning rate, take each family's own default when the point is resolved; set ones are shared."""
    if family not in SWEPT:
        raise SparseAEError(f"sweep family must be one of {', '.join(SWEPT)}; got '{family}'")
    c = copy.deepcopy(base)
    c.sparsity.penalty = family
    c.model.topk = NONE  # resolved to the family's own code layer, as `--penalty FAMILY` is
    if SWEPT[family] == "k":
        c.model.k = int(value)
    else:
        c.sparsity.beta = float(value)
    return c


def check_grid(grid: dict[str, list[float]]) -> None:
    if not any(grid.values()):
        raise SparseAEError("empty grid: give at least one value of k (topk, batchtopk, matryoshka) or of beta "
                            "(jumprelu, kl, l1)")
    for family, values in grid.items():
        if family not in SWEPT:
            raise SparseAEError(f"sweep family must be one of {', '.join(SWEPT)}; got '{family}'")
        for v in values:
            if not math.isfinite(v) or v < 0 or (SWEPT[family] == "k" and (v != int(v) or v < 1)):
                raise SparseAEError(f"bad {family} grid value {v}: k must be a positive integer, beta >= 0")


def pca_reference(dataset: DataSource, base: RunConfig):
    """PCA's FVU for 0..PCA_MAX components (training rows -> validation rows), or None when the data
    is not in memory or the model transforms its input (the models' FVU is then in another space)."""
    if not dataset.in_memory or base.model.input_transform != "none":
        return None
    import torch

    train = dataset.training(torch.device("cpu"), base.train.batch_size, base.train.limit_train)
    return pca_fvu(train.tensor, dataset.validation(torch.device("cpu")), PCA_MAX)


def run_sweep(base: RunConfig, grid: dict[str, list[float]], out: str | Path,
              dataset: DataSource | None = None, progress: bool = True, pca: bool = True,
              if_exists: str = "refuse") -> list[dict[str, Any]]:
    """Train every grid point; writes out/<family>_<value>/ run folders, sweep.csv and fvu_vs_l0.png
    (with PCA at equal L0 as the reference curve unless `pca` is False). `if_exists` ('refuse' or
    'replace'): what to do when `out` already holds files (run/output.py).

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
    # after every check; a replacement is staged beside the old folder, which a failed sweep leaves as it was
    with OutputFolder(out, if_exists, kind="sweep") as output:
        return _sweep_points(configs, output, dataset, base, progress, pca)


def _sweep_points(configs, output: OutputFolder, dataset: DataSource, base: RunConfig, progress: bool,
                  pca: bool) -> list[dict[str, Any]]:
    curve = pca_reference(dataset, base) if pca else None
    rows: list[dict[str, Any]] = []
    for family, value, c in configs:
        c.train.classes = None
        label = f"{family}_{value:g}"
        res = train(c, output.create() / label, dataset, progress)
        last = res.history[-1]
        ref = pca_fvu_at(curve, last["l0"]) if curve is not None else float("nan")
        rows.append({"method": family, "param": SWEPT[family], "value": value,
                     "l0": last["l0"], "fvu": last["val_fvu"], "pca_fvu": ref,
                     "ratio_to_pca": last["val_fvu"] / ref if ref > 0 else float("nan"), "mse": last["val_mse"],
                     "dead_fraction": last["dead_fraction"], "mean_activation": last["mean_activation"],
                     "seconds": res.seconds, "run_dir": str(output.final / label)})  # where it ends up
        write_sweep(rows, output.path, curve)
    return rows


def pca_rows(rows: list[dict[str, Any]], curve) -> list[dict[str, Any]]:
    """The PCA reference curve as plot rows over the models' L0 range (a factor 2 either side)."""
    l0s = [r["l0"] for r in rows if r["l0"] > 0]
    if curve is None or not l0s:
        return []
    lo, hi = max(1, int(min(l0s) / 2)), min(curve.numel() - 1, int(max(l0s) * 2) + 1)
    ks = sorted({round(lo * (hi / lo) ** (i / 24)) for i in range(25)})
    return [{"method": "PCA (k components)", "l0": float(k), "fvu": float(curve[k])} for k in ks]


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of a sweep, with each model's FVU ratio to PCA at its L0."""
    lines = ["| method | value | L0 | FVU | PCA FVU at L0 | ratio to PCA | dead |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['value']:g} | {r['l0']:.1f} | {r['fvu']:.4f} | {r['pca_fvu']:.4f} | "
                     f"{r['ratio_to_pca']:.3f} | {r['dead_fraction']:.3f} |")
    return "\n".join(lines)


def write_sweep(rows: list[dict[str, Any]], out: str | Path, curve=None) -> None:
    out = Path(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    atomic_write_text(out / "sweep.md", sweep_table(rows) + "\n")
    save_tradeoff_plot(rows + pca_rows(rows, curve), out / "fvu_vs_l0.png")
