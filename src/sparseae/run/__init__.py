"""The run folder: atomic files, config/weights/metrics, pictures and the HTML report."""
from .files import atomic_write, atomic_write_text
from .rundir import RunDir, load_run

__all__ = ["RunDir", "atomic_write", "atomic_write_text", "load_run"]
