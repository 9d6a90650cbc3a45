"""Training throughput of a wide TopK sparse autoencoder, dense step vs sparse kernels, with a gradient
check of each against a dense float32 reference on the same weights and batch.

Configuration of issue 5 (defaults): d_in 768, 65,536 latents, k 32, batch 4096 rows, bf16 autocast,
Adam, unit-norm decoder, pre-encoder bias. Reference figures (ANCHORS.md section 5, H200): sparsify
0.46M rows/s and a plain dense PyTorch TopK SAE 0.47M rows/s at 65,536 latents; the issue's targets
are >= 0.7M rows/s on an H200 and >= 0.5M on an H100.

Usage:
  python benchmarks/wide_topk.py                                  # GPU, full size
  python benchmarks/wide_topk.py --device cpu --latents 4096 --d-in 64 --batch 512 --precision fp32
Rows/s come from the trainer's own loop (training.fit) on random data resident on the device: the
fastest epoch after the first (an epoch: `--steps` batches and a validation pass of one batch).
"""
from __future__ import annotations

import argparse
import time

import torch

from sparseae.training import accel
from sparseae.config import ModelConfig, SparsityConfig, TrainConfig
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective
from sparseae.training import fit

H200_REFERENCE = {"sparsify": 0.46e6, "dense PyTorch": 0.47e6}
TARGET = {"H200": 0.7e6, "H100": 0.5e6}
MODES = {"dense": ("dense", False, False), "sparse": ("sparse", False, False), "sparse+graph": ("sparse", True, False),
         "dense+graph": ("dense", True, False), "sparse+compile": ("sparse", False, True),
         "sparse+compile+graph": ("sparse", True, True)}


def make_model(args, kernel: str) -> SparseAutoencoder:
    cfg = ModelConfig(input_dim=args.d_in, hidden=[args.latents], activation="relu", output_activation="linear",
                      topk="topk", k=args.k, unit_norm_decoder=True, pre_bias=True, topk_kernel=kernel)
    torch.manual_seed(0)
    return SparseAutoencoder(cfg).to(args.device)


def gradients(args, x: torch.Tensor, kernel: str, precision: str) -> dict[str, torch.Tensor]:
    """Parameter gradients of one training loss on batch `x` (same initial weights for every call),
    computed as the trainer computes its loss (accel.forward_loss: autocast, loss in float32)."""
    model = make_model(args, kernel)
    model.train()
    loss = accel.forward_loss(model, Objective(SparsityConfig(penalty="topk")), precision, False, x.device)
    loss(x).total.backward()
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


def relative_error(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Largest ||g - g_ref|| / ||g_ref|| over the parameters."""
    return max(((got[n] - ref[n]).norm() / ref[n].norm().clamp_min(1e-30)).item() for n in ref)


def throughput(args, x: torch.Tensor, val: torch.Tensor, mode: str) -> float:
    kernel, graph, compiled = MODES[mode]
    model = make_model(args, kernel)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=1e-4, device=args.device,
                      precision=args.precision, cuda_graph=graph, compile=compiled)
    rows, _ = fit(model, Objective(SparsityConfig(penalty="topk")), x, val, cfg, progress=False)
    best = min(r["epoch_seconds"] for r in rows[1:]) if len(rows) > 1 else rows[0]["epoch_seconds"]
    del model
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    return x.shape[0] / best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--latents", type=int, default=65536)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=32,
                   help="batches per epoch (the epoch time includes a one-batch validation pass)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--modes", default="dense,sparse,sparse+graph", help=", ".join(MODES))
    p.add_argument("--grad-batch", type=int, default=1024, help="rows of the gradient check")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; d_in {args.d_in}, {args.latents} latents, k {args.k}, batch {args.batch}, "
          f"{args.precision}, Adam, unit-norm decoder")
    g = torch.Generator(device=args.device).manual_seed(0)
    x = torch.randn(args.steps * args.batch, args.d_in, device=args.device, generator=g)
    val = x[: args.batch]
    t = time.perf_counter()
    xg = x[: args.grad_batch]
    ref = gradients(args, xg, "dense", "fp32")  # the dense float32 reference
    err32 = relative_error(gradients(args, xg, "sparse", "fp32"), ref)
    print(f"gradient check, sparse kernels vs dense float32: relative error {err32:.2e} "
          f"({'ok' if err32 < 1e-4 else 'FAILED'}: < 1e-4)", flush=True)
    if args.precision == "bf16":
        dense16, sparse16 = gradients(args, xg, "dense", "bf16"), gradients(args, xg, "sparse", "bf16")
        # bf16 keeps 8 bits of mantissa: near-ties at the k-th largest pre-activation can pick other
        # latents than float32 does, so the bf16-vs-float32 figure measures bf16 itself, not the kernels.
        print(f"  in bf16: sparse vs dense bf16 {relative_error(sparse16, dense16):.2e}; bf16 vs the float32 "
              f"reference: sparse {relative_error(sparse16, ref):.2e}, dense {relative_error(dense16, ref):.2e} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
    target = next((v for k, v in TARGET.items() if k in name), None)
    for mode in args.modes.split(","):
        if not gpu and "graph" in mode:
            continue
        rps = throughput(args, x, val, mode)
        refs = [f"ratio to {k} on H200 ({v / 1e6:.2f}M): {rps / v:.2f}" for k, v in H200_REFERENCE.items()]
        if target:
            refs.insert(0, f"ratio to the target {target / 1e6:.1f}M: {rps / target:.2f}")
        print(f"{mode:13s}: {rps:,.0f} rows/s ({rps / 1e6:.3f}M); " + "; ".join(refs), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
