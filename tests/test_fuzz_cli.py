"""Property-based tests of the command line (hypothesis): whatever the flags and whatever is done to a run
folder's files, `sparseae` ends with exit code 0, or with exit code 2 and one line on stderr, never a
traceback, and no file outside what the command was asked to write changes.

Generated: flag values for `train --check` (which checks everything `train` checks and writes nothing),
and corruptions of config.json (`eval`), checkpoint/state.json (`train --resume --check`), metrics.csv
(`report`) and the data file (`eval`). Derandomised, so CI sees the same examples every run.
"""
from __future__ import annotations

import io
import json
import shutil
import tempfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparseae.cli import main
from sparseae.cli.args import CONFIG_FLAGS

from cli_helpers import digest

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
TINY = ["--hidden", "6", "--epochs", "2", "--batch-size", "32", "--quiet"]


def call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own exit
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _not_json(word: str) -> None:
    raise AssertionError(f"{word} is not JSON")  # json.loads takes NaN/Infinity unless told otherwise


def assert_clean_ending(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 2:
        assert err.count("\n") == 1 and "error" in err, err


@pytest.fixture(scope="module")
def workspace():
    root = Path(tempfile.mkdtemp(prefix="sparseae-fuzz-"))
    rng = np.random.default_rng(0)
    np.save(root / "data.npy", (rng.random((200, 12)) * 0.8 + 0.1).astype(np.float32))
    code, _, err = call(["train", "--dataset", "array", "--data", str(root / "data.npy"), *TINY,
                         "--out", str(root / "run")])
    assert code == 0, err
    yield root
    shutil.rmtree(root, ignore_errors=True)


# --- generated flag values ---------------------------------------------------------------------------

TRAIN_FLAGS = sorted(f for f in CONFIG_FLAGS if f not in ("--dataset", "--data", "--data-dir", "--data-key"))
WORDS = ["yes", "no", "relu", "sigmoid", "linear", "topk", "batchtopk", "none", "kl", "l1", "sgd", "lbfgs",
         "auto", "cpu", "cuda", "zca", "standardize", "", "nan", "-inf", "1e400", "3,4", "0", "-1", "abc", "8,0"]
VALUES = st.one_of(st.sampled_from(WORDS), st.integers(-5, 2**70).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))


@settings(max_examples=220, **SETTINGS)
@given(st.lists(st.tuples(st.sampled_from(TRAIN_FLAGS), VALUES), max_size=4))
def test_any_flags_end_cleanly_and_write_nothing(workspace, flags):
    before = digest(workspace)
    argv = ["train", "--dataset", "array", "--data", str(workspace / "data.npy"), *TINY,
            "--out", str(workspace / "new-run"), "--check"]
    for flag, value in flags:
        argv += [flag, value]
    code, out, err = call(argv)
    assert_clean_ending(code, err)
    if code == 0:
        assert out.startswith("would train")
    assert digest(workspace) == before and not (workspace / "new-run").exists()


# --- corrupted files ---------------------------------------------------------------------------------

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65), st.floats(allow_nan=False),
                        st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3)), max_leaves=6)


def _paths(doc, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def mutate_json(data, doc):
    """One random change: a value replaced, a key removed, an unknown key added, or the whole document."""
    paths = list(_paths(doc))
    path = data.draw(st.sampled_from(paths))
    kind = data.draw(st.sampled_from(["replace", "delete", "add", "whole"]))
    if kind == "whole" or not path:
        return data.draw(JSON_VALUES)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if kind == "replace":
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif kind == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=6))] = data.draw(JSON_VALUES)
    return doc


@contextmanager
def copy_run(workspace) -> Iterator[tuple[Path, Path]]:
    """A fresh copy of the prepared run folder, removed afterwards: (its folder, the run)."""
    tmp = Path(tempfile.mkdtemp(prefix="case-", dir=workspace))
    shutil.copytree(workspace / "run", tmp / "run")
    try:
        yield tmp, tmp / "run"
    finally:
        shutil.rmtree(tmp)


def corrupt_json_file(data, path: Path) -> None:
    doc = mutate_json(data, json.loads(path.read_text()))
    path.write_text(json.dumps(doc))


@settings(max_examples=110, **SETTINGS)
@given(st.data())
def test_a_corrupted_config_json_ends_cleanly(workspace, data):
    with copy_run(workspace) as (tmp, run):
        corrupt_json_file(data, run / "config.json")
        before = digest(tmp)
        code, _, err = call(["eval", str(run), "--device", "cpu"])
        assert_clean_ending(code, err)
        assert digest(tmp) == before


@settings(max_examples=110, **SETTINGS)
@given(st.data())
def test_a_corrupted_state_json_ends_cleanly(workspace, data):
    with copy_run(workspace) as (tmp, run):
        corrupt_json_file(data, run / "checkpoint" / "state.json")
        before = digest(tmp)
        code, _, err = call(["train", "--resume", str(run), "--check", "--quiet"])
        assert_clean_ending(code, err)
        assert digest(tmp) == before


CSV_CELLS = st.one_of(st.sampled_from(["", "nan", "inf", "-1", "x", "1e999", "0.5", '"', "a,b"]),
                      st.floats(allow_nan=True).map(repr), st.text(max_size=5))


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_a_corrupted_metrics_csv_ends_cleanly(workspace, data):
    with copy_run(workspace) as (tmp, run):
        rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
        for _ in range(data.draw(st.integers(1, 4))):
            r = data.draw(st.integers(0, len(rows) - 1))
            if rows[r]:
                rows[r][data.draw(st.integers(0, len(rows[r]) - 1))] = data.draw(CSV_CELLS)
        if data.draw(st.booleans()):
            rows = rows[: data.draw(st.integers(0, len(rows)))]
        (run / "metrics.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
        before = digest(tmp)
        code, _, err = call(["report", str(run), "--out", str(tmp / "report.html")])
        assert_clean_ending(code, err)
        after = digest(tmp)
        after.pop("report.html", None)  # the one file it was asked to write
        assert after == before


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_a_corrupted_data_file_ends_cleanly(workspace, data):
    with copy_run(workspace) as (tmp, run):
        raw = bytearray((workspace / "data.npy").read_bytes())
        kind = data.draw(st.sampled_from(["truncate", "flip", "header"]))
        if kind == "truncate":
            raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
        else:
            hi = 128 if kind == "header" else len(raw)
            for _ in range(data.draw(st.integers(1, 8))):
                raw[data.draw(st.integers(0, hi - 1))] = data.draw(st.integers(0, 255))
        config = json.loads((run / "config.json").read_text())
        config["train"]["data"] = str(tmp / "data.npy")
        (run / "config.json").write_text(json.dumps(config))
        (tmp / "data.npy").write_bytes(bytes(raw))
        before = digest(tmp)
        code, out, err = call(["eval", str(run), "--device", "cpu"])
        assert_clean_ending(code, err)
        if code == 0:  # a flipped value may still be a number: then the report is strict JSON, maybe with null
            json.loads(out, parse_constant=_not_json)
        assert digest(tmp) == before


# --- --overwrite at decoy folders, file flags at a run's own files (run/output.py) ----------------------

# names no run folder holds: they start with "u" and have no dot (not a temp file, not a picture)
FOREIGN_NAMES = st.text("abcxyz019_-", min_size=1, max_size=8).map(lambda s: "u" + s)
PLACES = st.sampled_from(["", ".", "checkpoint/"])  # "." makes it a dotfile


@settings(max_examples=40, **SETTINGS)
@given(st.lists(st.tuples(PLACES, FOREIGN_NAMES, st.sampled_from(["file", "folder", "link"])), min_size=1,
                max_size=3, unique_by=lambda t: t[0] + t[1]))
def test_overwrite_refuses_a_run_folder_holding_anything_sparseae_did_not_write(workspace, added):
    with copy_run(workspace) as (tmp, run):
        names = []
        for place, name, kind in added:
            path = run / (place.replace(".", "") + ("." if place == "." else "") + name)
            if kind == "file":
                path.write_text("mine")
            elif kind == "folder":
                path.mkdir()
            else:
                path.symlink_to(workspace / "data.npy")
            names.append(path.name)
        before = digest(tmp)
        code, _, err = call(["train", "--dataset", "array", "--data", str(workspace / "data.npy"), *TINY,
                             "--out", str(run), "--overwrite", "--check"])
        assert_clean_ending(code, err)
        assert code == 2 and any(n in err for n in names), err
        assert digest(tmp) == before


FILE_FLAGS = [lambda run, f: ["probe", str(run), "--csv", str(f)],
              lambda run, f: ["cluster", "--graph", "karate", "--json", str(f)],
              lambda run, f: ["report", str(run), "--out", str(f)],
              lambda run, f: ["monitor", "--json", str(f)]]


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_a_file_flag_never_writes_a_run_folders_file(workspace, data):
    with copy_run(workspace) as (tmp, run):
        target = data.draw(st.sampled_from(sorted(p for p in run.rglob("*") if p.is_file())))
        argv = data.draw(st.sampled_from(FILE_FLAGS))(run, target)
        if data.draw(st.booleans()):
            argv.append("--overwrite")
        before = digest(tmp)
        code, _, err = call(argv)
        assert_clean_ending(code, err)
        assert code == 2 and "sparseae wrote" in err, err
        assert digest(tmp) == before
