"""The run folder: every file written atomically (temp file in the folder + rename).

Layout: config.json, model.safetensors, metrics.csv, summary.json, loss.png,
features.png, reconstructions/epoch_NNN.png.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import RunConfig
from ..errors import SparseAEError
from .files import atomic_write, atomic_write_text
from ..model import SparseAutoencoder


class RunDir:
    """Reads and writes one run folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.file(name), json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.file(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SparseAEError(f"{self.path} is not a run folder (no {name})") from None
        except json.JSONDecodeError as e:
            raise SparseAEError(f"{self.file(name)}: invalid JSON ({e})") from None

    def write_config(self, config: RunConfig) -> None:
        self.write_json("config.json", config.to_dict())

    def read_config(self) -> RunConfig:
        return RunConfig.from_dict(self.read_json("config.json"))

    def save_model(self, model: SparseAutoencoder) -> None:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        atomic_write(self.file("model.safetensors"), lambda tmp: save_file(tensors, tmp))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        atomic_write_text(self.file("metrics.csv"), buf.getvalue())

    def read_metrics(self) -> list[dict[str, float]]:
        with open(self.file("metrics.csv"), newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """The trained model of a run folder, in eval mode."""
    run = RunDir(path)
    config = run.read_config()
    model = SparseAutoencoder(config.model)
    weights = run.file("model.safetensors")
    if not weights.is_file():
        raise SparseAEError(f"{path} has no model.safetensors")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise SparseAEError(f"{weights}: cannot read weights ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise SparseAEError(f"{weights} does not match config.json: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()
