"""FashionMNIST's decoded float32 cache: made once from the IDX files, read back instead of decoding them,
decoded again when stale or damaged, skipped when it cannot be written, never written beside the IDX files."""
import json
import os
import urllib.request

import numpy as np
import pytest

from sparseae import load_dataset
from sparseae.data import fashion_mnist
from tests.test_data import write_idx


def fake_fashion(directory, seed=0, n_train=30, n_test=10):
    """The four IDX files of a tiny FashionMNIST; returns (train images, train labels, test images, test labels)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = []
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels, compress=True)
        arrays += [images, labels]
    return arrays


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "sparseae" / "fashion-mnist-float32"


def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the IDX files were decoded although the cache is valid")
    monkeypatch.setattr(fashion_mnist, "read_idx", refuse)


def assert_data(d, arrays):
    train, train_labels, test, test_labels = arrays
    # the pixel values as before the cache: uint8 / 255 in float32
    np.testing.assert_array_equal(d.train.numpy(), train.reshape(len(train), -1).astype(np.float32) / 255.0)
    np.testing.assert_array_equal(d.test.numpy(), test.reshape(len(test), -1).astype(np.float32) / 255.0)
    assert str(d.train.dtype) == str(d.test.dtype) == "torch.float32"
    np.testing.assert_array_equal(d.train_labels.numpy(), train_labels)
    np.testing.assert_array_equal(d.test_labels.numpy(), test_labels)


def test_first_load_writes_the_cache_and_the_second_reads_it(tmp_path, cache, monkeypatch):
    arrays = fake_fashion(tmp_path / "idx")
    before = sorted(os.listdir(tmp_path / "idx"))
    assert_data(load_dataset("fashion-mnist", str(tmp_path / "idx")), arrays)
    assert sorted(p.name for p in cache.iterdir()) == ["source.json", "t10k-images.npy", "t10k-labels.npy",
                                                      "train-images.npy", "train-labels.npy"]
    assert sorted(os.listdir(tmp_path / "idx")) == before  # nothing written beside the IDX files
    meta = json.loads((cache / "source.json").read_text())
    assert meta["rows"] == {"train": 30, "t10k": 10}
    source = tmp_path / "idx" / "train-images-idx3-ubyte.gz"
    assert meta["files"]["train-images-idx3-ubyte"]["size"] == source.stat().st_size
    no_decoding(monkeypatch)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert_data(load_dataset("fashion-mnist", str(tmp_path / "idx")), arrays)


def test_a_stale_cache_is_decoded_again(tmp_path, cache):
    fake_fashion(tmp_path / "idx", seed=0)
    load_dataset("fashion-mnist", str(tmp_path / "idx"))
    newer = fake_fashion(tmp_path / "idx", seed=1, n_train=40)  # other files in the same place
    st = (tmp_path / "idx" / "train-images-idx3-ubyte.gz").stat()
    os.utime(tmp_path / "idx" / "train-images-idx3-ubyte.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert_data(load_dataset("fashion-mnist", str(tmp_path / "idx")), newer)
    assert json.loads((cache / "source.json").read_text())["rows"]["train"] == 40
    # files elsewhere are another source too
    other = fake_fashion(tmp_path / "elsewhere", seed=2)
    assert_data(load_dataset("fashion-mnist", str(tmp_path / "elsewhere")), other)


@pytest.mark.parametrize("damage", ["truncated", "not npy", "wrong dtype", "source.json garbage",
                                    "source.json missing", "labels out of range"])
def test_a_damaged_cache_is_decoded_again_and_replaced(tmp_path, cache, monkeypatch, damage):
    arrays = fake_fashion(tmp_path / "idx")
    load_dataset("fashion-mnist", str(tmp_path / "idx"))
    images = cache / "train-images.npy"
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:1000])
    elif damage == "not npy":
        images.write_bytes(b"hello")
    elif damage == "wrong dtype":
        np.save(images, np.zeros((30, 784), np.float64))
    elif damage == "source.json garbage":
        (cache / "source.json").write_text("{not json")
    elif damage == "source.json missing":
        (cache / "source.json").unlink()
    else:
        np.save(cache / "t10k-labels.npy", np.full(10, 12, np.int64))
    assert_data(load_dataset("fashion-mnist", str(tmp_path / "idx")), arrays)
    no_decoding(monkeypatch)  # replaced: the next load reads it
    assert_data(load_dataset("fashion-mnist", str(tmp_path / "idx")), arrays)


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    arrays = fake_fashion(tmp_path / "idx")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    assert_data(load_dataset("fashion-mnist", str(tmp_path / "idx")), arrays)
    assert (tmp_path / "a-file").read_text() == "not a folder"
