"""`train`: one training run, start to finish, as five named steps.

1. `prepare_data`: load the data set (in memory or streamed), select classes,
   and record the input size and image shape in the configuration;
2. `build_model`: a new model (initialised, input transform fitted) or the one given;
3. `prepare_run_folder`: the run folder and its checkpointer (rank 0 only writes);
4. fitting: the minibatch loop (loop.py) or a full-batch optimizer (fullbatch.py),
   with `EpochArtifacts` writing metrics, weights and pictures after each epoch;
5. `finish`: the final pictures and summary.json.
The configuration is completed in place (input size, image shape, and the TopK code layer
that `penalty topk` implies), so the caller sees what was trained.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..analysis.metrics import unit_firing_frequency
from ..config import FULL_BATCH_OPTIMIZERS, RunConfig
from ..data import DataSource, load_dataset
from ..data.dataset import first_rows, select_classes
from ..errors import SparseAEError
from ..model import SparseAutoencoder
from ..model.collectives import ONE_PROCESS, Collectives
from ..objective import Objective
from ..run.rundir import RunDir
from . import accel
from .checkpoint import Checkpointer
from .distributed import from_environment
from .fullbatch import fit_full_batch
from .loop import fit, resolve_device

N_RECON = 10  # validation images shown in each reconstructions/epoch_NNN.png


@dataclass
class TrainResult:
    model: SparseAutoencoder
    history: list[dict[str, Any]]
    """One row per epoch, as in metrics.csv."""
    seconds: float
    reached_target: bool
    run_dir: RunDir | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    config: RunConfig | None = None
    """The configuration as trained (input size and image shape filled in)."""


def prepare_data(config: RunConfig, dataset: DataSource | None, resume: bool) -> DataSource:
    """The data set of the run (loaded unless given); fills in config.model's input_dim and image_shape."""
    tc = config.train
    if dataset is None:
        # a resumed run's file was checked when the run began; ZCA of a streamed file needs the covariance
        options = tc.dataset_options()
        if tc.dataset == "array":
            options.update(check=not resume, covariance=config.model.input_transform == "zca")
        dataset = load_dataset(tc.dataset, tc.data_dir, **options)
    if tc.classes:
        dataset = select_classes(dataset, tc.classes)
    config.model.input_dim = dataset.input_dim
    config.model.image_shape = list(dataset.image_shape) if dataset.image_shape else None
    return dataset


def build_model(config: RunConfig, train_x: torch.Tensor | Any, data: DataSource, device: torch.device,
                model: SparseAutoencoder | None = None) -> SparseAutoencoder:
    """A new model (seeded initialisation, input transform fitted on the training rows, or taken from a
    streamed file's statistics), or `model` moved to `device` as it is."""
    if model is not None:
        return model.to(device)
    tc = config.train
    model = SparseAutoencoder(config.model)
    model.initialize(tc.init, torch.Generator().manual_seed(tc.seed))
    model = model.to(device)
    if torch.is_tensor(train_x):
        model.input_transform.fit(train_x)
    elif data.statistics is not None and model.input_transform.kind != "none":
        st = data.statistics
        model.input_transform.set_statistics(torch.from_numpy(st.mean), torch.from_numpy(st.std),
                                             None if st.covariance is None else torch.from_numpy(st.covariance))
    return model


def prepare_run_folder(out: str | Path | None, config: RunConfig, resume: bool,
                       collectives: Collectives) -> tuple[RunDir | None, Checkpointer | None]:
    """The run folder (config.json written unless resuming) and its checkpointer; None without `out`."""
    if out is None:
        return None, None
    run = RunDir(out)
    if collectives.is_main and not resume:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config)
    return run, Checkpointer(run, config.to_dict(), write=collectives.is_main)


class EpochArtifacts:
    """After each epoch (or full-batch report): metrics.csv, the weights, this epoch's
    reconstructions and the loss plot, in the run folder."""

    def __init__(self, run: RunDir, model: SparseAutoencoder, data: DataSource, val_x, history: list):
        self.run, self.model, self.data, self.history = run, model, data, history
        self.shown = first_rows(val_x, N_RECON) if data.image_shape else None

    def __call__(self, row: dict[str, Any]) -> None:
        from ..run.pictures import save_loss_plot, save_reconstructions

        self.history.append(row)
        self.run.write_metrics(self.history)
        self.run.save_model(self.model)
        if self.shown is not None:
            # In eval mode, as the model will be used (BatchTopK's threshold, TopK's alpha*k), and back
            # through the inverse input transform, comparable with the input. (Drawn in training mode,
            # these 10 images used to move BatchTopK's threshold and the firing counters.)
            training = self.model.training
            self.model.eval()
            with torch.no_grad():
                rec = self.model.reconstruct(self.shown.to(next(self.model.parameters()).dtype))
            self.model.train(training)
            # full-batch rows count iterations, minibatch rows epochs
            step = f"epoch_{row['epoch']:03d}" if "epoch" in row else f"iter_{row['iteration']:04d}"
            save_reconstructions(self.shown.cpu().numpy(), rec.float().cpu().numpy(), self.data.image_shape,
                                 self.run.file(f"reconstructions/{step}.png"))
        save_loss_plot(self.history, self.run.file("loss.png"))


def finish(run: RunDir, model: SparseAutoencoder, data: DataSource, val_x, summary: dict[str, Any]) -> None:
    """The run's last files: learned features, feature density, summary.json."""
    from ..run.pictures import save_feature_density, save_features

    if data.image_shape:
        # filters on the raw input (W @ ZCA for a whitened model, as UFLDL shows them)
        filters = model.input_transform.compose(model.encoder[0].weight.detach())
        save_features(filters.float().cpu().numpy(), data.image_shape, run.file("features.png"))
    save_feature_density(unit_firing_frequency(model, first_rows(val_x, 65536)), run.file("feature_density.png"))
    run.write_json("summary.json", summary)


def train(config: RunConfig, out: str | Path | None = None, dataset: DataSource | None = None,
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
    data = prepare_data(config, dataset, resume)
    device = resolve_device(tc.device)
    collectives = from_environment(device) or ONE_PROCESS
    distributed = collectives is not ONE_PROCESS
    accel.check_device_options(tc, device, distributed)  # the settings' own rules: config.validate()
    full_batch = tc.optimizer in FULL_BATCH_OPTIMIZERS
    if full_batch and (not data.in_memory or resume or distributed):  # before any file
        raise SparseAEError(f"optimizer '{tc.optimizer}' needs the data in memory, one process, no resume")
    accel.set_matmul_precision(tc.precision, device)
    torch.manual_seed(tc.seed)
    train_x = data.training(device, tc.batch_size, tc.limit_train)
    val_x = data.validation(device)
    model = build_model(config, train_x, data, device, model)
    collectives.broadcast_([*model.parameters(), *model.buffers()])  # every process starts equal

    run, checkpoint = prepare_run_folder(out, config, resume, collectives)
    history: list[dict[str, Any]] = list(checkpoint.read_meta()["history"]) if resume else []
    on_epoch = EpochArtifacts(run, model, data, val_x, history) if run is not None and collectives.is_main \
        else None
    objective = Objective(config.sparsity, tc.recon, collectives)
    t0 = time.perf_counter()
    if full_batch:
        rows, reached = fit_full_batch(model, objective, train_x, val_x, tc, on_epoch, progress)
    else:
        rows, reached = fit(model, objective, train_x, val_x, tc, on_epoch, progress and collectives.is_main,
                            checkpoint, resume, collectives)
    seconds = time.perf_counter() - t0
    summary = {**({} if "iteration" in rows[-1] else {"epochs": len(rows)}), "seconds": seconds,
               "reached_target": reached, **rows[-1]}
    if run is not None and collectives.is_main:
        finish(run, model, data, val_x, summary)
    return TrainResult(model.eval(), rows, seconds, reached, run if collectives.is_main else None, summary,
                       config)


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
