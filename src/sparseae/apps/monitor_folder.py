"""The monitoring workflow behind `sparseae monitor`: runs, a folder of fitted monitors, scored runs.

- A `Run` is the rows of one file (or one Tennessee Eastman run) with the name the table gives it
  (the path as given, so two files of the same name in two folders stay two rows), its fault onset
  and its column names (a CSV header, TEP's XMEAS/XMV, or none).
- `select_runs`, `score_sources` and `calibration_runs` turn a command's data settings (the user's files
  or the Tennessee Eastman runs) into runs; the other settings are one `MonitorSettings`
  (monitor_settings.py).
- `fit_monitors` fits one `Monitor` per model on the normal runs, with the same limits and alarm rule;
  `fit_sae_and_pca` the command's two (the sparse autoencoder with `lags`, dynamic PCA with its own
  `pca_lags`), and `table` gives the table of false-alarm rates, detection rates and delays that the
  one-shot command prints.
- A monitor folder (`save_folder`, `load_folder`): monitors.json (which monitors, the variables, what
  they were fitted on) and one sub-folder per monitor (`Monitor.save`). It is claimed as a whole
  (run/output.py): an occupied folder is refused unless replacing was asked for, and a replaced one
  changes only once the new folder is complete.
- `write_scores` writes a scored batch of runs: per run the rows' statistics and alarms (CSV), a control
  chart and the contributions of the first alarm rows (CSV, bar chart), then summary.csv, summary.json
  and report.html (one self-contained page).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import SparseAEError
from ..schema import build, in_file, param
from .monitor import STATISTICS, AutoencoderModel, Monitor, PCAModel, Reconstructor, Scores, alarm_window
from .monitor_settings import DEFAULTS, MonitorSettings
from .monitor_charts import STAT_NAMES, ranked, save_contribution_chart, save_control_chart

if TYPE_CHECKING:
    from ..run.output import OutputFolder

FOLDER_FORMAT = "sparseae-monitor-folder"
FOLDER_VERSION = 1
WINDOW = DEFAULTS.window
"""Contributions: the mean over the first WINDOW alarm rows from the onset on."""


@dataclass
class Run:
    """One run to fit on or score: its rows, the name the table gives it, its onset, its columns."""

    key: str
    rows: np.ndarray
    onset: int | None = None
    columns: list[str] | None = None
    title: str = ""
    stem: str = ""
    """The base name of its output files (unique within a batch)."""


def read_run(path: str, onset: int | None = None) -> Run:
    """A run from a file: .dat (whitespace-separated numbers, as TEP's d00.dat ... d21_te.dat; d00.dat is
    stored transposed) or any array file `sparseae train --data` reads (.npy, .csv with a header, ...)."""
    from ..data import tennessee_eastman as te
    from ..data.arrays import open_array

    p = Path(path)
    if p.suffix.lower() == ".dat":
        if not p.is_file():
            raise SparseAEError(f"data file {p} does not exist")
        rows, columns = te.read_dat(p), None
        if rows.shape[1] == te.N_VARIABLES:
            columns = list(te.COLUMNS)
    else:
        a = open_array(p)
        rows = a.read(0, a.n_rows).astype(np.float64)
        columns = getattr(a, "header", None) or getattr(a, "columns", None)
    return Run(str(path), rows, onset, list(columns) if columns else None, title=str(path))


def file_runs(paths: Sequence[str], onset: int | None) -> list[Run]:
    """Runs from files, keyed by the path as given; the same path twice is refused."""
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise SparseAEError(f"file {p} is given twice")
        seen.add(p)
    return name_outputs([read_run(p, onset) for p in paths])


def tep_runs(root: Path, names: Sequence[str]) -> list[Run]:
    """Tennessee Eastman runs by name ('d00', 'd00_te' .. 'd21_te'), with their onsets and variables."""
    from ..data import tennessee_eastman as te

    runs = []
    for name in names:
        rows, onset = te.load_named(root, name)
        fault = int(name[1:3])
        what = f"IDV({fault}): {te.FAULT_NAMES[fault]}" if fault else "normal operation"
        runs.append(Run(name, rows, onset, list(te.COLUMNS), title=f"{name} ({what})", stem=name))
    return name_outputs(runs)


def name_outputs(runs: list[Run]) -> list[Run]:
    """Give each run a distinct base name for its output files: its own (or the file's stem), with
    -2, -3 ... after a name already taken."""
    taken: set[str] = set()
    for run in runs:
        stem = run.stem or re.sub(r"[^A-Za-z0-9._-]", "_", Path(run.key).stem) or "run"
        name, i = stem, 1
        while name in taken:
            i += 1
            name = f"{stem}-{i}"
        run.stem = name
        taken.add(name)
    return runs


def check_columns(run: Run, variables: list[str], n_cols: int | None = None) -> None:
    """Refuse a run whose columns are not the monitor's: another count, or other names in a header."""
    n_cols = len(variables) if n_cols is None else n_cols
    if run.rows.ndim != 2 or run.rows.shape[1] != n_cols:
        raise SparseAEError(f"{run.key} has {run.rows.shape[-1]} columns but the normal data has {n_cols}")
    if run.columns is not None and variables and run.columns != variables and not _default_names(variables):
        j = next(j for j, (a, b) in enumerate(zip(run.columns, variables)) if a != b)
        raise SparseAEError(f"{run.key}: column {j + 1} is '{run.columns[j]}' but the monitor's is "
                            f"'{variables[j]}' (the columns must be the normal data's, in its order)")
    if run.onset is not None and not 0 <= run.onset <= len(run.rows):
        raise SparseAEError(f"onset {run.onset} is outside test file {run.key} ({len(run.rows)} rows)")


def _default_names(variables: list[str]) -> bool:
    return variables == [f"x{j + 1}" for j in range(len(variables))]


# --- the runs of a command -----------------------------------------------------------------------------

@dataclass
class Sources:
    """The runs a monitor command works on, and how its printout names them."""

    normal: list[Run]
    tests: list[Run]
    scored: list[str]
    """The keys of the test runs the table's mean is over."""
    source: str
    """The data's name, for the printout."""
    dataset: str | None
    """'tep' for the built-in Tennessee Eastman runs, None for the user's own files."""


def select_runs(*, dataset: str | None = None, data_dir: str | None = None, normal: Sequence[str] | None = None,
                test: Sequence[str] | None = None, onset: int | None = None, faults: Sequence[int] | None = None,
                fit: bool = True, score: bool = True) -> Sources:
    """The normal runs (when `fit`) and the test runs (when `score`): the user's files (`normal`,
    `test`, `onset`), or the Tennessee Eastman runs (`dataset` 'tep', the default; `faults`)."""
    if (normal is not None and fit) or test is not None:
        return _own_runs(dataset, normal, test, onset, fit, score)
    from ..data import tennessee_eastman as te

    name = dataset or "tep"
    if name != "tep":
        raise SparseAEError(f"unknown monitoring data set '{name}'; known: tep (or --normal/--test files)")
    if onset is not None:
        raise SparseAEError("--onset is for your own files; the Tennessee Eastman runs have theirs (row 160)")
    root = te.locate(data_dir)
    faults = list(range(22)) if faults is None else list(faults)
    for f in faults:
        if f not in (0, *te.FAULTS):
            raise SparseAEError(f"fault must be 0..21; got {f}")
    normal_runs = tep_runs(root, ["d00"]) if fit else []
    test_runs = tep_runs(root, [f"d{f:02d}_te" for f in faults]) if score else []
    scored = [f"d{f:02d}_te" for f in faults if f in te.FAULTS and f not in te.UNDETECTABLE]
    return Sources(normal_runs, test_runs, scored, f"Tennessee Eastman ({root})", "tep")


def _own_runs(dataset: str | None, normal: Sequence[str] | None, test: Sequence[str] | None, onset: int | None,
              fit: bool, score: bool) -> Sources:
    if dataset is not None:
        raise SparseAEError("give either --dataset or --normal/--test, not both")
    if fit and normal is None:
        raise SparseAEError("your own data needs --normal FILE..." + (" and --test FILE..." if score else ""))
    if score and not test:
        raise SparseAEError("your own data needs both --normal FILE... and --test FILE...")
    normal_runs = file_runs(normal, None) if fit else []
    test_runs = file_runs(test, onset) if score else []
    scored = [r.key for r in test_runs] if onset is not None else []
    return Sources(normal_runs, test_runs, scored, ", ".join(normal or ()), None)


def score_sources(files: Sequence[str], *, dataset: str | None = None, data_dir: str | None = None,
                  faults: Sequence[int] | None = None, onset: int | None = None) -> Sources:
    """The runs to score with a monitor folder: the `files` (with their `onset`), or a data set's test runs."""
    if files and dataset is not None:
        raise SparseAEError("give either FILEs to score or --dataset, not both")
    if files:
        if faults is not None:
            raise SparseAEError("--faults chooses Tennessee Eastman runs; it does not go with FILEs")
        scored = list(files) if onset is not None else []
        return Sources([], file_runs(files, onset), scored, ", ".join(files), None)
    if dataset is None:
        raise SparseAEError("nothing to score: give FILEs, or --dataset tep")
    return select_runs(dataset=dataset, data_dir=data_dir, onset=onset, faults=faults, fit=False)


def calibration_runs(calibrate: Sequence[str] | None, dataset: str | None,
                     data_dir: str | None = None) -> list[Run] | None:
    """The runs that set the limits (MonitorSettings.calibrate): files, or with `dataset` 'tep' also
    the names d00 / d00_te; None when there are none."""
    from ..data import tennessee_eastman as te

    if calibrate is None:
        return None
    runs = []
    for item in calibrate:
        if dataset == "tep" and not Path(item).exists() and te.FILE_NAME.fullmatch(item):
            runs += tep_runs(te.locate(data_dir), [item])
        else:
            runs += file_runs([item], None)
    return runs


# --- fitting -------------------------------------------------------------------------------------------

def fit_monitors(models: dict[str, Reconstructor], normal: list[Run], *, alpha: float, limit: str,
                 holdout: float, lags: int = 0, persist: int = 1, calibrate: list[Run] | None = None,
                 far: float = 0.01) -> tuple[dict[str, Monitor], dict[str, float]]:
    """One monitor per model on the normal runs, the same settings for each; with `calibrate`, the
    limits are set on those normal runs for the false-alarm rate `far` (Monitor.calibrate).
    Returns the monitors and the seconds each took."""
    if not normal:
        raise SparseAEError("fitting needs at least one normal run")
    variables = normal[0].columns or [f"x{j + 1}" for j in range(normal[0].rows.shape[1])]
    for run in [*normal, *(calibrate or [])]:
        check_columns(run, variables)
    arrays = [r.rows for r in normal]
    monitors, seconds = {}, {}
    for label, model in models.items():
        t0 = time.perf_counter()
        mon = Monitor(model, alpha=alpha, limit_method=limit, holdout=holdout, lags=lags, persist=persist)
        with in_file(", ".join(r.key for r in normal)):
            mon.fit(arrays[0] if len(arrays) == 1 else arrays, variables)
        if calibrate:
            with in_file(", ".join(r.key for r in calibrate)):
                mon.calibrate([r.rows for r in calibrate], far)
        monitors[label], seconds[label] = mon, time.perf_counter() - t0
    return monitors, seconds


def fit_sae_and_pca(normal: list[Run], settings: MonitorSettings, autoencoder: dict[str, Any],
                    calibrate: list[Run] | None = None) -> tuple[dict[str, Monitor], dict[str, float]]:
    """The command's two monitors, 'SAE' (the estimator with the parameters `autoencoder`, `lags`) and
    'PCA' (settings.pca_width components, its own `pca_lags`), fitted with `settings` (fit_monitors)."""
    common = {"alpha": settings.alpha, "limit": settings.limit, "holdout": settings.holdout,
              "persist": settings.persist, "calibrate": calibrate, "far": settings.far}
    monitors, seconds = fit_monitors({"SAE": AutoencoderModel(**autoencoder)}, normal, lags=settings.lags, **common)
    # per run: lags never join two runs, so each loses its first pca_lags rows
    rows = sum(len(r.rows) - settings.pca_lags for r in normal) + settings.pca_lags
    pca = PCAModel(settings.pca_width(normal[0].rows.shape[1], rows))
    more, more_seconds = fit_monitors({"PCA": pca}, normal, lags=settings.pca_lags, **common)
    return {**monitors, **more}, {**seconds, **more_seconds}


# --- the table -----------------------------------------------------------------------------------------

def score_runs(monitors: dict[str, Monitor], runs: list[Run],
               persist: int | None = None) -> dict[str, dict[str, Scores]]:
    """{run key: {monitor label: Scores}}; a run that does not fit the monitors is refused by name."""
    out: dict[str, dict[str, Scores]] = {}
    for run in runs:
        out[run.key] = {}
        for label, mon in monitors.items():
            check_columns(run, mon.variables)
            with in_file(run.key):
                out[run.key][label] = mon.score(run.rows, run.onset, persist)
    return out


def table(scores: dict[str, dict[str, Scores]], scored: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Rows {'file', 'SAE_t2_far', 'SAE_t2_fdr', 'SAE_t2_delay', ...} and their mean over `scored`
    (rates: the mean over the files; delay: the mean over the files whose fault was detected)."""
    rows = []
    for key, by_label in scores.items():
        row: dict[str, Any] = {"file": key}
        for label, sc in by_label.items():
            for name, value in sc.summary().items():
                row[f"{label}_{name}"] = value
        rows.append(row)
    keys = [k for k in rows[0] if k != "file"] if rows else []
    mean: dict[str, float] = {}
    for k in keys:
        values = [r[k] for r in rows if r["file"] in scored]
        if k.endswith("_delay"):
            values = [v for v in values if v is not None]
            mean[k] = float(np.mean(values)) if values else float("nan")
        else:
            mean[k] = float(np.mean(values)) if scored else float("nan")
    return rows, mean


def _pct(v: float | None) -> str:
    return "    -" if v is None or not math.isfinite(v) else f"{100 * v:5.1f}"


def _rows_fmt(v: float | None) -> str:
    return "    -" if v is None or not math.isfinite(v) else f"{v:5.0f}" if v == int(v) else f"{v:5.1f}"


def format_table(rows: list[dict[str, Any]], mean: dict[str, float], labels: Sequence[str],
                 mean_label: str | None) -> list[str]:
    """The printed table: per file and per monitor statistic, FAR and FDR (%) and the delay (rows)."""
    groups = [(m, s) for m in labels for s in STATISTICS]
    width = max([16, *(len(r["file"]) for r in rows)])
    lines = ["FAR: false alarms before the onset (%); FDR: detections from it on (%); delay: rows from the "
             "onset to the first alarm",
             " " * (width + 1) + "".join(f"{m + ' ' + STAT_NAMES[s].replace('²', '2'):>18s}" for m, s in groups),
             f"{'file':<{width}s} " + "   FAR   FDR delay" * len(groups)]

    def line(name: str, r: dict[str, Any]) -> str:
        return f"{name:<{width}s} " + "".join(f" {_pct(r[f'{m}_{s}_far'])} {_pct(r[f'{m}_{s}_fdr'])} "
                                              f"{_rows_fmt(r[f'{m}_{s}_delay'])}" for m, s in groups)
    lines += [line(r["file"], r) for r in rows]
    if mean_label is not None:
        lines.append(line(mean_label, mean))
    return lines


# --- the monitor folder --------------------------------------------------------------------------------

@dataclass
class FolderFile:
    """monitors.json: the monitors of a folder (one sub-folder each) and what they were fitted on."""

    format: str = param(pattern=FOLDER_FORMAT, what=f"'{FOLDER_FORMAT}'")
    version: int = param(choices=(FOLDER_VERSION,))
    monitors: list[str] = param(nonempty=True, pattern=r"[A-Za-z0-9_-]+", what="a plain name")
    variables: list[str] = param(nonempty=True)
    dataset: str | None = param()
    """'tep' when fitted on the built-in Tennessee Eastman data (scored with --dataset tep)."""
    normal: list[str] = param()
    calibrate: list[str] | None = param()
    settings: dict[str, Any] = param()
    """The command's settings (lags, persist, limits, the autoencoder's), for the record."""


def save_folder(path: str | Path | OutputFolder, monitors: dict[str, Monitor], info: dict[str, Any],
                overwrite: bool = False) -> Path:
    """Write the monitor folder; refused if `path` holds files, unless `overwrite` (then replaced only
    once the new folder is complete). `path` may be a folder claimed already (run/output.py)."""
    from ..run.output import OutputFolder

    out = path if isinstance(path, OutputFolder) else OutputFolder(path, "replace" if overwrite else "refuse",
                                                                   kind="monitor")
    variables = next(iter(monitors.values())).variables
    record = FolderFile(format=FOLDER_FORMAT, version=FOLDER_VERSION, monitors=list(monitors), variables=variables,
                        dataset=info.get("dataset"), normal=list(info.get("normal", [])),
                        calibrate=info.get("calibrate"), settings=dict(info.get("settings", {})))
    with out:  # complete, or the folder it replaces stays as it was
        folder = out.create()
        for label, mon in monitors.items():
            mon.save(folder / label)
        _write_text(folder / "monitors.json", _json(asdict(record)))
    return out.final


def load_folder(path: str | Path) -> tuple[FolderFile, dict[str, Monitor]]:
    """The record and the monitors of a monitor folder; SparseAEError naming the file at fault."""
    from .monitor import _read_json

    folder = Path(path)
    if not folder.is_dir():
        raise SparseAEError(f"{folder} is not a monitor folder (no such folder)")
    record_file = folder / "monitors.json"
    data = _read_json(record_file)
    with in_file(record_file):
        record = build(FolderFile, data)
    monitors = {label: Monitor.load(folder / label) for label in record.monitors}
    for label, mon in monitors.items():
        if mon.variables != record.variables:
            raise SparseAEError(f"{folder / label / 'monitor.json'}: its variables are not those of monitors.json")
    return record, monitors


# --- scored runs ---------------------------------------------------------------------------------------

def contributions(mon: Monitor, run: Run, sc: Scores, window: int = WINDOW) -> dict[str, Any] | None:
    """The mean contributions over the first `window` alarm rows from the onset on, or None without an
    alarm there: {'rows': [...], 'spe': (variables,), 't2': (variables,), 'spe_total': mean SPE}."""
    rows = alarm_window(sc.alarms, run.onset, window)
    if not len(rows):
        return None
    c = mon.contributions(run.rows, rows)
    return {"rows": rows, "spe": c["spe"].mean(0), "t2": c["t2"].mean(0),
            "spe_total": float(sc.statistics["spe"][rows].mean())}


def top_contributors(contrib: dict[str, Any], names: list[str], stat: str, n: int = 3) -> list[tuple[str, float]]:
    """The `n` largest (name, value) of a statistic's mean contributions."""
    values = contrib[stat]
    return [(names[j], float(values[j])) for j in ranked(values)[:n]]


def write_scores(out: Path, runs: list[Run], monitors: dict[str, Monitor], scores: dict[str, dict[str, Scores]],
                 summary_rows: list[dict[str, Any]], mean: dict[str, float], info: dict[str, Any],
                 window: int = WINDOW) -> dict[str, dict[str, Any]]:
    """Write the scored runs into `out` (a folder claimed already); returns
    {run key: {monitor label: contributions or None}}."""
    found: dict[str, dict[str, Any]] = {}
    labels = list(monitors)
    names = next(iter(monitors.values())).variables
    for run in runs:
        by_label = scores[run.key]
        _write_text(out / f"{run.stem}.csv", _rows_csv(by_label))
        save_control_chart(out / f"{run.stem}.chart.png", run.title, {
            label: {s: {"values": sc.statistics[s], "limit": monitors[label].limits[s], "alarms": sc.alarms[s],
                        "caption": _caption(sc, s)} for s in STATISTICS}
            for label, sc in by_label.items()}, run.onset)
        found[run.key] = {label: contributions(monitors[label], run, by_label[label], window) for label in labels}
        have = {label: c for label, c in found[run.key].items() if c is not None}
        if have:
            _write_text(out / f"{run.stem}.contributions.csv", _contributions_csv(have, names))
            save_contribution_chart(out / f"{run.stem}.contributions.png", f"{run.title}: contributions", {
                label: {s: {"names": names, "values": c[s], "caption": _window_caption(c)} for s in ("spe", "t2")}
                for label, c in have.items()})
    _write_text(out / "summary.csv", _summary_csv(summary_rows))
    _write_text(out / "summary.json", _json({**info, "rows": summary_rows, "mean": mean, "contributions": {
        key: {label: (None if c is None else {"rows": [int(c["rows"][0]), int(c["rows"][-1])], "count": len(c["rows"]),
                                               "spe": _named(c["spe"], names), "t2": _named(c["t2"], names)})
              for label, c in by.items()} for key, by in found.items()}}))
    _write_text(out / "report.html", _report(out, runs, labels, summary_rows, mean, info, found, names))
    return found


def _caption(sc: Scores, stat: str) -> str:
    far, fdr, delay = (sc.summary()[f"{stat}_{k}"] for k in ("far", "fdr", "delay"))
    parts = [f"FAR {_pct(far).strip()}%"]
    if sc.onset is not None:
        parts += [f"FDR {_pct(fdr).strip()}%", f"delay {'-' if delay is None else delay}"]
    return ", ".join(parts)


def _window_caption(c: dict[str, Any]) -> str:
    return f"{len(c['rows'])} alarm rows, {int(c['rows'][0])}-{int(c['rows'][-1])}"


def _named(values: np.ndarray, names: list[str]) -> dict[str, float]:
    return {names[j]: float(values[j]) for j in ranked(values)}


def _json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (run/files.py's one writer: NaN as null, numpy scalars as Python numbers)."""
    from ..run.files import to_json_text

    return to_json_text(obj, indent)


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _num(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, (float, np.floating)) else v


def _rows_csv(by_label: dict[str, Scores]) -> str:
    header, cols = ["row"], []
    for label, sc in by_label.items():
        for s in STATISTICS:
            header += [f"{label}_{s}", f"{label}_{s}_alarm"]
            cols += [sc.statistics[s], sc.alarms[s]]
    n = len(cols[0])
    rows = [[i] + [_num(c[i]) if j % 2 == 0 else int(c[i]) for j, c in enumerate(cols)] for i in range(n)]
    return _csv_text(header, rows)


def _contributions_csv(found: dict[str, dict[str, Any]], names: list[str]) -> str:
    rows = []
    for label, c in found.items():
        for s in ("spe", "t2"):
            total = float(c[s].sum())
            for rank, j in enumerate(ranked(c[s]), 1):
                share = 100 * c[s][j] / total if total > 0 else float("nan")
                rows.append([label, s, rank, names[j], _num(c[s][j]), _num(share), int(c["rows"][0]),
                             int(c["rows"][-1]), len(c["rows"])])
    return _csv_text(["monitor", "statistic", "rank", "variable", "contribution", "share_percent", "first_row",
                      "last_row", "alarm_rows"], rows)


def _summary_csv(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0]) if rows else ["file"]
    return _csv_text(header, [[_num(r[k]) if k != "file" else r[k] for k in header] for r in rows])


def _write_text(path: Path, text: str) -> None:
    from ..run.files import atomic_write_text

    atomic_write_text(path, text)


# --- the HTML report -----------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f4f4f4; } td.name { text-align: left; font-family: monospace; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>'


def _report(out: Path, runs: list[Run], labels: list[str], rows: list[dict[str, Any]], mean: dict[str, float],
            info: dict[str, Any], found: dict[str, dict[str, Any]], names: list[str]) -> str:
    e = html.escape
    groups = [(m, s) for m in labels for s in STATISTICS]
    head = "<tr><th></th>" + "".join(f'<th colspan="3">{e(m)} {STAT_NAMES[s]}</th>' for m, s in groups) + "</tr>"
    head += "<tr><th>file</th>" + "<th>FAR %</th><th>FDR %</th><th>delay</th>" * len(groups) + "</tr>"

    def tr(name: str, r: dict[str, Any]) -> str:
        cells = "".join(f"<td>{_pct(r[f'{m}_{s}_far']).strip()}</td><td>{_pct(r[f'{m}_{s}_fdr']).strip()}</td>"
                        f"<td>{_rows_fmt(r[f'{m}_{s}_delay']).strip()}</td>" for m, s in groups)
        return f'<tr><td class="name">{e(name)}</td>{cells}</tr>'
    body = "".join(tr(r["file"], r) for r in rows)
    if info.get("mean_over"):
        body += tr(f"mean ({len(info['mean_over'])} files)", mean)
    settings = "".join(f'<tr><td class="name">{e(str(k))}</td><td class="name">{e(_json(v, None).strip())}</td></tr>'
                       for k, v in info.items() if k not in ("mean_over",))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>sparseae monitor: scores</title>"
             f"<style>{_CSS}</style></head><body><h1>Process monitoring: scores</h1>",
             f"<table>{settings}</table>", "<h2>Summary</h2>", f"<table>{head}{body}</table>",
             '<p class="note">FAR: alarms before the onset; FDR: alarms from the onset on; delay: rows from the '
             "onset to the first alarm. Contributions: the mean over the first alarm rows from the onset on; SPE: "
             "squared residual of each variable (they add up to SPE); T²: reconstruction-based contribution "
             "(how far T² falls when the variable alone is corrected).</p>"]
    for run in runs:
        parts.append(f"<h2>{e(run.title)}</h2>")
        parts.append(_img(out / f"{run.stem}.chart.png", f"control chart of {run.key}"))
        have = {label: c for label, c in found[run.key].items() if c is not None}
        if not have:
            parts.append('<p class="note">no alarm from the onset on: no contributions</p>')
            continue
        parts.append(_img(out / f"{run.stem}.contributions.png", f"contributions of {run.key}"))
        cells = []
        for label, c in have.items():
            for s in ("spe", "t2"):
                top = ", ".join(f"{e(n)} ({v:.3g})" for n, v in top_contributors(c, names, s, 5))
                cells.append(f'<tr><td class="name">{e(label)} {STAT_NAMES[s]}</td><td class="name">{top}</td>'
                             f"<td>{_window_caption(c)}</td></tr>")
        parts.append("<table><tr><th>statistic</th><th>largest contributions</th><th>rows</th></tr>"
                     + "".join(cells) + "</table>")
    parts.append("</body></html>\n")
    return "".join(parts)
