"""An input file named by the user, checked so that what is wrong with it is said plainly."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import SparseAEError


def regular_file(path: str | os.PathLike, what: str = "data file") -> Path:
    """`path` as a Path if it is a readable regular file; else one line saying why not: it does not
    exist, is a folder, is not a regular file (a FIFO, a device), is a symlink loop, cannot be read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise SparseAEError(f"{what} {p} does not exist") from None
    except OSError as e:
        reason = "is a symbolic link loop" if e.errno == errno.ELOOP else f"cannot be used ({e.strerror})"
        raise SparseAEError(f"{what} {p} {reason}") from None
    if stat.S_ISDIR(mode):
        raise SparseAEError(f"{what} {p} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise SparseAEError(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise SparseAEError(f"{what} {p} cannot be read (permission denied)")
    return p
