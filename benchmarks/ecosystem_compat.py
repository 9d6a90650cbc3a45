"""sparseae's SAEs in SAELens and sparsify, theirs in sparseae: checked with the libraries themselves.

    /tmp/peers-venv/bin/python benchmarks/ecosystem_compat.py [--sparseae-python .venv/bin/python]
        [--work /tmp/ecosystem] [--epochs 3] [--limit-train 20000] [--json FILE]

Run in the peers' virtual environment (benchmarks/requirements-peers.txt: sae-lens, eai-sparsify); every
sparseae step runs as the `sparseae` command (or a small worker of this file) under --sparseae-python, so
sparseae need not be installed next to the peers. Not part of the tests (no peer is a dependency).

1. Activations: `sparseae activations` dumps the ReLU layer of a small MLP trained on FashionMNIST
   (`fashion_mlp` below, 784-256-10, 300 Adam steps) for 20,000 training images: the second data set.
   A tiny nn.TransformerEncoder's 3-D activations are collected with 1 MiB chunks: rows = sequences x
   positions, values equal to the hooked tensors, and tracemalloc's peak next to the chunk size.
2. Export: on FashionMNIST and on that activation file, a sparseae run of each one-layer family (TopK,
   L1, JumpReLU, BatchTopK, Matryoshka) is exported (`sparseae export`), loaded with SAELens's
   `SAE.load_from_disk` (and sparsify's `SparseCoder.load_from_disk` for TopK), and its reconstruction of
   1,000 held-out rows compared with sparseae's (max abs difference); then imported back (`sparseae
   import`), and both runs' `sparseae eval` FVU printed, with PCA's FVU at the run's L0 beside it.
3. Import: a TopK and a BatchTopK SAE trained by SAELens (TopKTrainingSAE / BatchTopKTrainingSAE, its
   SAETrainer, saved with save_inference_model) and a TopK SparseCoder trained by sparsify's step (Adam)
   on the same FashionMNIST rows are imported; their reconstructions compared with the peer's, their
   `sparseae eval` printed, and `sparseae report --screenshot` run on each.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("topk", "l1", "jumprelu", "batchtopk", "matryoshka")
HIDDEN, K = 256, 16
ROWS = 1000


# --- run by `sparseae activations --model benchmarks/ecosystem_compat.py:fashion_mlp` -----------------

def fashion_mlp():
    """784-256-10 ReLU MLP trained 300 Adam steps (batch 256, seed 0) on FashionMNIST: a model to hook."""
    import torch
    import sparseae

    torch.manual_seed(0)
    data = sparseae.load_dataset("fashion-mnist")
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by `--model FILE:FACTORY`
    from briefly_trained import train_briefly

    return train_briefly(model, data, 300)


# --- workers, run under sparseae's interpreter ---------------------------------------------------------

def worker_prepare(work: Path) -> dict:
    """FashionMNIST as .npy: the 60,000 training images (the MLP's input), the 10,000 test images (what
    `eval` measures) and the first 1,000 of them."""
    import sparseae

    data = sparseae.load_dataset("fashion-mnist")
    np.save(work / "fashion_train.npy", data.train.numpy())
    np.save(work / "fashion_rows.npy", data.test[:ROWS].numpy())
    np.save(work / "fashion_test.npy", data.test.numpy())
    return {}


def worker_transformer(work: Path) -> dict:
    """collect() on a tiny transformer's 3-D activations: exactness, rows, tracemalloc's peak per chunk."""
    import tracemalloc

    import torch
    from sparseae.activations import collect

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    model = torch.nn.Sequential(torch.nn.Embedding(1000, 64),
                                torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    ids = torch.randint(0, 1000, (2000, 32))
    seen = []
    hook = dict(model.named_modules())["1.layers.0"].register_forward_hook(lambda m, a, o: seen.append(o.clone()))
    chunk = 1 << 20
    tracemalloc.start()
    t0 = time.perf_counter()
    done = collect(model, "1.layers.0", ids, work / "transformer.npy", batch_size=64, chunk_bytes=chunk,
                   progress=False, overwrite=True)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    hook.remove()
    dump = np.load(work / "transformer.npy", mmap_mode="r")
    exact = bool(np.array_equal(dump, torch.cat(seen).reshape(-1, 64).numpy()))
    return {"sequences": 2000, "positions": 32, "rows": done.rows, "features": done.features, "exact": exact,
            "file_mib": (work / "transformer.npy").stat().st_size / 2**20, "chunk_mib": chunk / 2**20,
            "chunks_written": done.chunks_written, "tracemalloc_peak_mib": peak / 2**20, "seconds": seconds}


def recon_name(run: str | Path) -> str:
    return f"recon-{Path(run).parent.name}-{Path(run).name}.npy"


def worker_recon(work: Path, runs: list[str], rows: str) -> dict:
    """Each run's reconstruction of `rows` (a .npy), saved in `work` (recon_name)."""
    import torch
    from sparseae.run.rundir import load_run

    x = torch.from_numpy(np.load(rows))
    for run in runs:
        with torch.no_grad():
            np.save(work / recon_name(run), load_run(run).reconstruct(x).numpy())
    return {}


def worker_pca(train: str, rows: str, l0s: list[float]) -> dict:
    """sparseae's PCA reference (objective/metrics.pca_fvu, as `sweep` draws it): PCA fitted on the first
    20,000 rows of `train` (as `--limit-train 20000`), its FVU on `rows` at each L0 (interpolated)."""
    import torch
    from sparseae.objective.metrics import pca_fvu, pca_fvu_at

    a = torch.from_numpy(np.asarray(np.load(train, mmap_mode="r")[:20000], dtype=np.float32))
    curve = pca_fvu(a, torch.from_numpy(np.load(rows)), max_components=int(max(l0s)) + 2)
    return {str(l0): pca_fvu_at(curve, l0) for l0 in l0s}


def run_worker(argv: list[str]) -> None:
    name, work, rest = argv[0], Path(argv[1]), argv[2:]
    if name == "prepare":
        out = worker_prepare(work)
    elif name == "transformer":
        out = worker_transformer(work)
    elif name == "recon":
        out = worker_recon(work, rest[1:], rest[0])
    else:
        out = worker_pca(rest[0], rest[1], [float(v) for v in rest[2:]])
    print(json.dumps(out))


# --- the orchestration, run under the peers' interpreter ------------------------------------------------

class Sparseae:
    """The `sparseae` command and this file's workers under sparseae's interpreter, one thread."""

    def __init__(self, python: str, work: Path):
        self.python, self.work = python, work
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(self, *argv: str) -> str:
        t0 = time.perf_counter()
        p = subprocess.run([self.python, "-m", "sparseae", *argv], capture_output=True, text=True, env=self.env,
                           cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"sparseae {' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
        self.last_seconds = time.perf_counter() - t0
        return p.stdout

    def worker(self, *argv: str) -> dict:
        p = subprocess.run([self.python, __file__, "--worker", *argv], capture_output=True, text=True,
                           env=self.env, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"worker {argv[0]} failed: {p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def eval(self, run: Path) -> dict:
        return json.loads(self.cli("eval", str(run)))


def saelens_recon(folder: Path, x):
    import torch
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder))
    with torch.no_grad():
        return sae.decode(sae.encode(x)).numpy(), type(sae).__name__


def sparsify_recon(folder: Path, x):
    import torch
    from sparsify import SparseCoder

    sae = SparseCoder.load_from_disk(str(folder))
    with torch.no_grad():
        enc = sae.encode(x)
        return sae.decode(enc.top_acts, enc.top_indices).numpy(), type(sae).__name__


def data_sets(sp: Sparseae, work: Path) -> dict[str, dict]:
    """name -> how a run trains on it, where its held-out rows and its training rows are."""
    sp.worker("prepare", str(work))
    acts = work / "mlp_relu.npy"
    sp.cli("activations", "--model", f"{Path(__file__).resolve()}:fashion_mlp", "--layer", "1", "--data",
           str(work / "fashion_train.npy"), "--out", str(acts), "--max-rows", "20000", "--overwrite", "--quiet")
    a = np.load(acts, mmap_mode="r")
    n_val = len(a) // 10  # `train --dataset array` validates on the file's last tenth (val_fraction 0.1)
    np.save(work / "acts_rows.npy", np.asarray(a[-ROWS:]))
    np.save(work / "acts_val.npy", np.asarray(a[-n_val:]))
    np.save(work / "acts_train.npy", np.asarray(a[:-n_val]))
    return {
        "fashion-mnist": {"train": ["--limit-train", "20000"], "rows": work / "fashion_rows.npy",
                          "pca": (work / "fashion_train.npy", work / "fashion_test.npy"),
                          "import": ["--dataset", "fashion-mnist"]},
        "mlp-activations": {"train": ["--dataset", "array", "--data", str(acts)], "rows": work / "acts_rows.npy",
                            "pca": (work / "acts_train.npy", work / "acts_val.npy"), "import": ["--data", str(acts)]},
    }


def export_checks(sp: Sparseae, work: Path, name: str, ds: dict, epochs: int) -> list[dict]:
    """Per family: train, export, load with the peers, compare; import back, compare, eval both."""
    import torch

    x = torch.from_numpy(np.load(ds["rows"]))
    out = []
    for fam in FAMILIES:
        tag = f"{name}-{fam}"
        run, sl, back = work / "runs" / tag, work / "saelens" / tag, work / "back" / tag
        k = ["--k", str(K)] if fam in ("topk", "batchtopk", "matryoshka") else []
        sp.cli("train", "--penalty", fam, "--hidden", str(HIDDEN), *k, "--epochs", str(epochs), *ds["train"],
               "--out", str(run), "--overwrite", "--quiet")
        train_s = sp.last_seconds
        sp.cli("export", str(run), str(sl), "--overwrite")
        sp.cli("import", str(sl), "--out", str(back), *ds["import"], "--overwrite")
        sp.worker("recon", str(work), str(ds["rows"]), str(run), str(back))
        ours, again = np.load(work / recon_name(run)), np.load(work / recon_name(back))
        peer, cls = saelens_recon(sl, x)
        row = {"data": name, "family": fam, "saelens_class": cls, "train_s": train_s,
               "saelens_max_abs": float(np.abs(peer - ours).max()),
               "roundtrip_max_abs": float(np.abs(again - ours).max()), "scale": float(np.abs(ours).max())}
        if fam == "topk":
            sp.cli("export", str(run), str(work / "sparsify" / tag), "--format", "sparsify", "--overwrite")
            row["sparsify_max_abs"] = float(np.abs(sparsify_recon(work / "sparsify" / tag, x)[0] - ours).max())
        e1, e2 = sp.eval(run), sp.eval(back)
        row.update(fvu=e1["fvu"], fvu_imported=e2["fvu"], l0=e1["l0"])
        pca = sp.worker("pca", str(work), *map(str, ds["pca"]), str(e1["l0"]))
        row["pca_fvu"] = pca[str(e1["l0"])]
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def train_peers(work: Path, epochs: int) -> dict[str, tuple[Path, str]]:
    """A TopK and a BatchTopK SAE by SAELens (SAETrainer, defaults: Adam 3e-4) and a TopK SparseCoder by
    sparsify's step (Adam 1e-3, b_dec at the first batch's mean) on 20,000 FashionMNIST training images,
    256 latents, k 16, batch 256: name -> (folder, format)."""
    import torch
    from sae_lens import (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, SAETrainer, TopKTrainingSAE,
                          TopKTrainingSAEConfig)
    from sae_lens.config import SAETrainerConfig
    from sparsify import SparseCoder, SparseCoderConfig

    train = torch.from_numpy(np.load(work / "fashion_train.npy")[:20000])
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            order = torch.randperm(train.shape[0], generator=g)
            for i in range(0, train.shape[0] - 255, 256):
                yield train[order[i:i + 256]]

    out = {}
    for name, cls, cfg_cls in (("saelens-topk", TopKTrainingSAE, TopKTrainingSAEConfig),
                               ("saelens-batchtopk", BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig)):
        torch.manual_seed(0)
        sae = cls(cfg_cls(d_in=784, d_sae=HIDDEN, k=K, device="cpu"))
        cfg = SAETrainerConfig(total_training_samples=epochs * train.shape[0], train_batch_size_samples=256,
                               device="cpu", lr_end=SAETrainerConfig.lr)
        SAETrainer(cfg, sae, batches()).fit()
        sae.save_inference_model(work / "peers" / name)
        out[name] = (work / "peers" / name, "saelens")
    torch.manual_seed(0)
    coder = SparseCoder(784, SparseCoderConfig(num_latents=HIDDEN, k=K), "cpu", dtype=torch.float32)
    opt = torch.optim.Adam(coder.parameters(), lr=1e-3)
    from peers_topk import sparsify_steps  # (benchmarks/, this script's folder: run as a script here)

    sparsify_steps(coder, opt, itertools.islice(batches(), epochs * (train.shape[0] // 256)))
    coder.set_decoder_norm_to_unit_norm()
    coder.save_to_disk(work / "peers" / "sparsify-topk")
    out["sparsify-topk"] = (work / "peers" / "sparsify-topk", "sparsify")
    return out


def import_checks(sp: Sparseae, work: Path, epochs: int) -> list[dict]:
    """Per peer-trained SAE: import, compare reconstructions, eval, report with a screenshot."""
    import torch

    x = torch.from_numpy(np.load(work / "fashion_rows.npy"))
    rows = []
    for name, (folder, fmt) in train_peers(work, epochs).items():
        peer = (saelens_recon if fmt == "saelens" else sparsify_recon)(folder, x)[0]
        run = work / "imported" / name
        sp.cli("import", str(folder), "--format", fmt, "--out", str(run), "--dataset", "fashion-mnist", "--overwrite")
        sp.worker("recon", str(work), str(work / "fashion_rows.npy"), str(run))
        ours = np.load(work / recon_name(run))
        e = sp.eval(run)
        shot = work / f"report-{name}.png"
        sp.cli("report", str(run), "--screenshot", str(shot), "--overwrite")
        pca = sp.worker("pca", str(work), str(work / "fashion_train.npy"), str(work / "fashion_test.npy"), str(e["l0"]))
        row = {"peer": name, "format": fmt, "max_abs": float(np.abs(peer - ours).max()), "fvu": e["fvu"], "l0": e["l0"],
               "pca_fvu": pca[str(e["l0"])], "report": str(run / "report.html"), "screenshot": str(shot)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(exports: list[dict], imports: list[dict], transformer: dict) -> str:
    lines = ["| data | family | SAELens class | SAELens max abs diff | sparsify max abs diff | round trip max abs "
             "diff | largest value | eval FVU | FVU after import | L0 | PCA FVU at L0 | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in exports:
        sp = f"{r['sparsify_max_abs']:.1e}" if "sparsify_max_abs" in r else "-"
        lines.append(f"| {r['data']} | {r['family']} | {r['saelens_class']} | {r['saelens_max_abs']:.1e} | {sp} | "
                     f"{r['roundtrip_max_abs']:.1e} | {r['scale']:.3g} | {r['fvu']:.6f} | {r['fvu_imported']:.6f} | "
                     f"{r['l0']:.1f} | {r['pca_fvu']:.4f} | {r['fvu'] / r['pca_fvu']:.3f} |")
    lines += ["", "| trained by | format | max abs diff (peer vs imported) | sparseae eval FVU | L0 | PCA FVU at L0 | "
              "ratio |", "|---|---|---|---|---|---|---|"]
    for r in imports:
        lines.append(f"| {r['peer']} | {r['format']} | {r['max_abs']:.1e} | {r['fvu']:.4f} | {r['l0']:.1f} | "
                     f"{r['pca_fvu']:.4f} | {r['fvu'] / r['pca_fvu']:.3f} |")
    t = transformer
    lines += ["", f"transformer: {t['sequences']} sequences x {t['positions']} positions = {t['rows']} rows of "
              f"{t['features']}, exact {t['exact']}, file {t['file_mib']:.1f} MiB in {t['chunks_written']} chunks of "
              f"{t['chunk_mib']:.0f} MiB, tracemalloc peak {t['tracemalloc_peak_mib']:.2f} MiB "
              f"({t['tracemalloc_peak_mib'] / t['chunk_mib']:.2f} chunks), {t['seconds']:.1f} s"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sparseae-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument("--work", default="/tmp/ecosystem")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    sp = Sparseae(a.sparseae_python, work)
    t0 = time.perf_counter()
    transformer = sp.worker("transformer", str(work))
    print(json.dumps({"transformer": transformer}), flush=True)
    exports = []
    for name, ds in data_sets(sp, work).items():
        exports += export_checks(sp, work, name, ds, a.epochs)
    imports = import_checks(sp, work, a.epochs)
    print(table(exports, imports, transformer))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"exports": exports, "imports": imports, "transformer": transformer},
                                           indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2:])
    else:
        main()
