"""`sparseae.activations.collect`: the activations of any PyTorch model as a .npy file (apps/activations.py)."""
from .apps.activations import Collected, collect, find_module, rows_of  # noqa: F401
