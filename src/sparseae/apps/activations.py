"""Activations of any PyTorch model, dumped to a .npy file that `sparseae train --dataset array` reads.

`collect(model, "layer.name", data, out="acts.npy")` runs `data` through `model` in batches under
torch.no_grad() (the model in eval mode, restored after), with a forward hook on the named submodule
that takes its output (`site="out"`) or its first positional input (`site="in"`). Each batch's
activations become rows: (batch, features) as they are; (batch, positions, features) flattened to
batch * positions rows, the layout of a transformer's residual stream (nn.TransformerEncoder with
batch_first=True); anything of more dimensions (a CNN's (batch, channels, height, width)) one row per
example. Once the hook has fired, the rest of the model is not run (the forward pass is stopped).

`site="both"` records the module's input and output in the same pass (one forward hook, which sees both)
for a transcoder: two .npy files beside each other, named from `out` ("acts.npy" -> "acts.in.npy" and
"acts.out.npy"), row i of one the input whose output is row i of the other (their widths may differ);
`sparseae train --dataset array --data acts.in.npy --target acts.out.npy` reads them as such. Two plain
files rather than one file of two named tensors, because each is streamed to disk as it comes and each is
what `--data` (or a user's numpy) reads.

The rows are copied into one preallocated chunk (`chunk_bytes`, default 32 MiB) that is written out
whenever it fills, so at most one chunk and one batch are held, whatever the file's size. The file is
a plain version-1.0 .npy: a header of HEADER_BYTES reserved first and filled in with the final shape at
the end (the number of rows is known only then), the rows in C order after it, all written to a temp
file beside `out` and renamed onto it once complete (a killed collection leaves no half file).

dtype and device: inputs go to the model's device; floating inputs take the model's floating dtype
(integer inputs, e.g. token ids, stay as they are). The rows keep the activations' dtype (float16,
float32, float64), except bfloat16, which numpy lacks: written as float32, exactly.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import SparseAEError, first_line
from ..run.files import atomic_write
from ..run.output import claim_file

SITES = ("in", "out", "both")
HEADER_BYTES = 128  # magic, version, length and the header dict, padded: room for any 2-D shape
CHUNK_BYTES = 32 << 20


class _Stop(Exception):
    """Raised by the hook once it has the activations: nothing after the hooked module is run."""


@dataclass
class Collected:
    """What `collect` wrote."""

    path: Path
    rows: int
    features: int
    dtype: str
    batches: int
    chunks_written: int
    chunk_rows: int
    peak_rows_held: int
    """The most rows collect held at once in its chunk (never more than chunk_rows)."""
    target: Path | None = None
    """site 'both': the file of the module's outputs (`path` holds its inputs)."""
    target_features: int | None = None


def find_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule `name` ("encoder.layers.0", as model.named_modules() names it)."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        shown = ", ".join(n for n in list(modules)[1:9])
        raise SparseAEError(f"the model has no submodule {name!r}; its submodules include: {shown or 'none'}")
    return modules[name]


def model_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """The floating dtype and device of the model's first parameter (or buffer); float32 on the CPU without."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.float32, torch.device("cpu")


def rows_of(acts: torch.Tensor) -> torch.Tensor:
    """Activations as rows: 2-D as they are, 3-D (batch, positions, features) as batch * positions rows,
    else one row per example; a 1-D tensor is one feature per example."""
    if acts.dim() == 1:
        return acts.reshape(-1, 1)
    if acts.dim() == 3:
        return acts.reshape(-1, acts.shape[-1])
    return acts.reshape(acts.shape[0], -1)


def npy_header(dtype: np.dtype, rows: int, cols: int) -> bytes:
    """A version-1.0 .npy header of exactly HEADER_BYTES for a C-ordered (rows, cols) array."""
    text = f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': ({rows}, {cols}), }}"
    room = HEADER_BYTES - 10 - 1  # magic (6) + version (2) + length (2); the dict ends with a newline
    if len(text) > room:
        raise SparseAEError(f"a {rows} x {cols} array does not fit the .npy header")
    return b"\x93NUMPY\x01\x00" + (HEADER_BYTES - 10).to_bytes(2, "little") + (
        text.ljust(room) + "\n").encode("latin1")


class _Writer:
    """Rows appended to an open .npy file through one preallocated chunk."""

    def __init__(self, f, chunk_bytes: int):
        self.f, self.chunk_bytes = f, chunk_bytes
        self.buf: np.ndarray | None = None
        self.filled = self.rows = self.chunks = self.peak = 0
        f.write(b"\0" * HEADER_BYTES)  # the header's place; filled in by finish()

    def add(self, rows: np.ndarray) -> None:
        if self.buf is None:
            n = max(1, self.chunk_bytes // max(1, rows.shape[1] * rows.dtype.itemsize))
            self.buf = np.empty((n, rows.shape[1]), dtype=rows.dtype)
        elif rows.shape[1] != self.buf.shape[1]:
            raise SparseAEError(f"the hooked activations changed width from {self.buf.shape[1]} to {rows.shape[1]} "
                                "features between batches; rows of one file must have one width")
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, len(self.buf) - self.filled)
            self.buf[self.filled:self.filled + take] = rows[start:start + take]
            self.filled, start = self.filled + take, start + take
            self.peak = max(self.peak, self.filled)
            if self.filled == len(self.buf):
                self.flush()

    def flush(self) -> None:
        if self.filled:
            self.f.write(self.buf[:self.filled].data)  # the rows in place: no copy of the chunk
            self.rows += self.filled
            self.chunks += 1
            self.filled = 0

    def finish(self) -> None:
        self.flush()
        if self.buf is None or self.rows == 0:
            raise SparseAEError("no activations were collected: the data gave no rows")
        self.f.seek(0)
        self.f.write(npy_header(self.buf.dtype, self.rows, self.buf.shape[1]))
        self.f.flush()
        os.fsync(self.f.fileno())


def batches(data: Any, batch_size: int) -> tuple[Iterator[Any], int | None]:
    """(the model's inputs one batch at a time, the number of batches or None). `data`: a tensor or numpy
    array (cut into `batch_size` rows, a memory map read one batch at a time), an array file
    (data/arrays.py), or any iterable of batches (a DataLoader): each a tensor, a tuple/list whose first
    item is the input (labels are ignored), or a dict of keyword arguments."""
    if batch_size <= 0:
        raise SparseAEError(f"batch size must be positive, got {batch_size}")
    if hasattr(data, "read") and hasattr(data, "n_rows"):  # an array file (data/arrays.py), read batch by batch
        rows = ArrayBatches(data, batch_size)
        return iter(rows), len(rows)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if data.ndim == 0 or len(data) == 0:
            raise SparseAEError(f"the data has no examples (shape {tuple(data.shape)})")
        n = len(data)
        return (data[i:i + batch_size] for i in range(0, n, batch_size)), -(-n // batch_size)
    if isinstance(data, (str, bytes, os.PathLike)) or not isinstance(data, Iterable):
        raise SparseAEError(f"data must be a tensor, an array or an iterable of batches; got {type(data).__name__}")
    total = len(data) if hasattr(data, "__len__") else None
    return iter(data), total


def _to_model(x: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """One input on the model's device; floating point in the model's dtype, integers (token ids) as they are."""
    if isinstance(x, np.ndarray):  # a copy of a memory-mapped (read-only) batch: torch wants writable memory
        x = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x, order="C"))
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
    raise SparseAEError(f"a batch must be a tensor or an array; got {type(x).__name__}")


def _call(model: torch.nn.Module, batch: Any, dtype: torch.dtype, device: torch.device) -> None:
    if isinstance(batch, dict):
        model(**{k: _to_model(v, dtype, device) for k, v in batch.items()})
    elif isinstance(batch, (tuple, list)):
        if not batch:
            raise SparseAEError("a batch of the data is empty")
        model(_to_model(batch[0], dtype, device))
    else:
        model(_to_model(batch, dtype, device))


def _hook(module: torch.nn.Module, site: str, caught: list[torch.Tensor]):
    """Register the hook that puts the activations of `site` in `caught` (input, then output, for 'both'),
    then stops the forward pass."""
    def keep(value: Any, where: str) -> None:
        if isinstance(value, (tuple, list)):
            value = value[0] if value else None
        if not isinstance(value, torch.Tensor):
            raise SparseAEError(f"the hooked {where}put is a {type(value).__name__}, not a tensor")
        caught.append(value.detach())

    def keep_and_stop(*values: tuple[Any, str]) -> None:
        for value, where in values:
            keep(value, where)
        raise _Stop

    if site == "in":
        return module.register_forward_pre_hook(lambda m, args: keep_and_stop((args, "in")))
    if site == "both":
        return module.register_forward_hook(lambda m, args, output: keep_and_stop((args, "in"), (output, "out")))
    return module.register_forward_hook(lambda m, args, output: keep_and_stop((output, "out")))


def claim_outputs(out: str | os.PathLike, site: str, overwrite: bool = False) -> list[Path]:
    """The file(s) `collect` writes for `out`, claimed (run/output.py): out itself, or for site 'both' its
    .in.npy and .out.npy."""
    path = Path(out)
    if site == "both" and path.suffix.lower() == ".npy":
        paths = [path.with_name(f"{path.stem}.{where}.npy") for where in ("in", "out")]
    else:
        paths = [path]
    paths = [claim_file(p, "--out", overwrite) for p in paths]
    if path.suffix.lower() != ".npy":
        raise SparseAEError(f"--out {path}: activations are written as .npy; name a file ending in .npy")
    return paths


def _atomic_files(paths: list[Path], write, tmps: tuple[str, ...] = ()) -> None:
    """write(temp paths), then each renamed onto its path; on any error no file is left (atomic_write's)."""
    if not paths:
        return write(list(tmps))
    atomic_write(paths[0], lambda tmp: _atomic_files(paths[1:], write, (*tmps, tmp)))


def numpy_rows(acts: torch.Tensor) -> np.ndarray:
    """The rows of one batch's activations as a numpy array on the CPU (bfloat16 as float32, exactly)."""
    rows = rows_of(acts)
    if rows.dtype == torch.bfloat16:
        rows = rows.float()
    if not (rows.is_floating_point() or rows.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                        torch.uint8)):
        raise SparseAEError(f"the hooked activations have dtype {rows.dtype}, not a number type")
    return rows.cpu().numpy()


def collect(model: torch.nn.Module, layer: str, data: Any, out: str | os.PathLike, site: str = "out",
            max_rows: int | None = None, batch_size: int = 256, chunk_bytes: int = CHUNK_BYTES,
            progress: bool = True, overwrite: bool = False) -> Collected:
    """Dump the activations at `site` ('out', 'in' or 'both') of `model`'s submodule `layer` for `data` to the
    .npy file `out` (module docstring: 'both' writes two); at most `max_rows` rows. Returns what was written."""
    if site not in SITES:
        raise SparseAEError(f"site must be one of {', '.join(SITES)}; got {site!r}")
    if max_rows is not None and max_rows <= 0:
        raise SparseAEError(f"max rows must be positive, got {max_rows}")
    paths = claim_outputs(out, site, overwrite)
    module = find_module(model, layer)
    it, total = batches(data, batch_size)
    dtype, device = model_dtype_device(model)
    stats: dict[str, Any] = {}
    modes = [(m, m.training) for m in model.modules()]  # each submodule's own mode, given back after
    caught: list[torch.Tensor] = []
    handle = _hook(module, site, caught)
    model.eval()
    try:
        _atomic_files(paths, lambda tmps: _run(model, it, total, (dtype, device), caught, tmps,
                                               (max_rows, chunk_bytes, progress), stats))
    finally:
        handle.remove()
        for m, training in modes:
            m.training = training
    w, *rest = stats["writers"]
    target = dict(target=paths[1], target_features=rest[0].buf.shape[1]) if rest else {}
    return Collected(paths[0], w.rows, w.buf.shape[1], w.buf.dtype.name, stats["batches"], w.chunks, len(w.buf),
                     w.peak, **target)


def _run(model, it, total, where, caught, tmps, options, stats) -> None:
    """The loop of `collect`, writing into the temp files `tmps` (one per hooked site)."""
    with ExitStack() as stack:
        files = [stack.enter_context(open(tmp, "r+b")) for tmp in tmps]
        stack.enter_context(torch.no_grad())
        _loop(model, it, total, where, caught, files, options, stats)


def _loop(model, it, total, where, caught, files, options, stats) -> None:
    max_rows, chunk_bytes, progress = options
    writers = stats["writers"] = [_Writer(f, chunk_bytes) for f in files]
    n = written = 0
    for batch in tqdm(it, total=total, disable=not progress, unit="batch", dynamic_ncols=True):
        caught.clear()
        try:
            _call(model, batch, *where)
        except _Stop:
            pass
        if not caught:
            raise SparseAEError("the hook never fired: the model's forward pass does not call that submodule "
                                "(a fused fast path, e.g. nn.TransformerEncoderLayer's in eval mode, skips its "
                                "children; hook the layer itself)")
        rows = [numpy_rows(c) for c in caught]
        if len({len(r) for r in rows}) > 1:
            raise SparseAEError(f"the hooked input gives {len(rows[0])} rows per batch and the output "
                                f"{len(rows[1])}: a transcoder's files need one output row per input row")
        keep = len(rows[0]) if max_rows is None else min(len(rows[0]), max_rows - written)
        for r, w in zip(rows, writers):
            w.add(r[:keep])
        n, written = n + 1, written + keep
        if max_rows is not None and written >= max_rows:
            break
    stats["batches"] = n
    for w in writers:
        w.finish()


# --- the command line's inputs: a model factory and an array file ------------------------------------

def load_factory(spec: str) -> torch.nn.Module:
    """The model `MODULE:FACTORY` names: FACTORY() from the module `pkg.mod` or the file `path/file.py`."""
    import importlib
    import importlib.util

    module_name, sep, factory = spec.rpartition(":")
    if not sep or not module_name or not factory.isidentifier():
        raise SparseAEError(f"--model must be MODULE:FACTORY (e.g. mymodels:make or models.py:make); got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise SparseAEError(f"--model: no Python file {path}")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:  # a module beside the user, as `python -m` would find it
            import sys
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except SparseAEError:
        raise
    except Exception as e:  # the user's module: any error while importing it is named in one line
        raise SparseAEError(f"--model: importing {module_name} failed: {type(e).__name__}: {e}") from None
    make = getattr(module, factory, None)
    if not callable(make):
        raise SparseAEError(f"--model: {module_name} has no function {factory}")
    model = make()
    if not isinstance(model, torch.nn.Module):
        raise SparseAEError(f"--model: {factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


class ArrayBatches:
    """The rows of an array file (apps' --data) in batches, read one batch at a time."""

    def __init__(self, array, batch_size: int):
        self.array, self.batch_size = array, batch_size

    def __len__(self) -> int:
        return -(-self.array.n_rows // self.batch_size)

    def __iter__(self):
        for i in range(0, self.array.n_rows, self.batch_size):
            yield self.array.read(i, min(i + self.batch_size, self.array.n_rows))


def open_inputs(path: str | os.PathLike, key: str | None = None) -> Any:
    """A model's inputs from a file: a .npy of any shape and dtype (first axis: examples; token ids stay
    integers), memory-mapped; other formats (.npz, .safetensors, .parquet, .csv) as float32 rows."""
    from ..data.arrays import open_array
    from ..data.paths import regular_file

    p = Path(path)
    if p.suffix.lower() == ".npy":
        regular_file(p)
        try:
            array = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise SparseAEError(f"{p}: not a .npy file this reads ({first_line(e)})") from None
        if array.dtype.kind not in "biuf" or array.ndim == 0 or len(array) == 0:
            raise SparseAEError(f"{p}: expected a numeric array with examples on its first axis, got dtype "
                                f"{array.dtype} and shape {array.shape}")
        return array
    return open_array(p, key)

