"""sparseae: sparse autoencoders on PyTorch.

data -> model -> objective -> training -> run folder -> analysis:
`load_dataset` -> `SparseAutoencoder` -> `Objective` (reconstruction +
`penalties`) -> `train` -> `RunDir` / `load_run` -> `evaluate`.
See docs/architecture.md for the layers and what each holds.

The names below are imported on first use (PEP 562), so `import sparseae` is
instant and brings in neither torch, matplotlib nor scipy until they are needed.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ModelConfig": "config", "RunConfig": "config", "SparsityConfig": "config", "TrainConfig": "config",
    "SparseAEError": "errors",
    "DataSource": "data", "Dataset": "data", "load_dataset": "data",
    "AutoencoderOutput": "model", "SparseAutoencoder": "model",
    "LossParts": "objective", "Objective": "objective", "penalties": "objective",
    "TrainResult": "training", "fit": "training", "train": "training",
    "RunDir": "run", "load_run": "run",
    "evaluate": "objective.metrics",
    "SparseAutoencoderTransformer": "apps.estimator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'sparseae' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
