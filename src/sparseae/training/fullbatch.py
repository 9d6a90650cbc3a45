"""Full-batch optimisation, as in the UFLDL exercise (minFunc's L-BFGS, or conjugate gradient).

Every evaluation of the cost runs the model on the *whole* training set, so
rho_hat is the exact mean activation over all m examples (Ng's definition) and
the cost is a deterministic function of the parameters that a line search can
work with. The parameters are handed to scipy as one flat float64 vector; the
cost and its gradient come from the same `Objective` the minibatch loop uses.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..config import check_full_batch_model as check_model  # the rule is config.py's; this name stays
from ..errors import SparseAEError
from ..objective.metrics import evaluate
from ..model import SparseAutoencoder
from ..objective import LossParts, Objective

# Our optimizer names -> scipy.optimize.minimize methods. L-BFGS-B without bounds is
# L-BFGS with a line search satisfying the strong Wolfe conditions.
SCIPY_METHODS = {"lbfgs": "L-BFGS-B", "cg": "CG"}
ROWS = 20  # metrics.csv gets about this many rows per run


def exact_objective(objective: Objective) -> Objective:
    """The same objective with rho_hat the plain mean over the examples given (no running estimate)."""
    if objective.sparsity.rho_hat == "batch":
        return objective
    return Objective(dataclasses.replace(objective.sparsity, rho_hat="batch"), objective.recon)


class FlatObjective:
    """The objective on data `x` as a function of one flat float64 vector of all of `model`'s
    parameters: `f(theta) -> (cost, gradient)`. Setting theta writes into the model's parameters."""

    def __init__(self, model: SparseAutoencoder, objective: Objective, x: torch.Tensor):
        self.model, self.objective, self.x = model, exact_objective(objective), x
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.evaluations = 0
        self.last_theta: np.ndarray | None = None
        self.last_parts: LossParts | None = None

    def get(self) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in self.params]).to("cpu", torch.float64).numpy()

    @torch.no_grad()
    def set(self, theta: np.ndarray) -> None:
        flat = torch.from_numpy(np.ascontiguousarray(theta))
        offset = 0
        for p in self.params:
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def parts(self, theta: np.ndarray | None = None) -> LossParts:
        """The cost's parts at `theta` (default: the model's current parameters), no gradient."""
        if theta is not None:
            self.set(theta)
        with torch.no_grad():
            return self.objective(self.model, self.model(self.x))

    def value(self, theta: np.ndarray) -> float:
        return float(self.parts(theta).total)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        self.set(theta)
        parts = self.objective(self.model, self.model(self.x))
        grads = torch.autograd.grad(parts.total, self.params, allow_unused=True)
        grad = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                          for p, g in zip(self.params, grads)])
        self.evaluations += 1
        self.last_theta = theta.copy()
        self.last_parts = LossParts(*(t.detach() for t in parts))
        return float(parts.total.detach()), grad.to("cpu", torch.float64).numpy()

    def parts_at(self, theta: np.ndarray) -> LossParts:
        """Parts at `theta`, reusing the last evaluation when it was there (an accepted step)."""
        if self.last_theta is not None and np.array_equal(theta, self.last_theta):
            self.set(theta)
            return self.last_parts
        return self.parts(theta)


def fit_full_batch(model: SparseAutoencoder, objective: Objective, train_x: torch.Tensor, val_x: torch.Tensor,
                   cfg: TrainConfig, on_row: Callable[[dict[str, Any]], None] | None = None,
                   progress: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """Minimise the objective over all of `train_x` with `cfg.optimizer` ('lbfgs' or 'cg') for at most
    `cfg.max_iter` iterations; trains `model` in place (in float64, returned in its original dtype).

    Returns (rows, whether target_val_mse was reached); a row every max_iter / 20 iterations and one
    at the end, with the same columns as the minibatch loop's but `iteration` and `evaluations`
    (cost-and-gradient evaluations, line search included) in place of `epoch`.
    """
    if cfg.optimizer not in SCIPY_METHODS:
        raise SparseAEError(f"optimizer '{cfg.optimizer}' is not full-batch; "
                            f"full-batch optimizers: {', '.join(SCIPY_METHODS)}")
    check_model(model.config)
    dtype = next(model.parameters()).dtype
    model.double().train()
    x, xv = train_x.double(), val_x.double()
    f = FlatObjective(model, objective, x)
    every = max(1, cfg.max_iter // ROWS)
    rows: list[dict[str, Any]] = []
    state = {"iteration": 0, "reached": False}
    bar = tqdm(total=cfg.max_iter, disable=not progress, unit="it", dynamic_ncols=True)
    t_start = time.perf_counter()

    def emit(r: dict[str, Any]) -> None:
        rows.append(r)
        if on_row is not None:
            on_row(r)

    def callback(theta: np.ndarray) -> None:
        state["iteration"] += 1
        bar.update(1)
        if state["iteration"] % every or state["iteration"] == cfg.max_iter:
            return
        r = _measure(model, f, cfg, state["iteration"], f.parts_at(theta), xv, t_start)
        bar.set_postfix(cost=f"{r['train_loss']:.5f}", val_mse=f"{r['val_mse']:.4f}")
        if cfg.target_val_mse is not None and r["val_mse"] <= cfg.target_val_mse:
            state["reached"] = True
            raise StopIteration  # scipy >= 1.11 ends the minimisation cleanly; the final row follows
        emit(r)

    try:
        theta = _minimize(f, cfg, callback)
    finally:
        bar.close()
    final = f.parts(theta)  # in float64: the cost exactly as minimised
    model.to(dtype)
    emit(_measure(model, f, cfg, state["iteration"], final, val_x, t_start))
    return rows, state["reached"]


def _measure(model: SparseAutoencoder, f: FlatObjective, cfg: TrainConfig, iteration: int, parts: LossParts,
             val: torch.Tensor, t_start: float) -> dict[str, Any]:
    """A metrics row at `iteration`: the training loss `parts` and the model's figures on `val`."""
    m = evaluate(model, val)
    r = {"iteration": iteration, "evaluations": f.evaluations,
         "train_loss": float(parts.total), "train_recon": float(parts.recon),
         "train_sparsity": float(parts.sparsity), "train_decay": float(parts.decay),
         "val_mse": m["mse"], "val_fvu": m["fvu"], "mean_activation": m["mean_activation"],
         "dead_fraction": m["dead_fraction"], "l0": m["l0"], **model.firing_stats(),
         "elapsed_seconds": time.perf_counter() - t_start}
    if not np.isfinite(r["train_loss"]):
        raise SparseAEError(f"full-batch {cfg.optimizer} diverged at iteration {r['iteration']} "
                            f"(cost {r['train_loss']})")
    return r


def _minimize(f: FlatObjective, cfg: TrainConfig, callback: Callable[[np.ndarray], None]) -> np.ndarray:
    """scipy's minimisation of `f` from its current parameters with `cfg`'s method, threads and limits."""
    options: dict[str, Any] = {"maxiter": cfg.max_iter}
    if cfg.optimizer == "lbfgs":
        options["maxfun"] = 20 * cfg.max_iter  # line-search evaluations are not the limit, iterations are
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    import scipy.optimize  # imported here: `import sparseae` stays free of scipy

    try:
        result = scipy.optimize.minimize(f, f.get(), jac=True, method=SCIPY_METHODS[cfg.optimizer],
                                         callback=callback, options=options)
    finally:
        torch.set_num_threads(threads)
    return result.x
