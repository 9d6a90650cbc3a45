"""`sparseae monitor fit` / `score`: the monitor folder, its round trip, and what it refuses."""
import csv
import json
import shutil

import numpy as np
import pytest

from sparseae.apps.monitor import Monitor, PCAModel
from sparseae.apps.monitor_folder import load_folder
from sparseae.cli import main
from sparseae.errors import SparseAEError

NAMES = [f"v{i}" for i in range(1, 7)]
# PCA: static with 6 components (the default PCA monitor is dynamic PCA with 3 lags); with --lags 1 the tests
# give PCA the same lag
FAST = ["--hidden", "6", "--epochs", "30", "--lr", "0.01", "--beta", "0.001", "--pca-components", "6",
        "--pca-lags", "0"]


def _rows(seed, n, bias_at=None):
    mix = np.random.default_rng(0).normal(size=(3, 6))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) @ mix + 0.1 * rng.normal(size=(n, 6))
    if bias_at is not None:
        x[bias_at:, 2] += 4.0  # sensor v3 biased from row bias_at on
    return x


def _csv(path, x, names=NAMES):
    np.savetxt(path, x, delimiter=",", header=",".join(names), comments="")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("monitor")
    normal = _csv(d / "normal.csv", _rows(1, 300))
    test = _csv(d / "test.csv", _rows(2, 200, bias_at=100))
    return d, normal, test


@pytest.fixture(scope="module")
def fitted(files):
    d, normal, _ = files
    assert main(["monitor", "fit", "--normal", normal, "--out", str(d / "mon"), "--lags", "1", *FAST,
                 "--pca-lags", "1"]) == 0
    return d / "mon"


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_fit_then_score_gives_the_one_shot_numbers(files, fitted, tmp_path, capsys):
    d, normal, test = files
    assert main(["monitor", "--normal", normal, "--test", test, "--onset", "100", "--lags", "1", *FAST,
                 "--pca-lags", "1", "--json", str(tmp_path / "one.json")]) == 0
    assert main(["monitor", "score", str(fitted), test, "--onset", "100", "--out", str(tmp_path / "s"),
                 "--json", str(tmp_path / "two.json")]) == 0
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert one["rows"] == two["rows"] and one["limits"] == two["limits"]
    assert one["rows"][0]["SAE_spe_fdr"] > 0.9 and one["rows"][0]["PCA_spe_fdr"] > 0.9
    # the per-row file holds the loaded monitor's statistics, the first row (1 lag) none
    with open(tmp_path / "s" / "test.csv", newline="") as f:
        table = list(csv.DictReader(f))
    mon = Monitor.load(fitted / "SAE")
    rows = np.loadtxt(test, delimiter=",", skiprows=1).astype(np.float32)  # as array files are read
    stats = mon.statistics(rows)
    assert table[0]["SAE_t2"] == "" and len(table) == 200
    assert np.array_equal([float(r["SAE_spe"]) for r in table[1:]], stats["spe"][1:])
    assert [int(r["SAE_spe_alarm"]) for r in table] == (stats["spe"] > mon.limits["spe"]).astype(int).tolist()


def test_score_writes_charts_contributions_and_a_report(files, fitted, tmp_path, capsys):
    _, _, test = files
    out = tmp_path / "s"
    assert main(["monitor", "score", str(fitted), test, "--onset", "100", "--out", str(out), "--window", "20"]) == 0
    printed = capsys.readouterr().out
    assert "test.csv  SPE: v3" in printed  # the biased sensor comes first
    assert sorted(p.name for p in out.iterdir()) == [
        ".sparseae", "report.html", "summary.csv", "summary.json", "test.chart.png", "test.contributions.csv",
        "test.contributions.png", "test.csv"]
    assert (out / "test.chart.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "test.contributions.csv", newline="") as f:
        ranked = [r for r in csv.DictReader(f) if r["statistic"] == "spe" and r["rank"] == "1"]
    assert {r["monitor"]: r["variable"] for r in ranked} == {"SAE": "v3", "PCA": "v3"}
    assert all(r["alarm_rows"] == "20" and int(r["first_row"]) >= 100 for r in ranked)
    page = (out / "report.html").read_text()
    assert page.count("<img") == 2 and "data:image/png;base64," in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"][0]["file"] == test and summary["window"] == 20


def test_output_folders_are_never_replaced_by_surprise(files, fitted, tmp_path, capsys):
    d, normal, test = files
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["monitor", "fit", "--normal", normal, "--out", str(taken), *FAST]) == 2
    assert "already holds files" in _err_line(capsys) and (taken / "notes.txt").read_text() == "mine"
    assert main(["monitor", "score", str(fitted), test, "--out", str(taken)]) == 2
    assert "--overwrite" in _err_line(capsys) and (taken / "notes.txt").read_text() == "mine"
    # --overwrite replaces only a folder sparseae wrote: the notes stay (tests/test_ownership.py)
    assert main(["monitor", "fit", "--normal", normal, "--out", str(taken), "--overwrite", *FAST,
                 "--epochs", "1"]) == 2
    assert "notes.txt" in _err_line(capsys) and (taken / "notes.txt").read_text() == "mine"
    (taken / "notes.txt").unlink()
    assert main(["monitor", "fit", "--normal", normal, "--out", str(taken), *FAST, "--epochs", "1"]) == 0
    assert main(["monitor", "fit", "--normal", normal, "--out", str(taken), "--overwrite", *FAST,
                 "--epochs", "1"]) == 0
    assert sorted(p.name for p in taken.iterdir()) == [".sparseae", "PCA", "SAE", "monitors.json"]
    # without --out, score writes the first free MON_DIR/score-NNN
    mon = tmp_path / "mon"
    shutil.copytree(fitted, mon)
    for expected in ("score-001", "score-002"):
        assert main(["monitor", "score", str(mon), test]) == 0
        assert (mon / expected / "summary.csv").is_file()
    record, monitors = load_folder(mon)  # extra folders inside do not disturb it
    assert record.monitors == ["SAE", "PCA"] and monitors["PCA"].lags == 1


def test_runs_that_do_not_fit_the_monitor_exit_2_with_one_line(files, fitted, tmp_path, capsys):
    _, _, test = files
    np.save(tmp_path / "five.npy", np.zeros((50, 5)))
    assert main(["monitor", "score", str(fitted), str(tmp_path / "five.npy")]) == 2
    assert "five.npy has 5 columns but the normal data has 6" in _err_line(capsys)
    other = _csv(tmp_path / "other.csv", _rows(3, 50), NAMES[:2] + ["w3"] + NAMES[3:])
    assert main(["monitor", "score", str(fitted), other]) == 2
    assert "column 3 is 'w3' but the monitor's is 'v3'" in _err_line(capsys)
    x = _rows(3, 50)
    x[9, 4] = np.nan
    assert main(["monitor", "score", str(fitted), _csv(tmp_path / "gap.csv", x)]) == 2
    err = _err_line(capsys)
    assert "gap.csv" in err and "data row 10 has nan in v5" in err
    assert main(["monitor", "score", str(fitted), test, "--onset", "500"]) == 2
    assert "onset 500 is outside" in _err_line(capsys)
    assert main(["monitor", "score", str(fitted)]) == 2
    assert "nothing to score" in _err_line(capsys)


def _damaged(fitted, tmp_path, name, change):
    mon = tmp_path / name
    shutil.copytree(fitted, mon)
    change(mon)
    return str(mon)


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor data: the file still parses, its numbers do not
    path.write_bytes(bytes(data))


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("change, message", [
    (lambda m: _flip_byte(m / "SAE" / "monitor.safetensors"), "monitor.safetensors is damaged: its SHA-256"),
    (lambda m: (m / "monitors.json").write_text('{"format": "sparseae-monitor-folder", "vers'), "invalid JSON"),
    (lambda m: (m / "PCA" / "monitor.json").unlink(), "is not a monitor folder (no monitor.json)"),
    (lambda m: (m / "PCA" / "monitor.safetensors").write_bytes(b"\x00" * 3), "monitor.safetensors is damaged"),
    (lambda m: _edit_json(m / "SAE" / "monitor.json", lags=-1), "lags must be >= 0; got -1"),
    (lambda m: _edit_json(m / "SAE" / "monitor.json", limits={"t2": 1.0}), "limits must be finite numbers"),
    (lambda m: _edit_json(m / "monitors.json", monitors=["SAE", "../x"]), "monitors entries must be a plain name"),
])
def test_a_damaged_monitor_folder_exits_2_with_one_line(files, fitted, tmp_path, capsys, change, message):
    _, _, test = files
    mon = _damaged(fitted, tmp_path, "mon", change)
    assert main(["monitor", "score", mon, test, "--out", str(tmp_path / "s")]) == 2
    err = _err_line(capsys)
    assert message in err, err
    assert not (tmp_path / "s").exists()


def test_save_load_round_trip_is_exact_and_refuses_to_overwrite(tmp_path):
    mon = Monitor(PCAModel(3), lags=2, persist=2).fit(_rows(1, 300), NAMES)
    mon.calibrate([_rows(4, 300)], far=0.02)
    mon.save(tmp_path / "m")
    back = Monitor.load(tmp_path / "m")
    x = _rows(5, 100, bias_at=50)
    a, b = mon.score(x, 50), back.score(x, 50)
    for s in ("t2", "spe"):
        assert np.array_equal(a.statistics[s], b.statistics[s], equal_nan=True)
        assert np.array_equal(a.alarms[s], b.alarms[s])
    assert (back.limits, back.calibration, back.variables, back.persist) == (mon.limits, mon.calibration, NAMES, 2)
    with pytest.raises(SparseAEError, match="already holds a monitor"):
        mon.save(tmp_path / "m")
    mon.save(tmp_path / "m", overwrite=True)


def test_two_files_of_the_same_name_stay_two_rows(files, tmp_path, capsys):
    _, normal, _ = files
    for sub, bias_at in (("a", 60), ("b", None)):  # the fault is in a/run.npy only
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "run.npy", _rows(6, 120, bias_at=bias_at))
    a, b = str(tmp_path / "a" / "run.npy"), str(tmp_path / "b" / "run.npy")
    assert main(["monitor", "--normal", normal, "--test", a, b, "--onset", "60", "--lags", "1", *FAST,
                 "--pca-lags", "1", "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["file"] for r in rows] == [a, b]
    assert rows[0]["PCA_spe_fdr"] > 0.9 and rows[1]["PCA_spe_fdr"] < 0.1
    assert main(["monitor", "fit", "--normal", normal, "--out", str(tmp_path / "mon"), *FAST]) == 0
    assert main(["monitor", "score", str(tmp_path / "mon"), a, b, "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "run.csv").is_file() and (tmp_path / "s" / "run-2.csv").is_file()
    capsys.readouterr()
    assert main(["monitor", "--normal", normal, "--test", a, a, *FAST]) == 2
    assert "is given twice" in _err_line(capsys)


def test_flags_before_or_after_the_action_mean_the_same(files, fitted, tmp_path, capsys):
    from sparseae.cli import build_parser

    before = build_parser().parse_args(["monitor", "--epochs", "7", "fit", "--normal", "n.csv"])
    after = build_parser().parse_args(["monitor", "fit", "--normal", "n.csv", "--epochs", "7"])
    neither = build_parser().parse_args(["monitor", "fit", "--normal", "n.csv"])
    assert before.epochs == after.epochs == 7 and neither.epochs is None
    assert before.monitor_action == "fit" and neither.lags == 0 and neither.limit == "kde"
    # a flag of the one-shot command that the action does not take is refused, not ignored
    _, _, test = files
    assert main(["monitor", "--lags", "2", "score", str(fitted), test, "--out", str(tmp_path / "s")]) == 2
    assert "--lags does not apply to `monitor score`" in _err_line(capsys) and not (tmp_path / "s").exists()
