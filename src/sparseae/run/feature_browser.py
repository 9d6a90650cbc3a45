"""The feature browser of a run's report: what makes each latent fire.

For every code unit (latent) of a trained model, over the held-out rows of its data set:

- its **top activating examples** (the `TOP` rows with the largest code value on which it fires,
  |h| > the model's activation threshold), as images for image data, else as row indices with the
  row's values at the latent's strongest features;
- its **decoder direction**, what one unit of the latent adds to the reconstruction in input space:
  the decoder column mapped through the input transform's inverse (for a deeper decoder, the change
  of the output when the latent goes from 0 to its largest activation), drawn as Ng's features are
  (mid-grey 0, scaled by its largest |value|);
- its **density** (share of rows on which it fires), mean and largest activation, and a histogram
  of its activations where it fires (bins from 0 to its largest value);
- for labelled data, the **class distribution of its top examples** ("Sneaker 89%": 8 of 9).

The page is one file: the numbers go into a JSON block, each latent's images into one PNG strip
(its direction, then its top examples: 291 x 30 grey pixels for FashionMNIST, about 5 KB), and a
short script draws one page of latents at a time, sorted and filtered as the reader chooses, so the
browser decodes 50 strips, not thousands (1,024 FashionMNIST latents: 6 MB, docs/report.md). PNGs are
encoded here with zlib (one filter per row, chosen as libpng does): no imaging library, and within
3% of PIL's optimised size (level 6: 5.13 MB against 5.01 MB for 1,024 strips).
"""
from __future__ import annotations

import base64
import html
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .files import to_json_text

TOP = 9  # top activating examples per latent
BINS = 16  # activation histogram bins per latent
TABLE_FEATURES = 6  # for tables: the latent's strongest features whose values are shown
PURE = 0.7  # a latent is "one class" when this share of its top examples has its top class
SCALE = 2  # strips are shown at twice their pixel size


@dataclass
class LatentStats:
    """Per-latent statistics over N held-out rows (H latents)."""

    density: np.ndarray
    """(H,) share of rows on which the latent fires."""
    mean: np.ndarray
    """(H,) mean activation over all rows."""
    max: np.ndarray
    """(H,) largest activation."""
    top_rows: np.ndarray
    """(H, TOP) rows with the largest activations where the latent fires, best first; -1: none."""
    top_values: np.ndarray
    """(H, TOP) their activations."""
    hist: np.ndarray
    """(H, BINS) counts of the firing activations in [hist_lo, hist_hi]."""
    hist_lo: np.ndarray
    hist_hi: np.ndarray
    directions: np.ndarray
    """(H, D) each latent's decoder direction in input space."""
    rows: int


@torch.no_grad()
def latent_stats(model, x: torch.Tensor, top: int = TOP, bins: int = BINS, chunk: int | None = None) -> LatentStats:
    """Statistics of every latent of `model` over the rows of `x` (two passes of `encode`, in chunks)."""
    model.eval()
    x = x.to(next(model.parameters()).dtype)
    n, h = x.shape[0], model.config.hidden[-1]
    thr = model.active_threshold
    chunk = chunk or max(256, 2 ** 22 // h)  # bounds the (chunk x H) buffers
    k = min(top, n)
    fires = torch.zeros(h, dtype=torch.float64)
    total = torch.zeros(h, dtype=torch.float64)
    lo = torch.zeros(h)
    hi = torch.zeros(h)
    best_v = torch.full((k, h), -torch.inf)
    best_i = torch.full((k, h), -1, dtype=torch.long)
    for start in range(0, n, chunk):
        code = model.encode(x[start:start + chunk]).float()
        on = code.abs() > thr
        fires += on.sum(0).double()
        total += code.sum(0).double()
        lo = torch.minimum(lo, torch.where(on, code, 0.0).amin(0))
        hi = torch.maximum(hi, torch.where(on, code, 0.0).amax(0))
        # the running top k: the kept ones and this chunk's, ranked together; non-firing rows rank last
        ranked = torch.where(on, code, -torch.inf)
        idx = torch.arange(start, start + len(code)).unsqueeze(1).expand_as(code)
        best_v, pos = torch.cat([best_v, ranked]).topk(k, dim=0)
        best_i = torch.cat([best_i, idx]).gather(0, pos)
    best_i[~torch.isfinite(best_v)] = -1
    # second pass: each latent's histogram over its own range
    hist = torch.zeros(h * bins, dtype=torch.float64)
    width = (hi - lo).clamp_min(1e-12)
    offset = torch.arange(h) * bins
    for start in range(0, n, chunk):
        code = model.encode(x[start:start + chunk]).float()
        on = code.abs() > thr
        b = ((code - lo) / width * bins).floor().long().clamp(0, bins - 1) + offset
        hist.index_add_(0, b[on], torch.ones(int(on.sum()), dtype=torch.float64))
    return LatentStats((fires / max(n, 1)).numpy(), (total / max(n, 1)).numpy(), hi.numpy(),
                       best_i.T.numpy(), torch.where(torch.isfinite(best_v), best_v, 0.0).T.numpy(),
                       hist.view(h, bins).numpy().astype(np.int64), lo.numpy(), hi.numpy(),
                       decoder_directions(model, hi).numpy(), n)


@torch.no_grad()
def decoder_directions(model, largest: torch.Tensor) -> torch.Tensor:
    """(H, D): what each latent adds to the output, in input space (see the module's docstring)."""
    dtype = next(model.parameters()).dtype
    inverse = model.input_transform.inverse_transform
    h = model.config.hidden[-1]
    zero = torch.zeros(1, model.config.output_dim(), dtype=dtype)  # a transcoder: the target's width
    if len(model.decoder_weights()) == 1:
        d = model.decoder_weights()[0].t().to(dtype)  # the decoder columns, transformed space
        return (inverse(d) - inverse(zero)).float()
    base = inverse(model.decode(torch.zeros(1, h, dtype=dtype)))
    out = []
    for start in range(0, h, 1024):
        eye = torch.eye(h, dtype=dtype)[start:start + 1024] * largest[start:start + 1024, None].to(dtype)
        out.append(inverse(model.decode(eye)) - base)
    return torch.cat(out).float()


# --- PNG ------------------------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit grey (H x W) or RGB (H x W x 3) image as PNG bytes.

    Each row gets the filter (none, sub, up, average, Paeth) with the smallest sum of absolute
    values, as libpng chooses; then zlib at level 6 (level 9 takes three times as long for 1% less).
    """
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = a.shape[:2]
    channels = 1 if a.ndim == 2 else a.shape[2]
    rows = a.reshape(height, width * channels).astype(np.int16)
    left = np.zeros_like(rows)
    left[:, channels:] = rows[:, :-channels]
    up = np.zeros_like(rows)
    up[1:] = rows[:-1]
    upleft = np.zeros_like(rows)
    upleft[1:] = left[:-1]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    filtered = np.stack([rows, rows - left, rows - up, rows - (left + up) // 2, rows - paeth]) % 256
    cost = np.minimum(filtered, 256 - filtered).sum(axis=2)  # bytes as signed values
    choice = cost.argmin(axis=0)
    raw = np.concatenate([choice[:, None], filtered[choice, np.arange(height)]], axis=1).astype(np.uint8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    color = {1: 0, 3: 2}[channels]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def png_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def strip_geometry(image_shape: Sequence[int], top: int = TOP) -> tuple[int, int]:
    """(height, width) in pixels of a latent's strip: its direction and `top` examples, 1 px apart."""
    h, w = image_shape[:2]
    return h + 2, 1 + (top + 1) * (w + 1)


def latent_strip(direction: np.ndarray, examples: np.ndarray, image_shape: Sequence[int],
                 top: int = TOP) -> np.ndarray:
    """uint8 pixels: the direction (mid-grey 0) then the examples (values in [0, 1]), white between,
    light grey where a latent has fewer than `top` examples."""
    h, w = image_shape[:2]
    shape = strip_geometry(image_shape, top) + tuple(image_shape[2:])
    strip = np.full(shape, 255, dtype=np.uint8)
    d = direction / max(float(np.abs(direction).max()), 1e-12)
    tiles = [(d + 1) / 2] + list(examples) + [None] * (top - len(examples))
    for i, tile in enumerate(tiles):
        x0 = 1 + i * (w + 1)
        strip[1:1 + h, x0:x0 + w] = 230 if tile is None else to_uint8(tile.reshape(image_shape))
    return strip


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


# --- the page's data and markup ---------------------------------------------------------------------


def _g(v: float) -> float:
    """A number short enough for the page (4 significant digits)."""
    return float(f"{v:.4g}")


def browser_data(stats: LatentStats, rows: np.ndarray, labels: np.ndarray | None, class_names: list[str] | None,
                 image_shape: Sequence[int] | None, source: str, threshold: float) -> dict[str, Any]:
    """Everything the page's script needs, JSON-ready (the strips as data URIs)."""
    if image_shape and rows.size and (rows.min() < 0 or rows.max() > 1):
        # pixels outside [0, 1] (whitened patches, say): drawn over the held-out rows' range
        lo, hi = float(rows.min()), float(rows.max())
        rows = (rows - lo) / max(hi - lo, 1e-12)
    latents = []
    for j in range(len(stats.density)):
        keep = stats.top_rows[j] >= 0
        top, values = stats.top_rows[j][keep], stats.top_values[j][keep]
        item: dict[str, Any] = {"i": j, "d": _g(stats.density[j]), "m": _g(stats.mean[j]), "x": _g(stats.max[j]),
                                "h": stats.hist[j].tolist(), "r": [_g(stats.hist_lo[j]), _g(stats.hist_hi[j])],
                                "rows": top.tolist(), "a": [_g(v) for v in values]}
        if labels is not None:
            y = labels[top]
            counts = np.bincount(y, minlength=len(class_names or [])) if len(y) else np.zeros(0, dtype=int)
            item["y"] = y.tolist()
            item["c"] = int(counts.argmax()) if len(y) else None
            item["p"] = _g(counts.max() / len(y)) if len(y) else 0.0
        if image_shape:
            item["s"] = png_uri(latent_strip(stats.directions[j], rows[top], image_shape))
        else:
            feats = np.argsort(-np.abs(stats.directions[j]), kind="stable")[:TABLE_FEATURES]
            item["f"] = [[int(f), _g(stats.directions[j][f])] for f in feats]
            item["v"] = [[_g(v) for v in rows[r][feats]] for r in top]
        latents.append(item)
    return {"rows": stats.rows, "source": source, "top": TOP, "threshold": threshold, "pure": PURE,
            "classes": class_names if labels is not None else None, "scale": SCALE,
            "tile": list(image_shape[:2]) if image_shape else None, "latents": latents}


def one_class_share(stats: LatentStats, labels: np.ndarray, pure: float = PURE, top: int = TOP) -> tuple[int, int]:
    """(latents whose top class holds >= `pure` of their top examples, latents with `top` examples)."""
    if stats.top_rows.shape[1] < top:
        return 0, 0
    full = np.flatnonzero((stats.top_rows[:, :top] >= 0).all(axis=1))
    n_pure = sum(int(np.bincount(labels[stats.top_rows[j, :top]]).max() >= pure * top) for j in full)
    return n_pure, len(full)


def browser_section(data: dict[str, Any], summary: str) -> str:
    """The HTML of the feature browser: controls, the data as JSON, the script that draws it."""
    classes = data["classes"]
    class_filter = ""
    if classes:
        options = "".join(f'<option value="{i}">{html.escape(c)}</option>' for i, c in enumerate(classes))
        class_filter = (f'<label>top class <select id="fb-class"><option value="all">any</option>{options}'
                        "</select></label>")
        sorts = _SORTS
    else:
        sorts = [s for s in _SORTS if s[0] not in ("class", "purity")]
    sort_options = "".join(f'<option value="{k}">{html.escape(t)}</option>' for k, t in sorts)
    blob = to_json_text(data, compact=True).strip().replace("</", "<\\/")  # JSON.parse reads it: no NaN
    return (f'<div id="feature-browser"><p>{html.escape(summary)}</p>'
            '<div class="fb-controls">'
            f'<label>sort by <select id="fb-sort">{sort_options}</select></label> '
            '<label><input type="checkbox" id="fb-reverse"> reversed</label> '
            f'{class_filter} '
            '<label><input type="checkbox" id="fb-hide-dead"> hide latents that never fire</label> '
            '<label>per page <select id="fb-size"><option>20</option><option selected>50</option>'
            '<option>100</option><option>200</option></select></label> '
            '<label>latent <input type="number" id="fb-find" min="0" style="width: 6em"></label> '
            '<button id="fb-go">show</button></div>'
            '<div class="fb-pager"><button id="fb-prev">&larr; previous</button> <span id="fb-page"></span> '
            '<button id="fb-next">next &rarr;</button></div>'
            '<div id="fb-cards"></div>'
            f'<script type="application/json" id="fb-data">{blob}</script>'
            f"<script>{_BROWSER_JS}</script></div>")


_SORTS = [("density", "density (most firing first)"), ("mean", "mean activation"), ("max", "largest activation"),
          ("class", "top class, then its share"), ("purity", "share of the top class"), ("index", "latent number")]

BROWSER_CSS = """
.fb-controls, .fb-pager { margin: 0.5em 0; font-size: 0.9em; } .fb-controls label { margin-right: 1em; }
.latent { border-top: 1px solid #ddd; padding: 6px 0; display: flex; flex-wrap: wrap; gap: 12px;
          align-items: flex-start; }
.latent.found { background: #fff7d6; } .latent .lhead { flex-basis: 100%; font-size: 0.9em; }
.latent .cls { color: #036; } .latent .acts { display: flex; font-size: 10px; color: #555; }
.latent .acts span { text-align: center; overflow: hidden; white-space: nowrap; }
.latent img.strip { image-rendering: pixelated; max-width: none; display: block; }
.latent table td { font-size: 0.8em; } .latent svg text { font-size: 9px; fill: #555; }
"""

# Draws one page of latents from the JSON block. `window.featureBrowser.ready` is a promise that
# settles when every image of the page shown has decoded (what the browser tests wait for).
_BROWSER_JS = r"""
(function () {
  var data = JSON.parse(document.getElementById("fb-data").textContent);
  var all = data.latents, names = data.classes, el = function (id) { return document.getElementById(id); };
  var st = {sort: "density", reverse: false, cls: "all", hideDead: false, size: 50, page: 0, found: null};
  var byIndex = function (a, b) { return a.i - b.i; };
  var desc = function (key) { return function (a, b) { return b[key] - a[key] || a.i - b.i; }; };
  var klass = function (l) { return l.c === null || l.c === undefined ? 1e9 : l.c; };
  var orders = {index: byIndex, density: desc("d"), mean: desc("m"), max: desc("x"), purity: desc("p"),
                "class": function (a, b) { return klass(a) - klass(b) || b.p - a.p || a.i - b.i; }};
  var esc = function (s) { return String(s).replace(/[&<>"]/g, function (c) {
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); };
  var pct = function (v) { return (100 * v).toPrecision(3) + "%"; };
  function view() {
    var v = all.filter(function (l) {
      return (st.cls === "all" || String(l.c) === st.cls) && (!st.hideDead || l.d > 0); });
    v.sort(orders[st.sort]);
    if (st.reverse) v.reverse();
    return v;
  }
  function histogram(l) {
    var w = 160, h = 40, n = l.h.length, top = Math.max.apply(null, l.h.concat([1])), bars = "";
    for (var b = 0; b < n; b++) {
      var bh = Math.round(h * l.h[b] / top);
      bars += '<rect x="' + (b * w / n) + '" y="' + (h - bh) + '" width="' + (w / n - 1) + '" height="' + bh +
              '" fill="#4a7ab5"></rect>';
    }
    return '<svg width="' + w + '" height="' + (h + 12) + '" aria-label="activation histogram">' + bars +
           '<text x="0" y="' + (h + 10) + '">' + l.r[0] + '</text><text x="' + w + '" y="' + (h + 10) +
           '" text-anchor="end">' + l.r[1] + '</text></svg>';
  }
  function classes(l) {
    if (!names || !l.y || !l.y.length) return "";
    var counts = {}, parts = [];
    l.y.forEach(function (y) { counts[y] = (counts[y] || 0) + 1; });
    Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a]; }).forEach(function (y, k) {
      parts.push(k === 0 ? "<b>" + esc(names[y]) + " " + Math.round(100 * counts[y] / l.y.length) + "%</b> (" +
                 counts[y] + "/" + l.y.length + ")" : esc(names[y]) + " " + counts[y]);
    });
    return '<span class="cls">' + parts.join(", ") + "</span>";
  }
  function examples(l) {
    if (data.tile) {
      var cell = (data.tile[1] + 1) * data.scale, th = data.tile[0] + 2, tw = 1 + (data.top + 1) * (data.tile[1] + 1);
      var acts = '<span style="width:' + cell + 'px" title="decoder direction">dir</span>';
      l.rows.forEach(function (r, k) {
        var label = l.y ? names[l.y[k]] + ", " : "";
        acts += '<span style="width:' + cell + 'px" title="row ' + r + ": " + esc(label) + "activation " + l.a[k] +
                '">' + l.a[k] + "</span>";
      });
      return '<div><img class="strip" data-i="' + l.i + '" width="' + tw * data.scale + '" height="' + th * data.scale +
             '" alt="latent ' + l.i + ': decoder direction, then its top ' + l.rows.length + ' examples">' +
             '<div class="acts">' + acts + "</div></div>";
    }
    var head = "<tr><th>row</th><th>activation</th>" + (l.y ? "<th>class</th>" : "") +
               l.f.map(function (f) { return "<th>x" + f[0] + " (" + f[1] + ")</th>"; }).join("") + "</tr>";
    var body = l.rows.map(function (r, k) {
      return "<tr><td>" + r + "</td><td>" + l.a[k] + "</td>" + (l.y ? "<td>" + esc(names[l.y[k]]) + "</td>" : "") +
             l.v[k].map(function (v) { return "<td>" + v + "</td>"; }).join("") + "</tr>";
    }).join("");
    return "<table>" + head + body + "</table>";
  }
  function card(l) {
    var fires = l.d > 0 ? "fires on " + pct(l.d) + " of rows, mean " + l.m + ", max " + l.x
                        : "never fires on the " + data.rows + " held-out rows";
    return '<div class="latent' + (l.i === st.found ? " found" : "") + '" id="latent-' + l.i + '" data-latent="' +
           l.i + '" data-rows="' + l.rows.join(",") + '"><div class="lhead"><b>latent ' + l.i + "</b>: " + fires +
           (l.rows.length ? " " + classes(l) : "") + "</div>" + (l.rows.length ? examples(l) : "") +
           (l.d > 0 ? histogram(l) : "") + "</div>";
  }
  function render() {
    var v = view(), pages = Math.max(1, Math.ceil(v.length / st.size));
    st.page = Math.min(Math.max(st.page, 0), pages - 1);
    var shown = v.slice(st.page * st.size, (st.page + 1) * st.size);
    var cards = el("fb-cards");
    cards.innerHTML = shown.map(card).join("");
    el("fb-page").textContent = "page " + (st.page + 1) + " of " + pages + " (" + v.length + " latents)";
    el("fb-prev").disabled = st.page === 0;
    el("fb-next").disabled = st.page >= pages - 1;
    cards.setAttribute("data-page", st.page + 1);
    cards.setAttribute("data-pages", pages);
    var imgs = Array.prototype.slice.call(cards.getElementsByTagName("img"));
    imgs.forEach(function (img) { img.src = all[img.getAttribute("data-i")].s; });
    window.featureBrowser.ready = Promise.all(imgs.map(function (i) { return i.decode(); }));
    return window.featureBrowser.ready;
  }
  function find(i) {
    var v = view(), k = v.findIndex(function (l) { return l.i === i; });
    if (k < 0 && i >= 0 && i < all.length) {  // hidden by a filter: show it among all latents
      st.cls = "all"; st.hideDead = false;
      if (el("fb-class")) el("fb-class").value = "all";
      el("fb-hide-dead").checked = false;
      v = view(); k = v.findIndex(function (l) { return l.i === i; });
    }
    if (k < 0) return render();
    st.page = Math.floor(k / st.size); st.found = i;
    var done = render();
    el("latent-" + i).scrollIntoView();
    return done;
  }
  var changed = function (f) { return function (e) { f(e.target); st.page = 0; render(); }; };
  el("fb-sort").addEventListener("change", changed(function (t) { st.sort = t.value; }));
  el("fb-reverse").addEventListener("change", changed(function (t) { st.reverse = t.checked; }));
  el("fb-hide-dead").addEventListener("change", changed(function (t) { st.hideDead = t.checked; }));
  el("fb-size").addEventListener("change", changed(function (t) { st.size = parseInt(t.value, 10); }));
  if (el("fb-class")) el("fb-class").addEventListener("change", changed(function (t) { st.cls = t.value; }));
  el("fb-prev").addEventListener("click", function () { st.page--; render(); });
  el("fb-next").addEventListener("click", function () { st.page++; render(); });
  el("fb-go").addEventListener("click", function () { find(parseInt(el("fb-find").value, 10)); });
  el("fb-find").addEventListener("keydown", function (e) { if (e.key === "Enter") el("fb-go").click(); });
  window.featureBrowser = {render: render, find: find, state: st, ready: null};
  render();
})();
"""
