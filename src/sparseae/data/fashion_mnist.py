"""FashionMNIST: find the IDX files, or download and verify them.

Search order: the directory given (`--data-dir`), `$SPARSEAE_DATA`,
`/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`), then
the user cache (`$XDG_CACHE_HOME/sparseae/fashion-mnist`). When the files are
in none of them they are downloaded into the cache.

Integrity: we check the SHA-256 of the *decompressed* IDX payload, which does
not depend on how the .gz was compressed (Debian recompresses the files).

Decoded once: the images as float32 rows in [0, 1] and the labels are kept as .npy files in
the user cache (`$XDG_CACHE_HOME/sparseae/fashion-mnist-float32`), named by the IDX files they
came from (path, size, modification time) in `source.json`. Reading them takes a tenth of a
second where inflating and converting the IDX files took one (issue 24). A cache made from other
files, or one that does not read back as four arrays of the right shapes, is decoded again and
replaced; one that cannot be written (a read-only home) is skipped. Nothing is ever written
next to the IDX files themselves (`/usr/share/...`).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import SparseAEError
from .idx import read_idx

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparseae" / "fashion-mnist"


def decoded_cache_dir() -> Path:
    """Where the decoded float32 arrays are kept: beside the downloads' folder, in the user cache."""
    return cache_dir().with_name("fashion-mnist-float32")


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _complete(directory: Path) -> bool:
    return all(_find(directory, stem) for stem in FILES)


def locate(data_dir: str | None = None, download: bool = True) -> Path:
    """The directory holding all four files; downloads into the cache when needed."""
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise SparseAEError(f"data directory {data_dir} does not exist")
        if not _complete(d):
            missing = [s for s in FILES if not _find(d, s)]
            raise SparseAEError(f"data directory {data_dir} lacks FashionMNIST files: {', '.join(missing)}")
        return d
    candidates = [Path(p) for p in (os.environ.get("SPARSEAE_DATA"), SYSTEM_DIR) if p]
    candidates.append(cache_dir())
    for d in candidates:
        if d.is_dir() and _complete(d):
            return d
    if not download:
        raise SparseAEError(_missing_message(candidates))
    return _download(cache_dir(), candidates)


def _missing_message(candidates: list[Path]) -> str:
    return ("FashionMNIST not found in " + ", ".join(map(str, candidates)) +
            "; install Debian's dataset-fashion-mnist, pass --data-dir, or allow the download")


def _download(target: Path, candidates: list[Path]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for stem, sha in FILES.items():
        if _find(target, stem):
            continue
        try:
            with urllib.request.urlopen(URL + stem + ".gz", timeout=30) as r:
                payload = r.read()
        except (urllib.error.URLError, OSError) as e:
            raise SparseAEError(_missing_message(candidates) + f" (download failed: {e})") from None
        try:
            digest = hashlib.sha256(gzip.decompress(payload)).hexdigest()
        except (OSError, EOFError) as e:
            raise SparseAEError(f"downloaded {stem}.gz is not valid gzip ({e})") from None
        if digest != sha:
            raise SparseAEError(f"downloaded {stem}.gz failed SHA-256 verification")
        fd, tmp = tempfile.mkstemp(dir=target, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, target / (stem + ".gz"))
    return target


def load_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images as uint8 N x 28 x 28, labels as uint8 N) of 'train' or 't10k'."""
    images = read_idx(_find(directory, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{split}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise SparseAEError(f"{split} images have shape {images.shape}, expected N x 28 x 28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise SparseAEError(f"{split}: {len(labels)} labels for {len(images)} images")
    return images, labels


SPLITS = ("train", "t10k")
CACHE_FORMAT = 1  # bump when the arrays' meaning changes


def load_arrays(directory: Path) -> dict[str, np.ndarray]:
    """"<split>-images" (float32 N x 784, pixel / 255) and "<split>-labels" (int64 N) of both splits,
    from the decoded cache when it was made from the files in `directory`, else decoded (and cached)."""
    source = _source(directory)
    arrays = _read_cache(decoded_cache_dir(), source)
    if arrays is None:
        arrays = {}
        for split in SPLITS:
            images, labels = load_split(directory, split)
            arrays[f"{split}-images"] = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
            arrays[f"{split}-labels"] = labels.astype(np.int64)
        _write_cache(decoded_cache_dir(), source, arrays)
    return arrays


def _source(directory: Path) -> dict:
    """What names the IDX files a cache was decoded from: each file's path, size and modification time."""
    files = {}
    for stem in FILES:
        path = _find(directory, stem).resolve()
        st = path.stat()
        files[stem] = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"format": CACHE_FORMAT, "files": files}


def _read_cache(folder: Path, source: dict) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None unless they were made from `source` and read back whole, with the
    shapes source.json records (float32 images of 784 pixels, int64 labels 0-9, as many of each)."""
    try:
        meta = json.loads((folder / "source.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or {k: meta.get(k) for k in source} != source:
            return None
        arrays = {}
        for split in SPLITS:
            n = meta["rows"][split]
            for kind, shape, dtype in (("images", (n, 784), np.float32), ("labels", (n,), np.int64)):
                # mapped, not read: the pages come from the file system's cache as training reads them
                # (copy-on-write, so the arrays stay writable), where allocating and filling 190 MB took
                # up to a second of the process
                a = np.load(folder / f"{split}-{kind}.npy", mmap_mode="c", allow_pickle=False)
                if a.shape != shape or a.dtype != dtype:
                    return None
                arrays[f"{split}-{kind}"] = a
    except (OSError, ValueError, EOFError, KeyError, TypeError):  # missing, truncated, not .npy: decoded again
        return None
    if any(a.min() < 0 or a.max() > 9 for k, a in arrays.items() if k.endswith("labels") and len(a)):
        return None
    return arrays


def _write_cache(folder: Path, source: dict, arrays: dict[str, np.ndarray]) -> None:
    """Each array atomically, source.json last (and removed first): a cache written halfway, or
    over an older one, names no source and is decoded again. Best effort: an error skips the cache."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "source.json").unlink(missing_ok=True)
        for name, a in arrays.items():
            _replace(folder / f"{name}.npy", lambda f, a=a: np.save(f, a, allow_pickle=False))
        meta = {**source, "rows": {split: len(arrays[f"{split}-labels"]) for split in SPLITS}}
        _replace(folder / "source.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    except OSError:
        pass


def _replace(path: Path, write) -> None:
    """write(file) to a temp file in path's folder, then rename it onto path (the data layer's own
    atomic write: run/files.py sits in a later layer)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
