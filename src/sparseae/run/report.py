"""One self-contained HTML page for a run folder.

Loss curves, reconstructions across epochs, learned features, the
feature-density histogram (computed from the model and its data set when the
run folder has none), the feature browser (feature_browser.py: each latent's
top activating held-out examples, decoder direction, histogram and classes),
the per-epoch metrics and the configuration. Pictures are embedded as base64
`data:` URIs, so the page is a single file that opens anywhere without the run
folder. The page names its writer in a `<meta name="generator">` tag: an
existing file without it is not a report, and `write_report` will not replace it.
"""
from __future__ import annotations

import base64
import html
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..errors import SparseAEError
from . import feature_browser as fb
from .files import atomic_write_text, to_json_text
from .rundir import RunDir, check_weights_record

MAX_RECONSTRUCTIONS = 8  # epochs shown, evenly spaced, first and last included
DENSITY_ROWS = 65536  # held-out rows behind a feature density or the feature browser computed for the report
GENERATOR = '<meta name="generator" content="sparseae report">'
# How reports began before they carried GENERATOR: those files may be replaced too.
_OLD_HEAD = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>sparseae run '

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
""" + fb.BROWSER_CSS

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
    shown = to_json_text(v, indent=None).strip() if isinstance(v, (list, dict, bool)) or v is None else str(v)
    return html.escape(shown)


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


@dataclass
class HeldOut:
    """The trained model and the held-out rows of its data set (the first DENSITY_ROWS), with labels."""

    model: Any
    rows: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    image_shape: tuple[int, ...] | None
    dataset: str


def load_held_out(run: RunDir, data_dir: str | None = None, encode_alpha: float | None = None) -> HeldOut:
    """The model of `run` and its validation rows (the classes it was trained on); SparseAEError if the
    model or the data cannot be read here."""
    from ..data.dataset import first_rows, select_classes
    from ..data.fashion_mnist import CLASSES
    from .rundir import load_run, load_run_data

    config = run.read_config()
    tc = config.train
    model = load_run(run.path).with_encode_alpha(encode_alpha)
    data = load_run_data(config, data_dir)  # refuses data that does not fit the model (trained on other rows)
    if tc.classes:
        data = select_classes(data, tc.classes)
    rows = first_rows(data.validation(torch.device("cpu")), DENSITY_ROWS)  # of a streamed file: read only these
    labels = data.test_labels[:len(rows)] if data.test_labels is not None else None
    names = None
    if labels is not None:
        names = list(CLASSES) if tc.dataset == "fashion-mnist" else [str(c) for c in range(int(labels.max()) + 1)]
    return HeldOut(model, rows.to(torch.float32), labels, names, data.image_shape, tc.dataset)


def _density_picture(run: RunDir, tmp: Path, held: HeldOut | str) -> tuple[Path | None, str]:
    """feature_density.png of the run, or one computed now from the model and its test split."""
    if run.file("feature_density.png").is_file():
        return run.file("feature_density.png"), "from the run folder"
    from ..objective.metrics import unit_firing_frequency
    from .pictures import save_feature_density

    if isinstance(held, str):
        return None, f"not in the run folder and not computable here: {held}"
    path = tmp / "feature_density.png"
    save_feature_density(unit_firing_frequency(held.model, held.rows).numpy(), path)
    return path, f"computed now on {len(held.rows)} held-out rows of the {held.dataset} data set"


def _feature_browser(held: HeldOut | str) -> str:
    if isinstance(held, str):
        return f'<p class="note">needs the model and the held-out rows, not available here: {html.escape(held)}</p>'
    stats = fb.latent_stats(held.model, held.rows)
    labels = held.labels.numpy() if held.labels is not None else None
    data = fb.browser_data(stats, held.rows.numpy(), labels, held.class_names, held.image_shape, held.dataset,
                           held.model.active_threshold)
    summary = (f"{len(stats.density)} latents; top {fb.TOP} activating examples among the first {stats.rows} "
               f"held-out rows of the {held.dataset} data set; a latent fires where |h| > "
               f"{held.model.active_threshold:g}; its image strip shows its decoder direction (mid-grey 0), then "
               "its examples, best first.")
    if labels is not None:
        pure, full = fb.one_class_share(stats, labels)
        share = f"{100 * pure / full:.1f}%" if full else "-"
        summary += (f" {pure} of the {full} latents with {fb.TOP} examples ({share}) have at least "
                    f"{fb.PURE:.0%} of them in one class.")
    return fb.browser_section(data, summary)


def _epoch_pictures(run: RunDir) -> list[Path]:
    pics = sorted(run.file("reconstructions").glob("*.png")) if run.file("reconstructions").is_dir() else []
    if len(pics) <= MAX_RECONSTRUCTIONS:
        return pics
    idx = sorted({round(i * (len(pics) - 1) / (MAX_RECONSTRUCTIONS - 1)) for i in range(MAX_RECONSTRUCTIONS)})
    return [pics[i] for i in idx]


def render_report(run_dir: str | Path, data_dir: str | None = None, encode_alpha: float | None = None) -> str:
    """The HTML text of the report of `run_dir`; `encode_alpha`: the browser's codes keep alpha * k units."""
    run = RunDir(run_dir)
    run.require_folder()
    config = run.read_json("config.json")
    check_weights_record(run)  # the Configuration section shows config.json: it must say what was trained
    metrics = run.read_metrics() if run.file("metrics.csv").is_file() else []
    summary = run.read_json("summary.json") if run.file("summary.json").is_file() else {}
    try:
        held: HeldOut | str = load_held_out(run, data_dir, encode_alpha)
    except SparseAEError as e:
        held = str(e)
    with tempfile.TemporaryDirectory() as tmpdir:  # pictures drawn now are embedded before it goes
        parts = _picture_sections(run, Path(tmpdir), metrics, held)
    parts += _table_sections(summary, metrics, config)
    title = f"sparseae run {run.path.resolve().name}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">" + GENERATOR +
            f"<title>{html.escape(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(str(run.path.resolve()))}, report written {stamp}</p>"
            + "\n".join(parts) + "</body></html>\n")


def _picture_sections(run: RunDir, tmp: Path, metrics: list[dict[str, Any]], held: HeldOut | str) -> list[str]:
    """Loss curves, reconstructions, features, feature density and the feature browser; pictures drawn
    now go to `tmp`."""
    from .pictures import LOSS_PLOT_COLUMNS, save_loss_plot

    parts = ["<h2>Loss curves</h2>"]
    # a hand-edited metrics.csv may lack a column: then the loss.png the run drew, if any
    if metrics and "epoch" in metrics[0] and all(name in metrics[0] for name in LOSS_PLOT_COLUMNS):
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
    density, how = _density_picture(run, tmp, held)
    if density is not None:
        parts.append(_figure(density, f"share of examples on which each code unit fires ({how})"))
    else:
        parts.append(f'<p class="note">{html.escape(how)}</p>')

    parts.append("<h2>Feature browser</h2>")
    parts.append(_feature_browser(held))
    return parts


def _table_sections(summary: dict[str, Any], metrics: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """The summary, the metrics per epoch and the configuration, as tables."""
    parts = ["<h2>Summary</h2>", _key_value_table(summary) if summary else '<p class="note">no summary.json</p>',
             "<h2>Metrics per epoch</h2>", _metrics_table(metrics), "<h2>Configuration</h2>"]
    for section, values in config.items():
        parts.append(f"<h3>{html.escape(section)}</h3>")
        parts.append(_key_value_table(values) if isinstance(values, dict) else _fmt(values))
    return parts


def write_report(run_dir: str | Path, out: str | Path | None = None, data_dir: str | None = None,
                 encode_alpha: float | None = None) -> Path:
    """Write the report of `run_dir` (default: RUN_DIR/report.html) atomically; returns its path.

    An existing file at the path is replaced only if it is a report (it names this writer)."""
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    check_replaceable(path)
    text = render_report(run_dir, data_dir, encode_alpha)
    check_replaceable(path)  # again: rendering takes seconds
    atomic_write_text(path, text)
    return path


def check_replaceable(path: Path) -> None:
    """Raise unless `path` is free or holds a report written here (which may be replaced)."""
    if not os.path.lexists(path):
        return
    refuse = f"{path} exists and is not a report written by sparseae report; not replacing it (choose another --out)"
    if not path.is_file():
        raise SparseAEError(refuse)
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError as e:
        raise SparseAEError(f"{path} exists and cannot be read ({e.strerror}); not replacing it") from None
    if GENERATOR not in head and not head.startswith(_OLD_HEAD):
        raise SparseAEError(refuse)


def check_screenshot(png: str | Path) -> None:
    """Raise unless a screenshot can be taken (chromium is installed) and saved at `png` (free, or a PNG)."""
    from .chromium import PNG_MAGIC, BrowserError, find_chromium

    if find_chromium() is None:
        raise BrowserError("--screenshot needs chromium (Debian: apt-get install chromium; or set $SPARSEAE_CHROMIUM)")
    path = Path(png)
    if os.path.lexists(path):
        try:
            with open(path, "rb") as f:
                is_png = path.is_file() and f.read(len(PNG_MAGIC)) == PNG_MAGIC
        except OSError:
            is_png = False
        if not is_png:
            raise SparseAEError(f"{path} exists and is not a PNG; not replacing it with the screenshot")


def screenshot(report: str | Path, png: str | Path, width: int = 1200, max_height: int = 1000) -> Path:
    """Open `report` in headless Chromium (chromium.py), check that every image decoded, and save a
    PNG of its feature browser (the page's top when it has none), at most `max_height` pixels tall."""
    from .chromium import BrowserError, Chromium

    check_screenshot(png)
    with Chromium(width=width, height=max_height) as browser:
        browser.open(Path(report).resolve().as_uri())
        bad = browser.evaluate("""(window.featureBrowser ? window.featureBrowser.ready : Promise.resolve())
            .then(() => Promise.all(Array.from(document.images).map(i => i.decode().then(() => 0, () => 1))))
            .then(r => Array.from(document.images).filter((i, k) => r[k] || !i.naturalWidth).length)""")
        if bad:
            raise BrowserError(f"{bad} image(s) of {report} did not decode in chromium")
        selector = "#feature-browser" if browser.evaluate("!!document.getElementById('feature-browser')") else "body"
        return browser.screenshot(png, selector, max_height)
