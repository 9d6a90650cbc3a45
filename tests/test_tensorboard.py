"""`train(..., tensorboard=DIR)`: every metrics.csv number and the epoch's pictures, read back by
TensorBoard's own event reader (EventAccumulator)."""
import io
import sys

import numpy as np
import pytest
import torch

from sparseae import Dataset, ModelConfig, RunConfig, SparsityConfig, TrainConfig, train
from sparseae.errors import SparseAEError
from sparseae.run.pictures import feature_tiles, tile
from sparseae.run.tensorboard import TensorBoardLog, scalar_tag

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="the tensorboard extra is not installed")


def _images(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = (torch.rand(6, 36, generator=g) > 0.7).float()
    x = ((torch.rand(n, 6, generator=g) > 0.7).float() @ basis).clamp(0, 1) * 0.9 + 0.05
    return Dataset(x[:200], x[200:], image_shape=(6, 6))


def _read(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _png_pixels(encoded):
    from matplotlib.image import imread

    return imread(io.BytesIO(encoded), format="png")


def test_scalars_and_pictures_read_back_by_tensorboard(tmp_path):
    config = RunConfig(ModelConfig(hidden=[9]), SparsityConfig(), TrainConfig(epochs=3, batch_size=50, lr=1e-2))
    result = train(config, out=tmp_path / "run", dataset=_images(), progress=False, tensorboard=tmp_path / "tb")
    acc = _read(tmp_path / "tb")
    rows = result.history
    numbers = [k for k in rows[0] if k != "epoch"]
    assert sorted(acc.Tags()["scalars"]) == sorted(scalar_tag(k) for k in numbers)
    for key in ("train_loss", "val_mse", "val_fvu", "l0", "dead_fraction"):
        assert scalar_tag(key) in acc.Tags()["scalars"]
    for key in numbers:
        events = acc.Scalars(scalar_tag(key))
        assert [e.step for e in events] == [1, 2, 3]
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in rows], rtol=1e-6, atol=1e-30)

    assert sorted(acc.Tags()["images"]) == ["features", "reconstructions"]
    recon = acc.Images("reconstructions")
    assert [e.step for e in recon] == [1, 2, 3]
    # the last epoch's picture: ten validation images over the final model's reconstructions
    val = _images().test[:10]
    with torch.no_grad():
        rec = result.model.reconstruct(val)
    expected = tile(np.concatenate([val.numpy(), rec.numpy()]).reshape(20, 6, 6), cols=10)
    got = _png_pixels(recon[-1].encoded_image_string)
    assert (recon[-1].height, recon[-1].width) == expected.shape
    np.testing.assert_allclose(got[..., 0] if got.ndim == 3 else got, expected, atol=1 / 255 + 1e-6)
    feats = acc.Images("features")[-1]
    w = result.model.encoder[0].weight.detach().numpy()
    expected = tile(feature_tiles(w, (6, 6)), cols=3, fill=0.0)
    got = _png_pixels(feats.encoded_image_string)
    np.testing.assert_allclose(got[..., 0] if got.ndim == 3 else got, expected, atol=1 / 255 + 1e-6)


def test_tables_log_scalars_only(tmp_path):
    x = torch.rand(120, 5, generator=torch.Generator().manual_seed(0))
    config = RunConfig(ModelConfig(hidden=[4], activation="relu"), SparsityConfig(penalty="l1", beta=1e-4),
                       TrainConfig(epochs=2, batch_size=40))
    train(config, out=tmp_path / "run", dataset=Dataset(x[:100], x[100:]), progress=False,
          tensorboard=tmp_path / "tb")
    acc = _read(tmp_path / "tb")
    assert acc.Tags()["images"] == [] and "validation/val_mse" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("validation/val_mse")] == [1, 2]


def test_a_resumed_log_drops_the_steps_it_logs_again(tmp_path):
    log = TensorBoardLog(tmp_path)
    for epoch in (1, 2, 3):
        log.log({"epoch": epoch, "val_mse": 1.0 / epoch})
    log.close()
    # a run killed after epoch 3 but checkpointed at epoch 2 resumes at 3
    log = TensorBoardLog(tmp_path)
    for epoch in (3, 4):
        log.log({"epoch": epoch, "val_mse": 10.0 * epoch})
    log.close()
    events = _read(tmp_path).Scalars("validation/val_mse")
    assert [(e.step, e.value) for e in events] == [(1, 1.0), (2, 0.5), (3, 30.0), (4, 40.0)]


def test_without_tensorboard_installed_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(SparseAEError, match=r"pip install 'sparseae\[tensorboard\]'"):
        TensorBoardLog(tmp_path / "tb")
    config = RunConfig(ModelConfig(hidden=[9]), SparsityConfig(), TrainConfig(epochs=1, batch_size=50))
    with pytest.raises(SparseAEError, match="tensorboard"):
        train(config, out=tmp_path / "run", dataset=_images(), progress=False, tensorboard=tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def _train_takes_the_flag():
    from sparseae.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return "--tensorboard" in sub.choices["train"]._option_string_actions


@pytest.mark.skipif(not _train_takes_the_flag(), reason="cli/train.py does not add --tensorboard to train yet")
def test_train_flag(tmp_path, capsys):
    from sparseae.cli import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "rows.npy", rng.random((100, 6)).astype(np.float32))
    assert main(["train", "--dataset", "array", "--data", str(tmp_path / "rows.npy"), "--hidden", "3", "--epochs",
                 "2", "--out", str(tmp_path / "run"), "--quiet", "--tensorboard", str(tmp_path / "tb")]) == 0
    assert [e.step for e in _read(tmp_path / "tb").Scalars("train/train_loss")] == [1, 2]
