"""Checkpoints of a training run, for resuming it after it was killed.

A checkpoint is everything the loop needs to continue as if never stopped:
the model's parameters and buffers, the optimizer's state, the running rho_hat
estimates, the RNG states (the shuffle generator as it was when the epoch
began, so the epoch's order can be drawn again), the epoch and step, and the
epoch's running loss sums. Tensors go to a safetensors file, the rest to JSON;
no pickle.

Written so that a kill at any moment leaves a usable checkpoint: the tensors
go to a new file `checkpoint/<epoch>-<step>.safetensors` (atomically), then
`checkpoint/state.json` (atomically) names it with its SHA-256, then the
older tensor files are deleted. A reader trusts only what state.json names.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import SparseAEError
from ..run.files import atomic_write, atomic_write_text, write_bytes_synced
from ..run.rundir import RunDir

FOLDER = "checkpoint"


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
    """Saves and loads the checkpoint of one run folder."""

    def __init__(self, run: RunDir, config: dict[str, Any] | None = None, write: bool = True):
        self.run, self.config, self.write = run, config, write  # write: False on data-parallel ranks > 0
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
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        tensors["rng.epoch"] = state.epoch_rng
        if state.sums is not None:
            tensors["loop.sums"] = state.sums
        tensors = {k: v.to("cpu").contiguous() for k, v in tensors.items()}
        data = st_save(tensors)
        name = f"e{state.epoch:04d}-s{state.step:07d}.safetensors"
        atomic_write(self.dir / name, lambda tmp: write_bytes_synced(tmp, data))
        meta = {"tensors": name, "sha256": hashlib.sha256(data).hexdigest(), "epoch": state.epoch,
                "step": state.step, "elapsed": state.elapsed, "reached": state.reached,
                "finished": state.finished, "history": state.history,
                "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}, "config": self.config}
        atomic_write_text(self.dir / "state.json", json.dumps(meta, indent=1) + "\n")
        for old in [*self.dir.glob("e*-s*.safetensors"), *self.dir.glob(".*.tmp")]:
            if old.name != name:
                old.unlink(missing_ok=True)  # older checkpoints, temp files of a killed write

    def read_meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "state.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SparseAEError(f"{self.run.path} has no checkpoint to resume from ({FOLDER}/state.json)") \
                from None
        except json.JSONDecodeError as e:
            raise SparseAEError(f"{self.dir / 'state.json'}: invalid JSON ({e})") from None

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, objective: Any) -> LoopState:
        meta = self.read_meta()
        path = self.dir / meta["tensors"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SparseAEError(f"checkpoint file {path} is missing") from None
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise SparseAEError(f"checkpoint file {path} is corrupt (SHA-256 mismatch)")
        t = st_load(data)
        with torch.no_grad():
            for k, v in _model_tensors(model).items():
                if f"model.{k}" not in t:
                    raise SparseAEError(f"checkpoint {path} has no tensor for model.{k}: another model?")
                v.copy_(t[f"model.{k}"])
        opt_state: dict[int, dict[str, Any]] = {}
        for key, v in t.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = v
        for key, v in meta["optimizer"]["scalars"].items():
            idx, name = key.split(".", 1)
            opt_state.setdefault(int(idx), {})[name] = v
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
        for layer, rm in getattr(objective, "running", {}).items():
            if f"running.{layer}" in t:
                rm.value = t[f"running.{layer}"].to(model_device(model))
        torch.set_rng_state(t["rng.torch"])
        if torch.cuda.is_available():
            states = [t[k] for k in sorted(k for k in t if k.startswith("rng.cuda."))]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        sums = t.get("loop.sums")
        return LoopState(meta["epoch"], meta["step"], t["rng.epoch"],
                         None if sums is None else sums.to(model_device(model)), meta["history"],
                         meta["elapsed"], meta["reached"], meta["finished"])


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
