"""Your own arrays: rows of a 2-D numeric array in a file, read a block of rows at a time.

Formats: .npy (read with plain file reads at byte offsets, so neither the file
nor a memory map is held in memory), .npz (a member stored uncompressed is read
the same way; a compressed member is decompressed into memory), .safetensors
(safetensors' own reader, which slices rows out of a memory map), .parquet
(one row group at a time, pyarrow) and .csv (one pass indexes the byte offset
of every block of lines). Every format exposes the same thing: the shape and
`read(start, stop)` returning float32 rows.

`ArrayData` splits a file into training rows and validation rows (the last
`val_fraction`), checks every value once (one pass, which also gives the
per-feature mean and standard deviation), and either loads small files into
memory or streams large ones in shuffled chunks (`StreamBatches`).

A transcoder's data (`--data IN --target OUT`) is one `PairedArrayFile`: each row is the input row
followed by its target row, so shuffling, streaming, the value check, the statistics and the validation
split treat a pair as one row; `ArrayData.target_dim` (and the `Dataset`'s) says where the target
starts, and the model splits the row (model/autoencoder.py).
"""
from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import SparseAEError
from .dataset import Dataset
from .paths import regular_file

FORMATS = (".npy", ".npz", ".safetensors", ".parquet", ".csv")
BLOCK_BYTES = 1 << 20  # rows read per random access: about 1 MiB
_ST_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"}


class ArrayFile:
    """A 2-D numeric array in a file: `n_rows`, `n_cols`, `read(start, stop)` -> float32 rows."""

    path: Path
    n_rows: int
    n_cols: int

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def blocks(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Row ranges covering [start, stop) that are cheap to read one at a time."""
        step = max(1, BLOCK_BYTES // (4 * self.n_cols))
        return [(i, min(i + step, stop)) for i in range(start, stop, step)]

    def describe(self) -> str:
        return f"{self.path} ({self.n_rows} x {self.n_cols})"


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        raise SparseAEError(f"{path}: the array must be numeric, got dtype {dtype}")


def _check_2d(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 2:
        raise SparseAEError(f"{path}: expected a 2-D array (examples x features), got shape {tuple(shape)}")
    if shape[0] == 0 or shape[1] == 0:
        raise SparseAEError(f"{path}: the array is empty (shape {tuple(shape)})")


class RawArrayFile(ArrayFile):
    """C-ordered rows at a byte offset of a file (.npy, stored .npz members)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: str | np.dtype,
                 source: Path | None = None):
        self.path, self._source = path, source or path
        self.dtype = np.dtype(dtype)
        _check_dtype(path, self.dtype)
        _check_2d(path, shape)
        self.offset, (self.n_rows, self.n_cols) = offset, shape
        self.row_bytes = self.n_cols * self.dtype.itemsize
        need = offset + self.n_rows * self.row_bytes
        if os.path.getsize(self._source) < need:
            raise SparseAEError(f"{path}: file is truncated ({os.path.getsize(self._source)} bytes, "
                                f"the header promises {need})")

    def read(self, start: int, stop: int) -> np.ndarray:
        count = (stop - start) * self.row_bytes
        buf = bytearray(count)
        with open(self._source, "rb", buffering=0) as f:
            f.seek(self.offset + start * self.row_bytes)
            view, got = memoryview(buf), 0
            while got < count:
                n = f.readinto(view[got:])
                if not n:
                    raise SparseAEError(f"{self.path}: unexpected end of file")
                got += n
        a = np.frombuffer(buf, dtype=self.dtype).reshape(stop - start, self.n_cols)
        return a.astype(np.float32, copy=False) if a.dtype != np.float32 else a


class MemoryArrayFile(ArrayFile):
    """An array already in memory (compressed .npz, Fortran-ordered .npy)."""

    def __init__(self, path: Path, array: np.ndarray):
        _check_dtype(path, array.dtype)
        _check_2d(path, array.shape)
        self.path, self.array = path, array
        self.n_rows, self.n_cols = array.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.array[start:stop], dtype=np.float32)


def _npy_header(f, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(f)
        else:
            header = np.lib.format.read_array_header_2_0(f)
    except Exception as e:  # numpy parses the header with ast/tokenize: a damaged one raises many kinds
        raise SparseAEError(f"{path}: not a valid .npy file ({type(e).__name__}: {e})") from None
    if any(n < 0 for n in header[0]):  # numpy's parser lets a negative size through
        raise SparseAEError(f"{path}: the .npy header is damaged: it gives the shape {tuple(header[0])}")
    return header


def open_npy(path: Path) -> ArrayFile:
    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, path)
        offset = f.tell()
    if fortran:
        _check_dtype(path, dtype)  # before loading: an object array cannot even be memory-mapped
        _check_2d(path, shape)
        return MemoryArrayFile(path, np.load(path, mmap_mode="r", allow_pickle=False))
    return RawArrayFile(path, offset, shape, dtype.newbyteorder("<") if dtype.byteorder == "=" else dtype)


def open_npz(path: Path, key: str | None) -> ArrayFile:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise SparseAEError(f"{path}: not a valid .npz file ({e})") from None
    with zf:
        names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        name = _pick_key(path, names, key)
        info = zf.getinfo(name + ".npy")
        with zf.open(info) as member:  # the header first, compressed or not: refuse before decompressing
            shape, fortran, dtype = _npy_header(member, path)
            header_len = member.tell()
        _check_dtype(path, dtype)
        _check_2d(path, shape)
        if info.compress_type == zipfile.ZIP_STORED:
            if not fortran:
                # data start = local file header + name + extra + npy header
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    local = f.read(30)
                    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                        + int.from_bytes(local[28:30], "little")
                return RawArrayFile(path, start + header_len, shape, dtype, source=path)
        try:
            with zf.open(info) as member:
                return MemoryArrayFile(path, np.load(io.BytesIO(member.read()), allow_pickle=False))
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:  # e.g. a damaged member
            raise SparseAEError(f"{path}: cannot read array '{name}' ({e})") from None


class SafetensorsFile(ArrayFile):
    """One tensor of a .safetensors file, rows sliced out by safetensors' reader (a memory map)."""

    def __init__(self, path: Path, key: str | None):
        from safetensors import safe_open

        self.path = path
        try:
            handle = safe_open(str(path), framework="numpy")
        except Exception as e:  # SafetensorError: bad header, truncated data, ...
            raise SparseAEError(f"{path}: not a valid .safetensors file ({e})") from None
        name = _pick_key(path, list(handle.keys()), key)
        self._slice = handle.get_slice(name)
        dtype = self._slice.get_dtype()
        if dtype not in _ST_DTYPES:
            raise SparseAEError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        _check_2d(path, tuple(self._slice.get_shape()))
        self._bf16 = dtype == "BF16"
        if self._bf16:  # numpy has no bfloat16: the numpy reader refuses it, the torch reader does not
            self._slice = safe_open(str(path), framework="pt").get_slice(name)
        self.n_rows, self.n_cols = self._slice.get_shape()

    def read(self, start: int, stop: int) -> np.ndarray:
        a = self._slice[start:stop]
        if self._bf16:
            return a.float().numpy()
        return np.ascontiguousarray(a, dtype=np.float32)


class ParquetFile(ArrayFile):
    """A Parquet table of numeric columns, read one row group at a time."""

    def __init__(self, path: Path, columns: list[str] | None):
        try:
            import pyarrow.parquet as pq
            import pyarrow.types as pat
        except ImportError:
            raise SparseAEError("reading .parquet needs pyarrow: pip install 'sparseae[arrays]'") from None
        self.path = path
        try:
            self.file = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises its own error types
            raise SparseAEError(f"{path}: not a valid Parquet file ({e})") from None
        schema = self.file.schema_arrow
        self.columns = columns or list(schema.names)
        for c in self.columns:
            if c not in schema.names:
                raise SparseAEError(f"{path}: no column '{c}'; columns: {', '.join(schema.names)}")
            t = schema.field(c).type
            if not (pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t)):
                raise SparseAEError(f"{path}: column '{c}' is not numeric ({t})")
        meta = self.file.metadata
        self.group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.group_start = np.concatenate([[0], np.cumsum(self.group_rows)]).astype(int)
        self.n_rows, self.n_cols = int(self.group_start[-1]), len(self.columns)
        _check_2d(path, (self.n_rows, self.n_cols))
        self._cache: tuple[int, np.ndarray] | None = None

    def _group(self, g: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != g:
            table = self.file.read_row_group(g, columns=self.columns)
            cols = [table.column(c).to_numpy(zero_copy_only=False) for c in self.columns]
            a = np.empty((table.num_rows, len(cols)), dtype=np.float32)
            for j, c in enumerate(cols):
                a[:, j] = c  # nulls arrive as NaN and are caught by the value check
            self._cache = (g, a)
        return self._cache[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        out = []
        g = int(np.searchsorted(self.group_start, start, side="right") - 1)
        while start < stop:
            g0 = self.group_start[g]
            a = self._group(g)
            take = a[start - g0: min(stop, g0 + len(a)) - g0]
            out.append(take)
            start += len(take)
            g += 1
        return np.concatenate(out) if len(out) > 1 else out[0]

    def blocks(self, start: int, stop: int) -> list[tuple[int, int]]:
        edges = sorted({start, stop, *[int(s) for s in self.group_start if start < s < stop]})
        return list(zip(edges, edges[1:]))


class CsvFile(ArrayFile):
    """Comma-separated numbers, an optional header line; one pass indexes the line offsets."""

    def __init__(self, path: Path, delimiter: str = ","):
        self.path, self.delimiter = path, delimiter
        self.header: list[str] | None = None
        offsets, n_rows, n_cols = [], 0, None
        with open(path, "rb") as f:
            pos = 0
            first = True
            for line in f:
                start, pos = pos, pos + len(line)
                if not line.strip():
                    continue
                if first:
                    first = False
                    cells = line.decode("utf-8", "replace").strip().split(delimiter)
                    n_cols = len(cells)
                    if not any(is_number(c) for c in cells):
                        self.header = [c.strip() for c in cells]
                        continue
                if n_rows % 4096 == 0:
                    offsets.append(start)
                n_rows += 1
        self.offsets, self.n_rows, self.n_cols = offsets, n_rows, n_cols or 0
        _check_2d(path, (self.n_rows, self.n_cols))

    def read(self, start: int, stop: int) -> np.ndarray:
        b = start // 4096
        row, lines = b * 4096, []
        with open(self.path, "rb") as f:
            f.seek(self.offsets[b])
            for line in f:
                if row >= stop:
                    break
                if not line.strip():
                    continue
                if row >= start:
                    lines.append(line)
                row += 1
        try:  # numpy's C parser; on failure the slow path below names the bad cell
            out = np.loadtxt(io.BytesIO(b"".join(lines)), delimiter=self.delimiter, dtype=np.float32, ndmin=2)
            if out.shape == (stop - start, self.n_cols):
                return out
        except ValueError:
            pass
        out = np.empty((stop - start, self.n_cols), dtype=np.float32)
        for i, line in enumerate(lines):
            cells = line.split(self.delimiter.encode())
            if len(cells) != self.n_cols:
                raise SparseAEError(f"{self.path}: data row {start + i + 1} has {len(cells)} cells, "
                                    f"expected {self.n_cols}")
            try:
                out[i] = [float(c) for c in cells]
            except ValueError:
                bad = next(c for c in cells if not is_number(c.decode("utf-8", "replace")))
                raise SparseAEError(f"{self.path}: data row {start + i + 1} has a non-numeric cell "
                                    f"'{bad.decode('utf-8', 'replace').strip()}'") from None
        return out

    def blocks(self, start: int, stop: int) -> list[tuple[int, int]]:
        edges = sorted({start, stop, *[i * 4096 for i in range(len(self.offsets)) if start < i * 4096 < stop]})
        return list(zip(edges, edges[1:]))


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _pick_key(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise SparseAEError(f"{path}: no array named '{key}'; arrays: {', '.join(names) or 'none'}")
        return key
    if len(names) != 1:
        raise SparseAEError(f"{path} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                            "name one with --data-key")
    return names[0]


def open_array(path: str | os.PathLike, key: str | None = None) -> ArrayFile:
    """Open a 2-D numeric array file; `key` names the array (.npz, .safetensors) or columns (.parquet)."""
    p = regular_file(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return open_npy(p)
    if suffix == ".npz":
        return open_npz(p, key)
    if suffix == ".safetensors":
        return SafetensorsFile(p, key)
    if suffix == ".parquet":
        return ParquetFile(p, key.split(",") if key else None)
    if suffix == ".csv":
        return CsvFile(p)
    raise SparseAEError(f"data file {p}: unknown format '{suffix}'; known: {', '.join(FORMATS)}")


class PairedArrayFile(ArrayFile):
    """Two array files of the same rows side by side: each row is `inputs`' row, then `targets`' row."""

    def __init__(self, inputs: ArrayFile, targets: ArrayFile):
        if inputs.n_rows != targets.n_rows:
            raise SparseAEError(f"the target file {targets.path} has {targets.n_rows} rows but the data file "
                                f"{inputs.path} has {inputs.n_rows}; a transcoder needs one target row per input row")
        self.inputs, self.targets = inputs, targets
        self.path, self.n_rows, self.n_cols = inputs.path, inputs.n_rows, inputs.n_cols + targets.n_cols

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.concatenate([self.inputs.read(start, stop), self.targets.read(start, stop)], axis=1)

    def describe(self) -> str:
        return f"{self.inputs.describe()} with targets {self.targets.describe()}"


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


# --- one pass over the rows: value check and per-feature statistics ---


@dataclass
class RowStatistics:
    """Per-feature mean and (population) standard deviation, and the covariance if asked for."""

    count: int
    mean: np.ndarray
    std: np.ndarray
    covariance: np.ndarray | None = None
    low: float | None = None
    high: float | None = None
    """The smallest and largest value of any feature (None where not scanned)."""


def scan(array: ArrayFile, start: int, stop: int, covariance: bool = False,
         chunk_bytes: int = 64 << 20) -> RowStatistics:
    """Check that rows [start, stop) are finite and compute their statistics in one pass.

    Chunks are combined with Chan et al.'s update of (count, mean, M2), in float64,
    so the result does not suffer the cancellation of sum(x^2) - n mean^2.
    """
    rows = max(1, chunk_bytes // (4 * array.n_cols))
    n, mean, m2, low, high = 0, np.zeros(array.n_cols), np.zeros(array.n_cols), math.inf, -math.inf
    cov = np.zeros((array.n_cols, array.n_cols)) if covariance else None
    for i in range(start, stop, rows):
        a = array.read(i, min(i + rows, stop))
        finite = np.isfinite(a)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise SparseAEError(f"{array.path}: row {i + r}, column {c} is {a[r, c]}; "
                                "the data must be finite (no NaN or inf)")
        a = a.astype(np.float64)
        low, high = min(low, float(a.min())), max(high, float(a.max()))
        m, cm = len(a), a.mean(0)
        d = a - cm
        delta = cm - mean
        tot = n + m
        m2 += (d * d).sum(0) + delta * delta * n * m / tot
        if cov is not None:
            cov += d.T @ d + np.outer(delta, delta) * n * m / tot
        mean = mean + delta * m / tot
        n = tot
    return RowStatistics(n, mean, np.sqrt(m2 / n), None if cov is None else cov / n, low, high)


# --- the data set: a training range and a validation range of one file ---


class ArrayData:
    """Training rows (the first 1 - val_fraction) and validation rows (the rest) of an array file;
    streamed, a `DataSource` (data/dataset.py)."""

    image_shape = None
    train_labels = None
    test_labels = None
    in_memory = False
    stats: RowStatistics | None = None
    """Statistics of the training rows, once `prepare` has scanned them."""

    def __init__(self, path: str | os.PathLike, key: str | None = None, val_fraction: float = 0.1,
                 limit_train: int | None = None, target: str | os.PathLike | None = None,
                 target_key: str | None = None):
        if not 0.0 < val_fraction < 1.0:
            raise SparseAEError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.array = open_array(path, key)
        self.target_dim = 0
        """Width of the target part of each row (the last columns); 0 without train.target."""
        if target is not None:
            self.array = PairedArrayFile(self.array, open_array(target, target_key))
            self.target_dim = self.array.targets.n_cols
        n = self.array.n_rows
        n_val = max(1, int(round(n * val_fraction)))
        if n - n_val < 1:
            raise SparseAEError(f"{self.array.path}: {n} rows are too few for a validation split of "
                                f"{val_fraction}")
        self.n_train = n - n_val if limit_train is None else min(limit_train, n - n_val)
        self.val_range = (n - n_val, n)

    @property
    def input_dim(self) -> int:
        return self.array.n_cols - self.target_dim

    def nbytes(self) -> int:
        """float32 bytes of the rows used (training + validation)."""
        return (self.n_train + self.val_range[1] - self.val_range[0]) * self.array.n_cols * 4

    def scan_train(self, covariance: bool = False) -> RowStatistics:
        stats = scan(self.array, 0, self.n_train, covariance)
        scan(self.array, *self.val_range)  # the validation rows must be finite too
        return stats

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation) as float32 tensors in memory."""
        return (torch.from_numpy(self.array.read(0, self.n_train).copy()),
                torch.from_numpy(self.array.read(*self.val_range).copy()))

    def prepare(self, stream: str = "auto", check: bool = True, covariance: bool = False) -> "Dataset | ArrayData":
        """A `Dataset` in memory when the rows fit (stream 'no', or 'auto' and at most a quarter of the
        free memory), else this object, to be streamed. `check`: every value is checked to be finite
        first (for a streamed file in one pass that also computes `stats`)."""
        if stream == "no" or (stream == "auto" and self.nbytes() <= available_memory() // 4):
            train, val = self.load()
            if check:
                for t, offset in ((train, 0), (val, self.val_range[0])):
                    bad = ~torch.isfinite(t)
                    if bad.any():
                        r, c = (int(v) for v in bad.nonzero()[0])
                        raise SparseAEError(f"{self.array.path}: row {offset + r}, column {c} is "
                                            f"{t[r, c].item()}; the data must be finite (no NaN or inf)")
            return Dataset(train, val, target_dim=self.target_dim)
        if check:
            self.stats = self.scan_train(covariance)
        return self

    @property
    def statistics(self) -> RowStatistics | None:
        return self.stats

    def training(self, device: torch.device, batch_size: int, limit: int | None = None,
                 chunk_bytes: int = 128 << 20) -> "StreamBatches":
        n = self.n_train if limit is None else min(limit, self.n_train)
        return StreamBatches(self.array, n, batch_size, device, chunk_bytes)

    def validation(self, device: torch.device, chunk_bytes: int = 64 << 20) -> "RowChunks":
        return RowChunks(self.array, *self.val_range, device, chunk_bytes)


class RowChunks:
    """Rows [start, stop) of an array file as float32 tensors on `device`, chunk by chunk, in order.

    Iterable any number of times (e.g. once per epoch for validation).
    """

    def __init__(self, array: ArrayFile, start: int, stop: int, device: torch.device,
                 chunk_bytes: int = 64 << 20):
        self.array, self.start, self.stop, self.device = array, start, stop, device
        self.rows = max(1, chunk_bytes // (4 * array.n_cols))

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(self.start, self.stop, self.rows):
            yield torch.from_numpy(self.array.read(i, min(i + self.rows, self.stop)).copy()).to(self.device)

    def head(self, n: int) -> torch.Tensor:
        return torch.from_numpy(self.array.read(self.start, min(self.start + n, self.stop)).copy()
                                ).to(self.device)


class StreamBatches:
    """Shuffled minibatches of the first `n` rows of a file, never holding more than one chunk.

    Each epoch: the file's blocks (~1 MiB of rows each) are put in random
    order, consecutive blocks are grouped into chunks of ~`chunk_bytes`, each
    chunk's rows are shuffled, and batches are consecutive slices of that
    stream (a batch can span two chunks). All random choices of an epoch are
    drawn up front from the generator, so starting at step s (a resumed run)
    reads only the chunks from s on and gives the same batches.
    """

    tensor = None  # never all in memory (BatchSource.tensor)

    def __init__(self, array: ArrayFile, n: int, batch_size: int, device: torch.device,
                 chunk_bytes: int = 128 << 20):
        self.array, self.n, self.batch_size, self.device = array, n, batch_size, device
        self.block_list = array.blocks(0, n)
        rows_per_block = max(1, self.n // max(1, len(self.block_list)))
        self.blocks_per_chunk = max(1, chunk_bytes // max(1, rows_per_block * 4 * array.n_cols))

    @property
    def num_rows(self) -> int:
        return self.n

    def steps(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch(self, generator: torch.Generator, start_step: int = 0) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.block_list), generator=generator).tolist()
        chunks = [order[i:i + self.blocks_per_chunk] for i in range(0, len(order), self.blocks_per_chunk)]
        seeds = torch.randint(0, 2**62, (len(chunks),), generator=generator).tolist()
        sizes = [sum(self.block_list[b][1] - self.block_list[b][0] for b in c) for c in chunks]
        bs, pos = self.batch_size, start_step * self.batch_size
        pending: list[torch.Tensor] = []
        have, chunk_end = 0, 0
        for c, seed, size in zip(chunks, seeds, sizes):
            chunk_start, chunk_end = chunk_end, chunk_end + size
            if chunk_end <= pos:
                continue  # before the resume point: nothing to read
            # Blocks in file order (sequential reads); the row shuffle below mixes them.
            rows = np.concatenate([self.array.read(*self.block_list[b]) for b in sorted(c)])
            perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
            t = torch.from_numpy(rows)[perm]
            if chunk_start < pos:
                t = t[pos - chunk_start:]
            pending.append(t)
            have += len(t)
            while have >= bs:
                cat = torch.cat(pending) if len(pending) > 1 else pending[0]
                yield cat[:bs].to(self.device, non_blocking=True)
                pending, have = [cat[bs:]], have - bs
        if have:
            yield torch.cat(pending).to(self.device)

