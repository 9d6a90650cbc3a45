"""Linear probes: how linearly separable are the learned features?

A probe is multinomial logistic regression (softmax) on standardised features,
fitted by full-batch L-BFGS in PyTorch with a small L2 penalty; on 60k x 2000
features this is a minute on two CPU cores, where scikit-learn's solver is
several times slower. The same `train_softmax` fine-tunes a stacked encoder
under a softmax (UFLDL's supervised fine-tuning), so there is one classifier
fitting routine.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TrainConfig
from ..data import Dataset, load_dataset
from ..data.dataset import DataSource, require_in_memory, require_labels, select_classes
from ..errors import SparseAEError
from ..objective.metrics import evaluate
from ..model import SparseAutoencoder
from ..run.files import atomic_write_text
from ..run.rundir import RunDir, load_run

RAW = "raw pixels"


@torch.no_grad()
def encode_features(model: SparseAutoencoder, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """The model's code for every row of `x` (eval mode: BatchTopK threshold, TopK keeps alpha*k)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model.encode(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    model.train(was_training)
    return out


def standardize(train_f: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """`train_f` and `others` scaled by the training features' mean and (population) std.

    scikit-learn's StandardScaler computes the statistics (float64 sums; a constant
    feature keeps scale 1, so it stays 0); they are applied in torch, so the scaled
    features are made on the device the features are on.
    """
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_f.detach().cpu().numpy())
    mean, scale = (torch.as_tensor(v, dtype=train_f.dtype, device=train_f.device)
                   for v in (scaler.mean_, scaler.scale_))
    return [(x - mean) / scale for x in (train_f, *others)]


def train_softmax(features: Callable[[torch.Tensor], torch.Tensor], head: nn.Linear, x: torch.Tensor,
                  y: torch.Tensor, params: Iterable[torch.Tensor], max_iter: int = 300,
                  l2: float = 1e-4) -> float:
    """Minimise mean cross-entropy of head(features(x)) + l2/2 ||head.weight||^2 by L-BFGS over `params`.

    Returns the final loss. `features` may be a trainable encoder (fine-tuning)
    or an identity on precomputed features (a probe).
    """
    params = list(params)
    opt = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(features(x)), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    return float(loss.detach())


@dataclass
class ProbeResult:
    name: str
    features: int
    l0: float
    train_accuracy: float
    test_accuracy: float
    seconds: float
    l2: float = float("nan")
    """The L2 weight used (chosen on held-out training rows when asked to)."""


L2_GRID = (1e-4, 1e-3, 1e-2)
HOLDOUT = 6  # l2 selection holds out 1/HOLDOUT of the training rows; the test split is never looked at


def probe_features(name: str, train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor,
                   test_y: torch.Tensor, max_iter: int = 300, l2: float | None = 1e-4,
                   l0: float = float("nan"), seed: int = 0) -> ProbeResult:
    """Fit a standardised softmax probe on train features; accuracy on both splits.

    `l2=None` picks the L2 weight from L2_GRID by accuracy on the last 1/HOLDOUT of the
    training rows (fitted on the rest), then refits on all training rows with it.
    """
    import time

    t0 = time.perf_counter()
    if l2 is None:
        n_fit = train_f.shape[0] - train_f.shape[0] // HOLDOUT
        scores = [probe_features(name, train_f[:n_fit], train_y[:n_fit], train_f[n_fit:], train_y[n_fit:],
                                 max_iter, c, l0, seed).test_accuracy for c in L2_GRID]
        l2 = L2_GRID[max(range(len(L2_GRID)), key=scores.__getitem__)]
    torch.manual_seed(seed)
    classes, train_t = torch.unique(train_y, return_inverse=True)
    test_t = torch.searchsorted(classes, test_y)
    head = nn.Linear(train_f.shape[1], len(classes))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    xs, xt = standardize(train_f, test_f)
    train_softmax(lambda v: v, head, xs, train_t, head.parameters(), max_iter, l2)
    with torch.no_grad():
        tr = (head(xs).argmax(1) == train_t).float().mean().item()
        known = torch.isin(test_y, classes)
        te = (head(xt).argmax(1) == test_t)[known].float().mean().item()
    return ProbeResult(name, train_f.shape[1], l0, tr, te, time.perf_counter() - t0, l2)


def _labelled(data: DataSource, classes: list[int] | None) -> Dataset:
    require_labels(data, "probe")  # first: an unlabelled array file is refused for its labels, streamed or not
    data = require_in_memory(data, "probe")
    return select_classes(data, classes) if classes else data


def probe_runs(run_dirs: list[str], raw: bool = True, classes: list[int] | None = None,
               limit_train: int | None = None, max_iter: int = 300, l2: float | None = 1e-4,
               data_dir: str | None = None, dataset: DataSource | None = None,
               device: str = "cpu", encode_alpha: float | None = None) -> list[ProbeResult]:
    """Probe each run's features (and raw pixels) on the labelled train/test split of its data set.

    `encode_alpha`: a TopK model's features keep its top alpha * k units (Makhzani & Frey) instead of
    the k it reconstructs from.
    `classes` restricts the probe to those labels (self-taught learning: the
    autoencoder saw other classes, the classifier sees these).
    """
    if not run_dirs and not raw:
        raise SparseAEError("nothing to probe: give run folders or keep the raw-pixel baseline")
    for path in run_dirs:
        RunDir(path).require_folder()
        if not RunDir(path).file("config.json").is_file():
            raise SparseAEError(f"{path} is not a run folder (no config.json)")
    if dataset is None:
        tc = RunDir(run_dirs[0]).read_config().train if run_dirs else TrainConfig()
        dataset = load_dataset(tc.dataset, data_dir or tc.data_dir, **tc.dataset_options())
    data = _labelled(dataset, classes)
    train_x, train_y = data.train[:limit_train].to(device), data.train_labels[:limit_train].to(device)
    test_x, test_y = data.validation(device), data.test_labels.to(device)
    results = []
    if raw:
        results.append(probe_features(RAW, train_x, train_y, test_x, test_y, max_iter, l2,
                                      l0=(test_x != 0).float().sum(1).mean().item()))
    for path in run_dirs:
        model = load_run(path, device).with_encode_alpha(encode_alpha)
        if model.config.input_dim != train_x.shape[1]:
            raise SparseAEError(f"{path}: model expects {model.config.input_dim} inputs, data has {train_x.shape[1]}")
        l0 = evaluate(model, test_x)["l0"]
        results.append(probe_features(str(path), encode_features(model, train_x), train_y,
                                      encode_features(model, test_x), test_y, max_iter, l2, l0=l0))
    return results


def results_table(results: list[ProbeResult]) -> str:
    """Markdown table of probe results."""
    lines = ["| features | dim | L0 (test) | probe L2 | train acc | test acc | probe s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.features} | {r.l0:.1f} | {r.l2:g} | {100 * r.train_accuracy:.2f}% | "
                     f"{100 * r.test_accuracy:.2f}% | {r.seconds:.0f} |")
    return "\n".join(lines)


def write_results_csv(results: list[ProbeResult], path: str | os.PathLike) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["features", "dim", "l0", "l2", "train_accuracy", "test_accuracy", "seconds"])
    for r in results:
        w.writerow([r.name, r.features, r.l0, r.l2, r.train_accuracy, r.test_accuracy, r.seconds])
    atomic_write_text(Path(path), buf.getvalue())
