"""The report in a real browser: headless Chromium (Debian's `chromium`, which `scripts/install.sh test`
installs) loads the page, decodes every image, and the tests use the feature browser's sorting,
paging, class filter and search as a reader would, through the DevTools protocol (run/chromium.py).

Without chromium these tests are skipped, except under CI (CI=true), where they fail: CI must run them.
"""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

from sparseae import ModelConfig, RunConfig, SparsityConfig, TrainConfig, train
from sparseae.cli import main
from sparseae.data import load_dataset
from sparseae.run import feature_browser as fb
from sparseae.run.chromium import Chromium, find_chromium
from sparseae.run.report import write_report

from tests.conftest import FMNIST
from tests.test_report import PNG_MAGIC, _check_page, run_dir  # noqa: F401 (a fixture)

BUDGET = 20e6  # bytes: the size budget of a 1,024-latent FashionMNIST report
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.fixture
def chromium_path():
    path = find_chromium()
    if path is None:
        if IN_CI:
            pytest.fail("CI: chromium is not installed (scripts/install.sh test installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def _decoded(browser):
    """The natural width of every image of the page once decoded (0: it failed)."""
    return browser.evaluate("""(window.featureBrowser ? featureBrowser.ready : Promise.resolve()).then(() =>
        Promise.all(Array.from(document.images).map(i => i.decode().then(() => i.naturalWidth, () => 0))))""")


def _shown(browser):
    """The latents on the page shown, in order."""
    return browser.evaluate("Array.from(document.querySelectorAll('#fb-cards .latent')).map(e => +e.dataset.latent)")


def _choose(browser, element, value):
    """Set a control of the page as a reader would, and wait until the new page's images decoded."""
    browser.evaluate(f"""(() => {{ const e = document.getElementById({json.dumps(element)});
        e.value = {json.dumps(value)}; e.dispatchEvent(new Event('change')); return featureBrowser.ready; }})()""")


def _click(browser, element):
    browser.evaluate(f"document.getElementById({json.dumps(element)}).click(); featureBrowser.ready")


def _g(v):
    return float(f"{v:.4g}")  # as the page holds its numbers


@pytest.fixture(scope="module")
def fashion_report(tmp_path_factory):
    """A 1,024-latent TopK model trained for one epoch on 3,000 FashionMNIST images, and its report."""
    if not os.path.isdir(FMNIST) and not os.environ.get("SPARSEAE_DATA") and not IN_CI:
        pytest.skip("FashionMNIST files not installed")  # CI downloads them if they are missing
    tmp = tmp_path_factory.mktemp("fashion")
    config = RunConfig(ModelConfig(hidden=[1024], k=32), SparsityConfig(penalty="topk"),
                       TrainConfig(epochs=1, limit_train=3000))
    train(config, out=tmp / "run", progress=False)
    return tmp / "run", write_report(tmp / "run", tmp / "report.html")


def test_1024_latent_fashion_mnist_report_in_chromium(fashion_report, chromium_path, tmp_path):
    run, page = fashion_report
    size = page.stat().st_size
    print(f"\n1,024-latent FashionMNIST report: {size / 1e6:.2f} MB (budget {BUDGET / 1e6:.0f} MB)")
    assert size <= BUDGET
    _check_page(page.read_text(encoding="utf-8"))

    # what the page should show, computed here from the model and the held-out rows, one latent at a time
    from sparseae.run.rundir import load_run

    model = load_run(run)
    data = load_dataset("fashion-mnist")
    rows, labels = data.test, data.test_labels.numpy()
    with torch.no_grad():
        codes = model.encode(rows).numpy()
    fires = codes > model.active_threshold
    density, mean = fires.mean(0), codes.mean(0)
    by_density = sorted(range(1024), key=lambda j: (-_g(density[j]), j))
    by_mean = sorted(range(1024), key=lambda j: (-_g(mean[j]), j))

    with Chromium(chromium_path, width=1200, height=900) as browser:
        browser.open(page.resolve().as_uri())
        widths = _decoded(browser)
        assert len(widths) == 4 + 50 and all(w > 0 for w in widths)  # loss, epoch 1, features, density + 50
        assert browser.evaluate("document.documentElement.dataset.images") == f"{len(widths)}/{len(widths)}"
        assert _shown(browser) == by_density[:50]  # the default order
        assert browser.evaluate("document.getElementById('fb-page').textContent") == "page 1 of 21 (1024 latents)"

        _choose(browser, "fb-sort", "mean")
        assert _shown(browser) == by_mean[:50]

        # page 3 of the density order holds the chosen latent
        _choose(browser, "fb-sort", "density")
        chosen = by_density[130]
        _click(browser, "fb-next")
        _click(browser, "fb-next")
        assert browser.evaluate("document.getElementById('fb-cards').dataset.page") == "3"
        assert _shown(browser) == by_density[100:150]
        widths = _decoded(browser)
        assert len(widths) == 4 + 50 and all(w > 0 for w in widths)

        # its top 9 examples, as rows and as pixels
        card = f"document.getElementById('latent-{chosen}')"
        shown_rows = [int(r) for r in browser.evaluate(f"{card}.dataset.rows").split(",")]
        col = codes[:, chosen]
        best = np.argsort(-np.where(fires[:, chosen], col, -np.inf), kind="stable")[:9]
        assert len(shown_rows) == 9
        np.testing.assert_allclose(col[shown_rows], col[best], rtol=1e-6)  # the 9 largest, best first
        assert set(shown_rows) == set(best.tolist()) or col[best[-1]] == col[np.argsort(-col)[9]]
        pixels = browser.evaluate(f"""(() => {{
            const img = {card}.querySelector('img.strip'), c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
            const d = ctx.getImageData(0, 0, c.width, c.height).data, out = [];
            for (let i = 0; i < d.length; i += 4) out.push(d[i]);
            return [c.width, c.height, out]; }})()""")
        w, h, grey = pixels
        assert (h, w) == fb.strip_geometry((28, 28))
        strip = np.array(grey, dtype=np.uint8).reshape(h, w)
        for k, r in enumerate(shown_rows):
            x0 = 1 + (k + 1) * 29
            np.testing.assert_array_equal(strip[1:29, x0:x0 + 28], fb.to_uint8(rows[r].numpy().reshape(28, 28)))
        # the class line: "Class NN% (n/9)" of the top class of those 9
        counts = np.bincount(labels[shown_rows], minlength=10)
        head = browser.evaluate(f"{card}.querySelector('.lhead').textContent")
        top_class = data_class_names()[counts.argmax()]
        assert f"{top_class} {round(100 * counts.max() / 9)}% ({counts.max()}/9)" in head

        # the class filter keeps the latents whose top class is that one
        _choose(browser, "fb-class", str(counts.argmax()))
        heads = browser.evaluate("Array.from(document.querySelectorAll('#fb-cards .lhead .cls b'))"
                                 ".map(e => e.textContent)")
        assert heads and all(t.startswith(top_class + " ") for t in heads)

        # the search box finds the least firing latent on the last page, filter or not
        last = by_density[-1]
        browser.evaluate(f"document.getElementById('fb-find').value = '{last}'; 0")
        _click(browser, "fb-go")
        assert browser.evaluate("document.querySelector('#fb-cards .latent.found').dataset.latent") == str(last)
        assert browser.evaluate("document.getElementById('fb-cards').dataset.page") == "21"
        assert all(w > 0 for w in _decoded(browser))

        shot = browser.screenshot(tmp_path / "browser.png", "#feature-browser", 900)
    assert shot.read_bytes().startswith(PNG_MAGIC)


def data_class_names():
    from sparseae.data.fashion_mnist import CLASSES

    return CLASSES


def test_table_report_in_chromium(chromium_path, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "rows.npy", (0.1 + 0.8 * rng.random((400, 10))).astype(np.float32))
    assert main(["train", "--dataset", "array", "--data", str(tmp_path / "rows.npy"), "--hidden", "8",
                 "--activation", "relu", "--penalty", "l1", "--beta", "1e-4", "--epochs", "2", "--batch-size", "50",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = tmp_path / "report.html"
    shot = tmp_path / "shot.png"
    assert main(["report", str(tmp_path / "run"), "--out", str(out), "--screenshot", str(shot)]) == 0
    assert shot.read_bytes().startswith(PNG_MAGIC)
    with Chromium(chromium_path) as browser:
        browser.open(out.resolve().as_uri())
        assert all(w > 0 for w in _decoded(browser))
        n_tables = browser.evaluate("document.querySelectorAll('#fb-cards .latent table').length")
        firing = browser.evaluate("JSON.parse(document.getElementById('fb-data').textContent).latents"
                                  ".filter(l => l.rows.length).length")
        assert n_tables == firing > 0
        # a reader's sort: by latent number
        _choose(browser, "fb-sort", "index")
        assert _shown(browser) == list(range(8))


def test_headless_chromium_renders_every_image(run_dir, tmp_path, chromium_path):  # noqa: F811
    # the plain command line: --dump-dom after the page's load handler counted the decoded images
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    n = len(_check_page(out.read_text(encoding="utf-8")).imgs)
    flags = [chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert f'data-images="{n}/{n}"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes().startswith(PNG_MAGIC)
