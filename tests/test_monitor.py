import json
import os

import numpy as np
import pytest
from scipy import stats

from sparseae.cli import main
from sparseae.apps.monitor import (Monitor, PCAModel, kde_limit, rates, spe_theory_limit, t2_theory_limit)


def test_rates_before_and_after_onset():
    alarms = np.array([0, 1, 0, 0, 1, 1, 0, 1], dtype=bool)
    far, fdr = rates(alarms, onset=4)
    assert far == pytest.approx(1 / 4) and fdr == pytest.approx(3 / 4)
    far, fdr = rates(alarms, onset=None)  # all rows normal
    assert far == pytest.approx(4 / 8) and np.isnan(fdr)


def test_kde_limit_is_the_quantile_of_a_large_sample():
    x = np.random.default_rng(0).normal(size=20000)
    assert kde_limit(x, 0.99) == pytest.approx(stats.norm.ppf(0.99), abs=0.06)
    assert kde_limit(np.full(10, 3.0), 0.99) == 3.0


def test_theoretical_limits_by_hand():
    n, a, alpha = 400, 15, 0.99
    hand = a * (n - 1) * (n + 1) / (n * (n - a)) * stats.f.ppf(alpha, a, n - a)
    assert t2_theory_limit(n, a, alpha) == pytest.approx(hand, rel=1e-12)
    # SPE: g chi2_h with g = var / (2 mean), h = 2 mean^2 / var; for chi2_k data g ~ 1, h ~ k
    spe = np.random.default_rng(1).chisquare(7, size=200000)
    assert spe_theory_limit(spe, alpha) == pytest.approx(stats.chi2.ppf(alpha, 7), rel=0.02)


def test_pca_t2_and_spe_match_the_definitions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 6)) + 0.1 * rng.normal(size=(300, 6))
    mon = Monitor(PCAModel(2), limit_method="theory").fit(x)
    xs = (x - x.mean(0)) / x.std(0)
    u, s, vt = np.linalg.svd(xs - xs.mean(0), full_matrices=False)
    t = (xs - xs.mean(0)) @ vt[:2].T
    t2 = (t ** 2 / t.var(0, ddof=1)).sum(1)
    spe = ((xs - xs.mean(0) - t @ vt[:2]) ** 2).sum(1)
    got = mon.statistics(x)
    assert np.allclose(got["t2"], t2) and np.allclose(got["spe"], spe)
    assert mon.limits["t2"] == pytest.approx(t2_theory_limit(300, 2, 0.99))


def _write_process(tmp_path, onset=100):
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(4, 8))
    normal = rng.normal(size=(400, 4)) @ mix + 0.1 * rng.normal(size=(400, 8))
    test = rng.normal(size=(200, 4)) @ mix + 0.1 * rng.normal(size=(200, 8))
    test[onset:, 2] += 3.0  # a sensor bias: breaks the correlation structure
    np.save(tmp_path / "normal.npy", normal.astype(np.float32))
    np.savetxt(tmp_path / "test.csv", test, delimiter=",", header=",".join(f"v{i}" for i in range(8)),
               comments="")
    return tmp_path / "normal.npy", tmp_path / "test.csv"


def test_monitor_cli_on_user_files(tmp_path, capsys):
    normal, test = _write_process(tmp_path)
    rc = main(["monitor", "--normal", str(normal), "--test", str(test), "--onset", "100", "--hidden", "8",
               "--epochs", "100", "--lr", "0.01", "--beta", "0.001", "--pca-components", "4", "--pca-lags", "0",
               "--json", str(tmp_path / "m.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "SAE T2" in out and "PCA SPE" in out and "test.csv" in out
    assert "which to use: PCA's T2" in out  # the command says which monitor the benchmark favours, and why
    res = json.loads((tmp_path / "m.json").read_text())
    row = res["rows"][0]
    assert row["PCA_spe_fdr"] > 0.9 and row["SAE_spe_fdr"] > 0.9  # the bias is obvious to both
    assert row["PCA_spe_far"] < 0.1 and row["SAE_spe_far"] < 0.1
    assert set(res["limits"]["SAE"]) == {"t2", "spe"}


def test_monitor_test_file_with_other_columns_is_refused(tmp_path, capsys):
    normal, _ = _write_process(tmp_path)
    np.save(tmp_path / "bad.npy", np.zeros((50, 7), dtype=np.float32))
    rc = main(["monitor", "--normal", str(normal), "--test", str(tmp_path / "bad.npy"), "--onset", "10"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.npy has 7 columns but the normal data has 8" in err and "Traceback" not in err


def test_monitor_unknown_data_set_and_bad_limit(capsys):
    assert main(["monitor", "--dataset", "chemplant"]) == 2
    assert "unknown monitoring data set 'chemplant'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["monitor", "--limit", "bootstrap"])
    assert e.value.code == 2


def test_monitor_onset_outside_the_file(tmp_path, capsys):
    normal, test = _write_process(tmp_path)
    assert main(["monitor", "--normal", str(normal), "--test", str(test), "--onset", "999"]) == 2
    assert "onset 999 is outside" in capsys.readouterr().err


@pytest.fixture
def tep():
    """(the Tennessee Eastman data module, the folder of its files); skips where bibmon is not installed."""
    te = pytest.importorskip("sparseae.data.tennessee_eastman")
    try:
        root = te.locate()
    except Exception:
        pytest.skip("bibmon (Tennessee Eastman data) not installed")
    return te, root


def test_tennessee_eastman_files(tep):
    te, root = tep
    normal = te.load_normal(root)
    assert normal.shape == (500, 52)  # d00.dat is stored transposed
    assert te.load_test(root, 0).shape == (960, 52)
    assert te.load_test(root, 21).shape == (960, 52)
    # d00.dat rows are consistent with the d00_te test rows (same variables, same order)
    z = (te.load_test(root, 0).mean(0) - normal.mean(0)) / normal.std(0)
    assert np.abs(z).max() < 1.0


def test_tep_pca_baseline_reproduces_the_reference(tep):
    te, root = tep
    # ANCHORS.md section 7: 15 components, autoscaled, theoretical 99% limits: FAR 1.9% T2, 11% SPE
    mon = Monitor(PCAModel(15), limit_method="theory").fit(te.load_normal(root))
    alarms = mon.alarms(te.load_test(root, 0))
    assert alarms["t2"].mean() == pytest.approx(0.019, abs=0.003)
    assert alarms["spe"].mean() == pytest.approx(0.11, abs=0.005)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARSEAE_SLOW_TESTS"),
                    reason="trains on the Tennessee Eastman data (about a minute on 2 busy cores); "
                           "set SPARSEAE_SLOW_TESTS=1")
def test_tep_acceptance(tmp_path, tep, capsys):
    # the documented command (docs/monitoring.md), defaults: the PCA monitor it recommends (dynamic PCA's T2)
    # detects more than either statistic of the autoencoder, at at most 5% false alarms on d00_te
    assert main(["monitor", "--json", str(tmp_path / "tep.json")]) == 0
    assert "which to use: PCA's T2" in capsys.readouterr().out
    res = json.loads((tmp_path / "tep.json").read_text())
    d00 = next(r for r in res["rows"] if r["file"] == "d00_te")
    mean = res["mean"]
    assert len(res["mean_over"]) == 18 and (res["pca_lags"], res["pca_components"]) == (3, 200)
    assert d00["SAE_t2_far"] <= 0.05 and d00["PCA_t2_far"] <= 0.05
    for sae in ("SAE_t2", "SAE_spe"):
        assert mean["PCA_t2_fdr"] > mean[f"{sae}_fdr"]


def test_tep_one_shot_pca_numbers_are_todays(tmp_path, tep):
    # `sparseae monitor --epochs 3 --faults 0,1,5,6` before the monitor folder, lags and alarm rules
    # existed (commit c0ba093): the PCA columns, which no training run changes. The limits come from
    # LAPACK (SVD) and a KDE root: equal to a relative 1e-9, not to the last digit, which differs by CPU
    # vendor (37.33488871394014 on AMD EPYC); the alarm counts are integers and stay exact.
    # The default PCA monitor is dynamic PCA since; these are PCA with 15 components and no lags.
    assert main(["monitor", "--epochs", "3", "--faults", "0,1,5,6", "--pca-components", "15", "--pca-lags", "0",
                 "--json", str(tmp_path / "m.json")]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["limits"]["PCA"] == {"t2": pytest.approx(28.69935238388639, rel=1e-9),
                                    "spe": pytest.approx(37.33488871394013, rel=1e-9)}
    counts = {r["file"]: [r[f"PCA_{s}_{k}"] * (960 if r["file"] == "d00_te" else 160 if k == "far" else 800)
                          for s in ("t2", "spe") for k in ("far", "fdr") if r[f"PCA_{s}_{k}"] is not None]
              for r in res["rows"]}
    assert {f: [round(c, 9) for c in v] for f, v in counts.items()} == {
        "d00_te": [37, 61], "d01_te": [0, 796, 10, 798], "d05_te": [2, 244, 9, 269], "d06_te": [1, 795, 1, 800]}


def _same_rows(a, b):
    """JSON rows equal, NaN included."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == rb[k] or (ra[k] != ra[k] and rb[k] != rb[k]), (ra["file"], k, ra[k], rb[k])


@pytest.mark.parametrize("settings", [
    ["--epochs", "2"],  # the defaults (fewer epochs)
    ["--epochs", "2", "--lags", "1", "--persist", "3", "--calibrate", "d00_te", "--far", "0.05", "--holdout", "0"],
])
def test_tep_fit_then_score_gives_the_one_shot_numbers(tmp_path, tep, settings):
    assert main(["monitor", *settings, "--faults", "0,6", "--json", str(tmp_path / "one.json")]) == 0
    assert main(["monitor", "fit", *settings, "--out", str(tmp_path / "mon")]) == 0
    assert main(["monitor", "score", str(tmp_path / "mon"), "--dataset", "tep", "--faults", "0,6",
                 "--out", str(tmp_path / "s"), "--json", str(tmp_path / "two.json")]) == 0
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    _same_rows(one["rows"], two["rows"])
    assert one["limits"] == two["limits"]
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["contributions"]["d06_te"]["PCA"]["count"] == 50


def test_tep_contributions_name_the_root_cause(tep):
    # ANCHORS.md section 9: IDV(6) is the loss of the A feed (XMEAS(1) falls, XMV(3) saturates); IDV(4) a step
    # in the reactor cooling water inlet temperature (XMV(10) compensates; XMEAS(9) reactor temperature)
    from sparseae.apps.monitor import alarm_window

    te, root = tep
    mon = Monitor(PCAModel(15), holdout=0.2).fit(te.load_normal(root), te.COLUMNS)
    for fault, causes in ((6, {"XMEAS(1)", "XMV(3)"}), (4, {"XMV(10)", "XMEAS(9)"})):
        x = te.load_test(root, fault)
        rows = alarm_window(mon.score(x, te.TEST_ONSET).alarms, te.TEST_ONSET, 50)
        assert len(rows) == 50
        spe = mon.contributions(x, rows)["spe"].mean(0)
        assert te.COLUMNS[int(np.argmax(spe))] in causes


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARSEAE_SLOW_TESTS"),
                    reason="trains the default autoencoder on the Tennessee Eastman data; set SPARSEAE_SLOW_TESTS=1")
def test_tep_default_monitor_contributions_name_the_root_cause(tmp_path, tep):
    import csv

    # PCA with 15 components, no lags (the default PCA monitor's SPE has only its 8 smallest directions)
    assert main(["monitor", "fit", "--pca-components", "15", "--pca-lags", "0", "--out", str(tmp_path / "mon")]) == 0
    assert main(["monitor", "score", str(tmp_path / "mon"), "--dataset", "tep", "--faults", "4,6",
                 "--out", str(tmp_path / "s")]) == 0
    for name, causes in (("d06_te", {"XMEAS(1)", "XMV(3)"}), ("d04_te", {"XMV(10)", "XMEAS(9)"})):
        with open(tmp_path / "s" / f"{name}.contributions.csv", newline="") as f:
            top = {r["monitor"]: r["variable"] for r in csv.DictReader(f)
                   if r["statistic"] == "spe" and r["rank"] == "1"}
        assert set(top) == {"SAE", "PCA"} and set(top.values()) <= causes, (name, top)


def test_tep_benchmark_and_the_command_give_the_same_numbers(tmp_path, tep):
    # benchmarks/monitor_tep.py's protocol is `monitor fit --holdout 0 --calibrate d00_te --far F --persist N`
    # then `monitor score --dataset tep`: the same limits, the same detection and false-alarm rates
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import monitor_tep as bench

    te, root = tep
    common = ["--epochs", "2", "--holdout", "0", "--calibrate", "d00_te", "--far", "0.05", "--persist", "3"]
    assert main(["monitor", "fit", *common, "--lags", "1", "--hidden", "104", "--beta", "0.003",
                 "--pca-lags", "2", "--pca-components", "150", "--out", str(tmp_path / "mon")]) == 0
    assert main(["monitor", "score", str(tmp_path / "mon"), "--dataset", "tep", "--faults", "0,5,21",
                 "--out", str(tmp_path / "s"), "--json", str(tmp_path / "s.json")]) == 0
    rows = {r["file"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    data = bench.load(root)
    fitted = {"SAE": Monitor(bench.autoencoder(104, 0.003, 0, 2), holdout=0.0, lags=1).fit(data[0]),
              "PCA": Monitor(PCAModel(150), holdout=0.0, lags=2).fit(data[0])}
    for label, mon in fitted.items():
        got = bench.judged(mon, data, 0.05, 3)
        for s in ("t2", "spe"):
            assert rows["d00_te"][f"{label}_{s}_far"] == got[s]["far_d00te"] <= 0.05
            for f in (5, 21):
                assert rows[f"d{f:02d}_te"][f"{label}_{s}_fdr"] == got[s]["per_fault"][f], (label, s, f)
