"""Training commands: `train`, `eval`, `gradcheck`, `stack`.

Each is a pair (add_arguments, run); the library is imported inside `run`, so building the parser
loads neither torch nor numpy.
"""
from __future__ import annotations

import argparse

from ..config import RunConfig
from ..errors import SparseAEError
from . import args as flags
from .args import config_from_args


RUN_OUT = "runs/latest"  # --out of train and stack when not given


def add_training(p: argparse.ArgumentParser, out: str) -> None:
    """The flags of a training run (train, stack, sweep); `out` is the command's run folder."""
    flags.add(p, *flags.TRAINING, "--out", "--quiet", shown={**flags.shown_defaults(RunConfig()), "--out": out})


# --- train -----------------------------------------------------------------------------------------

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_training(p, out=RUN_OUT)
    flags.add(p, "--resume")


def run_train(args: argparse.Namespace) -> int:
    from ..training.session import train

    if args.resume:  # the run's own settings, with the flags given on top
        from ..run.rundir import RunDir

        out = args.resume
        config = config_from_args(args, RunDir(args.resume).read_config().to_dict())
    else:
        out = args.out or RUN_OUT
        config = config_from_args(args)
    result = train(config, out=out, progress=not args.quiet, resume=bool(args.resume))
    if result.run_dir is None:  # a data-parallel process other than rank 0
        return 0
    last = result.history[-1]
    if "iteration" in last:  # full batch: train_loss is the exact cost over the training set
        steps, loss = f"{last['iteration']} {config.train.optimizer} iterations", "final cost"
    else:
        steps, loss = f"{len(result.history)} epochs", "last epoch's train loss"
    print(f"trained {steps} in {result.seconds:.1f} s: {loss} {last['train_loss']:.6g}, "
          f"val_mse {last['val_mse']:.5f}, mean activation {last['mean_activation']:.4f}; run folder {out}")
    return 0


# --- eval ------------------------------------------------------------------------------------------

def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    flags.add(p, "run_dir", "--data-dir", "--device", shown={"--device": flags.DEFAULT_DEVICE})


def run_eval(args: argparse.Namespace) -> int:
    import json

    from ..analysis.metrics import evaluate
    from ..data import load_dataset
    from ..run.rundir import RunDir, load_run
    from ..training.loop import resolve_device

    run = RunDir(args.run_dir)
    if not run.path.is_dir():
        raise SparseAEError(f"run folder {args.run_dir} does not exist")
    config = run.read_config()
    device = resolve_device(args.device or flags.DEFAULT_DEVICE)
    model = load_run(args.run_dir, device)
    data = load_dataset(config.train.dataset, args.data_dir or config.train.data_dir,
                        **config.train.dataset_options())
    test = data.validation(device)  # a tensor, or chunks of a streamed file
    metrics = evaluate(model, test, config.train.dead_threshold)
    report = {"run_dir": str(run.path), "split": "test", "examples": len(test),
              "penalty": config.sparsity.penalty, "rho": config.sparsity.rho, **metrics}
    print(json.dumps(report, indent=2))
    return 0


# --- gradcheck -------------------------------------------------------------------------------------

GRADCHECK_PRESET = "ufldl"


def add_gradcheck_arguments(p: argparse.ArgumentParser) -> None:
    start = flags.start_config(preset=GRADCHECK_PRESET)
    flags.add(p, "--preset", *flags.OBJECTIVE, "--input-dim", "--examples", "--epsilon", "--tol",
              shown={**flags.shown_defaults(start), "--preset": GRADCHECK_PRESET})


def run_gradcheck(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.gradcheck import check_gradient
    from ..model import SparseAutoencoder
    from ..objective import Objective

    if args.input_dim <= 0 or args.examples <= 0:
        raise SparseAEError(f"input-dim and examples must be positive, got {args.input_dim} and {args.examples}")
    config = config_from_args(args, {"model": {"input_dim": args.input_dim}}, preset=GRADCHECK_PRESET)
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


# --- stack -----------------------------------------------------------------------------------------

def add_stack_arguments(p: argparse.ArgumentParser) -> None:
    add_training(p, out=RUN_OUT)
    flags.add(p, "--finetune", "--finetune-epochs", "--finetune-iter")


def run_stack(args: argparse.Namespace) -> int:
    from ..apps.stacked import train_stacked

    config = config_from_args(args)
    out = args.out or RUN_OUT
    res = train_stacked(config, out, finetune=args.finetune, finetune_epochs=args.finetune_epochs,
                        finetune_iter=args.finetune_iter, progress=not args.quiet)
    s = res.summary
    print(f"stack {config.model.hidden}: greedy val_mse {s['greedy']['mse']:.5f}, after {args.finetune} "
          f"fine-tuning {s['mse']:.5f} ({s['seconds']:.1f} s); run folders {out} and {out}/greedy")
    return 0
