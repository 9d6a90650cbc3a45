"""A transcoder on an MLP block's (input, output) against PCA at equal L0, every step a `sparseae` command.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transcoder.py [--work /tmp/transcoder] [--epochs 5]
        [--hidden 1024] [--ks 8,16,32] [--json FILE] [--saelens-python /tmp/peers-venv/bin/python]

1. The model: a FashionMNIST classifier with a residual MLP block in the middle (`fashion_block`:
   784 -> 128, then x + mlp(x) with mlp = 128 -> 512 -> GELU -> 128, then -> 10), trained 500 Adam steps.
2. `sparseae activations --model benchmarks/transcoder.py:fashion_block --layer mlp --site both` on the
   60,000 training images: the block's MLP input (128 wide) and output (128 wide), one row per image.
3. `sparseae train --dataset array --data acts.in.npy --target acts.out.npy --penalty topk --k K` (and one
   JumpReLU and one L1 run at their defaults): each the run's validation FVU (the last tenth of the rows,
   `sparseae eval`) against the target, and its L0.
4. The baseline at equal L0: PCA fitted on the training inputs, the target predicted by least squares from
   the top L0 components (plus an intercept), FVU on the same validation rows (interpolated between whole
   numbers of components for a fractional L0). That is the best linear predictor that reads L0 dense
   numbers per example, which is what a transcoder's code of L0 active latents must beat to have learned
   anything a projection does not give; the full least-squares map (all 128 components) is printed too.
5. With --saelens-python (a Python with sae-lens, benchmarks/requirements-peers.txt): the JumpReLU and L1
   transcoders are exported (`sparseae export`), loaded with SAELens's `SAE.load_from_disk` (its
   Transcoder / JumpReLUTranscoder) in that Python, and its outputs on 1,000 validation rows compared with
   sparseae's (max abs difference).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIDTH, MLP_WIDTH = 128, 512


def fashion_block():
    """784 -> 128 -> (x + MLP(x)) -> 10 on FashionMNIST, 500 Adam steps (batch 256, seed 0): a model to hook."""
    import torch
    import sparseae

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(784, WIDTH)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(WIDTH, MLP_WIDTH), torch.nn.GELU(),
                                           torch.nn.Linear(MLP_WIDTH, WIDTH))
            self.head = torch.nn.Linear(WIDTH, 10)

        def forward(self, x):
            h = self.embed(x)
            return self.head(h + self.mlp(h))

    torch.manual_seed(0)
    data = sparseae.load_dataset("fashion-mnist")
    model = Classifier()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by `--model FILE:FACTORY`
    from briefly_trained import train_briefly

    return train_briefly(model, data, 500)


def sparseae_cmd(*args: str) -> str:
    cmd = [str(ROOT / ".venv" / "bin" / "sparseae"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def pca_regression_curve(x_train, y_train, x_val, y_val) -> np.ndarray:
    """FVU on the validation rows of y predicted by least squares from the top 0, 1, ..., d principal
    components of x (fitted on the training rows). The components are uncorrelated on the training rows,
    so the least-squares coefficient of each is its own regression and the prediction grows one term at
    a time."""
    xm, ym = x_train.mean(0), y_train.mean(0)
    xc, yc = x_train - xm, y_train - ym
    _, vecs = np.linalg.eigh(xc.T @ xc)
    basis = vecs[:, ::-1]
    z_train, z_val = xc @ basis, (x_val - xm) @ basis
    coef = (z_train.T @ yc) / (z_train ** 2).sum(0)[:, None]  # one row per component
    total = ((y_val - y_val.mean(0)) ** 2).sum()
    pred, fvus = np.broadcast_to(ym, y_val.shape).copy(), [((y_val - ym) ** 2).sum() / total]
    for j in range(basis.shape[1]):
        pred += np.outer(z_val[:, j], coef[j])
        fvus.append(((y_val - pred) ** 2).sum() / total)
    return np.array(fvus)


def at(curve: np.ndarray, l0: float) -> float:
    lo = min(int(l0), len(curve) - 1)
    hi = min(lo + 1, len(curve) - 1)
    return float((1 - (l0 - lo)) * curve[lo] + (l0 - lo) * curve[hi])


def saelens_worker(folder: str, rows: str, ours: str) -> None:
    """Run under the peers' Python: SAELens's output for `rows` against sparseae's, as one JSON line."""
    import torch
    from sae_lens import SAE

    sae = SAE.load_from_disk(folder)
    with torch.no_grad():
        out = sae(torch.from_numpy(np.load(rows))).numpy()
    print(json.dumps({"class": type(sae).__name__, "d_out": sae.cfg.d_out,
                      "max_abs": float(np.abs(out - np.load(ours)).max())}))


def check_in_saelens(python: str, run: Path, work: Path, x_val: np.ndarray) -> dict:
    """Export `run`, reconstruct 1,000 validation rows with sparseae, and compare with SAELens's output."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    from sparseae.run.rundir import load_run

    folder = work / "saelens" / run.name
    sparseae_cmd("export", str(run), str(folder), "--overwrite")
    rows, ours = work / "val_rows.npy", work / f"ours-{run.name}.npy"
    np.save(rows, x_val[:1000].astype(np.float32))
    with torch.no_grad():
        np.save(ours, load_run(run).reconstruct(torch.from_numpy(np.load(rows))).numpy())
    done = subprocess.run([python, __file__, "--saelens-worker", str(folder), str(rows), str(ours)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"SAELens could not load {folder}:\n{done.stderr[-2000:]}")
    return {"run": run.name, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    if sys.argv[1:2] == ["--saelens-worker"]:
        return saelens_worker(*sys.argv[2:5])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/transcoder")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ks", default="8,16,32")
    p.add_argument("--json")
    p.add_argument("--saelens-python", help="a Python with sae-lens: load the exported transcoders with it")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    acts = work / "acts.npy"
    x_path, y_path = work / "acts.in.npy", work / "acts.out.npy"
    if not y_path.exists():
        images = work / "images.npy"
        if not images.exists():
            sys.path.insert(0, str(ROOT / "src"))
            import sparseae
            np.save(images, sparseae.load_dataset("fashion-mnist").train.numpy())
        print(sparseae_cmd("activations", "--model", f"{Path(__file__).resolve()}:fashion_block", "--layer", "mlp",
                           "--site", "both", "--data", str(images), "--out", str(acts), "--quiet").strip())
    x, y = np.load(x_path).astype(np.float64), np.load(y_path).astype(np.float64)
    n_val = int(round(len(x) * 0.1))  # as `--val-fraction 0.1` splits: the last tenth
    curve = pca_regression_curve(x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:])
    print(f"rows {len(x)}, input {x.shape[1]}, output {y.shape[1]}, |values| up to {np.abs(y).max():.2f}; "
          f"least squares on all {x.shape[1]} components: FVU {curve[-1]:.4f}")
    runs = [("topk", ["--k", k]) for k in a.ks.split(",")] + [("jumprelu", []), ("l1", [])]
    results = []
    for family, extra in runs:
        name = f"{family}{extra[1] if extra else ''}"
        out = work / "runs" / name
        t0 = time.perf_counter()
        sparseae_cmd("train", "--penalty", family, *extra, "--hidden", str(a.hidden), "--epochs", str(a.epochs),
                     "--dataset", "array", "--data", str(x_path), "--target", str(y_path), "--out", str(out),
                     "--overwrite", "--quiet")
        seconds = time.perf_counter() - t0
        ev = json.loads(sparseae_cmd("eval", str(out)))
        row = {"run": name, "fvu": ev["fvu"], "l0": ev["l0"], "dead_fraction": ev["dead_fraction"],
               "pca_fvu": at(curve, ev["l0"]), "train_s": seconds}
        row["ratio"] = row["fvu"] / row["pca_fvu"]
        results.append(row)
        print(json.dumps(row))
    print("\n| run | L0 | transcoder FVU | PCA + least squares FVU at L0 | ratio | dead | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['l0']:.1f} | {r['fvu']:.4f} | {r['pca_fvu']:.4f} | {r['ratio']:.3f} | "
              f"{r['dead_fraction']:.3f} | {r['train_s']:.0f} |")
    checks = [check_in_saelens(a.saelens_python, work / "runs" / name, work, x[-n_val:])
              for name in ("jumprelu", "l1")] if a.saelens_python else []
    for c in checks:
        print(f"SAELens {c['class']} (d_out {c['d_out']}) on {c['run']}'s export: "
              f"max abs difference {c['max_abs']:.1e}")
    if a.json:
        Path(a.json).write_text(json.dumps({"full_least_squares_fvu": float(curve[-1]), "runs": results,
                                            "saelens": checks}, indent=1))


if __name__ == "__main__":
    main()
