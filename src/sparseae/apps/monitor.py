"""Process monitoring: Hotelling's T^2 on the code, SPE (Q) on the residual.

A model is fitted on normal operation only, with the data standardised by the
training statistics. For a new row x (standardised):

- T^2 = (z - mean)^T S^-1 (z - mean), z the model's code (PCA scores or the
  autoencoder's code), mean and S the mean and covariance of the training codes;
- SPE = ||x - x_hat||^2, x_hat the model's reconstruction.

A row raises an alarm when its statistic exceeds the control limit at level
`alpha` (0.99): either the `alpha` quantile of a Gaussian KDE of the training
statistic ('kde'), or the theoretical limit ('theory'): a(n-1)(n+1)/(n(n-a))
F_alpha(a, n-a) for T^2 (a: code width, n: training rows) and g chi2_alpha(h)
for SPE, g = var/(2 mean), h = 2 mean^2/var of the training SPE (Box's
moment-matched chi-square). The false-alarm rate (FAR) is the share of alarms
before the fault onset, the fault detection rate (FDR) the share after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import optimize, stats

from ..config import LIMIT_METHODS
from ..errors import SparseAEError

if TYPE_CHECKING:
    from sklearn.preprocessing import StandardScaler

STATISTICS = ("t2", "spe")


class Reconstructor(Protocol):
    """What a monitored model must do on standardised rows."""

    def fit(self, x: np.ndarray) -> "Reconstructor": ...
    def code(self, x: np.ndarray) -> np.ndarray: ...
    def reconstruct(self, x: np.ndarray) -> np.ndarray: ...


class PCAModel:
    """Principal components of the (already standardised) training rows (scikit-learn's PCA)."""

    def __init__(self, components: int = 15):
        self.components = components

    def fit(self, x: np.ndarray) -> "PCAModel":
        from sklearn.decomposition import PCA

        if not 0 < self.components <= min(x.shape):
            raise SparseAEError(f"pca components must be in 1..{min(x.shape)}; got {self.components}")
        # 'full': an exact SVD; 'auto' may pick a randomized or covariance solver for larger inputs
        self.pca_ = PCA(n_components=self.components, svd_solver="full").fit(x)
        return self

    def code(self, x: np.ndarray) -> np.ndarray:
        return self.pca_.transform(x)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.pca_.inverse_transform(self.pca_.transform(x))


class AutoencoderModel:
    """A sparse autoencoder (the scikit-learn front end, so the library's own training) as a monitor."""

    def __init__(self, **params):
        from .estimator import SparseAutoencoderTransformer

        # Rows arrive standardised already: no second transform.
        params.setdefault("input_transform", "none")
        self.estimator = SparseAutoencoderTransformer(**params)

    def fit(self, x: np.ndarray) -> "AutoencoderModel":
        self.estimator.fit(x)
        return self

    def code(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.transform(x)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.reconstruct(x)


def kde_limit(values: np.ndarray, alpha: float) -> float:
    """The `alpha` quantile of a Gaussian kernel density estimate of `values`."""
    values = np.asarray(values, dtype=np.float64)
    if np.ptp(values) == 0:
        return float(values[0])
    kde = stats.gaussian_kde(values)
    lo, hi = values.min(), values.max()
    span = hi - lo
    cdf = lambda t: kde.integrate_box_1d(-np.inf, t) - alpha  # noqa: E731
    hi_b = hi + span
    while cdf(hi_b) < 0:
        hi_b += span
    return float(optimize.brentq(cdf, lo - span, hi_b, xtol=1e-10 * max(1.0, abs(hi))))


def t2_theory_limit(n: int, a: int, alpha: float) -> float:
    if n <= a:
        raise SparseAEError(f"the theoretical T^2 limit needs more training rows ({n}) than code units ({a})")
    return float(a * (n - 1) * (n + 1) / (n * (n - a)) * stats.f.ppf(alpha, a, n - a))


def spe_theory_limit(values: np.ndarray, alpha: float) -> float:
    m, v = float(np.mean(values)), float(np.var(values))
    if v == 0:
        return m
    g, h = v / (2 * m), 2 * m * m / v
    return float(g * stats.chi2.ppf(alpha, h))


@dataclass
class Monitor:
    """A fitted model plus the reference statistics needed for T^2, SPE and their limits.

    With `holdout` > 0 the last `holdout` share of the normal rows is not used
    for fitting: the limits come from the statistics of those unseen rows, so a
    model that fits its training rows too closely does not get limits that
    are too tight.
    """

    model: Reconstructor
    alpha: float = 0.99
    limit_method: str = "kde"
    holdout: float = 0.0
    scaler_: StandardScaler = field(init=False, repr=False)
    limits: dict[str, float] = field(init=False, default_factory=dict)

    def fit(self, normal: np.ndarray) -> "Monitor":
        from sklearn.preprocessing import StandardScaler  # not at the top: the CLI imports this module always

        if not 0.5 < self.alpha < 1:
            raise SparseAEError(f"alpha must be in (0.5, 1); got {self.alpha}")
        if not 0.0 <= self.holdout < 1.0:
            raise SparseAEError(f"holdout must be in [0, 1); got {self.holdout}")
        normal = np.asarray(normal, dtype=np.float64)
        if normal.ndim != 2 or normal.shape[0] < 2:
            raise SparseAEError(f"normal data must be a 2-D array with at least 2 rows; got shape {normal.shape}")
        n_ref = int(round(self.holdout * len(normal)))
        fit_rows = normal[: len(normal) - n_ref]
        if len(fit_rows) < 2 or (self.holdout > 0 and n_ref < 2):
            raise SparseAEError(f"holdout {self.holdout} leaves too few rows ({len(fit_rows)} to fit, "
                                f"{n_ref} for limits)")
        # population std; a constant column keeps scale 1, as it carries no signal
        self.scaler_ = StandardScaler().fit(fit_rows)
        x = self.standardize(fit_rows)
        self.model.fit(x)
        z = self.model.code(x)
        self.code_mean_ = z.mean(0)
        cov = np.atleast_2d(np.cov(z, rowvar=False))
        # pinv: a code unit that is constant on normal data carries no T^2 information.
        self.code_precision_ = np.linalg.pinv(cov, rcond=1e-10, hermitian=True)
        self.code_rank_ = int(np.linalg.matrix_rank(cov, hermitian=True))
        self.n_fit_ = len(fit_rows)
        self.reference_ = self.statistics(normal[len(fit_rows):] if n_ref else fit_rows)
        return self.set_limits(self.limit_method)

    def set_limits(self, method: str) -> "Monitor":
        """(Re)compute the control limits from the reference statistics with `method`."""
        if method not in LIMIT_METHODS:
            raise SparseAEError(f"limit method must be one of {', '.join(LIMIT_METHODS)}; got '{method}'")
        self.limit_method = method
        if method == "kde":
            self.limits = {s: kde_limit(self.reference_[s], self.alpha) for s in STATISTICS}
        else:
            self.limits = {"t2": t2_theory_limit(self.n_fit_, self.code_rank_, self.alpha),
                           "spe": spe_theory_limit(self.reference_["spe"], self.alpha)}
        return self

    def standardize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        n_cols = self.scaler_.n_features_in_
        if x.ndim != 2 or x.shape[1] != n_cols:
            raise SparseAEError(f"expected rows with {n_cols} columns (as the normal data); got shape {x.shape}")
        return self.scaler_.transform(x)

    def statistics_standardized(self, x: np.ndarray) -> dict[str, np.ndarray]:
        dz = self.model.code(x) - self.code_mean_
        t2 = np.einsum("ij,jk,ik->i", dz, self.code_precision_, dz)
        spe = ((x - self.model.reconstruct(x)) ** 2).sum(1)
        return {"t2": t2, "spe": spe}

    def statistics(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """T^2 and SPE of each raw row."""
        return self.statistics_standardized(self.standardize(x))

    def alarms(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {s: v > self.limits[s] for s, v in self.statistics(x).items()}


def rates(alarms: np.ndarray, onset: int | None) -> tuple[float, float]:
    """(FAR over rows before `onset`, FDR over rows from `onset` on); NaN where there are no such rows."""
    onset = len(alarms) if onset is None else onset
    before, after = alarms[:onset], alarms[onset:]
    far = float(before.mean()) if len(before) else float("nan")
    fdr = float(after.mean()) if len(after) else float("nan")
    return far, fdr
