"""The code stays in rooms a reader can hold: no function in src/sparseae over MAX_LINES lines."""
import ast
from pathlib import Path

import sparseae

MAX_LINES = 60
"""From the `def` line (decorators not counted) to the last line of the body, docstring included."""


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    """'path:line name (N lines)' of every function or method under `root` longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_the_counter_counts_def_to_end_of_body(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(3))
    (pkg / "m.py").write_text(f"@staticmethod\ndef four():\n{body}\n\n\nclass A:\n    def two(self):\n"
                              "        return 1\n")
    assert long_functions(pkg, limit=3) == ["pkg/m.py:2 four (4 lines)"]
    assert long_functions(pkg, limit=4) == []


def test_no_function_is_over_60_lines():
    found = long_functions(Path(sparseae.__file__).parent)
    assert not found, "functions over 60 lines: " + "; ".join(found)
