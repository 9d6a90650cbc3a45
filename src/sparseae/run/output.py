"""The folder a command writes, claimed before any work starts.

A user's files are never replaced by surprise. `OutputFolder` checks the path
before the first byte is written and decides where the files go:

- an empty path, or an existing file, is refused;
- a folder that does not exist, or is empty, is used as it is;
- a folder with anything in it is refused (`if_exists="refuse"`, the default), or
  replaced (`"replace"`: the new files go to a fresh staging folder beside it,
  `.NAME.new-XXXX`, which takes the old folder's place only when `commit()` is
  called at the end of a successful run; a run that fails or is killed leaves the
  old folder exactly as it was), or written into (`"add"`: for a command that made
  the folder itself, e.g. a stack writing its fine-tuned model beside its layers).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import SparseAEError

IF_EXISTS = ("refuse", "replace", "add")


def os_error(e: OSError, action: str) -> SparseAEError:
    """An OSError as one line that names the path and what went wrong (not a directory, permission, ...)."""
    return SparseAEError(f"cannot {action} {e.filename or ''}: {e.strerror or e}".replace("  ", " "))


class OutputFolder:
    def __init__(self, path: str | os.PathLike, if_exists: str = "refuse", flag: str = "--overwrite"):
        if if_exists not in IF_EXISTS:
            raise SparseAEError(f"if_exists must be one of {', '.join(IF_EXISTS)}; got {if_exists!r}")
        if str(path).strip() == "":
            raise SparseAEError("the output folder must be named (got an empty path)")
        self.final = Path(path)
        self.staging: Path | None = None
        try:
            if self.final.exists() and not self.final.is_dir():
                raise SparseAEError(f"{self.final} exists and is not a folder; name a folder for the results")
            occupied = self.final.is_dir() and any(self.final.iterdir())
        except OSError as e:  # a symlink loop, a folder that cannot be listed, a name too long
            raise os_error(e, "use") from None
        if occupied and if_exists == "refuse":
            raise SparseAEError(f"{self.final} already holds files; name a new folder, or pass {flag} to replace "
                                "it once the new run has finished")
        self.replace = occupied and if_exists == "replace"
        self._check_writable(self.final.parent if self.replace or not self.final.exists() else self.final)

    @staticmethod
    def _check_writable(folder: Path) -> None:
        """The nearest existing folder on the way must be writable, or nothing can be written."""
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SparseAEError(f"cannot write into {folder}: permission denied")

    @property
    def path(self) -> Path:
        """Where the files go now: the staging folder while replacing, else the folder itself."""
        return self.staging if self.staging is not None else self.final

    def create(self) -> Path:
        """Make the folder (or the staging folder) and return it."""
        try:
            if self.replace:
                if self.staging is None:
                    self.final.parent.mkdir(parents=True, exist_ok=True)
                    self.staging = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.new-", dir=self.final.parent))
            else:
                self.final.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, "create") from None
        return self.path

    def commit(self) -> None:
        """A successful run: the staging folder takes the old folder's place (two renames)."""
        if self.staging is None:
            return
        old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.final.parent))
        os.replace(self.final, old / "run")
        os.replace(self.staging, self.final)
        self.staging = None
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """A failed run: remove the staging folder; the old folder was never touched."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


def next_free(folder: str | os.PathLike, stem: str) -> Path:
    """`folder/stem-001`, or the first such name not taken: a default output never collides."""
    base = Path(folder)
    for i in range(1, 100000):
        p = base / f"{stem}-{i:03d}"
        if not p.exists():
            return p
    raise SparseAEError(f"{base} holds 99999 runs named {stem}-NNN; name the output folder")
