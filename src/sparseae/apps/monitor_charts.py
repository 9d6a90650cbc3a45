"""The pictures of process monitoring: control charts and contribution bar charts.

Drawn as run/pictures.py draws: matplotlib's object-oriented API, imported inside the functions
(no pyplot), each PNG written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..run.files import atomic_write

STAT_NAMES = {"t2": "T²", "spe": "SPE"}
_LINE, _LIMIT, _ALARM = "#1f5f9f", "#c03030", "#e07000"


def _save(fig, path: str | Path, **margins: float) -> None:
    # fixed margins: tight_layout would draw the figure once more to measure it (half of the time)
    fig.subplots_adjust(**margins)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def save_control_chart(path: str | Path, title: str, panels: dict[str, dict[str, dict]], onset: int | None) -> None:
    """One column per monitor (e.g. SAE, PCA), one row per statistic (T², SPE): the statistic of
    each row (sample) on a log scale, the control limit, the fault onset, the alarms marked.

    `panels[label][stat]` = {"values": per-row array (NaN: no statistic), "limit": float,
    "alarms": per-row bool array, "caption": text after the panel's name (rates, delay)}."""
    from matplotlib.figure import Figure

    labels = list(panels)
    stats = list(next(iter(panels.values())))
    fig = Figure(figsize=(5.2 * len(labels), 2.6 * len(stats) + 0.5), dpi=100)
    axes = fig.subplots(len(stats), len(labels), squeeze=False, sharex=True)
    for c, label in enumerate(labels):
        for r, stat in enumerate(stats):
            ax, p = axes[r][c], panels[label][stat]
            v = np.asarray(p["values"], dtype=np.float64)
            rows = np.arange(len(v))
            floor = np.nanmin(v[v > 0]) if np.any(v > 0) else 1e-12
            shown = np.where(v > 0, v, floor)  # log scale: a zero statistic sits at the lowest one
            ax.plot(rows, shown, color=_LINE, lw=0.8, label=STAT_NAMES[stat])
            ax.axhline(p["limit"], color=_LIMIT, ls="--", lw=1.2, label=f"limit {p['limit']:.4g}")
            alarms = np.asarray(p["alarms"], dtype=bool)
            if alarms.any():
                ax.plot(rows[alarms], shown[alarms], ".", color=_ALARM, ms=3.5, label="alarm")
            if onset is not None:
                ax.axvline(onset, color="black", ls=":", lw=1.2, label=f"onset (row {onset})")
            ax.set_yscale("log")
            ax.set_title(f"{label} {STAT_NAMES[stat]}: {p['caption']}", fontsize=9)
            ax.tick_params(labelsize=8)
            if r == len(stats) - 1:
                ax.set_xlabel("sample (row of the file)", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{STAT_NAMES[stat]} (log scale)", fontsize=8)
            ax.legend(fontsize=7, loc="lower right", framealpha=0.8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, left=0.75 / fig.get_figwidth(), right=0.99, bottom=0.45 / fig.get_figheight(),
          top=1 - 0.7 / fig.get_figheight(), wspace=0.12, hspace=0.2)


def save_contribution_chart(path: str | Path, title: str, panels: dict[str, dict[str, dict]], top: int = 10) -> None:
    """One column per monitor, one row per statistic: the `top` variables by mean contribution over
    the alarm window, largest at the top. `panels[label][stat]` = {"names": [...], "values": array,
    "caption": text}."""
    from matplotlib.figure import Figure

    labels = list(panels)
    stats = list(next(iter(panels.values())))
    fig = Figure(figsize=(4.6 * len(labels), 2.9 * len(stats) + 0.5), dpi=100)
    axes = fig.subplots(len(stats), len(labels), squeeze=False)
    for c, label in enumerate(labels):
        for r, stat in enumerate(stats):
            ax, p = axes[r][c], panels[label][stat]
            order = ranked(p["values"])[:top]
            values = np.asarray(p["values"], dtype=np.float64)[order]
            ax.barh(np.arange(len(order))[::-1], values, color=_LINE if stat == "spe" else _ALARM)
            ax.set_yticks(np.arange(len(order))[::-1], [p["names"][j] for j in order], fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            ax.set_title(f"{label} {STAT_NAMES[stat]}: {p['caption']}", fontsize=9)
            ax.set_xlabel("mean squared residual (standardised)" if stat == "spe"
                          else "mean reconstruction-based contribution", fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, left=0.8 / fig.get_figwidth(), right=0.98, bottom=0.45 / fig.get_figheight(),
          top=1 - 0.75 / fig.get_figheight(), wspace=0.38, hspace=0.45)


def ranked(values: Sequence[float]) -> np.ndarray:
    """Indices from the largest value to the smallest (ties: the earlier variable first)."""
    values = np.asarray(values, dtype=np.float64)
    return np.argsort(-values, kind="stable")
