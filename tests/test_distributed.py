"""Data-parallel training: two torchrun processes (gloo, CPU) equal one process on the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sparseae.cli import main
from sparseae.run import RunDir

sys.path.insert(0, str(Path(__file__).parent))
from distributed_cases import CASES, args  # noqa: E402


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Every case trained once by two torchrun processes (one launch: the startup is paid once)."""
    root = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(2)
    # 330 rows: 297 for training, so the last global batch (17 rows) splits unevenly (9 + 8)
    np.save(root / "x.npy", (rng.normal(size=(330, 10)) @ rng.normal(size=(10, 10))).astype(np.float32))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(Path(__file__).parent / "distributed_cases.py"), str(root / "x.npy"), str(root / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_equal_one(two_process_runs, case):
    root = two_process_runs
    one, two = root / "one" / case, root / "two" / case
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args(case, str(root / "x.npy"), str(one))) == 0
    finally:
        torch.set_num_threads(threads)
    assert not (root / "two" / case / "checkpoint" / "state.json").read_text() == ""  # rank 0 wrote the folder
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    ra, rb = RunDir(one).read_metrics(), RunDir(two).read_metrics()
    assert len(ra) == len(rb) == 2
    for x, y in zip(ra, rb):
        for col in ("train_loss", "train_recon", "train_sparsity", "val_mse", "l0", "dead_window_fraction"):
            assert y[col] == pytest.approx(x[col], rel=1e-5, abs=1e-6), col
    if case == "auxk":  # the case means something only if units died and AuxK contributed
        assert max(r["dead_window_fraction"] for r in ra) > 0 and min(r["train_sparsity"] for r in ra) > 0


def test_global_mean_gradient_in_one_process(tmp_path):
    """The all-reduce autograd function in a one-process group: value and gradient of a plain mean."""
    import torch.distributed as dist

    from sparseae.training.distributed import DataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        dp = DataParallel(0, 1, torch.device("cpu"))
        h = torch.rand(7, 4, dtype=torch.float64, requires_grad=True)
        dp.shard(h)
        w = torch.rand(4, dtype=torch.float64)
        (dp.mean_activation(h) * w).sum().backward()
        torch.testing.assert_close(h.grad, w.expand(7, 4) / 7)
    finally:
        dist.destroy_process_group()

