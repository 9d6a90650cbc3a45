"""`python -m sparseae` and the `sparseae` console script."""
import gc
import sys


def run() -> None:
    # The handler exists before anything is imported, so Ctrl-C during start-up is one line too.
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt:
        print("sparseae: interrupted", file=sys.stderr)
        code = 130
    # The process ends here: untracked, the objects torch created are not walked again by the interpreter's
    # last garbage collections (0.3-1 s after a command that imported torch) only to free memory the
    # system takes back anyway. Every file is written and closed by now.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
