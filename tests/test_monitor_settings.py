"""MonitorSettings: the monitor commands' settings, one default each, checked once by name."""
from dataclasses import fields

import pytest

from sparseae.apps.monitor_settings import DEFAULTS, SETTINGS, MonitorSettings
from sparseae.cli import build_parser
from sparseae.errors import SparseAEError


def test_resolve_fills_the_defaults_and_keeps_what_is_given():
    assert MonitorSettings.resolve() == MonitorSettings()
    s = MonitorSettings.resolve(lags=2, persist=None, alpha=0.95, calibrate=["d00_te"], far=0.05)
    assert (s.lags, s.persist, s.alpha, s.calibrate, s.far) == (2, 1, 0.95, ["d00_te"], 0.05)
    assert (DEFAULTS.limit, DEFAULTS.alpha, DEFAULTS.holdout, DEFAULTS.lags, DEFAULTS.persist, DEFAULTS.far,
            DEFAULTS.pca_components, DEFAULTS.pca_lags, DEFAULTS.window) == ("kde", 0.99, 0.2, 0, 1, 0.01, None, 3, 50)
    assert SETTINGS == tuple(f.name for f in fields(MonitorSettings))


@pytest.mark.parametrize("given, message", [
    ({"persist": 0}, "persist must be >= 1; got 0"),
    ({"lags": -1}, "lags must be >= 0; got -1"),
    ({"alpha": 0.3}, r"alpha must be in \(0.5, 1\); got 0.3"),
    ({"alpha": 1.0}, r"alpha must be in \(0.5, 1\); got 1.0"),
    ({"holdout": 1.5}, r"holdout must be in \[0, 1\); got 1.5"),
    ({"far": 1.0, "calibrate": ["cal.csv"]}, r"far must be in \[0, 1\); got 1.0"),
    ({"limit": "bootstrap"}, "limit must be one of kde, theory; got 'bootstrap'"),
    ({"pca_components": 0}, "pca_components must be >= 1; got 0"),
    ({"window": 0}, "window must be >= 1; got 0"),
    ({"pca_lags": -1}, "pca_lags must be >= 0; got -1"),
    ({"lags": 1.5}, "lags must be an integer; got 1.5"),
    ({"calibrate": []}, "calibrate must not be empty"),
    ({"persit": 2}, "unknown key persit .*did you mean persist"),
])
def test_a_bad_setting_is_named_with_its_value_and_what_is_allowed(given, message):
    with pytest.raises(SparseAEError, match=message):
        MonitorSettings.resolve(**given)


def test_settings_built_in_python_are_checked_too():
    with pytest.raises(SparseAEError, match="persist must be >= 1; got 0"):
        MonitorSettings(persist=0)
    assert MonitorSettings(holdout=0).holdout == 0.0 and isinstance(MonitorSettings(holdout=0).holdout, float)


def test_far_without_calibration_runs_is_refused():
    with pytest.raises(SparseAEError, match=r"far \(--far\) sets the limits on the runs of calibrate"):
        MonitorSettings.resolve(far=0.05)


def test_record_keeps_far_only_when_it_set_the_limits():
    assert MonitorSettings.resolve(lags=1).record() == {
        "lags": 1, "persist": 1, "limit": "kde", "alpha": 0.99, "holdout": 0.2, "far": None, "pca_components": None,
        "pca_lags": 3}
    assert MonitorSettings.resolve(calibrate=["cal.csv"]).record()["far"] == 0.01


def test_the_command_line_takes_its_defaults_from_the_settings():
    from sparseae.cli.apps import _settings

    for argv in (["monitor"], ["monitor", "fit", "--normal", "n.csv"]):
        assert _settings(build_parser().parse_args(argv)) == DEFAULTS
    args = build_parser().parse_args(["monitor", "--lags", "2", "--persist", "3", "--calibrate", "c.csv",
                                      "--far", "0.05", "--pca-components", "4", "--pca-lags", "0"])
    assert _settings(args) == MonitorSettings(lags=2, persist=3, calibrate=["c.csv"], far=0.05, pca_components=4,
                                              pca_lags=0)
    score = build_parser().parse_args(["monitor", "score", "mon", "x.csv", "--window", "7"])
    assert score.persist is None and _settings(score).window == 7  # score: no --persist, the folder's rule


def test_the_pca_monitor_keeps_all_but_its_smallest_directions_unless_told():
    # TEP: 52 variables, 3 lags -> 208 lagged inputs, 200 components (the choice on the training runs)
    assert DEFAULTS.pca_width(52, 500) == 200
    assert MonitorSettings(pca_lags=0).pca_width(52, 500) == 44
    assert MonitorSettings(pca_lags=0).pca_width(5, 500) == 1  # never fewer than one
    assert MonitorSettings(pca_components=15).pca_width(52, 500) == 15
    # fewer than the fitting rows: 103 rows, 3 lags -> 100 lagged rows, holdout 0.2 -> 80 to fit, 79 components
    assert DEFAULTS.pca_width(52, 103) == 79
