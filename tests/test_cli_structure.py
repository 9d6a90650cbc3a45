"""The command line's shape: light imports, each flag defined once with one default and dest."""
import subprocess
import sys
from pathlib import Path

import pytest

import sparseae.cli
from sparseae.cli import args as cli_args
from sparseae.cli import build_parser, main

HEAVY = ("torch", "numpy", "matplotlib", "scipy")


def _loaded_after(code: str) -> set[str]:
    """The top-level packages among HEAVY that `code` leaves in sys.modules, in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_library_imports_stay_light():
    assert _loaded_after("import sparseae") == set()
    assert not _loaded_after("import sparseae.training") & {"matplotlib", "scipy"}
    # sweep imports the pictures module at its top: matplotlib must still wait for a picture
    assert "matplotlib" not in _loaded_after("import sparseae.analysis.sweep")


def test_pictures_do_not_use_pyplot(tmp_path):
    code = ("from sparseae.run.pictures import save_loss_plot\n"
            f"save_loss_plot([{{'epoch': 1, 'train_loss': 1.0, 'train_recon': 0.5, 'val_mse': 0.6}}], "
            f"{str(tmp_path / 'loss.png')!r})\n"
            "import sys\nassert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_help_imports_no_heavy_package(argv):
    code = ("import contextlib, io\nfrom sparseae.cli import build_parser\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n"
            f"        build_parser().parse_args({argv!r})\n"
            "    except SystemExit:\n"
            "        pass\n"
            "assert 'usage: sparseae' in out.getvalue()")
    assert _loaded_after(code) == set()


def _commands() -> dict:
    """{command name: its argparse subparser}."""
    return next(a for a in build_parser()._actions if a.dest == "command").choices


def _option_actions():
    """(command, option string, action) for every optional flag of every command."""
    for command, sub in _commands().items():
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    yield command, option, action


def test_a_flag_has_one_default_and_dest_in_every_command():
    seen: dict[str, tuple[str, object, str]] = {}
    for command, option, action in _option_actions():
        if option in seen:
            dest, default, first = seen[option]
            assert (action.dest, action.default) == (dest, default), \
                f"{option}: {command} has {action.dest!r}, {action.default!r}; {first} has {dest!r}, {default!r}"
        else:
            seen[option] = (action.dest, action.default, command)
    # the reconciled ones (issue 10): defined once, so the same everywhere they appear
    assert seen["--device"][:2] == ("device", None) and seen["--dataset"][:2] == ("dataset", None)
    assert seen["--data"][0] == "data" and seen["--out"][:2] == ("out", None)


def test_the_reconciled_flags_are_where_they_should_be():
    options = {(command, option) for command, option, _ in _option_actions()}
    assert ("monitor", "--dataset") in options and ("monitor", "--data") not in options
    assert ("probe", "--probe-iter") in options and ("probe", "--max-iter") not in options
    for command in ("train", "eval", "probe", "monitor", "cluster"):
        assert (command, "--device") in options


def test_only_args_py_declares_flags():
    cli_dir = Path(sparseae.cli.__file__).parent
    declaring = sorted(p.name for p in cli_dir.glob("*.py") if "add_argument(" in p.read_text())
    assert declaring == ["args.py"]


def test_config_flags_name_real_fields_with_help():
    from dataclasses import fields

    from sparseae.config import RunConfig

    config = RunConfig()
    for flag, (section, name, kw) in cli_args.CONFIG_FLAGS.items():
        assert name in {f.name for f in fields(getattr(config, section))}, flag
        assert kw.get("help") or cli_args._field_docs()[section].get(name), f"{flag}: no docstring in config.py"


def test_device_is_auto_when_not_given():
    args = build_parser().parse_args(["eval", "some_run"])
    assert args.device is None and cli_args.DEFAULT_DEVICE == "auto"
    assert cli_args.config_from_args(build_parser().parse_args(["train"])).train.device == "auto"


def test_command_start_values_show_in_help_and_apply():
    from sparseae.cli.apps import MONITOR_START

    hidden = next(a for a in _commands()["monitor"]._actions if a.dest == "hidden")
    assert "(default: 52)" in hidden.help
    config = cli_args.config_from_args(build_parser().parse_args(["monitor", "--epochs", "7"]), MONITOR_START)
    assert (config.model.hidden, config.sparsity.penalty, config.train.epochs) == ([52], "l1", 7)


def test_sweep_empty_grid_error_names_the_grid_flag(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path / "sw"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparseae sweep: error: empty grid") and "--k-grid" in err
    assert err.count("\n") == 1 and not (tmp_path / "sw").exists()
