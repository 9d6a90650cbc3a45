"""Old path of `sparseae.training` (`train`, `fit`, `TrainResult`), kept for earlier scripts."""
from .training import TrainResult, fit, train  # noqa: F401
from .training.loop import resolve_device  # noqa: F401
