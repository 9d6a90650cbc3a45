"""`python -m sparseae` and the `sparseae` console script."""
import sys


def run() -> None:
    # The handler exists before anything is imported, so Ctrl-C during start-up is one line too.
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt:
        print("sparseae: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
