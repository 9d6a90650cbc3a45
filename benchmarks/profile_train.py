"""Where the time of a whole `sparseae train` process goes: start-up, data, each epoch, the run folder.

    OMP_NUM_THREADS=1 python benchmarks/profile_train.py -- --penalty topk --k 32 --hidden 1024 --epochs 5
    OMP_NUM_THREADS=1 python benchmarks/profile_train.py --wall 3 -- --preset tutorial --target-val-mse 0.0257

Runs `sparseae train ARGS --out TMP --quiet` in this process with timers around its named steps
(imports, data, the first optimizer, which imports torch._dynamo, each epoch's steps, validation,
the per-epoch files, checkpoints, the final files) and prints one table; what no timer covers is
the rest (argument parsing, the model, the output folder, Python's own start and exit are not in
it). `--wall N` also runs the same command N times as a subprocess and prints the median wall
clock of the whole process, which is what a user waits for.
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

TIMES: dict[str, list[float]] = defaultdict(list)


def timed(owner, name: str, label: str) -> None:
    """Wrap owner.name so that every call adds its seconds to TIMES[label]."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            TIMES[label].append(time.perf_counter() - t)

    setattr(owner, name, wrapper)


def instrument() -> None:
    import sparseae.training.checkpoint as checkpoint
    import sparseae.training.loop as loop
    import sparseae.training.session as session

    timed(session, "prepare_data", "data: load FashionMNIST")
    timed(session, "build_model", "model: build, fit the input transform")
    timed(loop, "make_optimizer", "first optimizer (torch.optim's imports torch._dynamo)")
    timed(loop._Loop, "_epoch", "training steps")
    # (trees before the validation also counted the feature density: `evaluate`)
    timed(loop, "evaluate_with_frequency" if hasattr(loop, "evaluate_with_frequency") else "evaluate",
          "validation (10,000 test images)")
    timed(session.EpochArtifacts, "__call__", "per-epoch files (metrics, weights, pictures)")
    timed(checkpoint.Checkpointer, "save", "checkpoints")
    timed(session, "finish", "final files (features, density, summary)")
    if hasattr(session, "BackgroundWriter"):  # (not in trees before issue 24)
        timed(session.BackgroundWriter, "__exit__", "waiting for the background writes")


def profile(argv: list[str]) -> None:
    t = time.perf_counter()
    import torch  # noqa: F401

    TIMES["import torch"].append(time.perf_counter() - t)
    t = time.perf_counter()
    from sparseae.cli import main

    instrument()
    TIMES["import sparseae (train path)"].append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        code = main(["train", *argv, "--out", str(Path(tmp) / "run"), "--quiet"])
        total = time.perf_counter() - T0
        TIMES["main(): everything else"].append(time.perf_counter() - t)
    if code != 0:
        sys.exit(f"sparseae train exited with {code}")
    imports = ("import torch", "import sparseae (train path)", "main(): everything else")
    phases = sum(sum(v) for k, v in TIMES.items() if k not in imports)
    TIMES["main(): everything else"] = [TIMES["main(): everything else"][0] - phases]
    print(f"sparseae train {' '.join(argv)}   (load average {os.getloadavg()[0]:.2f}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    print("| step | calls | seconds | share |\n|---|---|---|---|")
    for label, values in TIMES.items():
        print(f"| {label} | {len(values)} | {sum(values):.2f} | {100 * sum(values) / total:.0f}% |")
    print(f"| total, from this script's first line | | {total:.2f} | 100% |")


def wall(argv: list[str], runs: int) -> None:
    exe = Path(sys.executable).with_name("sparseae")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    python = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        python.append(time.perf_counter() - t)
    seconds = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([str(exe), "train", *argv, "--out", str(Path(tmp) / "run"), "--quiet"], check=True,
                           env=env, stdout=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - t)
    print(f"whole process, {runs} runs: median {statistics.median(seconds):.2f} s "
          f"({', '.join(f'{s:.2f}' for s in seconds)}); `python -c pass` {statistics.median(python):.3f} s; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wall", type=int, default=0, help="also time the command N times as a process")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the flags of sparseae train")
    a = p.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    profile(args)
    if a.wall:
        wall(args, a.wall)
