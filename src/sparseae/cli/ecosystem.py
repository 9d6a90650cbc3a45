"""The SAE ecosystem's commands: `activations` (a PyTorch model's activations to a .npy file), `export`
(a run as a SAELens folder or sparsify checkpoint) and `import` (one of those as a run folder). Each is a
pair (add_arguments, run); the library is imported inside `run`."""
from __future__ import annotations

import argparse

from ..errors import SparseAEError
from . import args as flags

DEFAULT_BATCH = 256  # activations: examples per forward pass when --batch-size is not given

# --- activations -------------------------------------------------------------------------------------


def add_activations_arguments(p: argparse.ArgumentParser) -> None:
    flags.add(p, "--model", "--layer", "--data", "--data-key", "--out", "--site", "--max-rows", "--batch-size",
              "--device", "--overwrite", "--quiet",
              shown={"--batch-size": DEFAULT_BATCH, "--device": flags.DEFAULT_DEVICE})


def run_activations(args: argparse.Namespace) -> int:
    for flag in ("--model", "--layer", "--data", "--out"):
        if getattr(args, flags.dest(flag)) is None:
            raise SparseAEError(f"{flag} is required")
    from ..apps.activations import claim_outputs, collect, load_factory, open_inputs
    from ..training.loop import resolve_device

    # every flag checked before the model is built (its factory may train it) or any data read
    for flag, value in (("--batch-size", args.batch_size), ("--max-rows", args.max_rows)):
        if value is not None and value <= 0:
            raise SparseAEError(f"{flag} must be a positive integer, got {value}")
    claim_outputs(args.out, args.site, args.overwrite)
    inputs = open_inputs(args.data, args.data_key)
    model = load_factory(args.model).to(resolve_device(args.device or flags.DEFAULT_DEVICE))
    done = collect(model, args.layer, inputs, args.out, site=args.site, max_rows=args.max_rows,
                   batch_size=args.batch_size or DEFAULT_BATCH, progress=not args.quiet, overwrite=args.overwrite)
    if done.target is not None:
        print(f"wrote {done.path} and {done.target}: {done.rows} rows, {done.features} input and "
              f"{done.target_features} output features {done.dtype} ({args.layer}, {done.batches} batches); train "
              f"a transcoder on them with: sparseae train --dataset array --data {done.path} --target {done.target}")
        return 0
    print(f"wrote {done.path}: {done.rows} x {done.features} {done.dtype} ({args.layer} {args.site}put, "
          f"{done.batches} batches); train on it with: sparseae train --dataset array --data {done.path}")
    return 0


# --- export ------------------------------------------------------------------------------------------

def add_export_arguments(p: argparse.ArgumentParser) -> None:
    flags.add(p, "run_dir", "out_dir", "--format", "--overwrite")


def run_export(args: argparse.Namespace) -> int:
    from ..apps.ecosystem import export_run

    sae = export_run(args.run_dir, args.out_dir, args.format, overwrite=args.overwrite)
    k = f", k {sae.k}" if sae.k is not None else ""
    print(f"wrote {args.out_dir}: {args.format} {sae.architecture} SAE, d_in {sae.d_in}, d_sae {sae.d_sae}{k}")
    return 0


# --- import ------------------------------------------------------------------------------------------

def add_import_arguments(p: argparse.ArgumentParser) -> None:
    flags.add(p, "peer_dir", "--format", "--out", "--data", "--data-key", "--dataset", "--overwrite")


def run_import(args: argparse.Namespace) -> int:
    from ..apps.ecosystem import import_folder

    if args.out is None:
        raise SparseAEError("--out is required: the run folder to write")
    if args.data is not None and args.dataset not in (None, "array"):
        raise SparseAEError("give --data (an array file) or --dataset (a built-in data set), not both")
    sae = import_folder(args.peer_dir, args.out, args.format, data=args.data, dataset=args.dataset,
                        data_key=args.data_key, if_exists="replace" if args.overwrite else "refuse")
    print(f"wrote run folder {args.out}: {args.format} {sae.architecture} SAE, d_in {sae.d_in}, d_sae {sae.d_sae}; "
          f"sparseae eval {args.out} (the data: {args.data or args.dataset or 'set train.data in its config.json'})")
    return 0
