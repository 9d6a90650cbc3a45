import os

# The tests train small models: one thread each is as fast, and it keeps the subprocess tests
# (torchrun, SIGKILL/resume) from oversubscribing a 2-core machine, where spinning OpenMP threads
# slow everything down many times over. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST) and not os.environ.get("SPARSEAE_DATA"),
                                  reason="FashionMNIST files not installed")
