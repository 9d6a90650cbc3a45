import os

import pytest
import torch

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST) and not os.environ.get("SPARSEAE_DATA"),
                                  reason="FashionMNIST files not installed")
