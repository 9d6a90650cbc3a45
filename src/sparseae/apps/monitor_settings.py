"""The settings of `sparseae monitor` (one-shot, fit and score): one record, one default each.

`MonitorSettings.resolve` fills what was not given from the defaults and checks everything once,
before any data is read: a bad value is refused with a message that names the setting, the value and
what is allowed. The command line takes its defaults (and their help) from here, so this module stays
light: the standard library and the schema only, no numpy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import families
from ..config import LIMIT_METHODS
from ..errors import SparseAEError
from ..schema import build, check_fields, param

# The monitor's autoencoder (docs/monitoring.md): one layer of 52 ReLU units, L1 penalty, 300 epochs
# of Adam at batch 32; the estimator's linear decoder. The sections of a RunConfig it starts from.
AUTOENCODER_START = {"model": {"hidden": [52], "activation": "relu"},
                     "sparsity": {"penalty": families.L1, "rho": 0.05, "beta": 0.01, "weight_decay": 0.0},
                     "train": {"dataset": "tep", "epochs": 300, "batch_size": 32, "lr": 1e-3, "seed": 0}}

# The PCA monitor: dynamic PCA with 3 lags, T^2 on all but its 8 smallest directions (200 of TEP's 208
# lagged inputs): of PCA and DPCA with 0-3 lags and 10 .. all components, the best mean detection rate on
# the Tennessee Eastman training fault runs, and ahead of every autoencoder monitor tried
# (benchmarks/monitor_tep.py, docs/monitoring.md).
PCA_DROP = 8
RECOMMENDATION = ("which to use: PCA's T2 (dynamic PCA, the default PCA monitor). On Tennessee Eastman, settings "
                  "chosen on the training runs, limits for 5% false alarms on d00_te, it detects 96.5% of the 18 "
                  "detectable faults at 2.6% false alarms on unseen normal rows; the autoencoder's best monitor "
                  "89.5% at 2.1% (benchmarks/monitor_tep.py, docs/monitoring.md)")


@dataclass
class MonitorSettings:
    """How the monitors are fitted and scored (apps/monitor.py explains each idea)."""

    limit: str = param("kde", choices=LIMIT_METHODS)
    """Control limits: the quantile of a KDE of the reference statistic, or the theoretical ones."""
    alpha: float = param(0.99, gt=0.5, lt=1)
    """Confidence level of the limits."""
    holdout: float = param(0.2, ge=0, lt=1)
    """Share of the normal rows (the last ones) kept out of fitting; the limits come from them."""
    lags: int = param(0, ge=0)
    """Time-lagged inputs: each row stacked with its `lags` predecessors (dynamic PCA)."""
    persist: int = param(1, ge=1)
    """Alarm rule: an alarm after `persist` consecutive rows above the limit."""
    calibrate: list[str] | None = param(None, nonempty=True)
    """Normal runs not used for fitting that set the limits instead (files, or TEP run names)."""
    far: float = param(0.01, ge=0, lt=1)
    """The false-alarm rate the `calibrate` runs set the limits for."""
    pca_components: int | None = param(None, ge=1)
    """Components of the PCA monitor (None: all but the PCA_DROP smallest directions of its lagged rows)."""
    pca_lags: int = param(3, ge=0)
    """Time lags of the PCA monitor (dynamic PCA), its own: `lags` is the autoencoder's."""
    window: int = param(50, ge=1)
    """Contributions: the mean over the first `window` alarm rows from the onset on."""

    def __post_init__(self) -> None:
        check_fields(self)  # built in Python or by resolve: never an unchecked value

    @classmethod
    def resolve(cls, **given: Any) -> "MonitorSettings":
        """The settings from the values given (None: not given, the default), every one checked."""
        given = {k: v for k, v in given.items() if v is not None}
        if "far" in given and "calibrate" not in given:
            raise SparseAEError("far (--far) sets the limits on the runs of calibrate (--calibrate); give them too")
        return build(cls, given)

    def record(self) -> dict[str, Any]:
        """The fitting settings as a monitor folder records them (far only when it was used)."""
        out = asdict(self)
        out["far"] = self.far if self.calibrate is not None else None
        return {k: out[k] for k in ("lags", "persist", "limit", "alpha", "holdout", "far", "pca_components",
                                    "pca_lags")}

    def pca_width(self, columns: int, rows: int) -> int:
        """The PCA monitor's components for `rows` normal rows of `columns` variables: the given number, or
        all but the PCA_DROP smallest directions of its (pca_lags + 1) * columns lagged inputs, and fewer
        than the rows it is fitted on (their centred rows have no more directions), at least 1."""
        if self.pca_components is not None:
            return self.pca_components
        lagged = rows - self.pca_lags
        fit_rows = lagged - int(round(self.holdout * lagged))
        return max(1, min(columns * (self.pca_lags + 1) - PCA_DROP, fit_rows - 1))


DEFAULTS = MonitorSettings()
SETTINGS = tuple(f.name for f in fields(MonitorSettings))
