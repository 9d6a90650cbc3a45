"""Every GPU measurement of issues 5 and 13 in one call of about 5 minutes.

1. Tutorial-sized model, seconds per FashionMNIST epoch at batch 32 and 1024: eager, one CUDA graph
   per step, compiled + graph; the peer loop (shared/peers/tutorial_kl.py) on partial epochs in the
   same run; ratios to the targets (1.0 s, 0.05 s) and the H200 bound.
2. Wide TopK (d_in 768, 65,536 latents, k 32, batch 4096, bf16, Adam, unit-norm decoder): rows/s of
   the dense step and the sparse kernels, gradients checked against dense float32.
3. The default TopK recipe (1024 latents, k 32, 5 epochs) through `sparseae train` on the GPU and on the
   machine's CPU, same seed: final test FVU of each (within 1%) and the time of each.

Prepare on the CPU machine with `bash benchmarks/gpu_prepare.sh`, then run on the GPU machine:
    PYTHONPATH=src python3 benchmarks/gpu_all.py          (carry runs/gpu_carry)
A log is written to $OUT/gpu_all.log when OUT is set. `--dry-run` goes through every step on the
CPU at toy sizes (a minute), to check the script's wiring before spending GPU time.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY = ROOT / "runs" / "gpu_carry"
if (CARRY / "fashion-mnist").is_dir():
    os.environ.setdefault("SPARSEAE_DATA", str(CARRY / "fashion-mnist"))
if (CARRY / "tutorial_kl.py").is_file():
    os.environ.setdefault("SPARSEAE_PEERS", str(CARRY))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("PYTHONUNBUFFERED", "1")

import torch  # noqa: E402

import tutorial_epoch  # noqa: E402
import wide_topk  # noqa: E402


def default_topk_cpu_gpu(devices=("cuda", "cpu"), epochs: int = 5, extra: tuple[str, ...] = ()) -> None:
    """The default TopK recipe (`sparseae train --penalty topk --k 32 --hidden 1024 --epochs 5`, nothing
    else but --device) through the command line on each device, same seed: final test FVU, their
    relative difference (issue 13: within 1%) and the wall time of each run."""
    import json
    import subprocess
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            out = Path(tmp) / f"topk-{device}"
            cmd = [sys.executable, "-m", "sparseae", "train", "--penalty", "topk", "--k", "32", "--hidden",
                   "1024", "--epochs", str(epochs), "--device", device, "--out", str(out), *extra]
            t = time.perf_counter()
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                print(f"{device}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
                continue
            summary = json.loads((out / "summary.json").read_text())
            results[device] = summary["val_fvu"]
            print(f"default TopK, 1024 latents, k 32, {epochs} epochs on {device} "
                  f"({torch.get_num_threads()} CPU threads): test FVU {summary['val_fvu']:.5f}, L0 "
                  f"{summary.get('l0', float('nan')):.1f}, never fire {summary['never_fired_fraction']:.2%}, "
                  f"training {summary['seconds']:.1f} s, command wall {wall:.1f} s", flush=True)
    if len(results) == 2:
        a, b = results.values()
        print(f"FVU relative difference {abs(a - b) / b:.2%} ({'ok' if abs(a - b) / b <= 0.01 else 'FAILED'}: "
              "<= 1%)")


class Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)


def main(argv: list[str] | None = None) -> int:
    dry = "--dry-run" in (sys.argv[1:] if argv is None else argv)
    log = open(Path(os.environ["OUT"]) / "gpu_all.log", "w") if os.environ.get("OUT") else None
    with contextlib.redirect_stdout(Tee(sys.stdout, log) if log else sys.stdout):
        t0 = time.perf_counter()
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
        if dry:  # toy sizes on the CPU: the same steps, to check the wiring
            tutorial = ["--device", "cpu", "--batch-sizes", "1024", "--modes", "eager", "--peer-batches", "5,10"]
            wide = ["--device", "cpu", "--d-in", "32", "--latents", "512", "--batch", "256", "--steps", "4",
                    "--grad-batch", "64", "--modes", "dense,sparse,sparse+compile"]
            agreement = {"devices": ("cpu",), "epochs": 1, "extra": ("--limit-train", "3000")}
        else:
            tutorial = ["--device", "cuda", "--batch-sizes", "32,1024", "--modes", "eager,graph,compile+graph",
                        "--budget-s", "150"]
            wide = ["--device", "cuda", "--modes", "dense,sparse,sparse+graph,sparse+compile+graph"]
            agreement = {}
        steps = [  # quickest first: a failure in a later step must not cost the earlier figures
            ("default TopK, GPU vs CPU", lambda: default_topk_cpu_gpu(**agreement)),
            ("wide TopK", lambda: wide_topk.main(wide)),
            ("tutorial epoch", lambda: tutorial_epoch.main(tutorial)),
        ]
        for name, step in steps:
            t = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                step()
            except Exception as e:  # report and go on: one failure must not hide the other figures
                import traceback
                traceback.print_exc(file=sys.stdout)
                print(f"{name} FAILED: {type(e).__name__}: {e}")
            print(f"== {name}: {time.perf_counter() - t:.1f} s", flush=True)
        print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
