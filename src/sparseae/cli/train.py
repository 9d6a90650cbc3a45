"""Training commands: `train`, `eval`, `gradcheck`, `stack`.

Each is a pair (add_arguments, run); the library is imported inside `run`, so building the parser
loads neither torch nor numpy.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

from ..config import RunConfig
from ..errors import SparseAEError
from . import args as flags
from .args import config_from_args


RUNS = "runs"  # --out of train, stack and sweep when not given: the first free RUNS/<command>-NNN


def add_training(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of a training run (train, stack, sweep), whose folder defaults to RUNS/<command>-NNN."""
    flags.add(p, *flags.TRAINING, "--out", "--overwrite", "--quiet",
              shown={**flags.shown_defaults(RunConfig()), "--out": f"the first free {RUNS}/{command}-NNN"})


def output_folder(args: argparse.Namespace, command: str) -> str:
    """--out, or the first folder RUNS/<command>-NNN that does not exist yet."""
    from ..run.output import next_free

    return args.out if args.out is not None else str(next_free(RUNS, command))


def if_exists(args: argparse.Namespace) -> str:
    return "replace" if args.overwrite else "refuse"


# --- train -----------------------------------------------------------------------------------------

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_training(p, "train")
    flags.add(p, "--resume", "--check", "--tensorboard")


def run_train(args: argparse.Namespace) -> int:
    from ..training.loop import SmallDataWarning
    from ..training.session import check_run, train

    if args.resume:  # the run's own settings, with the flags given on top
        from ..run.rundir import RunDir

        if args.out is not None and args.out != args.resume:
            raise SparseAEError("--resume continues the run in its own folder; leave out --out "
                                f"(given {args.out!r})")
        out = args.resume
        config = config_from_args(args, RunDir(args.resume).read_config().to_dict())
    else:
        out = output_folder(args, "train")
        config = config_from_args(args)
    if args.tensorboard is not None:  # TensorBoard adds event files: never inside a folder sparseae writes
        from ..run.output import check_outside

        check_outside(args.tensorboard, "--tensorboard", inside=[out])
    if args.check:
        print(check_run(config, out, resume=bool(args.resume), if_exists=if_exists(args)).describe())
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallDataWarning)
        result = train(config, out=out, progress=not args.quiet, resume=bool(args.resume),
                       if_exists=if_exists(args), tensorboard=args.tensorboard)
    for w in caught:  # ours as one line on stderr (where the batch size was left to the rows), others as they were
        if issubclass(w.category, SmallDataWarning):
            if config.train.batch_size is None:
                print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if result.run_dir is None:  # a data-parallel process other than rank 0
        return 0
    if result.finished_before:
        print(f"nothing to resume: {out} had finished; its files are unchanged")
        return 0
    last = result.history[-1]
    if "iteration" in last:  # full batch: train_loss is the exact cost over the training set
        steps, loss = f"{last['iteration']} {config.train.optimizer} iterations", "final cost"
    else:
        steps, loss = f"{len(result.history)} epochs", "last epoch's train loss"
    if "never_fired_fraction" in result.summary:
        from ..objective.metrics import dead_latent_warning

        warning = dead_latent_warning(result.summary["never_fired_fraction"], config.model.hidden[-1])
        if warning is not None:
            print(warning, file=sys.stderr)
    print(f"trained {steps} in {result.seconds:.1f} s: {loss} {last['train_loss']:.6g}, "
          f"val_mse {last['val_mse']:.5f}, mean activation {last['mean_activation']:.4f}; run folder {out}")
    trained = result.config or config
    target = trained.sparsity.target_l0
    if target is not None:
        asked = f"asked for {target:g}" if config.sparsity.target_l0 is not None else \
            f"the default target {target:g} for {trained.model.input_dim} input columns; --l0 or --beta to choose"
        print(f"L0 reached {last['l0']:.2f} on the validation rows ({asked}; beta adapted to {last['beta']:.4g})")
    return 0


# --- eval ------------------------------------------------------------------------------------------

def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    flags.add(p, "run_dir", "--data-dir", "--encode", "--device", shown={"--device": flags.DEFAULT_DEVICE})


def run_eval(args: argparse.Namespace) -> int:
    from ..objective.metrics import evaluate, require_finite_weights
    from ..run.files import to_json_text
    from ..run.rundir import RunDir, load_run, load_run_data
    from ..training.loop import resolve_device

    run = RunDir(args.run_dir)
    run.require_folder()
    config = run.read_config()
    device = resolve_device(args.device or flags.DEFAULT_DEVICE)
    model = load_run(args.run_dir, device)
    require_finite_weights(model)  # NaN weights would give NaN or 0 metrics that look like results
    data = load_run_data(config, args.data_dir)
    test = data.validation(device)  # a tensor, or chunks of a streamed file
    if args.encode:  # refused before the encoder's pass over the test split
        model.require_pursuit(args.encode)
    metrics = evaluate(model, test)
    report = {"run_dir": str(run.path), "split": "test", "examples": len(test),
              "penalty": config.sparsity.penalty, "rho": config.sparsity.rho, **metrics}
    if args.encode:
        start = time.perf_counter()
        report["encode"] = {"method": args.encode, **evaluate(model, test, method=args.encode),
                            "seconds": time.perf_counter() - start}
    # NaN is not JSON: a metric that could not be computed (e.g. FVU of constant rows) is null
    print(to_json_text(report), end="")
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
    if not 0 < args.epsilon < 1 or not 0 <= args.tol < float("inf"):  # NaN fails both
        raise SparseAEError(f"--epsilon must be in (0, 1) and --tol finite and >= 0; got {args.epsilon} and {args.tol}")
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
    add_training(p, "stack")
    flags.add(p, "--finetune", "--finetune-epochs", "--finetune-iter")


def run_stack(args: argparse.Namespace) -> int:
    from ..apps.stacked import train_stacked

    for flag, value in (("--finetune-epochs", args.finetune_epochs), ("--finetune-iter", args.finetune_iter)):
        if value is not None and value <= 0:  # said here, where the flag's name is known, before any write
            raise SparseAEError(f"{flag} must be a positive integer, got {value}")
    config = config_from_args(args)
    out = output_folder(args, "stack")
    res = train_stacked(config, out, finetune=args.finetune, finetune_epochs=args.finetune_epochs,
                        finetune_iter=args.finetune_iter, progress=not args.quiet, if_exists=if_exists(args))
    s = res.summary
    print(f"stack {config.model.hidden}: greedy val_mse {s['greedy']['mse']:.5f}, after {args.finetune} "
          f"fine-tuning {s['mse']:.5f} ({s['seconds']:.1f} s); run folders {out} and {out}/greedy")
    return 0
