"""Atomic files: a temp file in the target's folder, then a rename, so a reader (or a
killed run) sees the old file or the new one, never half of one.

JSON: every JSON file and `--json` output goes through `to_json_text`, strict JSON that any parser
reads: NaN and infinities (which json.dumps would write as the non-JSON words NaN/Infinity) become null.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def write_bytes_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def json_plain(obj: Any) -> Any:
    """`obj` with every non-finite number as None and numpy scalars as Python numbers, through dicts,
    lists and tuples: what strict JSON can hold."""
    if isinstance(obj, dict):
        return {k: json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):  # numpy integers register here, and json.dumps refuses them
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def to_json_text(obj: Any, indent: int | None = 2, compact: bool = False, sort_keys: bool = False) -> str:
    """Strict JSON text of `obj` (json_plain), ending in a newline; `compact`: no spaces, one line."""
    separators = (",", ":") if compact else None
    return json.dumps(json_plain(obj), indent=None if compact else indent, separators=separators,
                      sort_keys=sort_keys, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, to_json_text(obj, indent))
