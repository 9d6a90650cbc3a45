"""sparseae: sparse autoencoders on PyTorch.

data -> model -> objective -> training -> run folder -> analysis:
`load_dataset` -> `SparseAutoencoder` -> `Objective` (reconstruction +
`penalties`) -> `train` -> `RunDir` / `load_run` -> `evaluate`.
"""
from . import penalties
from .config import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from .data import Dataset, load_dataset
from .errors import SparseAEError
from .metrics import evaluate
from .model import AutoencoderOutput, SparseAutoencoder
from .objective import LossParts, Objective
from .rundir import RunDir, load_run
from .trainer import TrainResult, fit, train

__version__ = "0.1.0"

__all__ = [
    "AutoencoderOutput", "Dataset", "LossParts", "ModelConfig", "Objective", "RunConfig", "RunDir",
    "SparseAEError", "SparseAutoencoder", "SparsityConfig", "TrainConfig", "TrainResult", "evaluate",
    "fit", "load_dataset", "load_run", "penalties", "train",
    "SparseAutoencoderTransformer",
]


def __getattr__(name: str):
    # scikit-learn is imported only when the estimator is asked for.
    if name == "SparseAutoencoderTransformer":
        from .estimator import SparseAutoencoderTransformer
        return SparseAutoencoderTransformer
    raise AttributeError(f"module 'sparseae' has no attribute '{name}'")
