"""The `sparseae` command: parses arguments and calls the library.

The flags are defined once, in args.py; the commands live in train.py (train, eval, gradcheck,
stack), analysis.py (probe, sweep), apps.py (monitor, cluster, report) and ecosystem.py (activations,
export, import), each a pair
(add_arguments, run) registered in COMMANDS. Bad input (a `SparseAEError`) becomes one line on
stderr and exit code 2. Only the standard library and config.py are imported until a command
runs, so `sparseae --help` answers without loading torch.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable

from ..errors import SparseAEError
from . import analysis, apps, ecosystem, train
from .args import config_from_args

__all__ = ["COMMANDS", "build_parser", "config_from_args", "main"]

# name -> (one-line help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train a sparse autoencoder and write a run folder", train.add_train_arguments, train.run_train),
    "eval": ("print a run's test-split metrics as JSON", train.add_eval_arguments, train.run_eval),
    "gradcheck": ("compare the objective's analytic gradient with central differences (float64)",
                  train.add_gradcheck_arguments, train.run_gradcheck),
    "stack": ("greedy layer-wise training of a stacked sparse autoencoder, then fine-tuning",
              train.add_stack_arguments, train.run_stack),
    "sweep": ("train KL/L1/TopK models over a grid; CSV and plot of FVU against L0",
              analysis.add_sweep_arguments, analysis.run_sweep),
    "probe": ("linear-probe (softmax) test accuracy of run folders' features, next to raw pixels",
              analysis.add_probe_arguments, analysis.run_probe),
    "monitor": ("process monitoring: T^2 and SPE of a sparse autoencoder next to PCA (Tennessee Eastman "
                "or your files)", apps.add_monitor_arguments, apps.run_monitor),
    "cluster": ("graph communities: stacked sparse autoencoder on D^-1 S + k-means, next to spectral "
                "clustering (NMI)", apps.add_cluster_arguments, apps.run_cluster),
    "report": ("write a self-contained HTML report of a run folder", apps.add_report_arguments, apps.run_report),
    "activations": ("run data through any PyTorch model and write one submodule's activations to a .npy file",
                    ecosystem.add_activations_arguments, ecosystem.run_activations),
    "export": ("write a run's SAE as a SAELens folder (or a sparsify checkpoint)", ecosystem.add_export_arguments,
               ecosystem.run_export),
    "import": ("turn a SAELens folder or a sparsify checkpoint into a run folder", ecosystem.add_import_arguments,
               ecosystem.run_import),
}


class OneLineParser(argparse.ArgumentParser):
    """A bad command line gets one line and a pointer to the help, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sparseae", description="Sparse autoencoders on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # a malformed command line: one line, exit 2
        # Casting a huge value to float32 overflows with a warning; the data check that follows says
        # which row and column in one line, so the warning would only repeat it.
        warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
        return COMMANDS[args.command][2](args)
    except SparseAEError as e:
        print(f"sparseae {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that is a folder, not a regular file, not permitted, too long, a loop
        what = f"{e.filename}: " if e.filename else ""
        print(f"sparseae {args.command}: error: {what}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparseae: interrupted", file=sys.stderr)
        return 130


def _one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":
    raise SystemExit(main())
