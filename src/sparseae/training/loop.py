"""The minibatch training loop: the data set lives on the device as one tensor and a
batch is a slice of a shuffled index, so a step is a handful of kernel calls with
no per-example Python work. The same loop takes batches streamed from a file larger
than memory (data/batches.py), checkpoints and resumes (checkpoint.py), runs
data-parallel under torchrun (its `Collectives`, model/collectives.py), and on GPUs
can record each step as a CUDA graph (accel.py).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from ..objective.metrics import evaluate_with_frequency
from ..config import TrainConfig
from ..data.batches import BatchSource, TensorBatches
from ..errors import SparseAEError
from ..families import JUMPRELU, topk_lr, topk_start_k
from ..model import SparseAutoencoder
from ..model.collectives import ONE_PROCESS, Collectives
from ..objective import Objective
from ..objective.auxk import ColumnLeaves
from . import accel, adam
from .checkpoint import Checkpointer, LoopState
from .refit import refit_decoder


FEW_STEPS = 200
"""A run of fewer optimizer steps warns: the recipes' warm-ups (beta over 200 steps), AuxK's dead window
and the lr decay are counted in steps, and a few hundred rows at batch 256 make a handful."""
FEW_ROWS = 1000
"""A data set of fewer training rows warns even with enough steps: a few hundred rows fit a wide code's
noise, and the held-out rows are too few to tell a rarely firing unit from a dead one."""


class SmallDataWarning(UserWarning):
    """Too few optimizer steps for the recipes to work (a small data set at the default batch size)."""


def few_steps_warning(rows: int, steps: int, cfg: TrainConfig) -> str | None:
    """The warning of a run of fewer than FEW_STEPS optimizer steps (with the batch size that gives enough)
    or of fewer than FEW_ROWS training rows; None for neither."""
    total = steps * cfg.epochs
    if total < FEW_STEPS:
        batch = max(8, min(cfg.batch_size, rows * cfg.epochs // FEW_STEPS))
        advice = f"--batch-size {batch}" if batch < cfg.batch_size else f"--epochs {-(-FEW_STEPS // steps)}"
        return (f"{rows} training rows at batch {cfg.batch_size} for {cfg.epochs} epochs make only {total} "
                f"optimizer steps: too few for the family's warm-up and dead-latent rules; use {advice}")
    if rows < FEW_ROWS:
        return (f"only {rows} training rows: a small data set (batch {cfg.batch_size}, {total} steps); keep the "
                "code narrow and check the held-out FVU and dead share against PCA (sparseae sweep)")
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SparseAEError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        # The fused kernel: one pass over parameters and moments instead of one per arithmetic step
        # (for a 65,536 x 768 TopK SAE on a GPU the optimizer is a large part of a step; on the CPU a
        # 784-1024 TopK step went from 32 to 27.5 ms, one thread). On the CPU the same kernel without
        # torch.optim's import of torch._dynamo (adam.py).
        if device.type == "cpu" and adam.available():
            return adam.CpuAdam(params, lr=cfg.lr)
        return torch.optim.Adam(params, lr=cfg.lr, fused=device.type in ("cuda", "cpu") or None)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


def fit(model: SparseAutoencoder, objective: Objective, train_x: torch.Tensor | BatchSource,
        val_x: torch.Tensor | Iterable[torch.Tensor], cfg: TrainConfig,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
        checkpoint: Checkpointer | None = None, resume: bool = False,
        collectives: Collectives = ONE_PROCESS) -> tuple[list[dict[str, Any]], bool]:
    """Train `model` in place; returns (per-epoch rows, whether target_val_mse was reached).

    `train_x`: a batch source (data.batches), e.g. a file streamed in chunks, or a tensor on the
    device; `val_x`: a tensor or an iterable of row chunks.
    `checkpoint` saves the loop's state every `cfg.checkpoint_every` steps and after
    each epoch; `resume` continues from the saved state. `collectives`: this process's
    share of a data-parallel run (training/distributed.py); the identity by default.
    """
    if cfg.lr is None or cfg.lr_decay is None:  # settings are filled in once, by config.resolve
        raise SparseAEError("fit needs a resolved TrainConfig (lr and lr_decay set): config.resolve(run_config)"
                            ".train, or TrainConfig(...).resolved() for the loop on its own")
    batches = TensorBatches(train_x, cfg.batch_size) if torch.is_tensor(train_x) else train_x
    if (warning := few_steps_warning(batches.num_rows, batches.steps(), cfg)) is not None and not resume:
        warnings.warn(warning, SmallDataWarning, stacklevel=2)
    loop = _Loop(model, objective, batches, val_x, cfg, on_epoch, checkpoint, collectives)
    state = checkpoint.load(model, loop.optimizer, objective) if resume else LoopState()
    loop.run(state, progress)
    return state.history, state.reached


class _Loop:
    """The minibatch loop in named steps: the optimizer and the step (set up once), one epoch, the end
    of an epoch. Every piece of its state is a function of the global step (the learning rate, beta's
    warm-up) or is in the checkpoint (LoopState, the model's buffers, the optimizer, rho_hat)."""

    def __init__(self, model: SparseAutoencoder, objective: Objective, batches: BatchSource,
                 val_x: torch.Tensor | Iterable[torch.Tensor], cfg: TrainConfig,
                 on_epoch: Callable[[dict[str, Any]], None] | None, checkpoint: Checkpointer | None,
                 collectives: Collectives):
        self.model, self.objective, self.batches, self.val_x, self.cfg = model, objective, batches, val_x, cfg
        self.on_epoch, self.checkpoint, self.collectives = on_epoch, checkpoint, collectives
        self.device = next(model.parameters()).device
        if self.device.type == "cpu":
            model.set_decoder_layout(code_major=True)  # before the optimizer's state takes the weights' layout
        self.params = list(model.parameters())
        self.optimizer = self._optimizer()
        self.forward_loss = accel.forward_loss(model, objective, cfg.precision, cfg.compile, self.device,
                                               collectives)
        self.graph = accel.GraphStep(self._step, model, self.optimizer, cfg.batch_size) if cfg.cuda_graph else None
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.steps = batches.steps()
        objective.total_steps = cfg.epochs * self.steps  # when a stated L0 starts steering beta
        # BatchTopK's first steps with per-example TopK (a unit half aligned with a feature is seldom among
        # the batch's k*B largest, so it would get no gradient; each example's k gives it one); JumpReLU's TopK
        # start (sparsity.topk_start), at the TopK families' rate
        s = objective.sparsity
        jumprelu_start = model.config.topk == JUMPRELU and bool(s.topk_start)
        share = s.topk_start if jumprelu_start else s.batchtopk_warmup
        self.topk_steps = int((share or 0.0) * objective.total_steps)
        self.start_lr = topk_lr(model.config) if jumprelu_start else None
        model.start_k = topk_start_k(s.target_l0) if jumprelu_start else None
        # AuxK's decoder columns as a leaf, added to the gradient by hand after each backward (not inside a
        # compiled step, where the leaf would break the graph)
        objective.column_leaves = None if cfg.compile else ColumnLeaves()
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # no .item() per step
        self.t_start = time.perf_counter()

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg, device = self.cfg, self.device
        optimizer = make_optimizer(self.params, cfg, device)
        if cfg.cuda_graph and device.type == "cuda":
            for group in optimizer.param_groups:
                group["capturable"] = True  # optimizer state on the device: the step can be recorded
                if cfg.lr_decay:  # a recorded step reads the rate from this tensor, set before each replay
                    group["lr"] = torch.tensor(cfg.lr, device=device)
        return optimizer

    def _step(self, xb: torch.Tensor, sums: torch.Tensor) -> None:
        parts = self.forward_loss(xb)
        self.optimizer.zero_grad(set_to_none=True)
        # data-parallel: weighted by this process's share of the batch, gradients summed
        (parts.total * self.collectives.loss_weight(xb.shape[0])).backward()
        if self.objective.column_leaves is not None:
            self.objective.column_leaves.add_grads()
        self.collectives.all_reduce_grads(self.params)
        self.model.before_step()  # e.g. drop gradient parallel to unit-norm decoder columns
        self.optimizer.step()
        self.model.after_step()  # e.g. renormalise decoder columns
        sums += torch.stack([p.detach() for p in parts]).double() * xb.shape[0]

    def run(self, state: LoopState, progress: bool) -> None:
        """Train from `state` (a fresh one, or a checkpoint's) to the last epoch or the target."""
        self.bar = tqdm(total=self.cfg.epochs * self.steps, initial=(state.epoch - 1) * self.steps + state.step,
                        disable=not progress, unit="step", dynamic_ncols=True)
        self.model.train()
        self.t_start = time.perf_counter() - state.elapsed
        try:
            for epoch in range(state.epoch, self.cfg.epochs + 1):
                if state.finished:
                    break
                t0 = time.perf_counter()
                self._epoch(epoch, state)
                if epoch == self.cfg.epochs and self.cfg.refit_decoder:  # before the last validation and save
                    refit_decoder(self.model, self.batches, self.collectives)
                if self._end_of_epoch(epoch, state, t0):
                    break
        finally:  # also after an error or an interrupt: a model kept in a Python session is left usable
            self.bar.close()
            self.objective.step = None  # used outside the loop: the full beta
            self.objective.column_leaves = None  # and AuxK's gradient through autograd
            self.model.per_example_topk = False
            self.model.set_decoder_layout(code_major=False)  # the model leaves as it came, in the usual layout

    def _epoch(self, epoch: int, state: LoopState) -> None:
        """The epoch's steps from `state.step` on, with a checkpoint every `checkpoint_every` steps."""
        every = self.cfg.checkpoint_every
        if state.epoch_rng is None:  # a new run's first epoch
            state.epoch_rng = self.shuffle.get_state()
        else:  # the generator as this epoch began (a resumed run's fresh generator has drawn nothing yet)
            self.shuffle.set_state(state.epoch_rng)
        if state.step == 0:
            self.sums.zero_()
        else:  # resumed mid-epoch: the epoch's order drawn again, the steps done skipped
            self.sums.copy_(state.sums / self.collectives.world)  # the saved sums are the global ones
        state.epoch, state.sums = epoch, self.sums
        for xb in self.batches.epoch(self.shuffle, state.step):
            self._train_step(xb, (epoch - 1) * self.steps + state.step)
            state.step += 1
            self.bar.update(1)
            if every and state.step % every == 0 and state.step < self.steps:
                state.elapsed = time.perf_counter() - self.t_start
                self._save(state)

    def _train_step(self, xb: torch.Tensor, step: int) -> None:
        """One optimizer step at the global `step` (0-based), with that step's learning rate and beta."""
        cfg = self.cfg
        starting = step < self.topk_steps
        if starting and self.start_lr is not None:
            set_lr(self.optimizer, self.start_lr)
        elif cfg.lr_decay or self.start_lr is not None:
            set_lr(self.optimizer, cfg.lr * decay_factor(step, cfg.epochs * self.steps, cfg.lr_decay or 0.0))
        self.objective.step = step
        self.model.per_example_topk = starting
        # the first JumpReLU step after a TopK start sets the thresholds from its batch (a resumed run too)
        self.model.thresholds_pending = self.start_lr is not None and step == self.topk_steps
        # beta changes at every step of its warm-up, and a recorded step keeps the beta it was recorded with
        warming_up = step < (self.objective.sparsity.beta_warmup or 0)
        run_step = self._step if self.graph is None or warming_up else self.graph
        run_step(self.collectives.shard(xb), self.sums)
        if not self.objective.starting(self.model):  # a TopK start's L0 is its k: the controller waits
            self.objective.adapt_beta(step)  # a stated L0 (sparsity.target_l0): beta follows the measured one

    def _end_of_epoch(self, epoch: int, state: LoopState, t0: float) -> bool:
        """The epoch's metrics row (history, progress bar, `on_epoch`), the stopping rule and a checkpoint;
        returns whether target_val_mse was reached."""
        cfg = self.cfg
        self.collectives.sum_(self.sums)
        val, frequency = evaluate_with_frequency(self.model, self.val_x)
        row = _epoch_row(epoch, (self.sums / self.batches.num_rows).tolist(), val, self.model,
                         time.perf_counter() - t0, time.perf_counter() - self.t_start)
        if self.objective.sparsity.target_l0 is not None:
            row["beta"] = self.objective.adapted_beta()  # what the stated L0 made of beta
        state.history.append(row)
        self.bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_mse=f"{row['val_mse']:.4f}",
                             act=f"{row['mean_activation']:.3f}")
        _check_finite(self.model, row, self.bar)
        if self.on_epoch is not None:
            self.on_epoch(row, frequency)  # the feature density of the last epoch's model: no second pass
        reached = cfg.target_val_mse is not None and row["val_mse"] <= cfg.target_val_mse
        reached = self.collectives.agree(reached)  # every process stops at the same epoch
        state.epoch, state.step, state.reached = epoch + 1, 0, reached
        state.epoch_rng = self.shuffle.get_state()  # the next epoch's, saved with its checkpoint
        state.finished, state.elapsed = reached or epoch == cfg.epochs, time.perf_counter() - self.t_start
        self._save(state)
        return reached

    def _save(self, state: LoopState) -> None:
        _save_checkpoint(self.checkpoint, self.model, self.optimizer, self.objective, state, self.collectives)


def decay_factor(step: int, total: int, share: float) -> float:
    """The learning rate's factor at `step` (0-based) of `total`: 1, then falling linearly over the last
    `share` of the steps to 1/n of it at the last step (n: the decay's length), never 0 on a step taken.
    A function of the step alone, so a resumed run continues the schedule."""
    n = max(1, round(share * total))
    return min(1.0, (total - step) / n)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _epoch_row(epoch: int, train: list[float], val: dict[str, float], model: SparseAutoencoder,
               epoch_seconds: float, elapsed: float) -> dict[str, Any]:
    """One row of metrics.csv: the epoch's mean loss parts, validation metrics, timing."""
    return {"epoch": epoch, "train_loss": train[0], "train_recon": train[1], "train_sparsity": train[2],
            "train_decay": train[3], "val_mse": val["mse"], "val_fvu": val["fvu"],
            "mean_activation": val["mean_activation"], "dead_fraction": val["dead_fraction"],
            "l0": val["l0"], **model.firing_stats(), "epoch_seconds": epoch_seconds, "elapsed_seconds": elapsed}


def _check_finite(model: SparseAutoencoder, row: dict[str, Any], bar) -> None:
    """Stop a diverged run: a non-finite loss, or weights that are no longer finite."""
    loss = torch.tensor(row["train_loss"])
    if not torch.isfinite(loss) or not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        bar.close()
        raise SparseAEError(f"training diverged at epoch {row['epoch']} (loss {row['train_loss']}, "
                            "or weights no longer finite); lower lr")


def _save_checkpoint(checkpoint: Checkpointer | None, model: SparseAutoencoder, optimizer, objective,
                     state: LoopState, collectives: Collectives) -> None:
    if state.step:
        state = replace(state, sums=collectives.sum_(state.sums.clone()))  # the epoch's sums so far, all processes
    if checkpoint is not None:
        checkpoint.save(model, optimizer, objective, state)
