"""Every command's `--help` answers with its usage and exit code 0, nested actions included
(`monitor fit --help` once failed with KeyError: 'default', issue 20). The commands are found in
the parser itself, so a command added later is tested without editing this file."""
from __future__ import annotations

import argparse

import pytest

from sparseae.cli import build_parser, main


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of `parser`: (), ("train",), ("monitor",), ("monitor", "fit"), ..."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*prefix, name))
    return found


ALL = commands(build_parser())


def test_the_parser_has_the_nested_commands():
    names = {" ".join(c) for c in ALL}
    assert {"", "train", "eval", "stack", "sweep", "probe", "cluster", "report", "monitor", "monitor fit",
            "monitor score"} <= names


@pytest.mark.parametrize("command", ALL, ids=lambda c: " ".join(c) or "sparseae")
def test_help_exits_0_with_the_usage(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0, err
    assert out.startswith("usage: sparseae" + "".join(f" {c}" for c in command)), out[:200]
    assert "Traceback" not in out + err and "%(" not in out  # every %(default)s expanded
