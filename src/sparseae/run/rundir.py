"""The run folder: every file written atomically (temp file in the folder + rename).

Layout: config.json, model.safetensors, metrics.csv, summary.json, loss.png,
features.png, reconstructions/epoch_NNN.png. model.safetensors' metadata records the settings the
weights were trained with (TRAINED_WITH); whatever reads the model refuses a config.json edited since.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..config import RunConfig
from ..schema import in_file, show
from ..data.arrays import is_number
from ..errors import SparseAEError, first_line
from .files import atomic_write, atomic_write_json, atomic_write_text
from ..model import SparseAutoencoder


class RunDir:
    """Reads and writes one run folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def require_folder(self) -> None:
        """Refuse a path that is not a folder, saying whether it is a file or nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise SparseAEError(f"{self.path} is a file, not a run folder")
        if not self.path.is_dir():
            raise SparseAEError(f"run folder {self.path} does not exist")

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def read_json(self, name: str, missing: str | None = None) -> Any:
        """The parsed JSON file `name`; `missing`: the message if there is none."""
        path = self.file(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SparseAEError(missing or f"{self.path} is not a run folder (no {name})") from None
        except NotADirectoryError:
            raise SparseAEError(f"{self.path} is a file, not a run folder") from None
        except IsADirectoryError:
            raise SparseAEError(f"{path} is a folder, not the JSON file a run folder holds") from None
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

    def save_model(self, model: SparseAutoencoder, config: RunConfig) -> None:
        """model.safetensors: the weights, and in its metadata the settings `config` they were trained with."""
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        record = trained_record(config.to_dict())
        atomic_write(self.file("model.safetensors"), lambda tmp: save_file(tensors, tmp, metadata=record))

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
    if weights.is_dir():
        raise SparseAEError(f"{weights} is a folder, not the weights file of a run")
    if not weights.is_file():
        raise SparseAEError(f"{path} has no model.safetensors")
    state = read_weights(weights)
    with in_file(weights):
        check_tensors(state, model.state_dict())
    check_trained_record(run, weights_metadata(weights), weights)
    model.load_state_dict(state)
    return model.to(device).eval()


# The key of the weights files' metadata (safetensors keeps a str -> str map in its header) under which
# the settings the weights were trained with are recorded: RunConfig.to_dict() as JSON.
TRAINED_WITH = "sparseae.trained_with"
# Settings that may differ between config.json and that record: the machine, and where the rows that
# `eval` and `report` read come from (data moved since; a model trained on rows given in Python, whose
# config.json is pointed at a file of them), not how the model was trained.
WHERE_NOT_WHAT = tuple(("train", k) for k in ("device", "dataset", "data_dir", "data", "data_key"))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file `path`, or a one-line SparseAEError naming it (safetensors raises
    its own error types for damaged files, some with a multi-line message: its first line is kept)."""
    try:
        return load_file(str(path))
    except Exception as e:
        raise SparseAEError(f"{path}: cannot read the weights ({first_line(e)})") from None


def trained_record(settings: dict[str, Any] | None) -> dict[str, str] | None:
    """The metadata written with weights trained with `settings` (RunConfig.to_dict()); None without."""
    return None if settings is None else {TRAINED_WITH: json.dumps(settings, sort_keys=True)}


def weights_metadata(path: Path) -> dict[str, str]:
    """The metadata in the header of the safetensors file `path` (the tensors are not read)."""
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise SparseAEError(f"{path}: cannot read weights ({e})") from None


def check_weights_record(run: RunDir) -> None:
    """check_trained_record for the run's model.safetensors, if it can be read: `report` draws what it
    can without the weights, but not beside a config.json that says other than what was trained."""
    weights = run.file("model.safetensors")
    try:
        metadata = weights_metadata(weights)
    except SparseAEError:
        return  # no weights, or unreadable ones: the report says so where it needs them
    check_trained_record(run, metadata, weights)


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The metadata in the header of a safetensors file read whole (and already parsed by safetensors):
    an 8-byte little-endian length, then that many bytes of JSON."""
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return header.get("__metadata__") or {}


def check_trained_record(run: RunDir, metadata: dict[str, str] | None, weights: Path) -> None:
    """Refuse a config.json that says other than the settings recorded with the weights in `weights`: the
    record is what was trained, and config.json is read by everything that uses the model (the penalty
    and beta of `eval` and `probe`, the activations of the forward pass, what `--resume` continues with).
    Only WHERE_NOT_WHAT may differ: train.device, train.dataset, train.data_dir, train.data, train.data_key.
    Weights written before the record existed (sparseae 0.1) have none: nothing to compare, they load as before."""
    text = (metadata or {}).get(TRAINED_WITH)
    if text is None:
        return
    with in_file(weights):
        try:
            trained = RunConfig.from_dict(json.loads(text)).to_dict()
        except ValueError as e:
            raise SparseAEError(f"metadata {TRAINED_WITH} is not JSON ({e})") from None
    now = run.read_config().to_dict()
    for section in sorted(set(now) | set(trained)):
        said, was = now.get(section, {}), trained.get(section, {})
        for key in sorted(set(said) | set(was)):
            if (section, key) in WHERE_NOT_WHAT or said.get(key, _ABSENT) == was.get(key, _ABSENT):
                continue
            raise SparseAEError(f"{run.file('config.json')} says {section}.{key} {_shown(said, key)}, the model "
                                f"was trained with {_shown(was, key)} (recorded in {weights}); put it back, or "
                                "train a new run")


_ABSENT = object()


def _shown(values: dict[str, Any], key: str) -> str:
    return show(values[key]) if key in values else "nothing"


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
