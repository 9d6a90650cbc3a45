"""Training: the minibatch loop, the full-batch optimizers, GPU speed-ups, checkpoints,
data-parallel collectives, and `train`, the session that ties them to a run folder."""
from .loop import fit
from .session import TrainResult, train

__all__ = ["TrainResult", "fit", "train"]
