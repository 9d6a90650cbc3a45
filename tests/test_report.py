import base64
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from sparseae import Dataset, ModelConfig, RunConfig, SparsityConfig, TrainConfig, train
from sparseae.cli import main
from sparseae.run import RunDir
from sparseae.run.report import render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.h2, self.rows, self._in_h2 = [], [], 0, False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "tr":
            self.rows += 1

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)


def _images(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = (torch.rand(6, 36, generator=g) > 0.7).float()
    x = ((torch.rand(n, 6, generator=g) > 0.7).float() @ basis).clamp(0, 1) * 0.9 + 0.05
    return Dataset(x[:200], x[200:], image_shape=(6, 6))


@pytest.fixture
def run_dir(tmp_path):
    config = RunConfig(ModelConfig(hidden=[9]), SparsityConfig(), TrainConfig(epochs=3, batch_size=50, lr=1e-2))
    train(config, out=tmp_path / "run", dataset=_images(), progress=False)
    return tmp_path / "run"


def _check_page(text):
    page = _Page()
    page.feed(text)
    page.close()
    assert page.imgs
    for img in page.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing outside the file
    return page


def test_report_is_self_contained_with_every_section(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = _check_page((run_dir / "report.html").read_text(encoding="utf-8"))
    assert page.h2 == ["Loss curves", "Reconstructions across epochs", "Learned features", "Feature density",
                       "Feature browser", "Summary", "Metrics per epoch", "Configuration"]
    # loss + 3 epochs of reconstructions + features + density
    assert len(page.imgs) == 6
    alts = " ".join(i["alt"] for i in page.imgs)
    assert "epoch 001" in alts and "epoch 003" in alts
    # trained on rows given in Python: the data set its config names is not the one it was trained on
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "784 features per row" in text and "takes 36" in text


def test_density_histogram_is_computed_when_missing(run_dir, tmp_path):
    (run_dir / "feature_density.png").unlink()
    x = np.random.default_rng(0).random((50, 36)).astype(np.float32)
    np.save(tmp_path / "rows.npy", x)
    run = RunDir(run_dir)
    config = run.read_json("config.json")
    config["train"].update(dataset="array", data=str(tmp_path / "rows.npy"))
    run.write_json("config.json", config)
    text = render_report(run_dir)
    _check_page(text)
    assert "computed now on" in text
    # without any data to compute it from, the page says why instead of failing
    config["train"].update(data=str(tmp_path / "missing.npy"))
    run.write_json("config.json", config)
    text = render_report(run_dir)
    assert "not computable here" in text
    _check_page(text)


def test_a_metrics_csv_without_a_plotted_column_shows_the_runs_own_loss_png(run_dir):
    path = run_dir / "metrics.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace("train_recon", "renamed"), *lines[1:]]) + "\n")  # a hand edit
    text = render_report(run_dir)
    _check_page(text)
    assert "<h2>Loss curves</h2>" in text and "loss curves" in text  # the run's loss.png, not a traceback


def test_report_of_a_missing_folder_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in capsys.readouterr().err
