"""The Tennessee Eastman process data (Braatz set) as shipped in the `bibmon` wheel.

Only the data files are read, from the installed package folder; bibmon itself
is never imported (its own dependencies are heavy and not needed). Install it
without them: `pip install --no-deps bibmon==1.2.0`.

Files under `bibmon/tennessee_eastman/`: d00.dat (normal operation, stored
transposed as 52 x 500), d01..d21.dat (training runs with a fault, 480 x 52),
d00_te..d21_te.dat (test runs, 960 x 52, the fault starts at sample 161).
Columns: XMEAS 1-41, XMV 1-11.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import SparseAEError

N_VARIABLES = 52
TEST_ONSET = 160
"""Rows before the fault in every d??_te.dat file (the fault starts at sample 161)."""
FAULTS = tuple(range(1, 22))
UNDETECTABLE = (3, 9, 15)
"""Faults known to be practically undetectable from these measurements."""
COLUMNS = [f"XMEAS{i}" for i in range(1, 42)] + [f"XMV{i}" for i in range(1, 12)]


def locate(data_dir: str | None = None) -> Path:
    """The folder holding d00.dat ...: `data_dir` if given, else the installed bibmon package's."""
    if data_dir is not None:
        root = Path(data_dir)
    else:
        spec = importlib.util.find_spec("bibmon")
        if spec is None or not spec.submodule_search_locations:
            raise SparseAEError("the Tennessee Eastman data comes with the bibmon package; install it with "
                                "`pip install --no-deps bibmon==1.2.0` (or pass the folder of d00.dat)")
        root = Path(list(spec.submodule_search_locations)[0]) / "tennessee_eastman"
    if not (root / "d00.dat").is_file():
        raise SparseAEError(f"no Tennessee Eastman files (d00.dat) in {root}")
    return root


def _read(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise SparseAEError(f"{path}: cannot read ({e})") from None


def load_normal(root: Path) -> np.ndarray:
    """d00.dat as 500 rows x 52 variables."""
    x = _read(root / "d00.dat")
    return x.T if x.shape[0] == N_VARIABLES and x.shape[1] != N_VARIABLES else x


def load_test(root: Path, fault: int) -> np.ndarray:
    """d{fault}_te.dat: 960 rows x 52 variables, fault from row 160 (0-based) on."""
    if fault not in (0, *FAULTS):
        raise SparseAEError(f"fault must be 0..21; got {fault}")
    return _read(root / f"d{fault:02d}_te.dat")
