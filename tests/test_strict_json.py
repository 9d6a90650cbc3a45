"""Every JSON file sparseae writes and every JSON it prints is strict JSON (issue 20): no NaN or
Infinity, which Python's json writes and reads by default but other parsers refuse. A number that
could not be computed (a detection rate without an onset, a delay without a detection) is null."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sparseae.cli import main
from sparseae.run.files import json_plain, to_json_text


def _not_json(word: str):
    raise AssertionError(f"{word} is not JSON")


def strict(text: str):
    return json.loads(text, parse_constant=_not_json)


def every_json_file(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.rglob("*.json") if p.is_file())
    for p in found:
        strict(p.read_text(encoding="utf-8"))
    return found


def test_non_finite_numbers_become_null():
    obj = {"a": math.nan, "b": [math.inf, -math.inf, 1.5, (np.float32(np.nan), np.float64(2.0))],
           "c": np.int64(3), "d": True, "e": None, "f": "NaN"}
    assert json_plain(obj) == {"a": None, "b": [None, None, 1.5, [None, 2.0]], "c": 3, "d": True, "e": None,
                               "f": "NaN"}
    text = to_json_text(obj)
    assert text.endswith("\n") and strict(text)["b"][3] == [None, 2.0]
    assert strict(to_json_text({"x": [1, math.nan]}, compact=True)) == {"x": [1, None]}
    assert to_json_text({"x": 0.1}) == json.dumps({"x": 0.1}, indent=2) + "\n"  # finite numbers as before


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("strict")
    rng = np.random.default_rng(0)
    np.save(d / "d.npy", (rng.random((600, 12)) * 0.8 + 0.1).astype(np.float32))
    return d


def test_train_eval_stack_sweep_write_strict_json(folder, capsys):
    data = ["--dataset", "array", "--data", str(folder / "d.npy"), "--quiet"]
    run = folder / "run"
    assert main(["train", *data, "--limit-train", "500", "--epochs", "1", "--hidden", "16", "--out", str(run)]) == 0
    names = {p.relative_to(run).as_posix() for p in every_json_file(run)}
    assert {"config.json", "summary.json", "checkpoint/state.json"} <= names
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    report = strict(capsys.readouterr().out)
    assert report["examples"] > 0 and math.isfinite(report["mse"])
    assert main(["stack", *data, "--hidden", "8,4", "--epochs", "1", "--out", str(folder / "stack")]) == 0
    assert len(every_json_file(folder / "stack")) >= 6  # the stack, greedy/ and each layer: config and summary
    assert main(["sweep", *data, "--hidden", "8", "--k-grid", "2", "--epochs", "1", "--pca", "no",
                 "--out", str(folder / "sweep")]) == 0
    assert every_json_file(folder / "sweep")


def _process_csv(path: Path, seed: int, n: int, bias_at: int | None = None) -> str:
    mix = np.random.default_rng(0).normal(size=(3, 6))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) @ mix + 0.1 * rng.normal(size=(n, 6))
    if bias_at is not None:
        x[bias_at:, 2] += 4.0
    np.savetxt(path, x, delimiter=",", header=",".join(f"v{i}" for i in range(6)), comments="")
    return str(path)


def test_monitor_json_is_strict_where_a_rate_is_undefined(folder):
    normal = _process_csv(folder / "normal.csv", 1, 300)
    test = _process_csv(folder / "test.csv", 2, 200, bias_at=100)
    fast = ["--hidden", "6", "--epochs", "5", "--lr", "0.01", "--beta", "0.001", "--pca-components", "6"]
    # without --onset every row is normal: the detection rates and delays are not numbers
    assert main(["monitor", "--normal", normal, "--test", test, *fast, "--json", str(folder / "one.json")]) == 0
    one = strict((folder / "one.json").read_text())
    assert one["rows"][0]["PCA_spe_fdr"] is None
    mon = folder / "mon"
    assert main(["monitor", "fit", "--normal", normal, "--out", str(mon), *fast]) == 0
    assert {p.name for p in every_json_file(mon)} >= {"monitors.json", "monitor.json"}
    score = folder / "score"
    assert main(["monitor", "score", str(mon), test, "--out", str(score), "--json", str(folder / "two.json")]) == 0
    two = strict((folder / "two.json").read_text())
    assert two["rows"][0]["PCA_spe_fdr"] is None
    assert "summary.json" in {p.name for p in every_json_file(score)}


def test_cluster_json_is_strict(folder):
    s = np.zeros((8, 8))
    s[:4, :4] = s[4:, 4:] = 1
    np.fill_diagonal(s, 0)
    s[3, 4] = s[4, 3] = 1  # one edge between the two cliques: a connected graph
    np.save(folder / "graph.npy", s)
    assert main(["cluster", "--graph", str(folder / "graph.npy"), "--clusters", "2", "--hidden", "4",
                 "--epochs", "20", "--restarts", "1", "--json", str(folder / "c.json")]) == 0
    strict((folder / "c.json").read_text())
