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
import re
from pathlib import Path

import numpy as np

from ..errors import SparseAEError

N_VARIABLES = 52
TEST_ONSET = 160
"""Rows before the fault in every d??_te.dat file (the fault starts at sample 161)."""
FAULTS = tuple(range(1, 22))
UNDETECTABLE = (3, 9, 15)
"""Faults known to be practically undetectable from these measurements."""
COLUMNS = [f"XMEAS({i})" for i in range(1, 42)] + [f"XMV({i})" for i in range(1, 12)]
"""The 52 variables in file order: measurements XMEAS(1)-XMEAS(41), manipulated variables XMV(1)-XMV(11)."""
FAULT_NAMES = {
    1: "A/C feed ratio, B composition constant (stream 4), step",
    2: "B composition, A/C ratio constant (stream 4), step",
    3: "D feed temperature (stream 2), step",
    4: "reactor cooling water inlet temperature, step",
    5: "condenser cooling water inlet temperature, step",
    6: "A feed loss (stream 1), step",
    7: "C header pressure loss (stream 4), step",
    8: "A, B, C feed composition (stream 4), random variation",
    9: "D feed temperature (stream 2), random variation",
    10: "C feed temperature (stream 4), random variation",
    11: "reactor cooling water inlet temperature, random variation",
    12: "condenser cooling water inlet temperature, random variation",
    13: "reaction kinetics, slow drift",
    14: "reactor cooling water valve, sticking",
    15: "condenser cooling water valve, sticking",
    16: "unknown", 17: "unknown", 18: "unknown", 19: "unknown", 20: "unknown",
    21: "valve of stream 4 fixed at its steady-state position",
}
"""IDV(1)..IDV(21) (Downs & Vogel 1993; Chiang, Russell & Braatz 2001)."""
FILE_NAME = re.compile(r"d(\d\d)(_te)?")


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


def read_dat(path: Path) -> np.ndarray:
    """A .dat file (whitespace-separated numbers) as rows x variables; d00.dat, stored transposed
    (52 x 500), is turned the right way."""
    x = _read(Path(path))
    if Path(path).name == "d00.dat" and x.shape[0] == N_VARIABLES and x.shape[1] != N_VARIABLES:
        return x.T
    return x


def load_normal(root: Path) -> np.ndarray:
    """d00.dat as 500 rows x 52 variables."""
    return read_dat(root / "d00.dat")


def load_test(root: Path, fault: int) -> np.ndarray:
    """d{fault}_te.dat: 960 rows x 52 variables, fault from row 160 (0-based) on."""
    if fault not in (0, *FAULTS):
        raise SparseAEError(f"fault must be 0..21; got {fault}")
    return _read(root / f"d{fault:02d}_te.dat")


def load_named(root: Path, name: str) -> tuple[np.ndarray, int | None]:
    """A run by its file name without .dat, 'd00' or 'd00_te' .. 'd21_te', and its fault onset (rows
    before the fault): None for the normal runs d00 and d00_te, TEST_ONSET for d01_te .. d21_te."""
    m = FILE_NAME.fullmatch(name)
    if m is None or int(m.group(1)) > 21 or (m.group(2) is None and m.group(1) != "00"):
        raise SparseAEError(f"no Tennessee Eastman run '{name}'; names: d00, d00_te .. d21_te")
    fault = int(m.group(1))
    if m.group(2) is None:
        return load_normal(root), None
    return load_test(root, fault), (None if fault == 0 else TEST_ONSET)
