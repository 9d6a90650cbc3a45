"""Checkpoints of a training run, for resuming it after it was killed.

A checkpoint is everything the loop needs to continue as if never stopped:
the model's parameters and buffers, the optimizer's state, the running rho_hat
estimates, the RNG states (the shuffle generator as it was when the epoch
began, so the epoch's order can be drawn again), the epoch and step, and the
epoch's running loss sums. Tensors go to a safetensors file, the rest to JSON;
no pickle. The rest of the loop's state is a function of the global step (the
learning rate's decay, beta's warm-up) and is not saved.

Written so that a kill at any moment leaves a usable checkpoint: the tensors
go to a new file `checkpoint/<epoch>-<step>.safetensors` (atomically), then
`checkpoint/state.json` (atomically) names it with its SHA-256, then the
older tensor files are deleted. A reader trusts only what state.json names, and only
once state.json (`CheckpointMeta`) and the tensors (names, shapes, against the model of
config.json) are checked: a bad file is refused before anything is changed.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..config import RunConfig, without_removed
from ..schema import build, in_file, param, show
from ..errors import SparseAEError
from ..objective import LossParts
from ..run.background import BackgroundWriter
from ..run.files import atomic_write, atomic_write_text, to_json_text, write_bytes_synced
from ..run.rundir import RunDir, check_tensors, check_trained_record, safetensors_metadata, trained_record

FOLDER = "checkpoint"
_TENSORS = re.compile(r"e\d{4,}-s\d{7,}\.safetensors")
_TEMP = re.compile(r"\.(e\d{4,}-s\d{7,}\.safetensors|state\.json)\w*\.tmp")  # atomic_write's temp names


@dataclass
class LoopState:
    """Where the training loop is: epoch (1-based) and steps done in it."""

    epoch: int = 1
    step: int = 0
    epoch_rng: torch.Tensor | None = None
    """State of the shuffle generator when this epoch began."""
    sums: torch.Tensor | None = None
    """This epoch's running sums of the loss parts (times batch rows)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    reached: bool = False
    finished: bool = False


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Parameters and all buffers, persistent or not (e.g. firing counters used by AuxK).
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


class Checkpointer:
    """Saves and loads the checkpoint of one run folder.

    With a `writer` (run/background.py), the checkpoint at the end of an epoch is written by its thread
    from a copy of the state, while the next epoch trains; one taken within an epoch
    (`checkpoint_every`) is on disk before the next step, as before."""

    def __init__(self, run: RunDir, config: dict[str, Any] | None = None, write: bool = True,
                 writer: BackgroundWriter | None = None):
        self.run, self.config, self.write = run, config, write  # write: False on data-parallel ranks > 0
        self.writer = writer
        self.dir = run.path / FOLDER

    def exists(self) -> bool:
        return (self.dir / "state.json").is_file()

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, objective: Any,
             state: LoopState) -> None:
        if not self.write:
            return
        tensors = {f"model.{k}": v.detach() for k, v in _model_tensors(model).items()}
        opt = optimizer.state_dict()
        scalars: dict[str, Any] = {}
        for idx, st in opt["state"].items():
            for name, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{idx}.{name}"] = v.detach()
                else:
                    scalars[f"{idx}.{name}"] = v
        for layer, rm in getattr(objective, "running", {}).items():
            if rm.value is not None:
                tensors[f"running.{layer}"] = rm.value
        tensors.update(objective.state_tensors() if hasattr(objective, "state_tensors") else {})
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        tensors["rng.epoch"] = state.epoch_rng
        if state.sums is not None:
            tensors["loop.sums"] = state.sums
        later = self.writer is not None and state.step == 0  # the end of an epoch
        # a copy when written later: .to("cpu") of a CPU tensor is the tensor itself, still training
        tensors = {k: v.to("cpu", copy=later).contiguous() for k, v in tensors.items()}
        meta = {"epoch": state.epoch, "step": state.step, "elapsed": state.elapsed, "reached": state.reached,
                "finished": state.finished, "history": list(state.history),
                "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}, "config": self.config}
        self.check_folder()
        if later:
            self.writer.submit(self._write, tensors, meta)
            return
        if self.writer is not None:
            self.writer.wait()  # the checkpoints before it are on disk first
        self._write(tensors, meta)

    def _write(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """The tensor file, then state.json naming it, then the clean-up (the crash protocol above)."""
        previous = self._named_tensors()
        data = st_save(tensors, metadata=trained_record(self.config))  # the settings trained with
        name = f"e{meta['epoch']:04d}-s{meta['step']:07d}.safetensors"
        atomic_write(self.dir / name, lambda tmp: write_bytes_synced(tmp, data))
        meta = {"tensors": name, "sha256": hashlib.sha256(data).hexdigest(), **meta}
        atomic_write_text(self.dir / "state.json", to_json_text(meta, indent=1))
        # Clean up only what this checkpoint wrote: the tensors the previous state.json named, and
        # temp files of a killed write of ours (their names start with ours); nothing else, and never
        # through a symbolic link.
        stale = [self.dir / previous] if previous not in (None, name) else []
        stale += [p for p in self.dir.iterdir() if _TEMP.fullmatch(p.name)]
        for old in stale:
            if old.is_file() and not old.is_symlink():
                old.unlink(missing_ok=True)

    def check_folder(self) -> None:
        """The checkpoint folder is a real folder inside the run folder: writing (and cleaning up)
        through a symbolic link could delete files elsewhere."""
        if self.dir.is_symlink() or (self.dir.exists() and not self.dir.is_dir()):
            raise SparseAEError(f"{self.dir} is a symbolic link or not a folder; refusing to write checkpoints "
                                "through it")

    def _named_tensors(self) -> str | None:
        """The tensors file the current state.json names, if there is a readable one."""
        try:
            name = json.loads((self.dir / "state.json").read_text(encoding="utf-8")).get("tensors")
        except (OSError, ValueError, AttributeError):
            return None
        return name if isinstance(name, str) and _TENSORS.fullmatch(name) else None

    def read_meta(self) -> dict[str, Any]:
        """state.json, checked against `CheckpointMeta`: a SparseAEError names the file, the key, the value."""
        name = f"{FOLDER}/state.json"
        raw = self.run.read_json(name, missing=f"{self.run.path} has no checkpoint to resume from ({name})")
        with in_file(self.dir / "state.json"):
            if isinstance(raw, dict) and "config" in raw:
                raw = {**raw, "config": without_removed(raw["config"])}  # an older run's settings read as from_dict
            meta = build(CheckpointMeta, raw)
            meta.validate()
        return asdict(meta)

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, objective: Any) -> LoopState:
        meta = self.read_meta()
        path = self.dir / meta["tensors"]  # a plain file name: read_meta refuses any other
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SparseAEError(f"checkpoint file {path} is missing (named by state.json's tensors)") from None
        except OSError as e:
            raise SparseAEError(f"checkpoint file {path}: cannot read ({e.strerror})") from None
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise SparseAEError(f"checkpoint file {path} is corrupt (SHA-256 mismatch)")
        try:
            t = st_load(data)
        except Exception as e:  # safetensors raises its own error types for malformed files
            raise SparseAEError(f"checkpoint file {path}: cannot read tensors ({e})") from None
        # everything is checked before anything is changed
        with in_file(path):
            _check_tensors(t, model, objective, meta["step"])
            opt_state = _optimizer_tensors(t, optimizer)
        with in_file(self.dir / "state.json"):
            opt = _optimizer_meta(meta["optimizer"], optimizer, opt_state)
        check_trained_record(self.run, safetensors_metadata(data), path)  # config.json edited since?
        with torch.no_grad():
            for k, v in _model_tensors(model).items():
                v.copy_(t[f"model.{k}"])
        try:
            optimizer.load_state_dict(opt)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise SparseAEError(f"{self.dir / 'state.json'}: optimizer does not fit the model of config.json "
                                f"({e})") from None
        for layer, rm in getattr(objective, "running", {}).items():
            if f"running.{layer}" in t:
                rm.value = t[f"running.{layer}"].to(model_device(model))
        if hasattr(objective, "load_state_tensors"):
            objective.load_state_tensors(t, model_device(model))  # the L0 controller's beta
        torch.set_rng_state(t["rng.torch"])
        if torch.cuda.is_available():
            states = [t[k] for k in sorted(k for k in t if k.startswith("rng.cuda."))]
            if len(states) == torch.cuda.device_count():
                try:
                    torch.cuda.set_rng_state_all(states)
                except (RuntimeError, TypeError) as e:
                    raise SparseAEError(f"checkpoint file {path}: rng.cuda.*: {e}") from None
        sums = t.get("loop.sums")
        return LoopState(meta["epoch"], meta["step"], t["rng.epoch"],
                         None if sums is None else sums.to(model_device(model)), meta["history"],
                         meta["elapsed"], meta["reached"], meta["finished"])


# The columns of a metrics row that resuming reads back (loss.png draws them).
HISTORY_COLUMNS = ("epoch", "train_loss", "train_recon", "val_mse")


@dataclass
class OptimizerMeta:
    """state.json's "optimizer": the optimizer's param_groups and its non-tensor state
    ("<parameter index>.<name>": value); its tensors are in the tensor file as optim.<index>.<name>."""

    param_groups: list[dict[str, Any]]
    scalars: dict[str, Any]


@dataclass
class CheckpointMeta:
    """checkpoint/state.json: what the tensors are, where the loop is, the metrics so far."""

    tensors: str = param(pattern=r"[\w.-]+\.safetensors",
                         what="a plain file name in checkpoint/ ending in .safetensors")
    """The tensor file: a name in the checkpoint folder, never a path out of it."""
    sha256: str = param(pattern="[0-9a-f]{64}", what="64 lower-case hexadecimal digits")
    epoch: int = param(gt=0)
    step: int = param(ge=0)
    elapsed: float = param(ge=0)
    reached: bool
    finished: bool
    history: list[dict[str, int | float]]
    """One metrics row per finished epoch."""
    optimizer: OptimizerMeta
    config: RunConfig | None

    def validate(self) -> None:
        """The rules between keys: one history row per finished epoch, rows alike."""
        if len(self.history) != self.epoch - 1:
            raise SparseAEError(f"history has {len(self.history)} rows; epoch {self.epoch} needs {self.epoch - 1} "
                                "(one per finished epoch)")
        if self.finished and not self.history:
            raise SparseAEError("finished is true but history is empty: no epoch has run")
        for i, row in enumerate(self.history):
            missing = [c for c in HISTORY_COLUMNS if c not in row]
            if missing:
                raise SparseAEError(f"history[{i}] has no {missing[0]}; rows need {', '.join(HISTORY_COLUMNS)}")
            if row.keys() != self.history[0].keys():
                raise SparseAEError(f"history[{i}] has keys {show(sorted(row))}; history[0] has "
                                    f"{show(sorted(self.history[0]))}")
            if row["epoch"] != i + 1:
                raise SparseAEError(f"history[{i}].epoch must be {i + 1}; got {show(row['epoch'])}")


def _check_tensors(t: dict[str, torch.Tensor], model: torch.nn.Module, objective: Any, step: int) -> None:
    """Refuse a tensor file that does not fit the model of config.json, or lacks what resuming reads."""
    check_tensors(t, _model_tensors(model), prefix="model.")
    rng = torch.get_rng_state()
    for key in ("rng.torch", "rng.epoch"):
        if key not in t:
            raise SparseAEError(f"no tensor {key} (a generator's state)")
        if t[key].dtype != rng.dtype or t[key].shape != rng.shape:
            raise SparseAEError(f"{key} must be a uint8 tensor of shape {list(rng.shape)} (a generator's state); "
                                f"got {t[key].dtype} of shape {list(t[key].shape)}")
    sums = t.get("loop.sums")
    parts = len(LossParts._fields)
    if sums is None and step > 0:
        raise SparseAEError(f"no tensor loop.sums, which a checkpoint taken at step {step} of an epoch needs")
    if sums is not None and (not sums.is_floating_point() or tuple(sums.shape) != (parts,)):
        raise SparseAEError(f"loop.sums must be a float tensor of shape [{parts}] (the loss parts); "
                            f"got {sums.dtype} of shape {list(sums.shape)}")
    config = getattr(model, "config", None)
    for layer in getattr(objective, "running", {}):
        v = t.get(f"running.{layer}")
        if v is not None and config is not None and tuple(v.shape) != (config.hidden[layer],):
            raise SparseAEError(f"running.{layer} has shape {list(v.shape)} but layer {layer} of the model of "
                                f"config.json has {config.hidden[layer]} units")


def _kind(like: Any) -> tuple[str, Callable[[Any], bool]]:
    """What a saved param_groups value must be where the optimizer has `like`: (in words, test)."""
    if like is None or isinstance(like, bool):
        return "true, false or null", lambda v: v is None or isinstance(v, bool)
    if isinstance(like, (int, float)):
        return "a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) \
            and math.isfinite(v)
    if isinstance(like, (list, tuple)):
        items = [_kind(w)[1] for w in like]
        return f"a list of {len(like)} like {show(list(like))}", \
            lambda v: isinstance(v, list) and len(v) == len(items) and all(ok(x) for ok, x in zip(items, v))
    return f"a {type(like).__name__}", lambda v: isinstance(v, type(like))


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters in state_dict's numbering."""
    return [p for g in optimizer.param_groups for p in g["params"]]


def _optimizer_tensors(t: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    """The optimizer's tensor state (optim.<index>.<name>), checked against the parameters of the model
    of config.json: an index of one of them, floats, the parameter's shape (scalars aside)."""
    params = _params(optimizer)
    state: dict[int, dict[str, Any]] = {}
    for key, v in t.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = (key.split(".", 2) + ["", ""])[:3]
        if not re.fullmatch("[0-9]+", idx) or int(idx) >= len(params) or not name:
            raise SparseAEError(f"tensor {key} names no parameter of the model of config.json "
                                f"(optim.<index>.<name>, index below {len(params)})")
        p = params[int(idx)]
        if not v.is_floating_point():
            raise SparseAEError(f"tensor {key} must hold floats; got {v.dtype}")
        if v.dim() > 0 and v.shape != p.shape:  # scalars (Adam's step) aside, state is shaped like its parameter
            raise SparseAEError(f"tensor {key} has shape {list(v.shape)} but parameter {idx} of the model of "
                                f"config.json has {list(p.shape)}")
        state.setdefault(int(idx), {})[name] = v
    # Adam and SGD keep the same entries for every parameter: one missing would fail in the first step.
    names = {i: sorted(s) for i, s in state.items()}
    for i in names:
        if names[i] != names[min(names)]:
            raise SparseAEError(f"the optimizer state of parameter {i} has {', '.join(names[i])}; that of "
                                f"parameter {min(names)} has {', '.join(names[min(names)])}")
    return state


def _optimizer_meta(saved: dict[str, Any], optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Any]]
                    ) -> dict[str, Any]:
    """The optimizer's state_dict: state.json's param_groups and scalars, checked against `optimizer`
    (the one the model of config.json gets), with the tensor `state`."""
    fresh = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if len(groups) != len(fresh):
        raise SparseAEError(f"optimizer.param_groups has {len(groups)} groups; the optimizer has {len(fresh)}")
    for i, (group, like) in enumerate(zip(groups, fresh)):
        key = f"optimizer.param_groups[{i}]"
        for name in ("params", "lr"):
            if name not in group:
                raise SparseAEError(f"missing key {key}.{name}")
        if group["params"] != like["params"]:
            raise SparseAEError(f"{key}.params must be {like['params']} (the model of config.json); "
                                f"got {show(group['params'])}")
        for name, value in group.items():
            if name in like:
                what, ok = _kind(like[name])
                if not ok(value):
                    raise SparseAEError(f"{key}.{name} must be {what}; got {show(value)}")
    n = len(_params(optimizer))
    for key, v in saved["scalars"].items():
        idx, _, name = key.partition(".")
        if not re.fullmatch("[0-9]+", idx) or int(idx) >= n or not name:
            raise SparseAEError(f"optimizer.scalars key {show(key)} names no parameter "
                                f"(<index>.<name>, index below {n})")
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": groups}


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
