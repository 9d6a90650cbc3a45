"""What a command writes, claimed before any work starts: only what sparseae wrote is ever replaced.

Ownership. Every folder a command writes (a run, a stack, a sweep, a monitor folder, a scored batch)
gets its mark before anything else: MARK (`.sparseae`), a small JSON file naming the kind of folder.
KINDS lists, for each kind, the entries that kind writes (names or patterns; a sub-folder follows the
rule of its own kind). A folder is one sparseae wrote when
- it carries the mark and every entry in it, at any depth, is one its kind writes; or, for a folder
  written before the mark existed (a v0.1 run), it has no mark but holds its kind's record (RECORD:
  a run's config.json, a stack's config.json and greedy/, a sweep's sweep.csv, a monitor folder's
  monitors.json, a scored batch's summary.csv) and every entry is one that kind writes.
A symbolic link is never an entry sparseae wrote.

Folders (`OutputFolder`), decided before the first byte is written:
- an empty path, or an existing file, is refused;
- a folder that does not exist, or is empty, is used as it is; inside a folder sparseae wrote, only
  where that kind puts one of its own (a sweep's points, a stack's layers, a monitor folder's
  score-NNN): anything else there would be an entry the folder does not own;
- a folder with anything in it is refused (`if_exists="refuse"`, the default), or replaced
  (`"replace"`, `--overwrite`) only if sparseae wrote it, else refused in one line naming the first
  entry it did not write; `/`, a mount point and the current folder (or one holding it) are never
  replaced. The new files go to a staging folder beside it, `.NAME.new-XXXX`, which takes the old
  folder's place only when the work has succeeded (`commit`, two renames through `.NAME.old-XXXX`);
  work that fails leaves the old folder exactly as it was. `"add"` writes into a folder a command
  made itself (a stack's fine-tuned model beside its layers).
- `with OutputFolder(...) as out:` commits when the block ends normally, discards on any exception.
- Staging folders of a killed run: the next claim of the same path removes them when it starts
  writing, if they are sparseae's (marked, or the `.old-` copy of a folder sparseae wrote, the latter
  only once NAME exists again: a kill between the two renames of a commit leaves the previous
  folder there); any other is left and named in a `LeftoverWarning`. Two `--overwrite` runs on one
  path at the same time are not supported (the later would remove the earlier's staging folder).

Files (`claim_file`): the one rule of every flag that names a file (--json, --csv, --screenshot,
report --out):
- an empty name, a folder, or anything else that is not a regular file: refused;
- a path inside a folder sparseae wrote: refused, whether the file exists or not (its files belong
  to it, and a new one would be an entry it does not own), with or without --overwrite; the one
  exception is the file a command keeps there itself (`own`: report's RUN/report.html);
- a path inside the folder the same command is writing (`inside`): refused, for the same reason;
- an existing file: replaced only with --overwrite, or when the command recognises it as its own
  output (`ours`: a report names its writer in its first lines);
- a new path: fine.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

from ..errors import SparseAEError

IF_EXISTS = ("refuse", "replace", "add")
MARK = ".sparseae"
MARK_FORMAT = "sparseae-folder"
TEMP = ".*.tmp"  # run/files.atomic_write's temp files, left by a killed write
FILE = ""  # KINDS: the entry is a file (else: a folder of the named kind)

_RUN = (("config.json", FILE), ("model.safetensors", FILE), ("metrics.csv", FILE), ("summary.json", FILE),
        ("loss.png", FILE), ("features.png", FILE), ("feature_density.png", FILE), ("report.html", FILE),
        ("reconstructions", "pictures"), ("checkpoint", "checkpoint"))
KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "run": _RUN,
    "stack": (*_RUN, ("layer[0-9]*", "run"), ("greedy", "run")),
    "sweep": (("sweep.csv", FILE), ("sweep.md", FILE), ("fvu_vs_l0.png", FILE), ("*_*", "run")),
    "monitor": (("monitors.json", FILE), ("score-[0-9]*", "score"), ("*", "monitor-model")),
    "score": (("summary.csv", FILE), ("summary.json", FILE), ("report.html", FILE), ("*.csv", FILE),
              ("*.png", FILE)),
    # parts of the kinds above, never marked themselves
    "pictures": (("*.png", FILE),),
    "checkpoint": (("state.json", FILE), ("e[0-9]*-s[0-9]*.safetensors", FILE)),
    "monitor-model": (("monitor.json", FILE), ("monitor.safetensors", FILE)),
}
MARKED = ("run", "stack", "sweep", "monitor", "score")
RECORD = {"stack": ("config.json", "greedy"), "run": ("config.json",), "sweep": ("sweep.csv",),
          "monitor": ("monitors.json",), "score": ("summary.csv",)}
"""What identifies a folder written before the mark existed (tried in this order)."""


class LeftoverWarning(UserWarning):
    """A staging folder of a killed run that is not removed (not sparseae's, or the previous folder)."""


def os_error(e: OSError, action: str) -> SparseAEError:
    """An OSError as one line that names the path and what went wrong (not a directory, permission, ...)."""
    return SparseAEError(f"cannot {action} {e.filename or ''}: {e.strerror or e}".replace("  ", " "))


# --- ownership -------------------------------------------------------------------------------------

def write_mark(folder: Path, kind: str) -> None:
    from .files import atomic_write_json

    atomic_write_json(folder / MARK, {"format": MARK_FORMAT, "version": 1, "kind": kind})


def read_mark(folder: Path) -> str | None:
    """The kind named by `folder`'s mark, or None without a valid one."""
    mark = folder / MARK
    try:
        if mark.is_symlink() or not mark.is_file() or mark.stat().st_size > 4096:
            return None
        data = json.loads(mark.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("format") == MARK_FORMAT and data.get("kind") in MARKED:
        return data["kind"]
    return None


def entry_kind(kind: str, name: str) -> str | None:
    """What `kind` writes under `name`: FILE, a folder's kind, or None (nothing it writes)."""
    if name == MARK or fnmatch.fnmatchcase(name, TEMP):
        return FILE
    return next((sub for pattern, sub in KINDS[kind] if fnmatch.fnmatchcase(name, pattern)), None)


def foreign_entry(folder: Path, kind: str) -> Path | None:
    """The first entry under `folder` (sorted, depth first) that a `kind` folder does not write, or None."""
    for entry in sorted(folder.iterdir()):
        sub = entry_kind(kind, entry.name)
        if sub is None or entry.is_symlink():
            return entry
        if sub == FILE:
            if not entry.is_file():
                return entry
        elif not entry.is_dir():
            return entry
        elif (inner := foreign_entry(entry, sub)) is not None:
            return inner
    return None


def folder_kind(folder: Path) -> str | None:
    """The kind `folder` claims: its mark's, else that of the record it holds (written before the mark)."""
    marked = read_mark(folder)
    if marked is not None:
        return marked
    return next((k for k, record in RECORD.items() if all(os.path.lexists(folder / r) for r in record)), None)


def owner(path: Path) -> tuple[Path, str] | None:
    """The nearest folder at or above `path` (resolved) that sparseae wrote, with its kind: a marked
    one, or one written before the mark whose every entry its kind writes."""
    for folder in [path, *path.parents]:
        try:
            if not folder.is_dir():
                continue
            if (kind := read_mark(folder)) is not None:
                return folder, kind
            kind = folder_kind(folder)
            if kind is not None and foreign_entry(folder, kind) is None:
                return folder, kind
        except OSError:  # a folder we may not list is not one sparseae wrote
            continue
    return None


# --- folders ---------------------------------------------------------------------------------------

class OutputFolder:
    def __init__(self, path: str | os.PathLike, if_exists: str = "refuse", flag: str = "--overwrite",
                 kind: str = "run"):
        if if_exists not in IF_EXISTS:
            raise SparseAEError(f"if_exists must be one of {', '.join(IF_EXISTS)}; got {if_exists!r}")
        if kind not in MARKED:
            raise SparseAEError(f"kind must be one of {', '.join(MARKED)}; got {kind!r}")
        if str(path).strip() == "":
            raise SparseAEError("the output folder must be named (got an empty path)")
        self.final, self.kind, self.flag, self.add = Path(path), kind, flag, if_exists == "add"
        self.staging: Path | None = None
        try:
            if self.final.exists() and not self.final.is_dir():
                raise SparseAEError(f"{self.final} exists and is not a folder; name a folder for the results")
            occupied = self.final.is_dir() and any(self.final.iterdir())
            if occupied and if_exists == "refuse":
                raise SparseAEError(f"{self.final} already holds files; name a new folder, or pass {flag} to "
                                    "replace it once the new run has finished")
            self.replace = occupied and if_exists == "replace"
            if not self.add:
                self._check_place()
            if self.replace:
                self._check_replaceable()
            self.leftovers = self._leftovers()
        except OSError as e:  # a symlink loop, a folder that cannot be listed, a name too long
            raise os_error(e, "use") from None
        self._check_writable(self.final.parent if self.replace or not self.final.exists() else self.final)

    def _check_place(self) -> None:
        """Inside a folder sparseae wrote, only where its kind puts a folder of this kind."""
        resolved = self.final.resolve()
        found = owner(resolved.parent)
        if found is None:
            return
        folder, kind = found
        rel = resolved.relative_to(folder)
        if len(rel.parts) != 1 or entry_kind(kind, rel.parts[0]) != self.kind:
            raise SparseAEError(f"{self.final} is inside {folder}, a {kind} folder sparseae wrote, which does not "
                                f"hold a {self.kind} folder there; name a folder outside it")

    def _check_replaceable(self) -> None:
        """Replace only a folder sparseae wrote, never /, a mount point or the current folder."""
        resolved, cwd = self.final.resolve(), Path.cwd().resolve()
        if resolved == resolved.parent or os.path.ismount(resolved):
            raise SparseAEError(f"{self.flag} never replaces {self.final}: it is / or a mount point; name a new folder")
        if resolved == cwd or resolved in cwd.parents:
            raise SparseAEError(f"{self.flag} never replaces {self.final}: it is (or holds) the current folder; "
                                "name a new folder")
        kind = folder_kind(self.final)
        bad = foreign_entry(self.final, kind) if kind is not None else min(self.final.iterdir())
        if bad is not None:
            why = f"which a {kind} folder does not hold" if kind else f"and has no {MARK} mark"
            raise SparseAEError(f"{self.flag} replaces only a folder sparseae wrote, and {self.final} holds "
                                f"{bad.relative_to(self.final)}, {why}; move it away or name a new folder")

    def _leftovers(self) -> list[Path]:
        """Staging folders of a killed run on the same path (`.NAME.new-XXXX`, `.NAME.old-XXXX`)."""
        parent, name = self.final.parent, self.final.name
        if not name or not parent.is_dir():
            return []
        return sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink() and
                      (p.name.startswith(f".{name}.new-") or p.name.startswith(f".{name}.old-")))

    def _clean_leftovers(self) -> None:
        for p in self.leftovers:
            if p.name.startswith(f".{self.final.name}.new-"):
                kind = read_mark(p)
                ours = kind is not None and foreign_entry(p, kind) is None
                why = "it holds files sparseae did not write"
            else:  # empty, or `run`: the folder a commit was replacing
                inner = p / "run"
                names = [e.name for e in p.iterdir()]
                kind = folder_kind(inner) if names == ["run"] and inner.is_dir() else None
                ours = not names or (kind is not None and foreign_entry(inner, kind) is None and self.final.exists())
                why = (f"{inner} may be the previous {self.final.name}: a run was killed while replacing it"
                       if names == ["run"] else "it holds files sparseae did not write")
            if ours:
                shutil.rmtree(p, ignore_errors=True)
            else:
                warnings.warn(f"left {p} as it is: {why}", LeftoverWarning, stacklevel=3)
        self.leftovers = []

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
        """Make the folder (or the staging folder), its mark first, and return it."""
        try:
            self._clean_leftovers()
            if self.replace:
                if self.staging is None:
                    self.final.parent.mkdir(parents=True, exist_ok=True)
                    self.staging = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.new-", dir=self.final.parent))
                    write_mark(self.staging, self.kind)
            else:
                self.final.mkdir(parents=True, exist_ok=True)
                if read_mark(self.final) is None and not any(self.final.iterdir()):
                    write_mark(self.final, self.kind)
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

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


def next_free(folder: str | os.PathLike, stem: str) -> Path:
    """`folder/stem-001`, or the first such name not taken: a default output never collides."""
    base = Path(folder)
    for i in range(1, 100000):
        p = base / f"{stem}-{i:03d}"
        if not p.exists():
            return p
    raise SparseAEError(f"{base} holds 99999 runs named {stem}-NNN; name the output folder")


# --- files -----------------------------------------------------------------------------------------

def claim_file(path: str | os.PathLike, flag: str, overwrite: bool = False, *,
               own: str | os.PathLike | None = None, ours: Callable[[Path], bool] | None = None,
               inside: Iterable[str | os.PathLike | None] = ()) -> Path:
    """The file a flag names, checked by the rule of the module docstring before any work; returns it."""
    if str(path).strip() == "":
        raise SparseAEError(f"{flag} must name a file (got an empty path)")
    p = Path(path)
    try:
        exists = os.path.lexists(p)
        if exists and (p.is_symlink() or not p.is_file()):
            raise SparseAEError(f"{flag} {p}: it exists and is not a regular file; name a file")
        check_outside(p, flag, own=own, inside=inside)
        if exists and not overwrite and not (ours is not None and ours(p)):
            raise SparseAEError(f"{flag} {p}: the file exists; pass --overwrite to replace it, or name a new file")
    except OSError as e:
        raise os_error(e, "use") from None
    return p


def check_outside(path: str | os.PathLike, flag: str, *, own: str | os.PathLike | None = None,
                  inside: Iterable[str | os.PathLike | None] = ()) -> None:
    """`path` lies outside every folder sparseae wrote (but `own`, that folder's own file) and outside
    the folders this command is writing (`inside`); else SparseAEError."""
    p = Path(path)
    resolved = p.resolve()
    if own is None or resolved != Path(own).resolve():
        for where in {p.absolute().parent.resolve(), resolved.parent}:
            if (found := owner(where)) is not None:
                raise SparseAEError(f"{flag} {p} is inside {found[0]}, a {found[1]} folder sparseae wrote: its "
                                    "files are its own and are never replaced or added to by another output; "
                                    "name a path outside it")
    for folder in inside:
        if folder is not None and (resolved == Path(folder).resolve() or Path(folder).resolve() in resolved.parents):
            raise SparseAEError(f"{flag} {p} is inside {folder}, the folder this command writes; name a path "
                                "outside it")
