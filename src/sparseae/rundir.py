"""Old path of `sparseae.run` (`RunDir`, `load_run`, atomic writes), kept for earlier scripts."""
from .run import RunDir, atomic_write, atomic_write_text, load_run  # noqa: F401
