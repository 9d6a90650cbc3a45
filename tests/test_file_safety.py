"""What sparseae promises about your files (README): nothing lost, nothing outside the output touched,
every bad input one line and exit code 2. One test per case of the hostile review (issue 12)."""
from __future__ import annotations

import json
import os
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest


from cli_helpers import digest, refused, rows_file, run

TINY = ["--hidden", "6", "--epochs", "2", "--batch-size", "32", "--quiet"]
# ReLU units, linear output and a huge SGD step: the weights overflow within the first epoch
DIVERGE = ["--activation", "relu", "--output-activation", "linear", "--penalty", "l1", "--optimizer", "sgd",
           "--lr", "1e10"]


@pytest.fixture
def data(tmp_path) -> Path:
    return rows_file(tmp_path, 12)


@pytest.fixture
def finished(tmp_path, data, capsys) -> Path:
    out = tmp_path / "old"
    assert run(capsys, "train", "--dataset", "array", "--data", str(data), *TINY, "--epochs", "3",
               "--out", str(out))[0] == 0
    return out


def train_args(data: Path, out: Path | str, *extra: str) -> list[str]:
    return ["train", "--dataset", "array", "--data", str(data), *TINY, "--out", str(out), *extra]


# --- data loss and writes outside the run folder ---------------------------------------------------

def test_a_finished_run_is_not_replaced(tmp_path, data, finished, capsys):
    before = digest(finished)
    err = refused(capsys, *train_args(data, finished))
    assert "already holds files" in err and "--overwrite" in err
    assert digest(finished) == before


def test_overwrite_replaces_the_whole_folder_only_when_the_new_run_has_finished(tmp_path, data, finished, capsys):
    assert (finished / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs
    assert run(capsys, *train_args(data, finished, "--epochs", "1", "--overwrite"))[0] == 0
    assert (finished / "metrics.csv").read_text().count("\n") == 2  # the new run's, no stale rows
    assert not list(tmp_path.glob(".old.*"))  # neither staging nor the old copy is left behind


def test_a_failed_overwrite_leaves_the_old_run_loadable(tmp_path, data, finished, capsys):
    from sparseae import load_run

    before = digest(finished)
    err = refused(capsys, *train_args(data, finished, *DIVERGE, "--overwrite"))
    assert "diverged" in err
    assert digest(finished) == before and not list(tmp_path.glob(".old.*"))
    load_run(finished)


def test_running_plain_train_twice_writes_two_run_folders(tmp_path, data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--dataset", "array", "--data", str(data), *TINY]
    assert run(capsys, *argv)[0] == 0 and run(capsys, *argv)[0] == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["train-001", "train-002"]


def test_an_empty_out_is_refused(tmp_path, data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("mine")
    assert "must be named" in refused(capsys, *train_args(data, ""))
    assert (tmp_path / "config.json").read_text() == "mine"


def test_a_symlinked_checkpoint_folder_is_never_written_through(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert run(capsys, *train_args(data, out, "--epochs", "3"))[0] == 0
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "e0001-s0000000.safetensors").write_bytes(b"not ours")
    (other / ".state.json123.tmp").write_bytes(b"not ours either")
    for p in (out / "checkpoint").iterdir():
        os.replace(p, other / p.name) if p.name == "state.json" else p.unlink()
    (out / "checkpoint").rmdir()
    (out / "checkpoint").symlink_to(other)
    before = digest(other)
    assert "symbolic link" in refused(capsys, "train", "--resume", str(out), "--quiet")
    assert digest(other) == before


def test_checkpoint_clean_up_removes_only_what_its_state_named(tmp_path, data):
    from sparseae import ModelConfig, RunConfig, TrainConfig, train

    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    # named like a checkpoint, and like a temp file, but written by someone else
    strangers = {"e0009-s0000000.safetensors": b"x", ".notes.tmp": b"y"}
    for name, content in strangers.items():
        (out / "checkpoint" / name).write_bytes(content)
    config = RunConfig(ModelConfig(hidden=[6]), train=TrainConfig(dataset="array", data=str(data), epochs=3,
                                                                 batch_size=32))
    train(config, out=out, progress=False, if_exists="add")  # a caller that owns the folder
    names = sorted(p.name for p in (out / "checkpoint").iterdir())
    assert names == sorted([*strangers, "e0004-s0000000.safetensors", "state.json"])  # epochs 1-3's own: gone


# --- wrong results with exit code 0 ------------------------------------------------------------------

def test_nan_momentum_is_refused(tmp_path, data, capsys):
    assert "momentum" in refused(capsys, *train_args(data, tmp_path / "r", "--optimizer", "sgd",
                                                    "--momentum", "nan"))
    assert not (tmp_path / "r").exists()


def test_weights_that_are_not_finite_are_never_saved_as_a_success(tmp_path, data, capsys):
    out = tmp_path / "r"
    assert "diverged" in refused(capsys, *train_args(data, out, *DIVERGE))
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()


def test_resuming_a_finished_run_rewrites_nothing(finished, capsys):
    before = digest(finished)
    code, out, _ = run(capsys, "train", "--resume", str(finished), "--quiet")
    assert code == 0 and "nothing to resume" in out
    assert digest(finished) == before


def test_resume_with_another_out_is_refused(tmp_path, finished, capsys):
    before = digest(finished)
    assert "--out" in refused(capsys, "train", "--resume", str(finished), "--out", str(tmp_path / "y"))
    assert digest(finished) == before and not (tmp_path / "y").exists()


# --- tracebacks that became one line --------------------------------------------------------------------

def test_out_that_is_a_file(tmp_path, data, capsys):
    f = tmp_path / "f.txt"
    f.write_text("keep")
    assert "is not a folder" in refused(capsys, *train_args(data, f))
    assert f.read_text() == "keep"


def test_out_that_cannot_be_created(tmp_path, data, capsys):
    assert "cannot create" in refused(capsys, *train_args(data, "/proc/sparseae-no/run"))


def test_out_name_too_long(tmp_path, data, capsys):
    assert "File name too long" in refused(capsys, *train_args(data, tmp_path / ("a" * 300)))


@pytest.mark.parametrize("flags,word", [
    (["--hidden", "10000000"], "weights"),
    (["--momentum", "-1", "--optimizer", "sgd"], "momentum"),
    (["--seed", str(2**64)], "seed"),
    (["--image-downsample", "1000000"], "image_downsample"),
    (["--zca-epsilon", "-1", "--input-transform", "zca"], "zca_epsilon"),
])
def test_unchecked_values_are_refused_before_work(tmp_path, data, capsys, flags, word):
    assert word in refused(capsys, *train_args(data, tmp_path / "r", *flags))
    assert not (tmp_path / "r").exists()


def test_gradcheck_tolerance_must_be_a_number(capsys):
    assert "--tol" in refused(capsys, "gradcheck", "--tol", "nan")


def test_fortran_ordered_object_array(tmp_path, capsys):
    p = tmp_path / "obj.npy"
    np.save(p, np.asfortranarray(np.array([[1, "a"], [2, "b"], [3, "c"]], dtype=object)), allow_pickle=True)
    assert "numeric" in refused(capsys, *train_args(p, tmp_path / "r"))


def test_compressed_object_array(tmp_path, capsys):
    p = tmp_path / "obj.npz"
    np.savez_compressed(p, x=np.array([[1, "a"], [2, "b"], [3, "c"]], dtype=object))
    assert zipfile.ZipFile(p).getinfo("x.npy").compress_type == zipfile.ZIP_DEFLATED
    assert "numeric" in refused(capsys, *train_args(p, tmp_path / "r"))


@pytest.mark.parametrize("content", [None, b"\x00\xff\xfe\x89PNG\x00\x01"])
def test_cluster_labels_missing_or_binary(tmp_path, capsys, content):
    labels = tmp_path / "labels.txt"
    if content is not None:
        labels.write_bytes(content)
    err = refused(capsys, "cluster", "--graph", "karate", "--labels", str(labels), "--epochs", "1")
    assert "labels" in err


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    import sparseae.__main__ as entry

    class Interrupting(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "sparseae.cli", Interrupting("sparseae.cli"))
    with pytest.raises(SystemExit) as e:
        entry.run()
    assert e.value.code == 130 and capsys.readouterr().err == "sparseae: interrupted\n"


# --- unclear messages -------------------------------------------------------------------------------

def test_a_bad_flag_value_is_one_line_with_a_hint(capsys):
    err = refused(capsys, "train", "--epochs", "many")
    assert "--epochs" in err and "see sparseae train --help" in err and "usage" not in err


def test_data_that_is_a_folder_a_fifo_or_a_loop_says_so(tmp_path, capsys):
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.npy"
    loop.symlink_to(loop)
    assert "is a folder" in refused(capsys, *train_args(folder, tmp_path / "r"))
    assert "not a regular file" in refused(capsys, *train_args(fifo, tmp_path / "r"))
    assert "symbolic link loop" in refused(capsys, *train_args(loop, tmp_path / "r"))


def test_eval_refuses_weights_that_are_not_numbers(tmp_path, data, capsys):
    # issue 20: NaN weights once gave mse null next to l0 0.0, which reads as a sparse model
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = tmp_path / "r"
    assert run(capsys, *train_args(data, out))[0] == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    weights = load_file(out / "model.safetensors")
    weights["decoder.0.bias"][0] = float("nan")  # a damaged (or hand-edited) model
    save_file(weights, out / "model.safetensors", metadata=metadata)
    err = refused(capsys, "eval", str(out))
    assert "the model's weights are not finite" in err and "decoder.0.bias" in err


def test_stack_checks_its_fine_tuning_before_training_any_layer(tmp_path, data, capsys):
    err = refused(capsys, "stack", "--dataset", "array", "--data", str(data), "--hidden", "8,4", "--epochs", "1",
                  "--finetune", "supervised", "--out", str(tmp_path / "s"), "--quiet")
    assert "label" in err and not (tmp_path / "s").exists()


@pytest.mark.parametrize("header", [
    {"x": {"shape": [4, 3], "data_offsets": [0, 48]}},  # no dtype
    [1, 2, 3],  # a list, not an object
    {"x": {"dtype": "F32", "shape": ["4", 3.5], "data_offsets": [0, 48]}},  # shape not integers
])
def test_safetensors_file_with_a_malformed_header(tmp_path, capsys, header):
    text = json.dumps(header).encode()
    p = tmp_path / "bad.safetensors"
    p.write_bytes(len(text).to_bytes(8, "little") + text + bytes(48))
    assert "bad.safetensors" in refused(capsys, *train_args(p, tmp_path / "r"))


def test_report_on_a_metrics_csv_that_is_not_numbers(tmp_path, finished, capsys):
    lines = (finished / "metrics.csv").read_text().splitlines()
    lines[2] = "x" + lines[2][1:]
    (finished / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert "not a number" in refused(capsys, "report", str(finished), "--out", str(tmp_path / "r.html"))


def test_a_value_too_large_for_float32_is_one_line_without_a_numpy_warning(tmp_path):
    import subprocess

    x = np.full((50, 4), 0.5)
    x[7, 2] = 1e300  # float64: overflows to inf when read as float32
    p = tmp_path / "big.npy"
    np.save(p, x)
    # a subprocess: pytest would capture the warning itself
    proc = subprocess.run([sys.executable, "-m", "sparseae", *train_args(p, tmp_path / "r")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "default"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "row 7, column 2" in proc.stderr and "Warning" not in proc.stderr
