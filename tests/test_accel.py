"""The GPU step options, run on the CPU where the same code runs: bf16 autocast, torch.compile, refusals."""
import os

import numpy as np
import pytest
import torch

from sparseae import SparseAEError
from sparseae.accel import check_options
from sparseae.config import ModelConfig, SparsityConfig, TrainConfig
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.trainer import fit


def _train(**options):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(400, 10)).astype(np.float32))
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=10, hidden=[8], output_activation="linear"))
    rows, _ = fit(model, Objective(SparsityConfig()), x, x[:50], TrainConfig(epochs=2, batch_size=50, **options),
                  progress=False)
    return model, rows


def test_bf16_autocast_trains_close_to_float32():
    ref, ref_rows = _train()
    low, rows = _train(precision="bf16")
    assert rows[-1]["train_loss"] == pytest.approx(ref_rows[-1]["train_loss"], rel=1e-3)
    for a, b in zip(low.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARSEAE_SLOW_TESTS"), reason="compiles with inductor (about a minute "
                    "on 2 busy cores); set SPARSEAE_SLOW_TESTS=1")
def test_compiled_step_equals_eager():
    ref, _ = _train()
    comp, _ = _train(compile=True)
    for a, b in zip(comp.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_cuda_graph_refusals():
    cpu = torch.device("cpu")
    with pytest.raises(SparseAEError, match="CUDA device"):
        check_options(TrainConfig(cuda_graph=True), ModelConfig(), SparsityConfig(), cpu, False)
    cuda = torch.device("cuda")
    with pytest.raises(SparseAEError, match="running"):
        check_options(TrainConfig(cuda_graph=True), ModelConfig(), SparsityConfig(rho_hat="running"), cuda, False)
    with pytest.raises(SparseAEError, match="data-parallel"):
        check_options(TrainConfig(cuda_graph=True), ModelConfig(), SparsityConfig(), cuda, True)
