"""Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or raw.

Header: two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension; then the values, big-endian.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import SparseAEError

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file into a numpy array; validates magic, dimensions and size."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise SparseAEError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise SparseAEError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise SparseAEError(f"{path}: not an IDX file (wrong magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if ndim == 0:
        raise SparseAEError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SparseAEError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_TYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise SparseAEError(f"{path}: IDX file {what}: dimensions {dims} need {expected} bytes, found {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
