"""The one exception type for bad input.

Library code raises `SparseAEError` (a `ValueError`) with a message that names
the parameter, the value and what is allowed; only the CLI turns it into an
exit code (2) and a one-line message.
"""


class SparseAEError(ValueError):
    """Bad user input: a setting, a file or a data set that cannot be used."""


def first_line(e: BaseException) -> str:
    """The first line of another library's error message (some span many lines), or its type's name."""
    return (str(e).splitlines() or [type(e).__name__])[0]
