"""Milliseconds per training step of the default TopK recipe on the CPU, one thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/topk_step.py [--hidden 1024] [--k 32] [--steps 40]

The configuration `sparseae train --penalty topk --k K --hidden N` gives, FashionMNIST rows at batch
256: one epoch of `--steps` steps as warm-up, then the mean of one more such epoch (the validation pass
is one batch). End-to-end times against the peer libraries are benchmarks/peers_topk.py's; this
isolates the step, the unit the CPU kernel work of issue 11 was measured in.
"""
from __future__ import annotations

import argparse
import time

import torch

from sparseae.cli.args import training_config
from sparseae.data import load_dataset
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.training import fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="1024")
    p.add_argument("--k", default="32")
    p.add_argument("--steps", type=int, default=40)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = training_config(["--penalty", "topk", "--k", a.k, "--hidden", a.hidden, "--epochs", "1", "--device", "cpu"])
    data = load_dataset("fashion-mnist")
    torch.manual_seed(0)
    model = SparseAutoencoder(cfg.model)
    x, val = data.train[:cfg.train.batch_size * a.steps], data.test[:cfg.train.batch_size]
    objective = Objective(cfg.sparsity, cfg.train.recon)
    fit(model, objective, x, val, cfg.train, progress=False)  # warm-up
    t = time.perf_counter()
    fit(model, objective, x, val, cfg.train, progress=False)
    ms = (time.perf_counter() - t) / a.steps * 1e3
    print(f"TopK step, {a.hidden} latents, k {a.k}, batch {cfg.train.batch_size}, one thread: {ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
