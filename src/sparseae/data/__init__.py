"""Data sets: FashionMNIST, natural-image patches, your own arrays (in memory or streamed),
Tennessee Eastman; one `DataSource` protocol (dataset.py), one registry by name (datasets.py)."""
from .dataset import DataSource, Dataset
from .datasets import DATASETS, load_dataset
from .idx import read_idx

__all__ = ["DATASETS", "DataSource", "Dataset", "load_dataset", "read_idx"]
