"""The `sparseae` command: parses arguments and calls the library.

Bad input (a `SparseAEError`) becomes one line on stderr and exit code 2.
Each subcommand is a pair (add_arguments, run) registered in COMMANDS.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any, Callable

from .config import PRESETS, ModelConfig, RunConfig, SparsityConfig, TrainConfig
from .errors import SparseAEError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "y", "true", "1"):
        return True
    if text.lower() in ("no", "n", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got '{text}'")


# (flag, config section, field, argparse kwargs). Defaults come from the dataclasses.
TRAIN_FLAGS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("--dataset", "train", "dataset", {}),
    ("--data-dir", "train", "data_dir", {}),
    ("--hidden", "model", "hidden", {"type": _int_list, "help": "encoder sizes, e.g. 256 or 256,128,64"}),
    ("--decoder", "model", "decoder", {"type": _int_list, "help": "decoder hidden sizes (default: mirrored)"}),
    ("--activation", "model", "activation", {}),
    ("--code-activation", "model", "code_activation", {}),
    ("--output-activation", "model", "output_activation", {}),
    ("--tied", "model", "tied", {"type": _yes_no, "metavar": "yes|no"}),
    ("--penalty", "sparsity", "penalty", {}),
    ("--rho", "sparsity", "rho", {"type": float}),
    ("--beta", "sparsity", "beta", {"type": float}),
    ("--penalty-layers", "sparsity", "layers", {"type": _int_list}),
    ("--rho-hat", "sparsity", "rho_hat", {}),
    ("--rho-momentum", "sparsity", "rho_momentum", {"type": float}),
    ("--weight-decay", "sparsity", "weight_decay", {"type": float}),
    ("--epochs", "train", "epochs", {"type": int}),
    ("--batch-size", "train", "batch_size", {"type": int}),
    ("--lr", "train", "lr", {"type": float}),
    ("--optimizer", "train", "optimizer", {}),
    ("--momentum", "train", "momentum", {"type": float}),
    ("--recon", "train", "recon", {}),
    ("--device", "train", "device", {}),
    ("--seed", "train", "seed", {"type": int}),
    ("--target-val-mse", "train", "target_val_mse", {"type": float}),
    ("--limit-train", "train", "limit_train", {"type": int}),
]
_SECTIONS = {"model": ModelConfig, "sparsity": SparsityConfig, "train": TrainConfig}


def _field_help(section: str, name: str) -> str:
    """The field's docstring from the dataclass source, so CLI help and code agree."""
    import ast
    import inspect

    cls = _SECTIONS[section]
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name \
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            return " ".join(str(nxt.value.value).split())
    return ""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    defaults = RunConfig()
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="start from a named configuration (tutorial: 784-256-128-64-32-16 mirrored, KL on the code)")
    for flag, section, name, kw in TRAIN_FLAGS:
        default = getattr(getattr(defaults, section), name)
        kw = dict(kw)
        kw.setdefault("help", _field_help(section, name))
        kw["help"] += f" (default: {default})".replace("%", "%%")
        p.add_argument(flag, dest=f"{section}.{name}", default=None, **kw)
    p.add_argument("--reg-param", dest="sparsity.beta", type=float, default=None, help="alias of --beta")
    p.add_argument("--add-sparsity", type=_yes_no, default=None, metavar="yes|no",
                   help="'no' trains the plain autoencoder (same as --penalty none)")
    p.add_argument("--out", default="runs/latest", help="run folder to write (default: runs/latest)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    base = RunConfig().to_dict()
    if args.preset:
        for section, values in PRESETS[args.preset].items():
            base[section].update(copy.deepcopy(values))
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            base[section][name] = value
    if args.add_sparsity is False:
        base["sparsity"]["penalty"] = "none"
    config = RunConfig.from_dict(base)
    config.validate()
    return config


def run_train(args: argparse.Namespace) -> int:
    from .trainer import train

    config = config_from_args(args)
    result = train(config, out=args.out, progress=not args.quiet)
    last = result.history[-1]
    print(f"trained {len(result.history)} epochs in {result.seconds:.1f} s: val_mse {last['val_mse']:.5f}, "
          f"mean activation {last['mean_activation']:.4f}; run folder {args.out}")
    return 0


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by `sparseae train`")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: as when trained)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def run_eval(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .metrics import evaluate
    from .rundir import RunDir, load_run
    from .trainer import resolve_device

    run = RunDir(args.run_dir)
    if not run.path.is_dir():
        raise SparseAEError(f"run folder {args.run_dir} does not exist")
    config = run.read_config()
    device = resolve_device(args.device)
    model = load_run(args.run_dir, device)
    data = load_dataset(config.train.dataset, args.data_dir or config.train.data_dir)
    metrics = evaluate(model, data.test.to(device), config.train.dead_threshold)
    report = {"run_dir": str(run.path), "split": "test", "examples": data.test.shape[0],
              "penalty": config.sparsity.penalty, "rho": config.sparsity.rho, **metrics}
    print(json.dumps(report, indent=2))
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train a sparse autoencoder and write a run folder", add_train_arguments, run_train),
    "eval": ("print a run's test-split metrics as JSON", add_eval_arguments, run_eval),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparseae", description="Sparse autoencoders on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except SparseAEError as e:
        print(f"sparseae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparseae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
