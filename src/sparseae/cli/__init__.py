"""The `sparseae` command: parses arguments and calls the library.

Bad input (a `SparseAEError`) becomes one line on stderr and exit code 2.
Each subcommand is a pair (add_arguments, run) registered in COMMANDS.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
from typing import Any, Callable

from ..config import PRESETS, ModelConfig, RunConfig, SparsityConfig, TrainConfig
from . import apps
from ..errors import SparseAEError


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
    ("--topk", "model", "topk", {}),
    ("--k", "model", "k", {"type": int}),
    ("--encode-alpha", "model", "encode_alpha", {"type": float}),
    ("--unit-norm-decoder", "model", "unit_norm_decoder", {"type": _yes_no, "metavar": "yes|no"}),
    ("--pre-bias", "model", "pre_bias", {"type": _yes_no, "metavar": "yes|no"}),
    ("--active-threshold", "model", "active_threshold", {"type": float}),
    ("--dead-window", "model", "dead_window", {"type": int}),
    ("--topk-kernel", "model", "topk_kernel", {}),
    ("--auxk", "sparsity", "auxk", {"action": "store_const", "const": True}),
    ("--auxk-coef", "sparsity", "auxk_coef", {"type": float}),
    ("--k-aux", "sparsity", "k_aux", {"type": int}),
    ("--classes", "train", "classes", {"type": _int_list, "help": "train only on these labels, e.g. 5,6,7,8,9"}),
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
    ("--data", "train", "data", {"metavar": "PATH"}),
    ("--data-key", "train", "data_key", {}),
    ("--val-fraction", "train", "val_fraction", {"type": float}),
    ("--stream", "train", "stream", {}),
    ("--checkpoint-every", "train", "checkpoint_every", {"type": int}),
    ("--precision", "train", "precision", {}),
    ("--compile", "train", "compile", {"type": _yes_no, "metavar": "yes|no"}),
    ("--cuda-graph", "train", "cuda_graph", {"type": _yes_no, "metavar": "yes|no"}),
    ("--input-transform", "model", "input_transform", {}),
    ("--zca-epsilon", "model", "zca_epsilon", {"type": float}),
    ("--max-iter", "train", "max_iter", {"type": int}),
    ("--threads", "train", "threads", {"type": int}),
    ("--init", "train", "init", {}),
    ("--patch-size", "train", "patch_size", {"type": int}),
    ("--num-patches", "train", "num_patches", {"type": int}),
    ("--patch-channels", "train", "patch_channels", {"type": int}),
    ("--whiten-images", "train", "whiten_images", {"type": _yes_no, "metavar": "yes|no"}),
    ("--image-downsample", "train", "image_downsample", {"type": int}),
    ("--patch-normalize", "train", "patch_normalize", {"type": _yes_no, "metavar": "yes|no"}),
]
_SECTIONS = {"model": ModelConfig, "sparsity": SparsityConfig, "train": TrainConfig}


def _field_help(section: str, name: str) -> str:
    """The field's docstring from the dataclass source, so CLI help and code agree."""
    return _field_docs(section).get(name, "")


@functools.lru_cache(maxsize=None)
def _field_docs(section: str) -> dict[str, str]:
    """{field: docstring} of one config dataclass; parsed once (the source is read from disk)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(_SECTIONS[section])).body[0].body
    return {node.target.id: " ".join(str(nxt.value.value).split())
            for node, nxt in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)}


def add_train_arguments(p: argparse.ArgumentParser, out: str = "runs/latest") -> None:
    defaults = RunConfig()
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="start from a named configuration (tutorial: 784-256-128-64-32-16 mirrored, KL on the "
                        "code; ufldl: Ng's 64-25-64 exercise on image patches with L-BFGS; ufldl-linear: "
                        "192-400-192 linear decoder on ZCA-whitened colour patches)")
    for flag, section, name, kw in TRAIN_FLAGS:
        default = getattr(getattr(defaults, section), name)
        kw = dict(kw)
        kw.setdefault("help", _field_help(section, name))
        kw["help"] += f" (default: {default})".replace("%", "%%")
        kw.setdefault("metavar", name.upper())
        p.add_argument(flag, dest=f"{section}.{name}", default=None, **kw)
    p.add_argument("--reg-param", dest="sparsity.beta", type=float, default=None, help="alias of --beta")
    p.add_argument("--add-sparsity", type=_yes_no, default=None, metavar="yes|no",
                   help="'no' trains the plain autoencoder (same as --penalty none)")
    p.add_argument("--out", default=out, help=f"run folder to write (default: {out})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_train_command_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the killed run in RUN_DIR from its last checkpoint; settings default to "
                        "the run's, and any that differ are refused")


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunConfig:
    base = RunConfig().to_dict() if base is None else base
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
    from ..training.session import train

    if getattr(args, "resume", None):  # the run's own settings, with the flags given on top
        from ..run.rundir import RunDir

        args.out = args.resume
        config = config_from_args(args, RunDir(args.resume).read_config().to_dict())
    else:
        config = config_from_args(args)
    result = train(config, out=args.out, progress=not args.quiet, resume=bool(getattr(args, "resume", None)))
    last = result.history[-1]
    if result.run_dir is None and args.out is not None:  # a data-parallel process other than rank 0
        return 0
    if "iteration" in last:  # full batch: train_loss is the exact cost over the training set
        steps, loss = f"{last['iteration']} {config.train.optimizer} iterations", "final cost"
    else:
        steps, loss = f"{len(result.history)} epochs", "last epoch's train loss"
    print(f"trained {steps} in {result.seconds:.1f} s: {loss} {last['train_loss']:.6g}, "
          f"val_mse {last['val_mse']:.5f}, mean activation {last['mean_activation']:.4f}; run folder {args.out}")
    return 0


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by `sparseae train`")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: as when trained)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def run_eval(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..analysis.metrics import evaluate
    from ..run.rundir import RunDir, load_run
    from ..training.loop import resolve_device

    run = RunDir(args.run_dir)
    if not run.path.is_dir():
        raise SparseAEError(f"run folder {args.run_dir} does not exist")
    config = run.read_config()
    device = resolve_device(args.device)
    model = load_run(args.run_dir, device)
    data = load_dataset(config.train.dataset, args.data_dir or config.train.data_dir,
                        **config.train.dataset_options())
    test = data.validation(device)  # a tensor, or chunks of a streamed file
    metrics = evaluate(model, test, config.train.dead_threshold)
    report = {"run_dir": str(run.path), "split": "test", "examples": len(test),
              "penalty": config.sparsity.penalty, "rho": config.sparsity.rho, **metrics}
    print(json.dumps(report, indent=2))
    return 0


_GRADCHECK_TRAIN_FIELDS = ("recon", "init", "seed")


def add_gradcheck_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="ufldl",
                   help="configuration to start from; the flags below change it (default: ufldl, 64-25-64 "
                        "sigmoid, KL rho 0.01 beta 3, weight decay 1e-4, half-SSE)")
    for flag, section, name, kw in TRAIN_FLAGS:
        if section == "train" and name not in _GRADCHECK_TRAIN_FIELDS:
            continue
        kw = dict(kw)
        kw.setdefault("help", _field_help(section, name))
        kw.setdefault("metavar", name.upper())
        p.add_argument(flag, dest=f"{section}.{name}", default=None, **kw)
    p.add_argument("--input-dim", type=int, default=64, help="input features (default: 64)")
    p.add_argument("--examples", type=int, default=20, help="random examples in [0.1, 0.9] (default: 20)")
    p.add_argument("--epsilon", type=float, default=1e-4, help="central-difference step (default: 1e-4)")
    p.add_argument("--tol", type=float, default=1e-9,
                   help="largest relative difference accepted; exit code 1 above it (default: 1e-9)")
    p.set_defaults(add_sparsity=None)


def run_gradcheck(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.gradcheck import check_gradient
    from ..model import SparseAutoencoder
    from ..objective import Objective

    if args.input_dim <= 0 or args.examples <= 0:
        raise SparseAEError(f"input-dim and examples must be positive, got {args.input_dim} and {args.examples}")
    config = config_from_args(args)
    config.model.input_dim = args.input_dim
    config.validate()
    torch.manual_seed(config.train.seed)
    model = SparseAutoencoder(config.model)
    model.initialize(config.train.init, torch.Generator().manual_seed(config.train.seed))
    x = 0.1 + 0.8 * torch.rand(args.examples, args.input_dim, dtype=torch.float64)
    model.input_transform.fit(x)
    check = check_gradient(model, Objective(config.sparsity, config.train.recon), x, args.epsilon)
    m, s = config.model, config.sparsity
    sizes = "-".join(str(v) for v in [m.input_dim, *m.hidden, *m.decoder_sizes(), m.input_dim])
    ok = check.relative_error <= args.tol
    print(f"gradcheck {sizes} ({m.activation}, penalty {s.penalty}, weight decay {s.weight_decay}, "
          f"recon {config.train.recon}): {check.analytic.size} parameters, {args.examples} examples, "
          f"relative difference {check.relative_error:.3e} (tol {args.tol:g}): {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def add_stack_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p)
    p.add_argument("--finetune", default="unsupervised", choices=["unsupervised", "supervised", "none"],
                   help="after greedy pretraining: whole-stack reconstruction, softmax on the labels (L-BFGS), "
                        "or nothing (default: unsupervised)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of unsupervised fine-tuning (default: --epochs)")
    p.add_argument("--finetune-iter", type=int, default=100,
                   help="L-BFGS iterations of supervised fine-tuning (default: 100)")


def run_stack(args: argparse.Namespace) -> int:
    from ..apps.stacked import train_stacked

    config = config_from_args(args)
    res = train_stacked(config, args.out, finetune=args.finetune, finetune_epochs=args.finetune_epochs,
                        finetune_iter=args.finetune_iter, progress=not args.quiet)
    s = res.summary
    print(f"stack {config.model.hidden}: greedy val_mse {s['greedy']['mse']:.5f}, after {args.finetune} "
          f"fine-tuning {s['mse']:.5f} ({s['seconds']:.1f} s); run folders {args.out} and {args.out}/greedy")
    return 0


def add_probe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run folders whose features to probe")
    p.add_argument("--no-raw", action="store_true", help="leave out the raw-pixel baseline")
    p.add_argument("--self-taught", action="store_true",
                   help="UFLDL self-taught learning: probe on labels 0-4 only (train the autoencoders "
                        "with --classes 5,6,7,8,9)")
    p.add_argument("--classes", type=_int_list, default=None, help="probe on these labels only")
    p.add_argument("--limit-train", type=int, default=None, help="fit the probe on the first N training examples")
    p.add_argument("--max-iter", type=int, default=300, help="L-BFGS iterations of the probe (default: 300)")
    p.add_argument("--l2", type=_l2_value, default=1e-4,
                   help="L2 penalty on the probe's weights, or 'auto': chosen from 1e-4, 1e-3, 1e-2 on the last "
                        "sixth of the training rows, never on the test split (default: 1e-4)")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: as when trained)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--csv", default=None, help="also write the table as CSV here")


def run_probe(args: argparse.Namespace) -> int:
    from ..analysis.probe import probe_runs, results_table, write_results_csv
    from ..training.loop import resolve_device

    classes = args.classes if args.classes is not None else ([0, 1, 2, 3, 4] if args.self_taught else None)
    if args.limit_train is not None and args.limit_train <= 0:
        raise SparseAEError(f"limit_train must be positive, got {args.limit_train}")
    if args.max_iter <= 0:
        raise SparseAEError(f"max_iter must be positive, got {args.max_iter}")
    results = probe_runs(args.run_dirs, raw=not args.no_raw, classes=classes, limit_train=args.limit_train,
                         max_iter=args.max_iter, l2=args.l2, data_dir=args.data_dir,
                         device=resolve_device(args.device))
    print(results_table(results))
    if args.csv:
        write_results_csv(results, args.csv)
    return 0


def _l2_value(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got '{text}'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"l2 must be >= 0, got {text}")
    return value


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, out="runs/sweep")
    p.add_argument("--k-grid", dest="grid_topk", type=_float_list, default=[], metavar="K,K,...",
                   help="TopK family: values of k")
    p.add_argument("--kl-beta", dest="grid_kl", type=_float_list, default=[], metavar="B,B,...",
                   help="KL family (sigmoid code): values of beta")
    p.add_argument("--l1-beta", dest="grid_l1", type=_float_list, default=[], metavar="B,B,...",
                   help="L1 family (ReLU code): values of beta")


def run_sweep(args: argparse.Namespace) -> int:
    from ..analysis.sweep import check_grid, run_sweep as sweep

    grid = {"topk": args.grid_topk, "kl": args.grid_kl, "l1": args.grid_l1}
    check_grid(grid)
    base = config_from_args(args)
    rows = sweep(base, grid, args.out, progress=not args.quiet)
    print("| method | value | L0 | FVU | dead |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['value']:g} | {r['l0']:.1f} | {r['fvu']:.4f} | {r['dead_fraction']:.3f} |")
    print(f"wrote {args.out}/sweep.csv and {args.out}/fvu_vs_l0.png")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "stack": ("greedy layer-wise training of a stacked sparse autoencoder, then fine-tuning",
              add_stack_arguments, run_stack),
    "probe": ("linear-probe (softmax) test accuracy of run folders' features, next to raw pixels",
              add_probe_arguments, run_probe),
    "sweep": ("train KL/L1/TopK models over a grid; CSV and plot of FVU against L0",
              add_sweep_arguments, run_sweep),
    "train": ("train a sparse autoencoder and write a run folder", add_train_command_arguments, run_train),
    "eval": ("print a run's test-split metrics as JSON", add_eval_arguments, run_eval),
    "gradcheck": ("compare the objective's analytic gradient with central differences (float64)",
                  add_gradcheck_arguments, run_gradcheck),
    "monitor": ("process monitoring: T^2 and SPE of a sparse autoencoder next to PCA (Tennessee Eastman "
                "or your files)", apps.add_monitor_arguments, apps.run_monitor),
    "cluster": ("graph communities: stacked sparse autoencoder on D^-1 S + k-means, next to spectral "
                "clustering (NMI)", apps.add_cluster_arguments, apps.run_cluster),
    "report": ("write a self-contained HTML report of a run folder", apps.add_report_arguments,
               apps.run_report),
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
