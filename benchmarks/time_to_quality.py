"""Time to reach the peer's validation MSE, sparseae vs the tutorial loop, same machine, same run.

The peer is ../shared/peers/tutorial_kl.py (the seed tutorial's loop: DataLoader, batch 32,
lr 1e-4, 10 epochs). Its 10-epoch validation MSE (0.0257 on this machine kind, ANCHORS.md) is the target;
sparseae trains the same 784-256-128-64-32-16 architecture (preset `tutorial`, KL active on the
code) until its validation MSE (10k test split, no penalty) is at or below it.

    python benchmarks/time_to_quality.py                # runs the peer too (~150 s on 2 cores)
    python benchmarks/time_to_quality.py --peer-seconds 151     # reuse a peer measurement
    OMP_NUM_THREADS=1 python benchmarks/time_to_quality.py      # on a machine shared with other jobs

The headline is the whole command, `sparseae train --preset tutorial --target-val-mse 0.0257`, timed
as a process by the wall clock (start-up, data, training, every file of the run folder), `--commands`
times (default 3: one before the peer, the rest after it; the median counts); the second row is the
same training through the Python API with the data already loaded. Prints the times and the ratios
(goals: the command >= 30x faster than the peer, issue 24; the API run <= 1/20 of the peer's time).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparseae import RunConfig, load_dataset, train
from sparseae.config import PRESETS

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "tutorial_kl.py"


def run_peer(epochs: int, data_dir: str) -> tuple[float, float]:
    """(seconds for `epochs` epochs, final validation MSE) of the peer loop."""
    if not PEER.is_file():
        sys.exit(f"peer script not found at {PEER}; pass --peer-seconds and --target")
    proc = subprocess.run([sys.executable, str(PEER), "--epochs", str(epochs), "--data", data_dir,
                           "--device", "cpu"], capture_output=True, text=True, check=True)
    print(proc.stdout, end="")
    val = [float(v) for v in re.findall(r"val_mse ([0-9.]+)", proc.stdout)]
    total = float(re.search(r"total_s ([0-9.]+)", proc.stdout).group(1))
    return total, val[-1]


def run_command(target: float, data_dir: str) -> dict:
    """The whole `sparseae train --preset tutorial` process: wall-clock seconds and its summary.json."""
    exe = str(Path(sys.executable).with_name("sparseae"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [exe, "train", "--preset", "tutorial", "--target-val-mse", f"{target:g}", "--out", f"{tmp}/run",
                "--quiet"]
        args += [] if data_dir == "/usr/share/datasets/fashion-mnist" else ["--data-dir", data_dir]
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        seconds = time.perf_counter() - t0
        summary = json.loads(Path(tmp, "run", "summary.json").read_text())
    print(f"command: {seconds:.2f} s, {summary['epochs']} epochs, val_mse {summary['val_mse']:.4f}, "
          f"reached {summary['reached_target']}, load average {os.getloadavg()[0]:.2f}", flush=True)
    return {**summary, "wall": seconds}  # summary's own "seconds" time the training alone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--peer-epochs", type=int, default=10)
    p.add_argument("--peer-seconds", type=float, help="reuse a peer time instead of running it")
    p.add_argument("--target", type=float, default=0.0257,
                   help="validation MSE to reach (default: 0.0257, the peer's 10-epoch figure in ANCHORS.md; "
                        "the peer is unseeded and its own final value varies from run to run)")
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--commands", type=int, default=3, help="runs of the whole command (default: 3)")
    args = p.parse_args()

    target = args.target
    commands = [run_command(target, args.data_dir)] if args.commands else []
    if args.peer_seconds is None:
        peer_s, peer_mse = run_peer(args.peer_epochs, args.data_dir)
    else:
        peer_s, peer_mse = args.peer_seconds, float("nan")
    print(f"peer: {args.peer_epochs} epochs in {peer_s:.1f} s, validation MSE {peer_mse:.4f}, "
          f"load average {os.getloadavg()[0]:.2f}")
    commands += [run_command(target, args.data_dir) for _ in range(args.commands - 1)]
    if commands:
        whole = statistics.median(c["wall"] for c in commands)
        reached = all(c["reached_target"] for c in commands)
        each = ", ".join(f"{c['wall']:.2f}" for c in commands)
        print(f"command (whole process): median {whole:.2f} s of {len(commands)} ({each}); "
              f"peer/command = {peer_s / whole:.1f}x; "
              f"goal >= 30x: {'PASS' if reached and peer_s / whole >= 30 else 'FAIL'}")

    data = load_dataset("fashion-mnist", args.data_dir)
    config = RunConfig.from_dict(copy.deepcopy(PRESETS["tutorial"]))
    config.train.epochs = args.max_epochs
    config.train.target_val_mse = target
    with tempfile.TemporaryDirectory() as out:  # the run folder is written as in a real run
        t0 = time.perf_counter()
        result = train(config, out=out, dataset=data, progress=False)
        ours = time.perf_counter() - t0
    last = result.history[-1]
    print(f"sparseae: {'reached' if result.reached_target else 'did NOT reach'} validation MSE {target:.4f} "
          f"in {ours:.2f} s ({len(result.history)} epochs, batch {config.train.batch_size}, "
          f"val_mse {last['val_mse']:.4f}, mean code activation {last['mean_activation']:.4f})")
    ratio = ours / peer_s
    print(f"ratio sparseae/peer = {ratio:.4f} (1/{1 / ratio:.1f}); goal <= 1/20: "
          f"{'PASS' if result.reached_target and ratio <= 0.05 else 'FAIL'}")


if __name__ == "__main__":
    main()
