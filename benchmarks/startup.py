"""Start-up time of the `sparseae` command: wall seconds of `sparseae --help` and `sparseae train --help`.

Runs the console script of the virtual environment this Python belongs to, as a user would: one
warm-up run each (disk cache), then `--repeat` timed runs, and prints the median against the goal
(0.5 s; the help must not import torch, numpy or matplotlib, which take seconds on a cold start).

Usage:
  .venv/bin/python benchmarks/startup.py [--repeat 5] [--goal 0.5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall_seconds(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each command (default: 5)")
    p.add_argument("--goal", type=float, default=0.5, help="median seconds allowed (default: 0.5)")
    opts = p.parse_args()

    script = Path(sys.executable).parent / "sparseae"  # the console script next to this interpreter
    if not script.exists():
        sys.exit(f"no console script at {script}: run with the project's virtual environment's python")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{script}, {os.cpu_count()} CPUs, load average {load}; median of {opts.repeat} runs after one warm-up")
    failed = False
    for argv in (["--help"], ["train", "--help"]):
        command = [str(script), *argv]
        wall_seconds(command)
        times = [wall_seconds(command) for _ in range(opts.repeat)]
        median = statistics.median(times)
        ok = median <= opts.goal
        failed |= not ok
        print(f"sparseae {' '.join(argv):<14s} median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}); "
              f"goal <= {opts.goal} s: {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
