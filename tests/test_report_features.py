"""The feature browser's numbers against brute force, its PNGs, its page data, and `report --out`'s refusal
to replace a file that is not a report."""
import json
import re
import zlib

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from sparseae.cli import main
from sparseae.config import ModelConfig
from sparseae.model import SparseAutoencoder
from sparseae.run import feature_browser as fb
from sparseae.run.report import GENERATOR, render_report


def _model(**kw):
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=36, hidden=[12], **kw))
    model.initialize("default", torch.Generator().manual_seed(0))
    return model.eval()


def _reference(model, x, top=fb.TOP, bins=fb.BINS):
    """Each latent's statistics, one latent at a time, with numpy."""
    with torch.no_grad():
        c = model.encode(x).float().numpy()
    thr = model.active_threshold
    out = []
    for j in range(c.shape[1]):
        v = c[:, j]
        on = np.abs(v) > thr
        rows = np.flatnonzero(on)[np.argsort(-v[on], kind="stable")][:top]
        lo, hi = min(0.0, v[on].min(initial=0.0)), max(0.0, v[on].max(initial=0.0))
        hist = np.histogram(v[on], bins, range=(lo, hi))[0] if hi > lo else np.zeros(bins, int)
        out.append({"density": on.mean(), "mean": v.mean(), "max": hi, "rows": rows, "values": v[rows],
                    "hist": hist})
    return out


@pytest.mark.parametrize("kw", [{"activation": "relu"},                      # many latents fire, some never
                                {"activation": "relu", "topk": "topk", "k": 3},  # exact zeros, ties at 0
                                {"activation": "sigmoid"}])                  # fires above 1e-2, never 0
def test_latent_stats_match_brute_force(kw):
    x = torch.rand(300, 36, generator=torch.Generator().manual_seed(1))
    model = _model(**kw)
    stats = fb.latent_stats(model, x, chunk=64)  # five chunks: the running top 9 is merged across them
    ref = _reference(model, x)
    assert stats.rows == 300 and stats.top_rows.shape == (12, 9)
    for j, r in enumerate(ref):
        assert stats.density[j] == pytest.approx(r["density"])
        assert stats.mean[j] == pytest.approx(r["mean"], rel=1e-5, abs=1e-7)
        assert stats.max[j] == pytest.approx(r["max"], rel=1e-6)
        n = len(r["rows"])
        assert stats.top_rows[j, :n].tolist() == r["rows"].tolist()
        assert (stats.top_rows[j, n:] == -1).all()  # fewer than 9 firing rows: the rest is empty
        np.testing.assert_allclose(stats.top_values[j, :n], r["values"], rtol=1e-6)
        assert stats.hist[j].sum() == round(r["density"] * 300)
        assert np.abs(stats.hist[j] - r["hist"]).sum() <= 2  # a value on a bin edge may fall either side
    assert (stats.density > 0).any()


def test_decoder_direction_is_the_column_in_input_space():
    model = _model(activation="relu", input_transform="standardize")
    model.input_transform.fit(torch.rand(100, 36) * 3)
    d = fb.decoder_directions(model, torch.ones(12))
    col = model.decoder[0].weight[:, 5].detach()
    torch.testing.assert_close(d[5], col * model.input_transform.scale)
    # a deeper decoder: the change of the output when the latent goes from 0 to `largest`
    deep = SparseAutoencoder(ModelConfig(input_dim=36, hidden=[20, 12], activation="relu")).eval()
    largest = torch.rand(12) + 0.5
    d = fb.decoder_directions(deep, largest)
    with torch.no_grad():
        code = torch.zeros(1, 12)
        code[0, 7] = largest[7]
        expected = deep.decode(code) - deep.decode(torch.zeros(1, 12))
    torch.testing.assert_close(d[7:8], expected)


@pytest.mark.parametrize("shape", [(30, 291), (7, 5, 3), (1, 1), (40, 1)])
def test_png_bytes_decode_to_the_same_pixels(shape, tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    pixels[: shape[0] // 2] = 200  # flat regions, where the row filters matter
    path = tmp_path / "a.png"
    path.write_bytes(fb.png_bytes(pixels))
    back = np.rint(imread(path) * 255).astype(np.uint8)
    np.testing.assert_array_equal(back, pixels)


def test_strip_layout():
    direction = np.linspace(-2, 1, 36)
    examples = np.random.default_rng(0).random((4, 36))  # 4 of 9: the rest drawn light grey
    strip = fb.latent_strip(direction, examples, (6, 6))
    assert strip.shape == fb.strip_geometry((6, 6)) == (8, 71)
    tile = lambda i: strip[1:7, 1 + i * 7: 7 + i * 7]  # noqa: E731
    assert tile(0).min() == 0 and tile(0).max() == 191  # -2 -> black, 1 -> mid-grey + half
    for i in range(4):
        np.testing.assert_array_equal(tile(1 + i), fb.to_uint8(examples[i].reshape(6, 6)))
    assert (tile(5) == 230).all() and (tile(9) == 230).all()
    assert (strip[0] == 255).all() and (strip[:, 0] == 255).all()  # white between tiles
    colour = fb.latent_strip(np.linspace(-1, 1, 108), np.random.default_rng(1).random((9, 108)), (6, 6, 3))
    assert colour.shape == (8, 71, 3) and fb.png_bytes(colour).startswith(b"\x89PNG")


def test_one_class_share_and_class_data():
    x = torch.rand(300, 36, generator=torch.Generator().manual_seed(1))
    stats = fb.latent_stats(_model(activation="relu"), x)
    labels = np.zeros(300, dtype=np.int64)
    full = np.flatnonzero((stats.top_rows >= 0).all(axis=1))
    a, b = full[0], full[1]
    labels[stats.top_rows[a][:6]] = 1      # latent a: 6 of 9 are class 1 -> 67%, not one class
    labels[stats.top_rows[b][:7]] = 2      # latent b: 7 of 9 class 2, unless a's rows overlap
    labels[stats.top_rows[a][:6]] = 1
    pure, n = fb.one_class_share(stats, labels)
    assert n == len(full)
    expected = sum(np.bincount(labels[stats.top_rows[j]]).max() >= 0.7 * 9 for j in full)
    assert pure == expected and pure < n
    data = fb.browser_data(stats, x.numpy(), labels, ["zero", "one", "two"], (6, 6), "test", 0.0)
    item = data["latents"][a]
    assert item["c"] == 1 and item["p"] == pytest.approx(6 / 9, abs=1e-3)
    assert item["y"] == labels[stats.top_rows[a]].tolist()
    assert item["s"].startswith("data:image/png;base64,")
    assert data["classes"] == ["zero", "one", "two"] and data["tile"] == [6, 6]


def _page_data(text):
    blob = re.search(r'<script type="application/json" id="fb-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob.replace("<\\/", "</"))


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    np.save(tmp / "rows.npy", (0.1 + 0.8 * rng.random((400, 10))).astype(np.float32))
    assert main(["train", "--dataset", "array", "--data", str(tmp / "rows.npy"), "--hidden", "8", "--activation",
                 "relu", "--penalty", "l1", "--beta", "1e-4", "--epochs", "2", "--batch-size", "50",
                 "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp


def test_table_data_shows_row_indices_and_values(table_run):
    text = render_report(table_run / "run")
    data = _page_data(text)
    assert data["tile"] is None and data["classes"] is None and data["rows"] == 40  # validation: last 10%
    val = np.load(table_run / "rows.npy")[360:]
    shown = [item for item in data["latents"] if item["rows"]]
    assert shown
    for item in shown:
        assert "s" not in item and len(item["f"]) == fb.TABLE_FEATURES
        feats = [f for f, _ in item["f"]]
        for r, values in zip(item["rows"], item["v"]):
            np.testing.assert_allclose(values, val[r][feats], rtol=1e-3)
        assert item["a"] == sorted(item["a"], reverse=True)
    assert 'value="class"' not in text  # no class sorting without labels


def test_report_refuses_to_replace_a_file_that_is_not_a_report(table_run, tmp_path, capsys):
    run = str(table_run / "run")
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    assert main(["report", run, "--out", str(notes)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file exists; pass --overwrite" in err[0]  # run/output.py's one rule
    assert notes.read_text() == "<html>my notes</html>"
    assert main(["report", run, "--out", str(tmp_path)]) == 2  # a folder
    assert "not a regular file" in capsys.readouterr().err
    # a report it wrote is replaced, also one from before reports named their writer
    out = tmp_path / "r.html"
    assert main(["report", run, "--out", str(out)]) == 0
    assert GENERATOR in out.read_text()[:4096]
    out.write_text('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>sparseae run x</title>')
    assert main(["report", run, "--out", str(out)]) == 0
    assert "Feature browser" in out.read_text()
    assert "KiB" in capsys.readouterr().out


def test_page_data_is_compact_json_in_the_page(table_run):
    text = render_report(table_run / "run")
    assert text.count('id="fb-data"') == 1 and "</script>" not in _page_data(text).__repr__()
    # a strip's data URI is PNG; zlib would refuse a truncated one
    data = fb.browser_data(fb.latent_stats(_model(activation="relu"), torch.rand(50, 36)), np.random.rand(50, 36),
                           None, None, (6, 6), "x", 0.0)
    png = __import__("base64").b64decode(data["latents"][0]["s"].split(",", 1)[1])
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == 8 * (1 + 71)


def test_screenshot_is_checked_before_the_report_is_written(table_run, tmp_path, monkeypatch, capsys):
    import sparseae.run.chromium as chromium

    run, out, mine = str(table_run / "run"), tmp_path / "r.html", tmp_path / "mine.png"
    mine.write_text("not a picture")
    monkeypatch.setattr(chromium, "find_chromium", lambda: "/usr/bin/chromium")
    assert main(["report", run, "--out", str(out), "--screenshot", str(mine)]) == 2
    assert "is not a PNG" in capsys.readouterr().err and mine.read_text() == "not a picture"
    monkeypatch.setattr(chromium, "find_chromium", lambda: None)
    assert main(["report", run, "--out", str(out), "--screenshot", str(tmp_path / "new.png")]) == 2
    assert "needs chromium" in capsys.readouterr().err
    assert not out.exists()
