"""Monitoring: time-lagged inputs, the persistence rule, detection delays, calibrated limits, contributions."""
import numpy as np
import pytest

from sparseae.apps.monitor import (AutoencoderModel, Monitor, PCAModel, alarm_window, calibrated_limit,
                                   detection_delay, lagged, persistent, rates)
from sparseae.errors import SparseAEError


def test_lagged_rows_stack_their_predecessors_newest_first():
    x = np.array([[1, 10], [2, 20], [3, 30], [4, 40]], dtype=float)
    assert np.array_equal(lagged(x, 1), [[2, 20, 1, 10], [3, 30, 2, 20], [4, 40, 3, 30]])
    assert np.array_equal(lagged(x, 2), [[3, 30, 2, 20, 1, 10], [4, 40, 3, 30, 2, 20]])
    assert lagged(x, 0) is x


def test_persistence_rule_by_hand():
    e = np.array([1, 1, 0, 1, 1, 1, 0, 1], dtype=bool)
    assert persistent(e, 1).tolist() == e.tolist()
    assert persistent(e, 2).astype(int).tolist() == [0, 1, 0, 0, 1, 1, 0, 0]
    assert persistent(e, 3).astype(int).tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    assert not persistent(e, 4).any()


def test_rates_skip_the_rows_without_a_statistic_and_the_delay_counts_from_the_onset():
    alarms = np.array([1, 0, 1, 0, 0, 1, 1], dtype=bool)
    far, fdr = rates(alarms, onset=3, start=1)  # row 0 has no statistic: FAR over rows 1, 2; FDR over 3..6
    assert far == pytest.approx(1 / 2) and fdr == pytest.approx(2 / 4)
    assert detection_delay(alarms, 3) == 2 and detection_delay(alarms, None) is None
    assert detection_delay(np.zeros(5, dtype=bool), 2) is None
    window = alarm_window({"t2": alarms, "spe": np.array([0, 0, 0, 1, 0, 0, 0], dtype=bool)}, onset=3, size=2)
    assert window.tolist() == [3, 5]


def test_calibrated_limit_by_hand():
    v = np.arange(1.0, 11.0)  # 1 .. 10
    assert calibrated_limit([v], 0.2) == 8.0  # 9 and 10 exceed: 2 of 10
    assert calibrated_limit([v], 0.1) == 9.0
    assert calibrated_limit([v], 0.0) == 10.0
    # two consecutive exceedances: at limit 8 only row 9 alarms (1 of 10); at 7, rows 8 and 9 (2 of 10)
    assert calibrated_limit([v], 0.1, persist=2) == 8.0
    # rows without a statistic (NaN) count in no share; two runs pool their rows
    assert calibrated_limit([np.r_[np.nan, v[:5]], v[5:]], 0.2) == 8.0
    # "the 99th percentile of 960 rows": the 10th largest value (9 rows above it, 0.94% <= 1%)
    w = np.random.default_rng(0).normal(size=960)
    assert calibrated_limit([w], 0.01) == np.sort(w)[-10]


MIX = np.random.default_rng(0).normal(size=(3, 6))  # one process: three latent factors, six sensors


def _process(seed=3, n=300, bias_at=None, bias=2.5):
    rng = np.random.default_rng(seed)
    mix = MIX
    x = rng.normal(size=(n, 3)) @ mix + 0.1 * rng.normal(size=(n, 6))
    if bias_at is not None:
        x[bias_at:, 2] += bias  # a bias on variable 3 breaks the correlations
    return x


def test_lagged_pca_is_pca_on_the_lagged_rows():
    normal, test = _process(), _process(4, 120)
    dyn = Monitor(PCAModel(4), lags=2).fit(normal)
    plain = Monitor(PCAModel(4)).fit(lagged(normal, 2))
    got, ref = dyn.statistics(test), plain.statistics(lagged(test, 2))
    for s in ("t2", "spe"):
        assert np.isnan(got[s][:2]).all() and np.array_equal(got[s][2:], ref[s])
    assert dyn.limits == plain.limits and dyn.n_variables == 6
    # two normal runs: no lagged row joins the end of one to the start of the other
    two = Monitor(PCAModel(4), lags=1).fit([normal[:150], normal[150:]])
    one = Monitor(PCAModel(4)).fit(np.vstack([lagged(normal[:150], 1), lagged(normal[150:], 1)]))
    assert two.n_fit_ == 298 and np.array_equal(two.scaler_.mean_, one.scaler_.mean_)


def test_score_applies_the_rule_and_reports_delays():
    mon = Monitor(PCAModel(3), persist=3).fit(_process())
    test = _process(5, 200, bias_at=100)
    sc = mon.score(test, onset=100)
    for s in ("t2", "spe"):
        assert np.array_equal(sc.exceeds[s], sc.statistics[s] > mon.limits[s])
        assert np.array_equal(sc.alarms[s], persistent(sc.exceeds[s], 3))
    summary = sc.summary()
    e = sc.exceeds["spe"]
    first = next(i for i in range(100, 200) if e[i - 2:i + 1].all())  # three rows above the limit, from the onset
    assert summary["spe_fdr"] > 0.9 and summary["spe_delay"] == first - 100
    assert summary["spe_fdr"] == pytest.approx(sc.alarms["spe"][100:].mean())
    one = mon.score(test, 100, persist=1).summary()
    assert one["spe_delay"] == int(np.flatnonzero(e[100:])[0]) and one["spe_fdr"] >= summary["spe_fdr"]
    with pytest.raises(SparseAEError, match="persist must be an integer >= 1"):
        mon.score(test, 100, persist=0)


def test_calibrate_sets_the_limits_on_other_normal_rows():
    mon = Monitor(PCAModel(3), lags=1).fit(_process())
    other = _process(6, 400)
    mon.calibrate([other], far=0.05, persist=2)
    alarms = mon.score(other).alarms
    for s in ("t2", "spe"):
        assert alarms[s][1:].mean() <= 0.05  # row 0 has no statistic (1 lag)
        lower = np.nextafter(mon.limits[s], -np.inf)  # any lower limit raises more than 5%
        assert persistent(np.nan_to_num(mon.statistics(other)[s], nan=-1) > lower, 2)[1:].mean() > 0.05
    assert mon.calibration == {"far": 0.05, "persist": 2, "rows": 399} and mon.persist == 2


def test_monitor_refuses_rows_with_missing_values_and_too_few_rows():
    mon = Monitor(PCAModel(3), lags=2).fit(_process())
    bad = _process(7, 50)
    bad[17, 4] = np.nan
    with pytest.raises(SparseAEError, match=r"data row 18 has nan in x5 \(1 rows"):
        mon.statistics(bad)
    with pytest.raises(SparseAEError, match="2 lags need at least 3"):
        mon.statistics(_process(7, 2))
    with pytest.raises(SparseAEError, match="lags must be an integer >= 0"):
        Monitor(PCAModel(3), lags=-1).fit(_process())


# --- contributions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("lags", [0, 1])
def test_spe_contributions_add_up_and_t2_matches_the_pca_closed_form(lags):
    mon = Monitor(PCAModel(3), lags=lags).fit(_process())
    test = _process(8, 160, bias_at=80)
    rows = np.arange(70, 100)
    c = mon.contributions(test, rows)
    assert c["spe"].shape == c["t2"].shape == (30, 6)
    assert np.allclose(c["spe"].sum(1), mon.statistics(test)["spe"][rows], rtol=1e-12)
    # T^2 = u^T S u, u = W x + b (PCA scores minus their training mean): RBC_j = (xi^T W^T S u)^2 / (xi^T W^T S W xi)
    xs = mon.prepare(test)[rows - lags]
    w = mon.model.pca_.components_
    u = xs @ w.T - mon.model.pca_.mean_ @ w.T - mon.code_mean_
    a = np.tile(np.eye(6), (1, lags + 1)) @ w.T  # (variables, components)
    s = mon.code_precision_
    rbc = (u @ s @ a.T) ** 2 / np.einsum("ja,ab,jb->j", a, s, a)
    assert np.allclose(c["t2"], rbc, rtol=1e-7, atol=1e-9)


def test_the_biased_sensor_contributes_most():
    names = [f"v{j}" for j in range(1, 7)]
    test = _process(9, 200, bias_at=100, bias=4.0)
    for model in (PCAModel(3), AutoencoderModel(hidden=4, activation="relu", penalty="l1", beta=0.001, epochs=20,
                                                batch_size=32, lr=0.01)):
        mon = Monitor(model).fit(_process(), names)
        sc = mon.score(test, onset=100)
        assert sc.summary()["spe_fdr"] > 0.9  # a bias across the correlations: SPE sees it
        rows = alarm_window(sc.alarms, 100, 30)
        assert len(rows) == 30
        c = mon.contributions(test, rows)
        assert names[int(np.argmax(c["spe"].mean(0)))] == "v3"


def test_autoencoder_t2_contribution_is_the_searched_minimum():
    mon = Monitor(AutoencoderModel(hidden=4, activation="relu", penalty="l1", beta=0.001, epochs=10, batch_size=32,
                                   lr=0.01)).fit(_process())
    test = _process(10, 60, bias_at=30)
    rows = np.array([40, 50])
    c = mon.contributions(test, rows)["t2"]
    xs = mon.prepare(test)[rows]
    t2 = mon.statistics(test)["t2"][rows]
    f = np.linspace(-20, 20, 4001)  # brute force on a fine grid: the search finds at least as low a T^2
    for i in range(2):
        for j in range(6):
            moved = np.repeat(xs[i:i + 1], len(f), 0)
            moved[:, j] -= f
            brute = t2[i] - mon._t2(moved).min()
            assert c[i, j] >= brute - 1e-6 * max(1.0, t2[i])
            assert c[i, j] <= t2[i] + 1e-9
