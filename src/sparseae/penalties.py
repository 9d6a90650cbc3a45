"""Old path of `sparseae.objective.penalties` (named in the README and earlier docs)."""
from .objective.penalties import (RunningMean, kl_divergence, kl_penalty, l1_penalty, mean_activation,  # noqa: F401
                                  weight_decay)
