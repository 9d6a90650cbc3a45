"""One self-contained HTML page for a run folder.

Loss curves, reconstructions across epochs, learned features, the
feature-density histogram (computed from the model and its data set when the
run folder has none), the per-epoch metrics and the configuration. Pictures
are embedded as base64 `data:` URIs, so the page is a single file that opens
anywhere without the run folder.
"""
from __future__ import annotations

import base64
import html
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..errors import SparseAEError
from .files import atomic_write_text
from .rundir import RunDir

MAX_RECONSTRUCTIONS = 8  # epochs shown, evenly spaced, first and last included
DENSITY_ROWS = 65536  # held-out rows behind a feature density computed for the report

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f4f4f4; } td.key { text-align: left; font-family: monospace; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img { image-rendering: pixelated; max-width: 100%; }
.note { color: #a33; }
"""

# Records on <html> how many images the browser decoded, so a headless browser's
# --dump-dom shows whether the page rendered with all of them.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.documentElement.setAttribute("data-images", ok + "/" + imgs.length);
});
"""


def data_uri(path: str | Path) -> str:
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(path: Path, caption: str) -> str:
    return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return html.escape(json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v))


def _key_value_table(d: dict[str, Any]) -> str:
    rows = "".join(f'<tr><td class="key">{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>' for k, v in d.items())
    return f"<table>{rows}</table>"


def _metrics_table(rows: list[dict[str, float]]) -> str:
    if not rows:
        return '<p class="note">metrics.csv is empty</p>'
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<div style="overflow-x: auto"><table><tr>{head}</tr>{body}</table></div>'


def _density_picture(run: RunDir, tmp: Path, data_dir: str | None) -> tuple[Path | None, str]:
    """feature_density.png of the run, or one computed now from the model and its test split."""
    if run.file("feature_density.png").is_file():
        return run.file("feature_density.png"), "from the run folder"
    from ..data import load_dataset
    from ..data.dataset import first_rows
    from ..analysis.metrics import unit_firing_frequency
    from .pictures import save_feature_density
    from .rundir import load_run

    config = run.read_config()
    tc = config.train
    try:
        model = load_run(run.path)
        data = load_dataset(tc.dataset, data_dir or tc.data_dir, **tc.dataset_options())
    except SparseAEError as e:
        return None, f"not in the run folder and not computable here: {e}"
    rows = first_rows(data.validation(torch.device("cpu")), DENSITY_ROWS)  # of a streamed file: read only these
    path = tmp / "feature_density.png"
    save_feature_density(unit_firing_frequency(model, rows.to(torch.float32)).numpy(), path)
    return path, f"computed now on {len(rows)} held-out rows of the {tc.dataset} data set"


def _epoch_pictures(run: RunDir) -> list[Path]:
    pics = sorted(run.file("reconstructions").glob("*.png")) if run.file("reconstructions").is_dir() else []
    if len(pics) <= MAX_RECONSTRUCTIONS:
        return pics
    idx = sorted({round(i * (len(pics) - 1) / (MAX_RECONSTRUCTIONS - 1)) for i in range(MAX_RECONSTRUCTIONS)})
    return [pics[i] for i in idx]


def render_report(run_dir: str | Path, data_dir: str | None = None) -> str:
    """The HTML text of the report of `run_dir`."""
    from .pictures import save_loss_plot

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise SparseAEError(f"run folder {run_dir} does not exist")
    config = run.read_json("config.json")
    metrics = run.read_metrics() if run.file("metrics.csv").is_file() else []
    summary = run.read_json("summary.json") if run.file("summary.json").is_file() else {}
    parts: list[str] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        parts.append("<h2>Loss curves</h2>")
        if metrics and "train_loss" in metrics[0] and "epoch" in metrics[0]:
            save_loss_plot(metrics, tmp / "loss.png")
            parts.append(_figure(tmp / "loss.png", "training loss, its reconstruction part, validation MSE"))
        elif run.file("loss.png").is_file():
            parts.append(_figure(run.file("loss.png"), "loss curves"))
        else:
            parts.append('<p class="note">no metrics.csv: no loss curves</p>')

        parts.append("<h2>Reconstructions across epochs</h2>")
        pics = _epoch_pictures(run)
        parts += [_figure(p, f"{p.stem.replace('_', ' ')}: originals (top), reconstructions (bottom)")
                  for p in pics] or ['<p class="note">no reconstructions (not an image data set)</p>']

        parts.append("<h2>Learned features</h2>")
        if run.file("features.png").is_file():
            parts.append(_figure(run.file("features.png"), "first-layer weights of each unit (mid-grey: 0)"))
        else:
            parts.append('<p class="note">no features.png (not an image data set)</p>')

        parts.append("<h2>Feature density</h2>")
        density, how = _density_picture(run, tmp, data_dir)
        if density is not None:
            parts.append(_figure(density, f"share of examples on which each code unit fires ({how})"))
        else:
            parts.append(f'<p class="note">{html.escape(how)}</p>')

        parts.append("<h2>Summary</h2>")
        parts.append(_key_value_table(summary) if summary else '<p class="note">no summary.json</p>')
        parts.append("<h2>Metrics per epoch</h2>")
        parts.append(_metrics_table(metrics))
        parts.append("<h2>Configuration</h2>")
        for section, values in config.items():
            parts.append(f"<h3>{html.escape(section)}</h3>")
            parts.append(_key_value_table(values) if isinstance(values, dict) else _fmt(values))
    title = f"sparseae run {run.path.resolve().name}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(str(run.path.resolve()))}, report written {stamp}</p>"
            + "\n".join(parts) + "</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None, data_dir: str | None = None) -> Path:
    """Write the report of `run_dir` (default: RUN_DIR/report.html) atomically; returns its path."""
    text = render_report(run_dir, data_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, text)
    return path
