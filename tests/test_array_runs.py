"""Every analysis on runs trained on an array file (`--dataset array`): it works, or refuses in one line."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseae.cli import main
from sparseae.data.arrays import open_array
from sparseae.errors import SparseAEError

ROWS, COLS = 300, 12
VAL_ROWS = 30  # the default validation fraction, 0.1, of 300 rows


@pytest.fixture(scope="module")
def array_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "d.npy"
    rng = np.random.default_rng(0)
    np.save(path, (0.1 + 0.8 * rng.random((ROWS, COLS))).astype(np.float32))
    return str(path)


def _train(array_file, out, *extra):
    assert main(["train", "--dataset", "array", "--data", array_file, "--hidden", "6", "--epochs", "2",
                 "--batch-size", "32", "--out", str(out), "--quiet", *extra]) == 0
    return str(out)


@pytest.fixture(scope="module")
def run(array_file, tmp_path_factory):
    return _train(array_file, tmp_path_factory.mktemp("runs") / "mem", "--stream", "no")


@pytest.fixture(scope="module")
def streamed_run(array_file, tmp_path_factory):
    return _train(array_file, tmp_path_factory.mktemp("runs") / "streamed", "--stream", "yes")


def _one_error_line(capsys, command):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sparseae {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize("which", ["run", "streamed_run"])
def test_eval_prints_json(which, request, capsys):
    path = request.getfixturevalue(which)
    capsys.readouterr()
    assert main(["eval", path]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == VAL_ROWS
    assert 0 < report["mse"] < 1 and np.isfinite(report["fvu"])


@pytest.mark.parametrize("which", ["run", "streamed_run"])
def test_probe_refuses_for_want_of_labels(which, request, capsys):
    path = request.getfixturevalue(which)
    capsys.readouterr()
    assert main(["probe", path]) == 2
    line = _one_error_line(capsys, "probe")
    assert "probe needs a labelled data set" in line and "labels" in line


def test_stack_on_an_array_file(array_file, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["stack", "--dataset", "array", "--data", array_file, "--hidden", "8,4", "--epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    for folder in (out, out / "greedy", out / "layer1", out / "layer2"):
        assert (folder / "model.safetensors").is_file(), folder
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "finetuned" and np.isfinite(summary["mse"])


def test_stack_refuses_a_streamed_file(array_file, tmp_path, capsys):
    assert main(["stack", "--dataset", "array", "--data", array_file, "--stream", "yes", "--hidden", "8,4",
                 "--epochs", "1", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "needs the data in memory" in _one_error_line(capsys, "stack")


def test_supervised_stack_refuses_for_want_of_labels(array_file, tmp_path, capsys):
    assert main(["stack", "--dataset", "array", "--data", array_file, "--hidden", "8,4", "--epochs", "1",
                 "--finetune", "supervised", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "needs a labelled data set" in _one_error_line(capsys, "stack")


@pytest.mark.parametrize("stream", ["no", "yes"])
def test_sweep_on_an_array_file(array_file, tmp_path, stream):
    out = tmp_path / "s"
    assert main(["sweep", "--dataset", "array", "--data", array_file, "--stream", stream, "--hidden", "8",
                 "--k-grid", "2,4", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["method"], float(r["value"])) for r in rows] == [("topk", 2.0), ("topk", 4.0)]
    assert all(float(r["l0"]) <= float(r["value"]) for r in rows)
    assert (out / "topk_2" / "model.safetensors").is_file() and (out / "fvu_vs_l0.png").is_file()


@pytest.mark.parametrize("which", ["run", "streamed_run"])
def test_report_computes_the_density_from_the_validation_rows(which, request, tmp_path):
    # without the run's own feature_density.png the report loads the data set and computes one
    copy = shutil.copytree(request.getfixturevalue(which), tmp_path / "run")
    (copy / "feature_density.png").unlink()
    out = tmp_path / "report.html"
    assert main(["report", str(copy), "--out", str(out)]) == 0
    text = out.read_text()
    assert f"computed now on {VAL_ROWS} held-out rows of the array data set" in text
    assert text.count("data:image/png;base64,") >= 2  # loss curves and the density


def test_report_default_path(run):
    assert main(["report", run]) == 0
    assert (Path(run) / "report.html").is_file()


# --- .safetensors through safetensors' own reader ---


def test_safetensors_dtypes_and_keys(tmp_path):
    from safetensors.torch import save_file

    x = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    save_file({"h": x.half(), "i": x.long(), "b": x.bfloat16()}, str(tmp_path / "t.safetensors"))
    for key in ("h", "i", "b"):
        a = open_array(tmp_path / "t.safetensors", key)
        assert (a.n_rows, a.n_cols) == (10, 4)
        got = a.read(3, 7)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x[3:7].numpy(), err_msg=key)
    with pytest.raises(SparseAEError, match="holds 3 arrays"):
        open_array(tmp_path / "t.safetensors")
    with pytest.raises(SparseAEError, match="no array named 'z'"):
        open_array(tmp_path / "t.safetensors", "z")


@pytest.mark.parametrize("content", [b"\x10\x00", b"\x10" + b"\x00" * 7 + b"{not json at all", b"\xff" * 8 + b"{}"])
def test_malformed_safetensors_is_refused_in_one_line(tmp_path, capsys, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(SparseAEError, match="not a valid .safetensors file") as e:
        open_array(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert main(["train", "--dataset", "array", "--data", str(path), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert str(path) in _one_error_line(capsys, "train")


def test_truncated_and_wrong_shaped_safetensors_are_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.ones((100, 4), np.float32)}, str(tmp_path / "t.safetensors"))
    whole = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[:-40])
    with pytest.raises(SparseAEError, match="cut.safetensors: not a valid .safetensors file"):
        open_array(tmp_path / "cut.safetensors")
    save_file({"x": np.ones(7, np.float32)}, str(tmp_path / "flat.safetensors"))
    with pytest.raises(SparseAEError, match="expected a 2-D array"):
        open_array(tmp_path / "flat.safetensors")


def test_float8_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.ones(4, 3).to(torch.float8_e4m3fn)}, str(tmp_path / "f8.safetensors"))
    with pytest.raises(SparseAEError, match="unsupported dtype F8_E4M3"):
        open_array(tmp_path / "f8.safetensors")


# --- the probe's standardisation (scikit-learn's StandardScaler) ---


def test_probe_standardisation_population_std_and_constant_features():
    from sparseae.analysis.probe import standardize

    g = torch.Generator().manual_seed(0)
    train = torch.rand(50, 4, generator=g)
    train[:, 2] = 0.3  # constant: stays 0, no division by zero
    test = torch.rand(7, 4, generator=g)
    xs, xt = standardize(train, test)
    x = train.double().numpy()
    scale = np.where(x.std(0) > 0, x.std(0), 1.0)
    np.testing.assert_allclose(xs.numpy(), (x - x.mean(0)) / scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xt.numpy(), (test.double().numpy() - x.mean(0)) / scale, rtol=1e-5, atol=1e-5)
    assert xs.dtype == torch.float32 and (xs[:, 2] == 0).all()
