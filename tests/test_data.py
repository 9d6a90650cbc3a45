import gzip
import struct

import numpy as np
import pytest

from sparseae import SparseAEError, load_dataset
from sparseae.data import fashion_mnist, read_idx
from tests.conftest import FMNIST, needs_fmnist


def write_idx(path, array, code=0x08, compress=False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(raw)
    return raw


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a, compress=compress)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)


def test_read_idx_big_endian_floats(tmp_path):
    a = np.array([[1.5, -2.0], [3.25, 0.0]], dtype=np.float32)
    write_idx(tmp_path / "f.idx", a, code=0x0D)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), a)


def test_truncated_file(tmp_path):
    raw = write_idx(tmp_path / "a.idx", np.zeros((5, 4), np.uint8))
    (tmp_path / "a.idx").write_bytes(raw[:-3])
    with pytest.raises(SparseAEError, match="truncated"):
        read_idx(tmp_path / "a.idx")


def test_wrong_magic(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(SparseAEError, match="wrong magic"):
        read_idx(tmp_path / "bad.idx")


def test_corrupt_gzip(tmp_path):
    data = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x10" + bytes(16))
    (tmp_path / "c.gz").write_bytes(data[:20] + b"garbage" + data[27:])
    with pytest.raises(SparseAEError, match="corrupt gzip|not an IDX|truncated"):
        read_idx(tmp_path / "c.gz")


def test_trailing_bytes(tmp_path):
    raw = write_idx(tmp_path / "a.idx", np.zeros((2, 2), np.uint8))
    (tmp_path / "a.idx").write_bytes(raw + b"\x00")
    with pytest.raises(SparseAEError, match="trailing"):
        read_idx(tmp_path / "a.idx")


def test_missing_data_dir(tmp_path):
    with pytest.raises(SparseAEError, match="does not exist"):
        load_dataset("fashion-mnist", str(tmp_path / "nope"))


def test_incomplete_data_dir(tmp_path):
    with pytest.raises(SparseAEError, match="lacks FashionMNIST files"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(SparseAEError, match="unknown dataset"):
        load_dataset("imagenet-22k")


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEAE_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(fashion_mnist, "URL", "http://127.0.0.1:9/")  # nothing listens: offline
    with pytest.raises(SparseAEError, match="FashionMNIST not found .*download failed"):
        fashion_mnist.locate()


def test_download_verifies_checksum(tmp_path, monkeypatch):
    """A served file whose content does not match the SHA-256 is refused and not kept."""
    import io
    import urllib.request

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEAE_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(gzip.compress(b"fake")))
    with pytest.raises(SparseAEError, match="SHA-256"):
        fashion_mnist.locate()
    assert not any(p.suffix == ".gz" for p in (tmp_path / "cache").rglob("*"))


@needs_fmnist
def test_fashion_mnist_splits_and_scaling(tmp_path, monkeypatch):
    d = load_dataset("fashion-mnist", FMNIST)
    assert d.train.shape == (60000, 784) and d.test.shape == (10000, 784)
    assert d.train.min().item() == 0.0 and d.train.max().item() == 1.0
    assert d.train_labels.shape == (60000,) and set(d.test_labels.unique().tolist()) == set(range(10))
    assert d.image_shape == (28, 28)


@needs_fmnist
def test_env_var_and_raw_files(tmp_path, monkeypatch):
    """$SPARSEAE_DATA is searched, and uncompressed IDX files work as well as .gz."""
    for stem in fashion_mnist.FILES:
        with gzip.open(f"{FMNIST}/{stem}.gz") as src:
            (tmp_path / stem).write_bytes(src.read())
    monkeypatch.setenv("SPARSEAE_DATA", str(tmp_path))
    assert fashion_mnist.locate() == tmp_path
    a, la = fashion_mnist.load_split(tmp_path, "t10k")
    b, lb = fashion_mnist.load_split(fashion_mnist.Path(FMNIST), "t10k")
    assert np.array_equal(a, b) and np.array_equal(la, lb)
