"""The objective: reconstruction + sparsity penalty (KL, L1; AuxK for TopK codes) + weight decay."""
from . import penalties
from .objective import LossParts, Objective, reconstruction_loss

__all__ = ["LossParts", "Objective", "penalties", "reconstruction_loss"]
