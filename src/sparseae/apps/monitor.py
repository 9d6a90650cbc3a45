"""Process monitoring: Hotelling's T^2 on the code, SPE (Q) on the residual.

A model is fitted on normal operation only, with the data standardised by the
training statistics. For a new row x (standardised):

- T^2 = (z - mean)^T S^-1 (z - mean), z the model's code (PCA scores or the
  autoencoder's code), mean and S the mean and covariance of the training codes;
- SPE = ||x - x_hat||^2, x_hat the model's reconstruction.

A row exceeds a limit when its statistic is above the control limit at level
`alpha` (0.99): either the `alpha` quantile of a Gaussian KDE of the training
statistic ('kde'), or the theoretical limit ('theory'): a(n-1)(n+1)/(n(n-a))
F_alpha(a, n-a) for T^2 (a: code width, n: training rows) and g chi2_alpha(h)
for SPE, g = var/(2 mean), h = 2 mean^2/var of the training SPE (Box's
moment-matched chi-square). `calibrate` replaces them with limits set on other
normal rows for a target false-alarm rate (below).

Alarm rule (`persist` N): row t raises an alarm when rows t-N+1 .. t all exceed
the limit (N = 1: every exceedance is an alarm). A single noisy row then no longer
alarms, so the limit can be lower for the same false-alarm rate; the price is a
detection at least N-1 rows after the first exceedance. The false-alarm rate
(FAR) is the share of alarms before the fault onset, the fault detection rate
(FDR) the share from the onset on, the detection delay the rows from the onset to
the first alarm at or after it.

Time-lagged inputs (`lags` L, the augmentation of dynamic PCA, Ku, Storer &
Georgakis 1995): row t of a file becomes [x_t, x_{t-1}, ..., x_{t-L}] (blocks of
the variables, newest first), so the model sees how the variables move, not only
where they are. Lags never cross from one file into the next; the first L rows
of a file have no statistic (NaN) and count in no rate.

Calibrated limits (`calibrate(normal_runs, far)`): for each statistic, the
lowest limit at which the alarm rule raises alarms on at most a share `far` of
the given normal rows (rows not used for fitting). With far 0.01 and N = 1 on the
960 rows of TEP's d00_te this is its 10th largest statistic: "the 99th
percentile of d00_te" of equal-false-alarm comparisons. The false-alarm rate on
those same rows is then in-sample; say so, and check it on other normal rows.

Contributions (`contributions(x, rows)`), per variable, for rows that alarm:
- SPE: the variable's squared residual (in standardised units; summed over its
  lagged copies). They add up to SPE.
- T^2: the reconstruction-based contribution (Alcala & Qin, Automatica 2009):
  how far T^2 falls when the variable alone is moved to the value that
  minimises it, RBC_j = T^2(x) - min_f T^2(x - f xi_j), xi_j moving variable j
  by the same standardised amount in each of its lagged copies (a sensor bias).
  For PCA, T^2 is a quadratic form x^T M x and RBC_j = (xi^T M x)^2 / (xi^T M xi);
  for the autoencoder T^2 is not quadratic in x, so the minimum over f is
  searched (f on a grid of +-1/8 .. 1024 standard deviations, then golden-
  section steps between the best grid point's neighbours); the PCA closed form
  checks the search (tests). They do not add up to T^2.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
from scipy import optimize, stats

from ..config import LIMIT_METHODS
from ..errors import SparseAEError
from ..schema import build, in_file, param

if TYPE_CHECKING:
    from sklearn.preprocessing import StandardScaler

STATISTICS = ("t2", "spe")
FORMAT = "sparseae-monitor"
FORMAT_VERSION = 1


class Reconstructor(Protocol):
    """What a monitored model must do on standardised rows, and how it is saved."""

    kind: str

    def fit(self, x: np.ndarray) -> "Reconstructor": ...
    def code(self, x: np.ndarray) -> np.ndarray: ...
    def reconstruct(self, x: np.ndarray) -> np.ndarray: ...
    def settings(self) -> dict[str, Any]: ...
    def tensors(self) -> dict[str, np.ndarray]: ...


class PCAModel:
    """Principal components of the (already standardised) training rows (scikit-learn's PCA)."""

    kind = "pca"

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

    def settings(self) -> dict[str, Any]:
        return {"components": self.components}

    def tensors(self) -> dict[str, np.ndarray]:
        return {"components": self.pca_.components_, "mean": self.pca_.mean_,
                "explained_variance": self.pca_.explained_variance_}

    @classmethod
    def restore(cls, settings: dict[str, Any], tensors: dict[str, np.ndarray]) -> "PCAModel":
        """The fitted model `settings` and `tensors` describe: scikit-learn's own PCA object with the
        saved arrays, so that its transform computes exactly what the fitted one did."""
        from sklearn.decomposition import PCA

        a = _settings_int(settings, "components")
        _require(tensors, {"components": (a, None), "mean": (None,), "explained_variance": (a,)})
        d = tensors["mean"].shape[0]
        if tensors["components"].shape != (a, d):
            raise SparseAEError(f"model.components has shape {list(tensors['components'].shape)}; "
                                f"expected [{a}, {d}]")
        model = cls(a)
        pca = PCA(n_components=a, svd_solver="full")
        pca.components_, pca.mean_ = tensors["components"], tensors["mean"]
        pca.explained_variance_, pca.n_components_, pca.n_features_in_ = tensors["explained_variance"], a, d
        model.pca_ = pca
        return model


class AutoencoderModel:
    """A sparse autoencoder (the scikit-learn front end, so the library's own training) as a monitor."""

    kind = "autoencoder"

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

    def settings(self) -> dict[str, Any]:
        from ..config import RunConfig

        model = self.estimator.model_
        return {"params": self.estimator.get_params(), "model": RunConfig(model=model.config).to_dict()["model"]}

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.estimator.model_.state_dict().items()}

    @classmethod
    def restore(cls, settings: dict[str, Any], tensors: dict[str, np.ndarray]) -> "AutoencoderModel":
        """The trained autoencoder: the estimator with its settings, the network from the model's
        configuration (checked as config.json is) and the saved weights (checked against it)."""
        import torch

        from ..config import ModelConfig
        from ..model import SparseAutoencoder
        from .estimator import SparseAutoencoderTransformer

        params = settings.get("params")
        known = set(SparseAutoencoderTransformer().get_params())
        if not isinstance(params, dict) or set(params) - known:
            raise SparseAEError(f"model_settings.params must be an object with keys among {', '.join(sorted(known))}")
        model_config = build(ModelConfig, settings.get("model"), "model_settings.model")
        try:
            model_config.validate()
            net = SparseAutoencoder(model_config)
        except (TypeError, ValueError, RuntimeError) as e:
            raise SparseAEError(f"model_settings.model does not describe a model ({e})") from None
        wanted = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        _require({k: v for k, v in tensors.items()}, {f"{k}": s for k, s in wanted.items()})
        extra = sorted(set(tensors) - set(wanted))
        if extra:
            raise SparseAEError(f"array model.{extra[0]} is not part of the model that model_settings describes")
        net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(tensors[k])) for k in wanted})
        model = cls(**params)
        model.estimator.model_ = net.eval()
        model.estimator.n_features_in_ = model_config.input_dim
        return model


MODELS: dict[str, Any] = {PCAModel.kind: PCAModel, AutoencoderModel.kind: AutoencoderModel}


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


# --- rows, lags and the alarm rule -------------------------------------------------------------------

def lagged(x: np.ndarray, lags: int) -> np.ndarray:
    """Row t -> [x_t, x_{t-1}, ..., x_{t-lags}] for t >= lags: (n - lags) rows of (lags + 1) * columns."""
    if lags == 0:
        return x
    n = len(x)
    return np.hstack([x[lags - k: n - k] for k in range(lags + 1)])


def persistent(exceeds: np.ndarray, n: int) -> np.ndarray:
    """Alarms of the rule 'n consecutive exceedances': row t alarms when rows t-n+1 .. t all exceed."""
    exceeds = np.asarray(exceeds, dtype=bool)
    if n == 1:
        return exceeds
    run = np.convolve(exceeds.astype(np.int64), np.ones(n, dtype=np.int64))[: len(exceeds)]
    return run == n


def rates(alarms: np.ndarray, onset: int | None, start: int = 0) -> tuple[float, float]:
    """(FAR over rows start..onset-1, FDR over rows from max(onset, start) on); NaN where there are no
    such rows. `start`: the first row that has a statistic (the number of lags)."""
    onset = len(alarms) if onset is None else onset
    before, after = alarms[start:onset], alarms[max(onset, start):]
    far = float(before.mean()) if len(before) else float("nan")
    fdr = float(after.mean()) if len(after) else float("nan")
    return far, fdr


def detection_delay(alarms: np.ndarray, onset: int | None) -> int | None:
    """Rows from `onset` to the first alarm at or after it; None without an onset or an alarm."""
    if onset is None:
        return None
    hits = np.flatnonzero(alarms[onset:])
    return int(hits[0]) if len(hits) else None


def alarm_window(alarms: dict[str, np.ndarray], onset: int | None, size: int = 50) -> np.ndarray:
    """The first `size` rows at or after `onset` (the first row without one) where any statistic alarms."""
    first = onset or 0
    any_alarm = np.logical_or.reduce([np.asarray(a, dtype=bool) for a in alarms.values()])
    return (np.flatnonzero(any_alarm[first:]) + first)[:size]


def calibrated_limit(values: Sequence[np.ndarray], far: float, persist: int = 1) -> float:
    """The lowest limit at which the rule (`persist` consecutive exceedances) alarms on at most a share
    `far` of the rows of `values` (one array of a statistic per normal run; NaN rows: no statistic)."""
    values = [np.asarray(v, dtype=np.float64) for v in values]
    finite = [v[np.isfinite(v)] for v in values]
    total = sum(len(v) for v in finite)
    if total == 0:
        raise SparseAEError("no normal rows with a statistic to set the limits on")
    candidates = np.unique(np.concatenate(finite))

    def alarm_share(limit: float) -> float:
        return sum(int(persistent(v > limit, persist).sum()) for v in values) / total

    # The share falls as the limit rises (the exceedances only shrink), and it is 0 at the largest value:
    # bisect for the first candidate at which it is at most `far`.
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if alarm_share(candidates[mid]) <= far:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


@dataclass
class Scores:
    """The statistics of one file's rows (NaN before `start`), their exceedances and alarms, and the rates."""

    statistics: dict[str, np.ndarray]
    exceeds: dict[str, np.ndarray]
    alarms: dict[str, np.ndarray]
    start: int
    onset: int | None

    def summary(self) -> dict[str, float | int | None]:
        """{'t2_far', 't2_fdr', 't2_delay', 'spe_far', ...}"""
        out: dict[str, float | int | None] = {}
        for s in STATISTICS:
            out[f"{s}_far"], out[f"{s}_fdr"] = rates(self.alarms[s], self.onset, self.start)
            out[f"{s}_delay"] = detection_delay(self.alarms[s], self.onset)
        return out


# --- the monitor -------------------------------------------------------------------------------------

@dataclass
class Monitor:
    """A fitted model plus the reference statistics needed for T^2, SPE and their limits.

    With `holdout` > 0 the last `holdout` share of the normal rows is not used
    for fitting: the limits come from the statistics of those unseen rows, so a
    model that fits its training rows too closely does not get limits that
    are too tight. `lags` and `persist`: see the module's docstring.
    """

    model: Reconstructor
    alpha: float = 0.99
    limit_method: str = "kde"
    holdout: float = 0.0
    lags: int = 0
    persist: int = 1
    scaler_: StandardScaler = field(init=False, repr=False)
    limits: dict[str, float] = field(init=False, default_factory=dict)
    calibration: dict[str, Any] | None = field(init=False, default=None)
    """Set by `calibrate`: the target false-alarm rate, the rule and the rows the limits were set on."""
    variables: list[str] = field(init=False, default_factory=list)
    """The names of the raw variables (columns), for contributions."""

    def fit(self, normal: np.ndarray | Sequence[np.ndarray], variables: Sequence[str] | None = None) -> "Monitor":
        """Fit on normal rows: one array, or several runs (lags never join two runs)."""
        from sklearn.preprocessing import StandardScaler  # not at the top: the CLI imports this module always

        if not 0.5 < self.alpha < 1:
            raise SparseAEError(f"alpha must be in (0.5, 1); got {self.alpha}")
        if not 0.0 <= self.holdout < 1.0:
            raise SparseAEError(f"holdout must be in [0, 1); got {self.holdout}")
        _check_rule(self.lags, self.persist)
        runs = [normal] if isinstance(normal, np.ndarray) or not isinstance(normal, (list, tuple)) else list(normal)
        runs = [np.asarray(r, dtype=np.float64) for r in runs]
        if not runs or runs[0].ndim != 2:
            raise SparseAEError(f"normal data must be 2-D arrays; got shape {runs[0].shape if runs else '(none)'}")
        self.variables = _variable_names(variables, runs[0].shape[1])
        normal = np.concatenate([lagged(self._checked(r, f"normal run {i + 1}", len(self.variables)), self.lags)
                                 for i, r in enumerate(runs)])
        if normal.shape[0] < 2:
            raise SparseAEError(f"normal data must have at least 2 rows (after {self.lags} lags); got {len(normal)}")
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
        ref = normal[len(fit_rows):] if n_ref else fit_rows
        self.reference_ = self.statistics_standardized(self.standardize(ref))
        self.calibration = None
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
        self.calibration = None
        return self

    def calibrate(self, normal: Sequence[np.ndarray], far: float, persist: int | None = None) -> "Monitor":
        """Set each limit to the lowest at which the alarm rule raises at most a share `far` of alarms
        on the `normal` runs (rows not used for fitting); `persist` also becomes the monitor's rule."""
        if not 0 <= far < 1:
            raise SparseAEError(f"far must be in [0, 1); got {far}")
        if persist is not None:
            _check_rule(self.lags, persist)
            self.persist = persist
        runs = [normal] if isinstance(normal, np.ndarray) else list(normal)
        if not runs:
            raise SparseAEError("calibrating the limits needs at least one normal run")
        per_run = [self.statistics(r) for r in runs]
        self.limits = {s: calibrated_limit([st[s] for st in per_run], far, self.persist) for s in STATISTICS}
        rows = sum(max(len(r) - self.lags, 0) for r in runs)
        self.calibration = {"far": float(far), "persist": self.persist, "rows": rows}
        return self

    # --- statistics --------------------------------------------------------------------------------

    @property
    def n_variables(self) -> int:
        return self.scaler_.n_features_in_ // (self.lags + 1)

    def _checked(self, x: np.ndarray, what: str = "rows", n_cols: int | None = None) -> np.ndarray:
        """`x` as float64 rows, refused unless 2-D, with `n_cols` (the fitted) columns, every value finite."""
        x = np.asarray(x, dtype=np.float64)
        n_cols = self.n_variables if n_cols is None else n_cols
        if x.ndim != 2 or x.shape[1] != n_cols:
            raise SparseAEError(f"{what}: expected rows with {n_cols} columns (as the normal data); "
                                f"got shape {x.shape}")
        bad = ~np.isfinite(x)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            name = self.variables[j] if j < len(self.variables) else f"column {j + 1}"
            raise SparseAEError(f"{what}: data row {i + 1} has {x[i, j]} in {name} ({int(bad.any(1).sum())} rows "
                                "with missing or infinite values); the monitor needs complete rows")
        if len(x) <= self.lags:
            raise SparseAEError(f"{what}: {len(x)} rows, but {self.lags} lags need at least {self.lags + 1}")
        return x

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """Rows of the model's input (lagged already) -> standardised."""
        x = np.asarray(x, dtype=np.float64)
        n_cols = self.scaler_.n_features_in_
        if x.ndim != 2 or x.shape[1] != n_cols:
            raise SparseAEError(f"expected rows with {n_cols} columns (as the normal data); got shape {x.shape}")
        return self.scaler_.transform(x)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Raw rows of one run -> the model's standardised input rows (len(x) - lags of them)."""
        return self.standardize(lagged(self._checked(x), self.lags))

    def _t2(self, xs: np.ndarray) -> np.ndarray:
        dz = self.model.code(xs) - self.code_mean_
        return np.einsum("ij,jk,ik->i", dz, self.code_precision_, dz)

    def statistics_standardized(self, x: np.ndarray) -> dict[str, np.ndarray]:
        spe = ((x - self.model.reconstruct(x)) ** 2).sum(1)
        return {"t2": self._t2(x), "spe": spe}

    def statistics(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """T^2 and SPE of each raw row of one run (NaN for the first `lags` rows, which have no past)."""
        got = self.statistics_standardized(self.prepare(x))
        if self.lags == 0:
            return got
        pad = np.full(self.lags, np.nan)
        return {s: np.concatenate([pad, v]) for s, v in got.items()}

    def score(self, x: np.ndarray, onset: int | None = None, persist: int | None = None) -> Scores:
        """Statistics, exceedances, alarms (rule: `persist`, default the monitor's) of one run."""
        persist = self.persist if persist is None else persist
        _check_rule(self.lags, persist)
        if onset is not None and not 0 <= onset <= len(x):
            raise SparseAEError(f"onset {onset} is outside the {len(x)} rows")
        values = self.statistics(x)
        with np.errstate(invalid="ignore"):  # NaN (no statistic) is no exceedance
            exceeds = {s: v > self.limits[s] for s, v in values.items()}
        return Scores(values, exceeds, {s: persistent(e, persist) for s, e in exceeds.items()}, self.lags, onset)

    def alarms(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.score(x).alarms

    # --- contributions -----------------------------------------------------------------------------

    def contributions(self, x: np.ndarray, rows: Sequence[int]) -> dict[str, np.ndarray]:
        """{'spe': (len(rows), variables), 't2': ...}: each variable's contribution to the statistic
        at the given rows of run `x` (see the module's docstring)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < self.lags or rows.max() >= len(x))):
            raise SparseAEError(f"contribution rows must be in {self.lags}..{len(x) - 1}")
        xs = self.prepare(x)[rows - self.lags]
        m, blocks = self.n_variables, self.lags + 1
        spe = ((xs - self.model.reconstruct(xs)) ** 2).reshape(len(rows), blocks, m).sum(1)
        return {"spe": spe, "t2": self._t2_rbc(xs)}

    def _t2_rbc(self, xs: np.ndarray, steps: int = 45) -> np.ndarray:
        """T^2(x) - min_f T^2(x - f xi_j) for every row of `xs` and variable j (searched; see above)."""
        k, d = xs.shape
        m = self.n_variables
        if k == 0:
            return np.zeros((0, m))
        xi = np.tile(np.eye(m), (1, self.lags + 1))  # (m, d): variable j in each lagged copy

        def t2_moved(f: np.ndarray) -> np.ndarray:  # f: (k, m) -> T^2(x_i - f_ij xi_j), (k, m)
            dz = self.model.code((xs[:, None, :] - f[..., None] * xi[None]).reshape(-1, d)) - self.code_mean_
            return ((dz @ self.code_precision_) * dz).sum(1).reshape(k, m)  # T^2, as a product: much faster

        scale = 2.0 ** np.arange(-3, 11)
        grid = np.concatenate([-scale[::-1], [0.0], scale])
        values = np.stack([t2_moved(np.full((k, m), f)) for f in grid], axis=-1)
        best = values.argmin(-1)
        lo, hi = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, len(grid) - 1)]
        # golden section: the bracket shrinks by 0.618 a step, one new point (and one evaluation) a step
        ratio = (math.sqrt(5) - 1) / 2
        c, e = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        tc, te = t2_moved(c), t2_moved(e)
        for _ in range(steps):
            left = tc < te  # the minimum is in [lo, e]: e becomes hi, c becomes e, a new c
            hi, lo = np.where(left, e, hi), np.where(left, lo, c)
            x = np.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
            tx = t2_moved(x)
            c, e, tc, te = (np.where(left, x, e), np.where(left, c, x),
                            np.where(left, tx, te), np.where(left, tc, tx))
        lowest = np.minimum(values.min(-1), np.minimum(tc, te))
        return np.maximum(values[..., len(scale)] - lowest, 0.0)  # grid[len(scale)] is f = 0

    # --- files -------------------------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the folder `path`: monitor.safetensors (the scaler, the code statistics, the reference
        statistics and the model's arrays) and monitor.json (settings, limits, the SHA-256 of the
        former). Each file is written atomically; existing ones are refused unless `overwrite`."""
        from ..run.files import atomic_write, atomic_write_text, to_json_text

        folder = Path(path)
        json_file, tensor_file = folder / "monitor.json", folder / "monitor.safetensors"
        if not overwrite and (json_file.exists() or tensor_file.exists()):
            raise SparseAEError(f"{folder} already holds a monitor; pass overwrite=True to replace it")
        arrays = {"scaler.mean": self.scaler_.mean_, "scaler.scale": self.scaler_.scale_,
                  "scaler.var": self.scaler_.var_, "code.mean": self.code_mean_,
                  "code.precision": self.code_precision_,
                  **{f"reference.{s}": v for s, v in self.reference_.items()},
                  **{f"model.{k}": v for k, v in self.model.tensors().items()}}
        # Fortran-ordered arrays (scikit-learn's PCA components) are stored in C order and restored in
        # Fortran order: numpy's products round differently by memory layout, and a loaded monitor must
        # compute exactly what the fitted one did.
        fortran = sorted(k for k, v in arrays.items() if np.ndim(v) > 1 and np.isfortran(v))
        blob = _tensor_bytes(arrays)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(tensor_file, lambda tmp: Path(tmp).write_bytes(blob))
        info = MonitorFile(format=FORMAT, version=FORMAT_VERSION, model=self.model.kind,
                           model_settings=self.model.settings(), alpha=self.alpha, limit_method=self.limit_method,
                           holdout=self.holdout, lags=self.lags, persist=self.persist, limits=dict(self.limits),
                           calibration=self.calibration, variables=list(self.variables), n_fit=self.n_fit_,
                           n_samples_seen=int(self.scaler_.n_samples_seen_), code_rank=self.code_rank_,
                           fortran_order=fortran, sha256=hashlib.sha256(blob).hexdigest())
        atomic_write_text(json_file, to_json_text(info.__dict__))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> "Monitor":
        """The monitor `save` wrote in `path`; a missing, damaged or inconsistent file raises
        SparseAEError naming it."""
        from sklearn.preprocessing import StandardScaler

        folder = Path(path)
        json_file, tensor_file = folder / "monitor.json", folder / "monitor.safetensors"
        if not folder.is_dir():
            raise SparseAEError(f"{folder} is not a monitor folder (no such folder)")
        info = _read_json(json_file)
        with in_file(json_file):
            info = build(MonitorFile, info)
            info.check()
        try:
            blob = tensor_file.read_bytes()
        except FileNotFoundError:
            raise SparseAEError(f"{folder} has no monitor.safetensors") from None
        if hashlib.sha256(blob).hexdigest() != info.sha256:
            raise SparseAEError(f"{tensor_file} is damaged: its SHA-256 is not the one monitor.json records")
        with in_file(tensor_file):
            arrays = _tensors_from_bytes(blob)
            arrays.update({k: np.asfortranarray(arrays[k]) for k in info.fortran_order if k in arrays})
            d = _require(arrays, {"scaler.mean": (None,)})["scaler.mean"].shape[0]
            _require(arrays, {"scaler.scale": (d,), "scaler.var": (d,), "code.mean": (None,),
                              "reference.t2": (None,), "reference.spe": (None,)})
            a = arrays["code.mean"].shape[0]
            _require(arrays, {"code.precision": (a, a)})
            if d != len(info.variables) * (info.lags + 1):
                raise SparseAEError(f"scaler.mean has {d} columns but monitor.json names {len(info.variables)} "
                                    f"variables with {info.lags} lags")
            model = MODELS[info.model].restore(info.model_settings,
                                               {k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        mon = cls(model, alpha=info.alpha, limit_method=info.limit_method, holdout=info.holdout, lags=info.lags,
                  persist=info.persist)
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = arrays["scaler.mean"], arrays["scaler.scale"], arrays["scaler.var"]
        scaler.n_features_in_, scaler.n_samples_seen_ = d, info.n_samples_seen
        mon.scaler_ = scaler
        mon.code_mean_, mon.code_precision_ = arrays["code.mean"], arrays["code.precision"]
        mon.code_rank_, mon.n_fit_ = info.code_rank, info.n_fit
        mon.reference_ = {s: arrays[f"reference.{s}"] for s in STATISTICS}
        mon.limits, mon.calibration, mon.variables = dict(info.limits), info.calibration, list(info.variables)
        return mon


@dataclass
class MonitorFile:
    """monitor.json: a saved monitor's settings; its arrays are in monitor.safetensors."""

    format: str = param(pattern=FORMAT, what=f"'{FORMAT}'")
    version: int = param(choices=(FORMAT_VERSION,))
    model: str = param(choices=tuple(MODELS))
    model_settings: dict[str, Any] = param()
    alpha: float = param(gt=0.5, lt=1)
    limit_method: str = param(choices=LIMIT_METHODS)
    holdout: float = param(ge=0, lt=1)
    lags: int = param(ge=0)
    persist: int = param(ge=1)
    limits: dict[str, float] = param()
    calibration: dict[str, Any] | None = param()
    variables: list[str] = param(nonempty=True)
    n_fit: int = param(ge=2)
    n_samples_seen: int = param(ge=2)
    code_rank: int = param(ge=0)
    fortran_order: list[str] = param()
    """The arrays to restore in Fortran order (as they were fitted)."""
    sha256: str = param(pattern="[0-9a-f]{64}", what="64 hexadecimal digits")

    def check(self) -> None:
        if set(self.limits) != set(STATISTICS) or not all(math.isfinite(v) for v in self.limits.values()):
            raise SparseAEError(f"limits must be finite numbers for exactly {', '.join(STATISTICS)}; "
                                f"got {self.limits}")


def _check_rule(lags: Any, persist: Any) -> None:
    for name, value, low in (("lags", lags, 0), ("persist", persist, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise SparseAEError(f"{name} must be an integer >= {low}; got {value!r}")


def _variable_names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [f"x{j + 1}" for j in range(n)]
    names = [str(v) for v in names]
    if len(names) != n:
        raise SparseAEError(f"{len(names)} variable names for {n} columns")
    return names


def _settings_int(settings: dict[str, Any], key: str) -> int:
    v = settings.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SparseAEError(f"model_settings.{key} must be a positive integer; got {v!r}")
    return v


def _require(arrays: dict[str, np.ndarray], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Refuse a missing array, or one whose shape differs from `shapes` (None: any length there)."""
    for name, shape in shapes.items():
        if name not in arrays:
            raise SparseAEError(f"no array {name}")
        got = arrays[name].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            raise SparseAEError(f"{name} has shape {list(got)}; expected {['*' if s is None else s for s in shape]}")
    return arrays


def _tensor_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def _tensors_from_bytes(blob: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(blob)
    except Exception as e:  # safetensors raises its own error types for corrupt data
        raise SparseAEError(f"cannot read the arrays ({e})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SparseAEError(f"{path.parent} is not a monitor folder (no {path.name})") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise SparseAEError(f"{path}: invalid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise SparseAEError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
