"""`train`: one training run, start to finish, as five named steps.

1. `prepare_data`: load the data set (in memory or streamed), select classes,
   and record the input size and image shape in the configuration;
2. `build_model`: a new model (initialised, input transform fitted) or the one given;
3. `prepare_run_folder`: the run folder and its checkpointer (rank 0 only writes);
4. fitting: the minibatch loop (loop.py) or a full-batch optimizer (fullbatch.py),
   with `EpochArtifacts` writing metrics, weights and pictures after each epoch;
5. `finish`: the final pictures and summary.json.
The run trains with the resolved configuration (`config.resolve`: every unset setting filled in
by the sparsity family), completed with the data's input size and image shape; `TrainResult.config`
holds it, and config.json records it. The caller's configuration is left as it is.
"""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..objective.metrics import never_fired_fraction, unit_firing_frequency
from ..config import FULL_BATCH_OPTIMIZERS, RunConfig, resolve
from ..data import DataSource, load_dataset
from ..data.batches import BatchSource
from ..data.dataset import SPECTRUM_ROWS, first_rows, select_classes, variance_spectrum, within_unit_interval
from ..errors import SparseAEError
from ..families import FAMILIES, can_start_principal, family_of
from ..model import SparseAutoencoder
from ..model.collectives import ONE_PROCESS, Collectives
from ..model.init import principal_directions_
from ..objective import Objective
from ..run.background import BackgroundWriter
from ..run.output import OutputFolder
from ..run.rundir import RunDir
from . import accel
from .checkpoint import Checkpointer
from .distributed import from_environment
from .fullbatch import fit_full_batch
from .loop import fit, make_optimizer, resolve_device

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
    finished_before: bool = False
    """A resumed run that had already finished: nothing was trained, no file was written."""


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
    config.model.target_dim = getattr(dataset, "target_dim", 0) or None  # a transcoder's output width
    config.model.image_shape = list(dataset.image_shape) if dataset.image_shape else None
    return dataset


def build_model(config: RunConfig, train: BatchSource, data: DataSource, device: torch.device,
                model: SparseAutoencoder | None = None) -> SparseAutoencoder:
    """A new model (seeded initialisation, input transform fitted on the training rows held in memory, or
    taken from a streamed file's statistics), or `model` moved to `device` as it is."""
    if model is not None:
        return model.to(device)
    tc = config.train
    model = SparseAutoencoder(config.model)
    model.initialize(tc.init, torch.Generator().manual_seed(tc.seed))
    model = model.to(device)
    if train.tensor is not None:
        model.input_transform.fit(train.tensor)
        if config.model.principal_start:
            principal_directions_(model, model.input_transform(train.tensor[:SPECTRUM_ROWS].float()),
                                  config.sparsity.target_l0)
    elif data.statistics is not None and (model.input_transform.kind != "none" or model.input_transform.rescale):
        st = data.statistics
        model.input_transform.set_statistics(torch.from_numpy(st.mean), torch.from_numpy(st.std),
                                             None if st.covariance is None else torch.from_numpy(st.covariance))
    return model


def claim_output(out: str | Path | None, if_exists: str, resume: bool,
                 collectives: Collectives) -> OutputFolder | None:
    """The run folder, checked before anything is loaded or written (run/output.py); a resumed run
    continues in its own folder, and only the process that writes files (rank 0) claims one."""
    if out is None or resume or not collectives.is_main:
        return None
    return OutputFolder(out, if_exists)


def prepare_run_folder(out: str | Path | None, output: OutputFolder | None, config: RunConfig, resume: bool,
                       collectives: Collectives, writer: BackgroundWriter | None = None
                       ) -> tuple[RunDir | None, Checkpointer | None]:
    """The run folder (config.json written unless resuming) and its checkpointer (its end-of-epoch
    checkpoints written by `writer`'s thread); None without `out`."""
    if out is None:
        return None, None
    run = RunDir(output.create() if output is not None else out)
    if collectives.is_main and not resume:
        run.write_config(config)
    return run, Checkpointer(run, config.to_dict(), write=collectives.is_main, writer=writer)


class EpochArtifacts:
    """After each epoch (or full-batch report): metrics.csv, the weights, this epoch's
    reconstructions and the loss plot, in the run folder; with `tensorboard` (a folder), the same
    numbers and pictures as TensorBoard events there (run/tensorboard.py). With a `writer`, the loss
    plot (matplotlib, the slow one) is drawn by its thread from the rows so far."""

    def __init__(self, run: RunDir, config: RunConfig, model: SparseAutoencoder, data: DataSource, val_x,
                 history: list, tensorboard: str | Path | None = None, writer: BackgroundWriter | None = None):
        from ..run.tensorboard import TensorBoardLog

        self.run, self.model, self.data, self.history, self.writer = run, model, data, history, writer
        if writer is not None:
            from ..run.pictures import import_matplotlib

            writer.submit(import_matplotlib)  # while the first epoch trains
        self.config = config  # recorded with the weights: what they were trained with
        self.shown = first_rows(val_x, N_RECON) if data.image_shape else None
        self.frequency: torch.Tensor | None = None
        self.tensorboard = TensorBoardLog(tensorboard) if tensorboard is not None else None

    def __call__(self, row: dict[str, Any], frequency: torch.Tensor | None = None) -> None:
        """`frequency`: each code unit's firing share on the validation rows, from the pass that measured
        `row` (kept for finish(), so the feature density needs no pass of its own)."""
        from ..run.pictures import save_loss_plot, save_reconstructions

        self.history.append(row)
        self.frequency = frequency
        self.run.write_metrics(self.history)
        self.run.save_model(self.model, self.config)
        shown = rec = None
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
            shown, rec = self.shown.cpu().numpy(), rec.float().cpu().numpy()
            save_reconstructions(shown, rec, self.data.image_shape, self.run.file(f"reconstructions/{step}.png"))
        if self.writer is not None:
            self.writer.submit(save_loss_plot, list(self.history), self.run.file("loss.png"))
        else:
            save_loss_plot(self.history, self.run.file("loss.png"))
        if self.tensorboard is not None:
            weights = input_filters(self.model) if self.data.image_shape else None  # as features.png
            self.tensorboard.log(row, shown, rec, weights, self.data.image_shape)


def input_filters(model: SparseAutoencoder):
    """The first layer's filters on the raw input (W @ ZCA for a whitened model, as UFLDL shows them),
    as a float32 numpy array: features.png and TensorBoard's feature images."""
    return model.input_transform.compose(model.encoder[0].weight.detach()).float().cpu().numpy()


def finish(run: RunDir, model: SparseAutoencoder, data: DataSource, val_x, summary: dict[str, Any],
           writer: BackgroundWriter | None = None, frequency: torch.Tensor | None = None) -> None:
    """The run's last files: feature density (a matplotlib plot, drawn by `writer`'s thread, if given)
    and learned features (a tile grid, drawn meanwhile here), then summary.json, once every other file
    is written. `frequency`: the units' firing shares on the validation rows from the last epoch's
    validation, if it measured this model; else counted here."""
    from ..run.pictures import save_feature_density, save_features

    if frequency is None:
        frequency = unit_firing_frequency(model, first_rows(val_x, 65536))
    if writer is not None:
        writer.submit(save_feature_density, frequency, run.file("feature_density.png"))
    else:
        save_feature_density(frequency, run.file("feature_density.png"))
    if data.image_shape:
        save_features(input_filters(model), data.image_shape, run.file("features.png"))
    if writer is not None:
        writer.wait()
    summary["never_fired_fraction"] = never_fired_fraction(frequency)  # the CLI warns above 1%
    run.write_json("summary.json", summary)


def train(config: RunConfig, out: str | Path | None = None, dataset: DataSource | None = None,
          progress: bool = True, model: SparseAutoencoder | None = None, resume: bool = False,
          if_exists: str = "refuse", tensorboard: str | Path | None = None) -> TrainResult:
    """Train a sparse autoencoder as configured; writes the run folder `out` if given.

    `model` continues training an existing model (e.g. fine-tuning a stack) instead of a new one.
    `resume` continues the killed run in `out` from its last checkpoint (same configuration).
    `if_exists`: what to do when `out` already holds files: 'refuse' (default), 'replace' (the new run
    is written beside it and takes its place when it has finished) or 'add' (write into it).
    `tensorboard`: also log each epoch to this folder for TensorBoard (with a run folder `out`).
    Started by torchrun (WORLD_SIZE > 1), the processes train data-parallel; rank 0 writes `out`.
    """
    plan = check_run(config, out, dataset, resume, if_exists)
    if resume and (done := finished_run(RunDir(out), plan.config)) is not None:
        return done  # nothing to resume: the run's files stay as they are
    with plan.output if plan.output is not None else nullcontext():  # a failed run: a replaced folder stays
        result = _train(plan, progress, model, tensorboard)
    if plan.output is not None and result.run_dir is not None:
        result.run_dir = RunDir(plan.output.final)
    return result


@dataclass
class RunPlan:
    """A run whose settings, data, device and output folder have all been checked; nothing written yet."""

    config: RunConfig
    out: str | Path | None
    output: OutputFolder | None
    data: DataSource
    device: torch.device
    collectives: Collectives
    resume: bool

    def describe(self) -> str:
        """What `train` would do, in a few lines (`sparseae train --check`)."""
        c, tc, data = self.config, self.config.train, self.data
        sizes = "-".join(str(v) for v in [c.model.input_dim, *c.model.hidden, *c.model.decoder_sizes(),
                                          c.model.input_dim])
        rows = f"{data.train.shape[0]} training rows" if data.in_memory else "training rows streamed from the file"
        if tc.limit_train and data.in_memory:
            rows = f"{min(tc.limit_train, data.train.shape[0])} of {data.train.shape[0]} training rows"
        state = "resumed" if self.resume else "new"
        if self.output is not None and self.output.replace:
            state = "replaced when the new run has finished"
        where = "no run folder" if self.out is None else f"run folder {self.out} ({state})"
        steps = f"{tc.max_iter} {tc.optimizer} iterations" if tc.optimizer in FULL_BATCH_OPTIMIZERS else \
            f"{tc.epochs} epochs, batch {tc.batch_size}, {tc.optimizer} lr {tc.lr:g}"
        return (f"would train {sizes} ({c.model.parameter_count():,} weights; penalty {c.sparsity.penalty}) on "
                f"{tc.dataset}: {rows}; {steps}; on {self.device.type}; {where}")


def _can_start_principal(config: RunConfig) -> bool:
    return can_start_principal(family_of(config.model, config.sparsity), config.model)


def check_run(config: RunConfig, out: str | Path | None = None, dataset: DataSource | None = None,
              resume: bool = False, if_exists: str = "refuse") -> RunPlan:
    """Every check `train` makes before its first write: the settings, the checkpoint to resume, the
    device, the data (loaded, every value finite), the output folder. Raises SparseAEError. The plan holds
    the configuration as it will be trained (`config.resolve`); `config` itself is left as it is."""
    requested, config = config, resolve(config)
    if resume and out is None:
        raise SparseAEError("resume needs the run folder to continue")
    device = resolve_device(config.train.device)
    collectives = from_environment(device) or ONE_PROCESS
    data = prepare_data(config, dataset, resume)  # bad data is named before a taken folder
    # What depends on the data (a small data set's batch size, a family's rate for the input's size): the
    # request resolved again, whole, with the data's shapes and rows; no setting is copied over by hand.
    rows = min(data.train.shape[0], config.train.limit_train or data.train.shape[0]) if data.in_memory else None
    measured = copy.deepcopy(requested)
    for name in ("input_dim", "target_dim", "image_shape"):  # what prepare_data read from the data
        setattr(measured.model, name, getattr(config.model, name))
    # the covariance's spectrum only where it can decide something (a code that can start from it, not stated)
    principal = requested.model.principal_start is None and _can_start_principal(config)
    config = resolve(measured, rows, unit_interval=within_unit_interval(data, config.train.limit_train),
                     spectrum=variance_spectrum(data, config.train.limit_train) if principal else None)
    if config.model.principal_start and not (data.in_memory and _can_start_principal(config)):
        able = ", ".join(name for name, family in FAMILIES.items() if family.principal_share is not None)
        raise SparseAEError(f"model.principal_start needs a one-layer, untied code of one of {able} with a linear "
                            "output on fewer than 784 input columns, no train.target or input transform, and the "
                            "training rows in memory (the principal directions are fitted on them)")
    if resume:
        check_resumable(RunDir(out), config)
    output = claim_output(out, if_exists, resume, collectives)
    distributed = collectives is not ONE_PROCESS
    accel.check_device_options(config.train, device, distributed)  # the settings' own rules: config.validate()
    if config.train.optimizer in FULL_BATCH_OPTIMIZERS and (not data.in_memory or resume or distributed):
        raise SparseAEError(f"optimizer '{config.train.optimizer}' needs the data in memory, one process, "
                            "no resume")
    return RunPlan(config, out, output, data, device, collectives, resume)


def _train(plan: RunPlan, progress: bool, model: SparseAutoencoder | None,
           tensorboard: str | Path | None = None) -> TrainResult:
    config, out, output, data, device, collectives, resume = (
        plan.config, plan.out, plan.output, plan.data, plan.device, plan.collectives, plan.resume)
    tc = config.train
    full_batch = tc.optimizer in FULL_BATCH_OPTIMIZERS
    accel.set_matmul_precision(tc.precision, device)
    torch.manual_seed(tc.seed)
    train = data.training(device, tc.batch_size, tc.limit_train)
    val_x = data.validation(device)
    model = build_model(config, train, data, device, model)
    collectives.broadcast_([*model.parameters(), *model.buffers()])  # every process starts equal

    with BackgroundWriter() as writer:  # leaving it waits for the files its thread writes
        run, checkpoint = prepare_run_folder(out, output, config, resume, collectives, writer)
        history: list[dict[str, Any]] = list(checkpoint.read_meta()["history"]) if resume else []
        on_epoch = EpochArtifacts(run, config, model, data, val_x, history, tensorboard, writer) \
            if run is not None and collectives.is_main else None
        objective = Objective(config.sparsity, tc.recon, collectives)
        t0 = time.perf_counter()
        if full_batch:
            rows, reached = fit_full_batch(model, objective, train.tensor, val_x, tc, on_epoch, progress)
        else:
            rows, reached = fit(model, objective, train, val_x, tc, on_epoch, progress and collectives.is_main,
                                checkpoint, resume, collectives)
        seconds = time.perf_counter() - t0
        summary = {**({} if "iteration" in rows[-1] else {"epochs": len(rows)}), "seconds": seconds,
                   "reached_target": reached, **rows[-1]}
        if run is not None and collectives.is_main:
            finish(run, model, data, val_x, summary, writer, on_epoch.frequency)
    return TrainResult(model.eval(), rows, seconds, reached, run if collectives.is_main else None, summary,
                       config)


def check_resumable(run: RunDir, config: RunConfig) -> None:
    """Raise unless `run` has a checkpoint written with this configuration (device aside)."""
    if not run.path.is_dir():
        raise SparseAEError(f"cannot resume: run folder {run.path} does not exist")
    checkpointer = Checkpointer(run)
    checkpointer.check_folder()
    if not checkpointer.exists():
        raise SparseAEError(f"cannot resume: {run.path} has no checkpoint ({run.path}/checkpoint/state.json)")
    saved, now = run.read_config().to_dict(), config.to_dict()
    diffs = [f"{section}.{k}: {v!r} in the run, {now[section].get(k)!r} now"
             for section, values in saved.items() for k, v in values.items()
             if k not in ("device", "input_dim", "image_shape") and now[section].get(k) != v]
    if diffs:
        raise SparseAEError(f"cannot resume {run.path} with a different configuration ({'; '.join(diffs)}); "
                            "leave the settings as they were, or train into a new folder")
    load_checkpoint_aside(run, config)  # `--check` says what the resume itself would say


def load_checkpoint_aside(run: RunDir, config: RunConfig) -> None:
    """Load `run`'s checkpoint into a scratch model and optimizer, as a resume would (every check: the
    tensors, their hash, the optimizer state, the trained record against config.json), changing nothing:
    not the run, not the random state."""
    scratch = SparseAutoencoder(config.model)
    rng = torch.get_rng_state()
    try:
        Checkpointer(run).load(scratch, make_optimizer(list(scratch.parameters()), config.train,
                                                       torch.device("cpu")),
                               Objective(config.sparsity, config.train.recon))
    finally:
        torch.set_rng_state(rng)


def finished_run(run: RunDir, config: RunConfig) -> TrainResult | None:
    """The result of a run that has already finished (checkpoint and summary.json written), read
    from its folder; None if it has not."""
    from ..run.rundir import load_run

    checkpointer = Checkpointer(run)
    meta = checkpointer.read_meta()
    if not meta["finished"] or not run.file("summary.json").is_file():
        return None
    load_checkpoint_aside(run, config)  # checked as a resume would check it: a damaged run is not finished
    summary = run.read_json("summary.json")
    seconds = summary.get("seconds") if isinstance(summary, dict) else None
    return TrainResult(load_run(run.path), meta["history"], float(seconds or 0.0), bool(meta["reached"]), run,
                       summary if isinstance(summary, dict) else {}, config, finished_before=True)
