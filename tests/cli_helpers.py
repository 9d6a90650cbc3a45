"""What the command-line tests share: run a command in-process, expect a one-line refusal, digest a folder."""
from __future__ import annotations

import hashlib
from pathlib import Path

from sparseae.cli import main


def digest(folder: Path, folders: bool = False) -> dict[str, str | None]:
    """Every file under `folder` (hidden ones too) -> its SHA-256; with `folders`, every folder -> None."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*")) if folders or p.is_file()}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `sparseae ARGV`, run in this process."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own exit
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv: str) -> str:
    """The one line of a command that exits 2."""
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def copy_run(source: Path, tmp_path: Path, capsys) -> Path:
    """A fresh copy of a finished run folder to tamper with (output of earlier commands discarded)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(source, copy)
    capsys.readouterr()
    return copy


def rows_file(tmp_path: Path, columns: int, rows: int = 300) -> Path:
    """A .npy of `rows` x `columns` values in [0.1, 0.9] (seed 0)."""
    import numpy as np

    p = tmp_path / "d.npy"
    np.save(p, (np.random.default_rng(0).random((rows, columns)) * 0.8 + 0.1).astype(np.float32))
    return p


def refused_naming(capsys, argv: list[str], *needles: str) -> str:
    """The one line of a command that exits 2, which must name every one of `needles`."""
    err = refused(capsys, *argv)
    for needle in needles:
        assert needle in err, err
    return err
