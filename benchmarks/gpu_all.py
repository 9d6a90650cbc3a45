"""Every GPU measurement of issue 5 in one call of under 5 minutes.

1. Tutorial-sized model, seconds per FashionMNIST epoch at batch 32 and 1024: eager, one CUDA graph
   per step, compiled + graph; the peer loop (shared/peers/tutorial_kl.py) on partial epochs in the
   same run; ratios to the targets (1.0 s, 0.05 s) and the H200 bound.
2. Wide TopK (d_in 768, 65,536 latents, k 32, batch 4096, bf16, Adam, unit-norm decoder): rows/s of
   the dense step and the sparse kernels, gradients checked against dense float32.
3. CPU and GPU agreement: the same short training on both, largest weight difference.

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


def cpu_gpu_agreement(devices=("cpu", "cuda"), n_rows: int = 12000) -> None:
    """The tutorial model, 2 epochs on 12,000 FashionMNIST rows at batch 256, float32, on the CPU and on
    the GPU from the same initial weights and order: largest weight difference and the losses."""
    from sparseae.config import PRESETS, RunConfig, TrainConfig
    from sparseae.data import load_dataset
    from sparseae.model import SparseAutoencoder
    from sparseae.objective import Objective
    from sparseae.training import fit

    data = load_dataset("fashion-mnist")
    config = RunConfig.from_dict(PRESETS["tutorial"])
    models, losses = [], []
    for device in devices:
        torch.manual_seed(0)
        model = SparseAutoencoder(config.model).to(device)
        tc = TrainConfig(epochs=2, batch_size=256, device=device)
        rows, _ = fit(model, Objective(config.sparsity, tc.recon), data.train[:n_rows].to(device),
                      data.test[:2000].to(device), tc, progress=False)
        models.append({k: v.detach().cpu() for k, v in model.state_dict().items()})
        losses.append([r["train_loss"] for r in rows])
    diff = max((models[0][k] - models[1][k]).abs().max().item() for k in models[0])
    print(f"CPU vs GPU (float32, TF32 off): largest weight difference {diff:.2e}; train loss CPU "
          f"{losses[0]} GPU {losses[1]}")


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
            agreement = {"devices": ("cpu", "cpu"), "n_rows": 2000}
        else:
            tutorial = ["--device", "cuda", "--batch-sizes", "32,1024", "--modes", "eager,graph,compile+graph",
                        "--budget-s", "150"]
            wide = ["--device", "cuda", "--modes", "dense,sparse,sparse+graph,sparse+compile+graph"]
            agreement = {}
        steps = [
            ("tutorial epoch", lambda: tutorial_epoch.main(tutorial)),
            ("wide TopK", lambda: wide_topk.main(wide)),
            ("CPU vs GPU", lambda: cpu_gpu_agreement(**agreement)),
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
