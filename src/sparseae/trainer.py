"""The training loop: the data set lives on the device as one tensor and a
batch is a slice of a shuffled index, so a step is a handful of kernel calls
with no per-example Python work.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import RunConfig, TrainConfig
from .data import Dataset, load_dataset
from .errors import SparseAEError
from .metrics import evaluate
from .model import SparseAutoencoder
from .objective import Objective
from .pictures import save_features, save_loss_plot, save_reconstructions
from .rundir import RunDir

N_RECON = 10  # validation images shown in each reconstructions/epoch_NNN.png


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SparseAEError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


@dataclass
class TrainResult:
    model: SparseAutoencoder
    history: list[dict[str, Any]]
    """One row per epoch, as in metrics.csv."""
    seconds: float
    reached_target: bool
    run_dir: RunDir | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def fit(model: SparseAutoencoder, objective: Objective, train_x: torch.Tensor, val_x: torch.Tensor,
        cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """Train `model` in place; returns (per-epoch rows, whether target_val_mse was reached)."""
    optimizer = make_optimizer(model.parameters(), cfg)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    n, bs = train_x.shape[0], cfg.batch_size
    steps = (n + bs - 1) // bs
    history: list[dict[str, Any]] = []
    bar = tqdm(total=cfg.epochs * steps, disable=not progress, unit="step", dynamic_ncols=True)
    reached = False
    model.train()
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=shuffle).to(train_x.device)
        sums = torch.zeros(4, dtype=torch.float64, device=train_x.device)  # no .item() per step
        for i in range(0, n, bs):
            xb = train_x.index_select(0, perm[i:i + bs])
            parts = objective(model, model(xb))
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            optimizer.step()
            sums += torch.stack([p.detach() for p in parts]).double() * xb.shape[0]
            bar.update(1)
        train = (sums / n).tolist()
        val = evaluate(model, val_x, cfg.dead_threshold)
        row = {"epoch": epoch, "train_loss": train[0], "train_recon": train[1], "train_sparsity": train[2],
               "train_decay": train[3], "val_mse": val["mse"], "val_fvu": val["fvu"],
               "mean_activation": val["mean_activation"], "dead_fraction": val["dead_fraction"],
               "l0": val["l0"], "epoch_seconds": time.perf_counter() - t0,
               "elapsed_seconds": time.perf_counter() - t_start}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_mse=f"{row['val_mse']:.4f}",
                        act=f"{row['mean_activation']:.3f}")
        if not np.isfinite(row["train_loss"]):
            bar.close()
            raise SparseAEError(f"training diverged at epoch {epoch} (loss {row['train_loss']}); lower --lr")
        if on_epoch is not None:
            on_epoch(row)
        if cfg.target_val_mse is not None and row["val_mse"] <= cfg.target_val_mse:
            reached = True
            break
    bar.close()
    return history, reached


def train(config: RunConfig, out: str | Path | None = None, dataset: Dataset | None = None,
          progress: bool = True) -> TrainResult:
    """Train a sparse autoencoder as configured; writes the run folder `out` if given."""
    config.validate()
    tc = config.train
    if dataset is None:
        dataset = load_dataset(tc.dataset, tc.data_dir)
    config.model.input_dim = dataset.input_dim
    config.model.image_shape = list(dataset.image_shape) if dataset.image_shape else None
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    model = SparseAutoencoder(config.model).to(device)
    train_x = dataset.train[: tc.limit_train].to(device)
    model.input_transform.fit(train_x)
    val_x = dataset.test.to(device)

    run = RunDir(out) if out is not None else None
    if run is not None:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config)
    shown = val_x[:N_RECON]

    def on_epoch(row: dict[str, Any]) -> None:
        if run is None:
            return
        history.append(row)
        run.write_metrics(history)
        run.save_model(model)
        if dataset.image_shape:
            with torch.no_grad():
                rec = model(shown).recon
            save_reconstructions(shown.cpu().numpy(), rec.float().cpu().numpy(), dataset.image_shape,
                                 run.file(f"reconstructions/epoch_{row['epoch']:03d}.png"))
        save_loss_plot(history, run.file("loss.png"))

    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    rows, reached = fit(model, Objective(config.sparsity, tc.recon), train_x, val_x, tc, on_epoch, progress)
    seconds = time.perf_counter() - t0
    summary = {"epochs": len(rows), "seconds": seconds, "reached_target": reached, **rows[-1]}
    if run is not None:
        if dataset.image_shape:
            save_features(model.encoder[0].weight.detach().float().cpu().numpy(), dataset.image_shape,
                          run.file("features.png"))
        run.write_json("summary.json", summary)
    return TrainResult(model.eval(), rows, seconds, reached, run, summary)
