"""Data sets: loaded into memory as float tensors, one registry by name."""
from .datasets import DATASETS, Dataset, load_dataset
from .idx import read_idx

__all__ = ["DATASETS", "Dataset", "load_dataset", "read_idx"]
