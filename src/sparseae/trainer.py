"""The training loop: the data set lives on the device as one tensor and a
batch is a slice of a shuffled index, so a step is a handful of kernel calls
with no per-example Python work. The same loop takes batches streamed from a
file larger than memory (data/batches.py), checkpoints and resumes
(checkpoint.py), runs data-parallel under torchrun (distributed.py), and on
GPUs can record each step as a CUDA graph (accel.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import accel
from .checkpoint import Checkpointer, LoopState
from .config import FULL_BATCH_OPTIMIZERS, RunConfig, TrainConfig
from .data import Dataset, load_dataset
from .data.batches import BatchSource, TensorBatches
from .data.datasets import select_classes
from .data.arrays import ArrayData
from .distributed import DataParallel, all_reduce_sum, from_environment
from .errors import SparseAEError
from .fullbatch import check_model as check_full_batch_model, fit_full_batch
from .metrics import evaluate, unit_firing_frequency
from .model import SparseAutoencoder
from .objective import Objective
from .pictures import save_feature_density, save_features, save_loss_plot, save_reconstructions
from .rundir import RunDir

N_RECON = 10  # validation images shown in each reconstructions/epoch_NNN.png


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SparseAEError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        # On GPUs the fused kernel: one pass over parameters and moments instead of one per
        # arithmetic step (for a 65,536 x 768 TopK SAE the optimizer is a large part of a step).
        # On the CPU the default (foreach), whose results the CPU figures were measured with.
        return torch.optim.Adam(params, lr=cfg.lr, fused=device.type == "cuda" or None)
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


def fit(model: SparseAutoencoder, objective: Objective, train_x: torch.Tensor | BatchSource,
        val_x: torch.Tensor | Iterable[torch.Tensor], cfg: TrainConfig,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
        checkpoint: Checkpointer | None = None, resume: bool = False,
        parallel: DataParallel | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Train `model` in place; returns (per-epoch rows, whether target_val_mse was reached).

    `train_x`: a tensor on the device, or a batch source (data.batches), e.g. a file
    streamed in chunks; `val_x`: a tensor or an iterable of row chunks.
    `checkpoint` saves the loop's state every `cfg.checkpoint_every` steps and after
    each epoch; `resume` continues from the saved state. `parallel`: this process's
    share of a data-parallel run (distributed.py).
    """
    batches = TensorBatches(train_x, cfg.batch_size) if torch.is_tensor(train_x) else train_x
    device = next(model.parameters()).device
    params = list(model.parameters())
    optimizer = make_optimizer(params, cfg, device)
    if cfg.cuda_graph and device.type == "cuda":
        for group in optimizer.param_groups:
            group["capturable"] = True  # optimizer state on the device: the step can be recorded
    forward_loss = accel.forward_loss(model, objective, cfg.precision, cfg.compile, device)

    def step(xb: torch.Tensor, sums: torch.Tensor) -> None:
        parts = forward_loss(xb)
        optimizer.zero_grad(set_to_none=True)
        # data-parallel: weighted by this process's share of the batch, gradients summed
        (parts.total if parallel is None else parts.total * parallel.loss_weight(xb.shape[0])).backward()
        if parallel is not None:
            parallel.all_reduce_grads(params)
        model.before_step()  # e.g. drop gradient parallel to unit-norm decoder columns
        optimizer.step()
        model.after_step()  # e.g. renormalise decoder columns
        sums += torch.stack([p.detach() for p in parts]).double() * xb.shape[0]

    run_step = accel.GraphStep(step, model, optimizer, cfg.batch_size) if cfg.cuda_graph else step
    shuffle = torch.Generator().manual_seed(cfg.seed)
    state = checkpoint.load(model, optimizer, objective) if resume else LoopState()
    n, steps = batches.num_rows, batches.steps()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # no .item() per step
    history = state.history
    bar = tqdm(total=cfg.epochs * steps, initial=(state.epoch - 1) * steps + state.step,
               disable=not progress, unit="step", dynamic_ncols=True)
    model.train()
    t_start = time.perf_counter() - state.elapsed
    for epoch in range(state.epoch, cfg.epochs + 1):
        if state.finished:
            break
        t0 = time.perf_counter()
        if state.step == 0:
            state.epoch_rng = shuffle.get_state()
            sums.zero_()
        else:  # resumed mid-epoch: draw the epoch's order again and skip the steps done
            shuffle.set_state(state.epoch_rng)
            sums.copy_(state.sums if parallel is None else state.sums / parallel.world)
        state.epoch, state.sums = epoch, sums
        for xb in batches.epoch(shuffle, state.step):
            if parallel is not None:
                xb = parallel.shard(xb)
            run_step(xb, sums)
            state.step += 1
            bar.update(1)
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < steps:
                state.elapsed = time.perf_counter() - t_start
                _save_checkpoint(checkpoint, model, optimizer, objective, state, parallel)
        if parallel is not None:
            parallel.sum_(sums)
        train = (sums / n).tolist()
        val = evaluate(model, val_x, cfg.dead_threshold)
        row = {"epoch": epoch, "train_loss": train[0], "train_recon": train[1], "train_sparsity": train[2],
               "train_decay": train[3], "val_mse": val["mse"], "val_fvu": val["fvu"],
               "mean_activation": val["mean_activation"], "dead_fraction": val["dead_fraction"],
               "l0": val["l0"], **model.firing_stats(), "epoch_seconds": time.perf_counter() - t0,
               "elapsed_seconds": time.perf_counter() - t_start}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_mse=f"{row['val_mse']:.4f}",
                        act=f"{row['mean_activation']:.3f}")
        if not np.isfinite(row["train_loss"]):
            bar.close()
            raise SparseAEError(f"training diverged at epoch {epoch} (loss {row['train_loss']}); lower --lr")
        if on_epoch is not None:
            on_epoch(row)
        reached = cfg.target_val_mse is not None and row["val_mse"] <= cfg.target_val_mse
        if parallel is not None:
            reached = parallel.agree(reached)  # every process stops at the same epoch
        state.epoch, state.step, state.reached = epoch + 1, 0, reached
        state.finished, state.elapsed = reached or epoch == cfg.epochs, time.perf_counter() - t_start
        _save_checkpoint(checkpoint, model, optimizer, objective, state, parallel)
        if reached:
            break
    bar.close()
    return history, state.reached


def _save_checkpoint(checkpoint: Checkpointer | None, model: SparseAutoencoder, optimizer, objective,
                     state: LoopState, parallel: DataParallel | None) -> None:
    if parallel is not None and state.step:
        state = replace(state, sums=parallel.sum_(state.sums.clone()))  # the epoch's sums so far, all processes
    if checkpoint is not None:
        checkpoint.save(model, optimizer, objective, state)


def train(config: RunConfig, out: str | Path | None = None, dataset: Dataset | ArrayData | None = None,
          progress: bool = True, model: SparseAutoencoder | None = None, resume: bool = False) -> TrainResult:
    """Train a sparse autoencoder as configured; writes the run folder `out` if given.

    `model` continues training an existing model (e.g. fine-tuning a stack) instead of a new one.
    `resume` continues the killed run in `out` from its last checkpoint (same configuration).
    Started by torchrun (WORLD_SIZE > 1), the processes train data-parallel; rank 0 writes `out`.
    """
    config.validate()
    tc = config.train
    if resume:
        if out is None:
            raise SparseAEError("resume needs the run folder to continue")
        check_resumable(RunDir(out), config)
    if dataset is None:
        dataset = load_dataset(tc.dataset, tc.data_dir, **tc.dataset_options())
    if isinstance(dataset, ArrayData):  # small files go to memory, large ones are streamed
        dataset = dataset.prepare(tc.stream, check=not resume,
                                  covariance=config.model.input_transform == "zca")
    if tc.classes:
        dataset = select_classes(dataset, tc.classes)
    config.model.input_dim = dataset.input_dim
    config.model.image_shape = list(dataset.image_shape) if dataset.image_shape else None
    device = resolve_device(tc.device)
    parallel = from_environment(device)
    accel.check_options(tc, config.model, config.sparsity, device, parallel is not None)
    accel.set_matmul_precision(tc.precision, device)
    torch.manual_seed(tc.seed)
    fresh = model is None
    if fresh:
        model = SparseAutoencoder(config.model)
        model.initialize(tc.init, torch.Generator().manual_seed(tc.seed))
    model = model.to(device)
    if isinstance(dataset, ArrayData):  # streamed: statistics from the one pass over the file
        train_x, val_x = dataset.train_batches(tc.batch_size, device), dataset.val_chunks(device)
        if fresh and dataset.stats is not None and model.input_transform.kind != "none":
            st = dataset.stats
            model.input_transform.set_statistics(torch.from_numpy(st.mean), torch.from_numpy(st.std),
                                                 None if st.covariance is None else torch.from_numpy(st.covariance))
    else:
        train_x = dataset.train[: tc.limit_train].to(device)
        if fresh:
            model.input_transform.fit(train_x)
        val_x = dataset.test.to(device)
    if parallel is not None:
        parallel.broadcast_([*model.parameters(), *model.buffers()])  # every process starts equal

    full_batch = tc.optimizer in FULL_BATCH_OPTIMIZERS
    if full_batch and (not torch.is_tensor(train_x) or resume or parallel is not None):  # before any file
        raise SparseAEError(f"optimizer '{tc.optimizer}' needs the data in memory, one process, no resume")
    if full_batch:
        check_full_batch_model(config.model)

    main = parallel is None or parallel.is_main  # only rank 0 writes files
    run = RunDir(out) if out is not None else None
    if run is not None and main and not resume:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config)
    checkpoint = Checkpointer(run, config.to_dict(), write=main) if run is not None else None
    shown = val_x[:N_RECON] if dataset.image_shape else None

    def on_epoch(row: dict[str, Any]) -> None:
        if run is None or not main:
            return
        history.append(row)
        run.write_metrics(history)
        run.save_model(model)
        if dataset.image_shape:
            with torch.no_grad():  # back through the inverse input transform, comparable with the input
                rec = model.reconstruct(shown.to(next(model.parameters()).dtype))
            # full-batch rows count iterations, minibatch rows epochs
            step = f"epoch_{row['epoch']:03d}" if "epoch" in row else f"iter_{row['iteration']:04d}"
            save_reconstructions(shown.cpu().numpy(), rec.float().cpu().numpy(), dataset.image_shape,
                                 run.file(f"reconstructions/{step}.png"))
        save_loss_plot(history, run.file("loss.png"))

    history: list[dict[str, Any]] = list(checkpoint.read_meta()["history"]) if resume else []
    t0 = time.perf_counter()
    objective = Objective(config.sparsity, tc.recon)
    if parallel is not None:
        objective.mean_activation = parallel.mean_activation  # rho_hat over the global batch
        model.batch_selection = parallel.batchtopk_activation  # BatchTopK over the global batch
        model.firing_across = parallel.global_firing  # dead units (AuxK) from the global batch
        objective.total = all_reduce_sum  # AuxK's sums over the global batch
    if full_batch:
        rows, reached = fit_full_batch(model, objective, train_x, val_x, tc, on_epoch, progress)
    else:
        rows, reached = fit(model, objective, train_x, val_x, tc, on_epoch, progress and main,
                            checkpoint, resume, parallel)
    seconds = time.perf_counter() - t0
    summary = {**({} if "iteration" in rows[-1] else {"epochs": len(rows)}), "seconds": seconds,
               "reached_target": reached, **rows[-1]}
    if run is not None and main:
        if dataset.image_shape:
            # filters on the raw input (W @ ZCA for a whitened model, as UFLDL shows them)
            filters = model.input_transform.compose(model.encoder[0].weight.detach())
            save_features(filters.float().cpu().numpy(), dataset.image_shape, run.file("features.png"))
        shown_rows = val_x if torch.is_tensor(val_x) else val_x.head(65536)
        save_feature_density(unit_firing_frequency(model, shown_rows), run.file("feature_density.png"))
        run.write_json("summary.json", summary)
    return TrainResult(model.eval(), rows, seconds, reached, run if main else None, summary)


def check_resumable(run: RunDir, config: RunConfig) -> None:
    """Raise unless `run` has a checkpoint written with this configuration (device aside)."""
    if not run.path.is_dir():
        raise SparseAEError(f"cannot resume: run folder {run.path} does not exist")
    if not Checkpointer(run).exists():
        raise SparseAEError(f"cannot resume: {run.path} has no checkpoint ({run.path}/checkpoint/state.json)")
    saved, now = run.read_config().to_dict(), config.to_dict()
    diffs = [f"{section}.{k}: {v!r} in the run, {now[section].get(k)!r} now"
             for section, values in saved.items() for k, v in values.items()
             if k not in ("device", "input_dim", "image_shape") and now[section].get(k) != v]
    if diffs:
        raise SparseAEError(f"cannot resume {run.path} with a different configuration ({'; '.join(diffs)}); "
                            "leave the settings as they were, or train into a new folder")
