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
from ..schema import in_file
from ..data.arrays import is_number
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

    def read_json(self, name: str, missing: str | None = None) -> Any:
        """The parsed JSON file `name`; `missing`: the message if there is none."""
        path = self.file(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SparseAEError(missing or f"{self.path} is not a run folder (no {name})") from None
        except json.JSONDecodeError as e:
            raise SparseAEError(f"{path}: invalid JSON ({e})") from None
        except RecursionError:  # json's parser recurses once per level of nesting
            raise SparseAEError(f"{path}: invalid JSON (nested too deeply)") from None
        except UnicodeDecodeError as e:
            raise SparseAEError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise SparseAEError(f"{path}: cannot read ({e.strerror})") from None

    def write_config(self, config: RunConfig) -> None:
        self.write_json("config.json", config.to_dict())

    def read_config(self) -> RunConfig:
        """config.json, checked as any RunConfig is: a value of the wrong type, an unknown key or a
        setting out of range raises a SparseAEError that names the file, the key and the value."""
        data = self.read_json("config.json")
        with in_file(self.file("config.json")):
            config = RunConfig.from_dict(data)
            config.validate()
        return config

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
        """metrics.csv's rows as numbers (NaN allowed: a diverged epoch); anything else is named in one line."""
        path = self.file("metrics.csv")
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader, [])
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SparseAEError(f"{path}: cannot read ({e})") from None
        if not header or any(not name for name in header) or len(set(header)) != len(header):
            raise SparseAEError(f"{path}: the first line must name each column once, got {header}")
        out = []
        for i, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise SparseAEError(f"{path}: line {i} has {len(row)} values for {len(header)} columns")
            try:
                out.append({k: float(v) for k, v in zip(header, row)})
            except ValueError:
                bad = next(v for v in row if not is_number(v))
                raise SparseAEError(f"{path}: line {i}: {bad!r} is not a number") from None
        return out


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
    with in_file(weights):
        check_tensors(state, model.state_dict())
    model.load_state_dict(state)
    return model.to(device).eval()


def check_tensors(found: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Refuse tensors (`prefix` + name) that do not fit the model config.json describes (`wanted`):
    one missing, one too many, another shape. Before any is copied: copy_ would broadcast."""
    for k, v in wanted.items():
        if prefix + k not in found:
            raise SparseAEError(f"no tensor {prefix}{k}, which the model of config.json has: another model?")
        got = found[prefix + k]
        if got.shape != v.shape:
            raise SparseAEError(f"{prefix}{k} has shape {list(got.shape)} but the model of config.json "
                                f"needs {list(v.shape)}")
    extra = sorted(k for k in found if k.startswith(prefix) and k[len(prefix):] not in wanted)
    if extra:
        raise SparseAEError(f"tensor {extra[0]} is not in the model of config.json: another model?")


def load_run_data(config: RunConfig, data_dir: str | None = None):
    """The data set a run was trained on (its validation rows are what `eval` and `report` use), checked
    to fit the run's model: a config.json that names other data fails here in one line, not in a matmul."""
    from ..data import load_dataset

    tc = config.train
    data = load_dataset(tc.dataset, data_dir or tc.data_dir, **tc.dataset_options())
    if data.input_dim != config.model.input_dim:
        raise SparseAEError(f"the {tc.dataset} data has {data.input_dim} features per row but the run's model "
                            f"takes {config.model.input_dim}: config.json's train section names other data")
    return data
