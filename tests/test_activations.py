"""`sparseae.activations.collect` and `sparseae activations`: the dump equals the hooked tensors exactly,
rows are examples (token positions flattened for 3-D activations), memory stays at about one chunk
however large the file, the file is one `sparseae train --dataset array` reads, bad input is one line
and leaves nothing behind."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import sparseae
from sparseae.activations import collect
from sparseae.apps.activations import HEADER_BYTES, npy_header
from sparseae.cli import main
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.errors import SparseAEError


def record(model: nn.Module, layer: str, site: str, into: list):
    """A hook of the test's own on the named submodule appending a copy of its output (or input) to `into`."""
    module = dict(model.named_modules())[layer]
    if site == "out":
        return module.register_forward_hook(lambda m, a, out: into.append(out.detach().clone()))
    return module.register_forward_pre_hook(lambda m, a: into.append(a[0].detach().clone()))


def reference(model: nn.Module, layer: str, x: torch.Tensor, site: str = "out") -> torch.Tensor:
    """What the named submodule sees or gives for the whole of `x` in one forward pass (eval mode)."""
    got = []
    handle = record(model, layer, site, got)
    model.eval()
    with torch.no_grad():
        model(x)
    handle.remove()
    return got[0]


def collect_recording(model: nn.Module, layer: str, data, out, site: str = "out", **kw):
    """collect(), with a hook of the test's own on the same submodule, registered first, recording every
    tensor the submodule gives (or receives) during the collection: (what collect returned, those tensors)."""
    seen = []
    handle = record(model, layer, site, seen)
    try:
        done = collect(model, layer, data, out, site=site, progress=False, **kw)
    finally:
        handle.remove()
    return done, seen


def trained_mlp(steps: int = 20) -> tuple[nn.Module, torch.Tensor]:
    """An MLP classifier trained a few steps on random 'images' with labels from a fixed rule."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(600, 64, generator=g)
    y = (x[:, :32].sum(1) > x[:, 32:].sum(1)).long()
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.2), nn.Linear(48, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x


def small_cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 7 * 7, 10))
    x = torch.rand(50, 1, 14, 14)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.arange(50) % 10).backward()
        opt.step()
    return model, x


def tiny_transformer() -> nn.Module:
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def test_mlp_dump_equals_the_hooked_tensor_and_restores_training_mode(tmp_path):
    model, x = trained_mlp()
    model.train()
    done, seen = collect_recording(model, "1", x, tmp_path / "a.npy", batch_size=64)
    assert model.training  # the caller's mode is given back
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (600, 48) and a.dtype == np.float32 and (done.rows, done.features) == (600, 48)
    assert np.array_equal(a, torch.cat(seen).numpy())  # exactly what the hook saw
    # and what one forward pass of the whole set in eval mode gives (dropout off), to rounding
    np.testing.assert_allclose(a, reference(model, "1", x).numpy(), rtol=1e-5, atol=1e-6)
    assert done.batches == 10  # ceil(600 / 64)


def test_input_site_is_the_submodules_first_argument(tmp_path):
    model, x = trained_mlp()
    _, seen = collect_recording(model, "3", x, tmp_path / "in.npy", site="in")
    collect(model, "1", x, tmp_path / "out.npy", site="out", progress=False)
    assert np.array_equal(np.load(tmp_path / "in.npy"), torch.cat(seen).numpy())
    # the last Linear's input is the ReLU's output (dropout is off in eval mode): same batches, same values
    assert np.array_equal(np.load(tmp_path / "in.npy"), np.load(tmp_path / "out.npy"))


def test_cnn_feature_maps_are_one_row_per_example(tmp_path):
    model, x = small_cnn()
    _, seen = collect_recording(model, "0", x, tmp_path / "conv.npy", batch_size=16)
    a = np.load(tmp_path / "conv.npy")
    assert [t.shape[0] for t in seen] == [16, 16, 16, 2] and seen[0].shape[1:] == (4, 14, 14)
    assert a.shape == (50, 4 * 14 * 14)
    assert np.array_equal(a, torch.cat(seen).reshape(50, -1).numpy())
    np.testing.assert_allclose(a, reference(model, "0", x).reshape(50, -1).numpy(), rtol=1e-5, atol=1e-6)


def test_transformer_positions_become_rows_exactly(tmp_path):
    model = tiny_transformer()
    x = torch.randn(20, 7, 16)
    done, seen = collect_recording(model, "layers.0", x, tmp_path / "t.npy", batch_size=6)
    a = np.load(tmp_path / "t.npy")
    ref = torch.cat(seen)
    assert ref.shape == (20, 7, 16) and a.shape == (140, 16) and done.rows == 20 * 7
    assert np.array_equal(a, ref.reshape(-1, 16).numpy())
    assert np.array_equal(a[3 * 7 + 5], ref[3, 5].numpy())  # row i * 7 + t is example i at position t
    np.testing.assert_allclose(a, reference(model, "layers.0", x).reshape(-1, 16).numpy(), rtol=1e-5, atol=1e-5)


def test_max_rows_cuts_inside_a_batch(tmp_path):
    model = tiny_transformer()
    x = torch.randn(20, 7, 16)
    done, seen = collect_recording(model, "layers.1", x, tmp_path / "t.npy", batch_size=4, max_rows=45)
    a = np.load(tmp_path / "t.npy")
    assert a.shape == (45, 16) and done.batches == 2 == len(seen)  # 28 rows per batch: the second reaches 45
    assert np.array_equal(a, torch.cat(seen).reshape(-1, 16)[:45].numpy())


def test_a_file_of_many_chunks_holds_at_most_one_chunk(tmp_path):
    """tracemalloc sees numpy's allocations: the chunk is the only array collect keeps."""
    model = nn.Sequential(nn.Linear(32, 256))
    x = torch.randn(4000, 32)
    chunk = 64 * 256 * 4  # 64 rows of 256 float32
    tracemalloc.start()
    done, seen = collect_recording(model, "0", x, tmp_path / "big.npy", batch_size=100, chunk_bytes=chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = (tmp_path / "big.npy").stat().st_size
    assert size == HEADER_BYTES + 4000 * 256 * 4 and size > 60 * chunk
    assert done.chunk_rows == 64 and done.chunks_written == 63 and done.peak_rows_held <= 64
    assert peak < 2 * chunk, f"peak {peak} bytes for chunks of {chunk}"
    assert np.array_equal(np.load(tmp_path / "big.npy"), torch.cat(seen).numpy())


@pytest.mark.parametrize("dtype,stored", [(torch.float64, np.float64), (torch.float16, np.float16),
                                          (torch.bfloat16, np.float32)])
def test_the_models_dtype_is_kept(tmp_path, dtype, stored):
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU()).to(dtype)
    x = torch.randn(30, 8)  # float32 inputs: cast to the model's dtype
    _, seen = collect_recording(model, "0", x, tmp_path / "d.npy", batch_size=7)
    a = np.load(tmp_path / "d.npy")
    ref = torch.cat(seen)
    assert a.dtype == stored and ref.dtype == dtype
    assert torch.equal(torch.from_numpy(a), ref.to(torch.from_numpy(a).dtype))  # bfloat16 widens exactly


def test_token_ids_stay_integers_and_dataloaders_work(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 8))
    ids = torch.randint(0, 50, (12, 5))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, torch.zeros(12)), batch_size=5)
    _, seen = collect_recording(model, "1", loader, tmp_path / "e.npy")
    assert np.array_equal(np.load(tmp_path / "e.npy"), torch.cat(seen).reshape(-1, 8).numpy())
    assert len(seen) == 3 and seen[0].shape == (5, 5, 8)  # (batch, positions, features): 12 * 5 rows


def test_the_header_is_a_plain_npy_header():
    head = npy_header(np.dtype("<f4"), 123456789, 768)
    assert len(head) == HEADER_BYTES and head.endswith(b"\n") and HEADER_BYTES % 64 == 0
    import io
    f = io.BytesIO(head)
    assert np.lib.format.read_magic(f) == (1, 0)
    assert np.lib.format.read_array_header_1_0(f) == ((123456789, 768), False, np.dtype("<f4"))


def test_train_reads_the_dump_as_it_is(tmp_path):
    model, x = trained_mlp()
    collect(model, "1", x, tmp_path / "acts.npy", progress=False)
    config = RunConfig(ModelConfig(hidden=[32]), SparsityConfig(penalty="topk"),
                       TrainConfig(dataset="array", data=str(tmp_path / "acts.npy"), epochs=1, batch_size=64))
    config.model.k = 4
    result = sparseae.train(config, out=tmp_path / "run", progress=False)
    assert result.config.model.input_dim == 48
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert np.isfinite(result.history[-1]["val_mse"])


class _Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.unused, self.calls = nn.Linear(4, 4), nn.Linear(4, 4), 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return self.lin(x)


@pytest.mark.parametrize("kwargs,message", [
    ({"layer": "nope"}, "has no submodule 'nope'"),
    ({"layer": "unused"}, "the hook never fired"),
    ({"site": "middle"}, "site must be one of in, out, both"),
    ({"max_rows": 0}, "max rows must be positive"),
    ({"out": "acts.csv"}, "written as .npy"),
    ({"data": torch.zeros(0, 4)}, "no examples"),
    ({"data": "rows.npy"}, "data must be a tensor"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, kwargs, message):
    args = {"model": _Broken(), "layer": "lin", "data": torch.randn(10, 4), "out": "acts.npy", **kwargs}
    args["out"] = tmp_path / args["out"]
    with pytest.raises(SparseAEError, match=message):
        collect(progress=False, batch_size=4, **args)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_midway_leaves_no_file_and_no_temp_file(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        collect(_Broken(), "lin", torch.randn(20, 4), tmp_path / "a.npy", batch_size=4, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ownership_rules_for_out(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"mine")
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(SparseAEError, match="pass --overwrite"):
        collect(model, "0", torch.randn(5, 4), tmp_path / "a.npy", progress=False)
    assert (tmp_path / "a.npy").read_bytes() == b"mine"
    collect(model, "0", torch.randn(5, 4), tmp_path / "a.npy", progress=False, overwrite=True)
    assert np.load(tmp_path / "a.npy").shape == (5, 4)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".sparseae").write_text('{"format": "sparseae-folder", "version": 1, "kind": "run"}')
    with pytest.raises(SparseAEError, match="a run folder sparseae wrote"):
        collect(model, "0", torch.randn(5, 4), run / "acts.npy", progress=False, overwrite=True)


MODELS_PY = """
import torch
def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 3))
def not_a_model():
    return 3
"""


def test_the_command(tmp_path, capsys):
    (tmp_path / "models.py").write_text(MODELS_PY)
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "acts.npy"
    base = ["activations", "--model", f"{tmp_path / 'models.py'}:make", "--data", str(tmp_path / "x.npy"), "--quiet"]
    assert main([*base, "--layer", "1", "--out", str(out), "--batch-size", "16", "--max-rows", "33"]) == 0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
    ref = reference(model, "1", torch.from_numpy(x))[:33].numpy()  # one pass of all 40: equal to rounding
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-5, atol=1e-6)
    assert "33 x 10 float32" in capsys.readouterr().out
    for argv, message in [
        ([*base, "--layer", "1", "--out", str(out)], "the file exists"),
        ([*base, "--layer", "7", "--out", str(tmp_path / "b.npy")], "no submodule '7'"),
        ([*base, "--out", str(tmp_path / "b.npy")], "--layer is required"),
        (["activations", "--model", f"{tmp_path / 'models.py'}:not_a_model", "--layer", "1", "--data",
          str(tmp_path / "x.npy"), "--out", str(tmp_path / "b.npy")], "returned a int"),
        (["activations", "--model", "nomodule_here_xyz:make", "--layer", "1", "--data", str(tmp_path / "x.npy"),
          "--out", str(tmp_path / "b.npy")], "importing nomodule_here_xyz failed"),
        ([*base, "--layer", "1", "--out", str(tmp_path / "b.npy"), "--data", str(tmp_path / "missing.npy")],
         "missing.npy"),
        ([*base, "--layer", "1", "--out", str(tmp_path / "b.npy"), "--max-rows", "-3"], "--max-rows must be"),
        ([*base, "--layer", "1", "--out", str(tmp_path / "b.npy"), "--batch-size", "0"], "--batch-size must be"),
        ([*base, "--layer", "1", "--out", str(tmp_path / "b.csv")], "written as .npy"),
        ([*base, "--layer", "1", "--out", str(tmp_path)], "not a regular file"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.npy", "models.py", "x.npy"]


def test_the_command_reads_other_array_formats(tmp_path, capsys):
    (tmp_path / "models.py").write_text(MODELS_PY)
    x = np.random.default_rng(1).standard_normal((25, 6)).astype(np.float32)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    out = tmp_path / "acts.npy"
    assert main(["activations", "--model", f"{tmp_path / 'models.py'}:make", "--layer", "0", "--data",
                 str(tmp_path / "x.csv"), "--out", str(out), "--quiet"]) == 0
    assert np.load(out).shape == (25, 10)
    assert Path(out).stat().st_size == HEADER_BYTES + 25 * 10 * 4
