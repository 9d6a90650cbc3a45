"""Analysis commands: `probe` (linear probes of run folders' features) and `sweep` (a grid of
sparsity settings, FVU against L0). The library is imported inside `run`."""
from __future__ import annotations

import argparse

from ..errors import SparseAEError
from ..families import FAMILIES
from . import args as flags
from .args import config_from_args
from .train import add_training, if_exists, output_folder

# family -> the sweep's grid flag for it (families.py)
GRID_FLAGS = {name: f.sweep_flag for name, f in FAMILIES.items() if f.sweep_flag}

# --- probe -----------------------------------------------------------------------------------------


def add_probe_arguments(p: argparse.ArgumentParser) -> None:
    flags.add(p, "run_dirs", "--no-raw", "--self-taught", "--classes", "--limit-train", "--probe-iter", "--l2",
              "--data-dir", "--encode-alpha", "--device", "--csv", "--overwrite",
              shown={"--device": flags.DEFAULT_DEVICE})


def run_probe(args: argparse.Namespace) -> int:
    from ..analysis.probe import probe_runs, results_table, write_results_csv
    from ..training.loop import resolve_device

    classes = args.classes if args.classes is not None else ([0, 1, 2, 3, 4] if args.self_taught else None)
    if args.limit_train is not None and args.limit_train <= 0:
        raise SparseAEError(f"limit_train must be positive, got {args.limit_train}")
    if args.probe_iter <= 0:
        raise SparseAEError(f"probe_iter must be positive, got {args.probe_iter}")
    if args.csv:
        from ..run.output import claim_file

        claim_file(args.csv, "--csv", args.overwrite)  # before any probe is trained
    results = probe_runs(args.run_dirs, raw=not args.no_raw, classes=classes, limit_train=args.limit_train,
                         max_iter=args.probe_iter, l2=args.l2, data_dir=args.data_dir,
                         device=resolve_device(args.device or flags.DEFAULT_DEVICE),
                         encode_alpha=args.encode_alpha)
    print(results_table(results))
    if args.csv:
        write_results_csv(results, args.csv)
    return 0


# --- sweep -----------------------------------------------------------------------------------------

def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    add_training(p, "sweep")
    flags.add(p, *GRID_FLAGS.values(), "--pca")


def run_sweep(args: argparse.Namespace) -> int:
    from ..analysis.sweep import check_grid, run_sweep as sweep, sweep_table

    grid = {family: getattr(args, flags.dest(flag)) for family, flag in GRID_FLAGS.items()}
    if not any(grid.values()):  # said here, where the flags' names are known
        raise SparseAEError(f"empty grid: give at least one value with {', '.join(GRID_FLAGS.values())}")
    check_grid(grid)
    base = config_from_args(args)  # as requested: each family fills in what it leaves unset (lr, ...)
    out = output_folder(args, "sweep")
    rows = sweep(base, grid, out, progress=not args.quiet, pca=args.pca, if_exists=if_exists(args))
    if args.pca:
        print(sweep_table(rows))
    else:
        print("| method | value | L0 | FVU | dead |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['method']} | {r['value']:g} | {r['l0']:.1f} | {r['fvu']:.4f} | {r['dead_fraction']:.3f} |")
    print(f"wrote {out}/sweep.csv and {out}/fvu_vs_l0.png")
    return 0
