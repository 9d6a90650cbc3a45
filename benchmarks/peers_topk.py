"""sparseae's default TopK recipe against the peer libraries, on one identical tensor.

    OMP_NUM_THREADS=1 python benchmarks/peers_topk.py --peers-python /tmp/peers-venv/bin/python \
        --peers sparsify-adam --rounds 3

The headline is the command a user runs, `sparseae train --penalty topk --k 32 --hidden 1024 --epochs 5`,
timed as a whole process by the wall clock (start-up, data, training, validation, every file of its
run folder; `sparseae-command`); the next row is the same training through the Python API in a worker
process (`sparseae`, the loop alone, timed like the peers). Every library runs once per round, the
order reversed every other round; the table gives each one's median over the rounds.

Every library trains a TopK sparse autoencoder on the same centred FashionMNIST tensor (the 60,000
training images minus their mean; the test images minus the same mean), with the same width, k,
epochs and batch, on one CPU thread, each with its own recommended training step:

- sparseae: `sparseae train --penalty topk --k K --hidden N --epochs E` and nothing else (its defaults);
- EleutherAI sparsify (eai-sparsify): `SparseCoder` with the step of its `Trainer` (its Trainer wants a
  language model): loss FVU, gradient parallel to the decoder directions removed, decoder renormalised,
  b_dec at the first batch's mean; `sparsify` with the Trainer's default optimizer (sign SGD under a
  schedule-free wrapper, lr 5e-3 / sqrt(latents / 2^14): 0.02 at 1024 latents, too large for this
  width), `sparsify-adam` with its `optimizer adam` setting (Adam 2e-4 / sqrt(latents / 2^14), linear
  warm-up and decay);
- SAELens (sae-lens): `TopKTrainingSAE` trained by its `SAETrainer` from an iterator of batches;
- overcomplete: `TopKSAE` trained by its `train_sae` with its top-k auxiliary loss.

Each run is a subprocess with OMP_NUM_THREADS=1; the libraries are alternated within each round (the
order reversed every other round), so a change of load hits them alike. Printed per run and as a
Markdown table: test FVU, L0, the share of latents that never fire on the test split, seconds (the
command: its whole process; every other row: from building the model and optimizer to the trained
model, sparseae's per-epoch validation on the 10,000 test images included, the peers validate
nothing; each worker imports torch._dynamo, which the first optimizer of a process needs, before its
clock starts, the command within its own), and FVU and time relative to the command; then the
medians per library, with the time relative to sparsify's Adam step.
`--sklearn` adds scikit-learn's MiniBatchDictionaryLearning + OMP at k non-zeros, the sparse-coding
reference (slow to encode).

The peers are not dependencies of sparseae: they live in their own virtual environment
(benchmarks/requirements-peers.txt; see benchmarks/README.md). This file only needs numpy and torch
in both interpreters; sparseae's worker runs under the interpreter that runs this script.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEERS = ("sparsify", "sparsify-adam", "sae-lens", "overcomplete")


# --- the workers: one library, one run, one JSON line -----------------------------------------------

def _metrics(encode, decode, test) -> dict:
    """Test FVU, L0 and never-firing share of a trained model given as encode/decode functions."""
    import torch

    sq, l0, fired = 0.0, 0.0, None
    with torch.no_grad():
        for i in range(0, test.shape[0], 2048):
            xb = test[i:i + 2048]
            code = encode(xb)
            rec = decode(code)
            sq += (rec - xb).pow(2).sum().item()
            l0 += (code != 0).sum().item()
            f = (code != 0).any(0)
            fired = f if fired is None else fired | f
    var = (test - test.mean(0)).pow(2).sum().item()
    return {"fvu": sq / var, "l0": l0 / test.shape[0], "dead": 1 - fired.float().mean().item()}


def worker_sparseae(train, test, a) -> dict:
    from sparseae.cli.args import training_config
    from sparseae.data import Dataset
    from sparseae.training import train as fit

    config = training_config(["--penalty", "topk", "--k", str(a.k), "--hidden", str(a.latents), "--epochs",
                              str(a.epochs), "--batch-size", str(a.batch), "--device", "cpu", "--seed", str(a.seed)])
    t0 = time.perf_counter()
    result = fit(config, dataset=Dataset(train, test), progress=False)
    seconds = time.perf_counter() - t0
    model = result.model.eval()
    # the code of the forward pass (k units), not encode()'s features (encode_alpha * k units)
    return {"seconds": seconds, **_metrics(lambda x: model.encode_all(x)[-1], model.decode, test)}


def sparsify_steps(sae, opt, batches, after_step=None) -> None:
    """sparsify's own training step (SparseCoder: unit-norm decoder, FVU loss, parallel gradient removed) on
    each of `batches`, b_dec started at the first batch's mean (also benchmarks/ecosystem_compat.py's)."""
    for step, xb in enumerate(batches):
        if step == 0:
            sae.b_dec.data = xb.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        sae(xb).fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        if after_step is not None:
            after_step()


def _sparsify_epochs(sae, opt, train, a, after_step=None) -> None:
    """sparsify_steps over `a.epochs` shuffled epochs of `train`."""
    import torch

    g = torch.Generator().manual_seed(a.seed)

    def batches():
        for _ in range(a.epochs):
            order = torch.randperm(train.shape[0], generator=g)
            for i in range(0, train.shape[0], a.batch):
                yield train[order[i:i + a.batch]]

    sparsify_steps(sae, opt, batches(), after_step)


def _sparsify_metrics(sae, test, a) -> dict:
    """Test metrics of a trained SparseCoder: its TopK code scattered to dense rows, decoded by W_dec."""
    import torch

    def encode(x):
        enc = sae.encode(x)
        return torch.zeros(x.shape[0], a.latents).scatter(1, enc.top_indices, enc.top_acts)

    return _metrics(encode, lambda c: c @ sae.W_dec + sae.b_dec, test)


def worker_sparsify(train, test, a) -> dict:
    """sparsify's Trainer step, spelled out (its Trainer wants a language model): b_dec at the first
    batch's mean, loss = FVU (auxk_alpha 0 by default), gradient parallel to the decoder directions
    removed, its default optimizer (sign SGD under a schedule-free wrapper, momentum 0.95, lr
    5e-3 / sqrt(latents / 2^14)), decoder renormalised before each forward pass."""
    import torch
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    t0 = time.perf_counter()
    sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=a.latents, k=a.k), "cpu",
                      dtype=torch.float32)
    opt = ScheduleFreeWrapper(SignSGD([{"params": sae.parameters(),
                                        "lr": 5e-3 / (a.latents / 2 ** 14) ** 0.5}]), momentum=0.95)
    opt.train()
    _sparsify_epochs(sae, opt, train, a)
    opt.eval()  # schedule-free: the averaged weights
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, **_sparsify_metrics(sae, test, a)}


def worker_sparsify_adam(train, test, a) -> dict:
    """sparsify's Trainer with its `optimizer adam` setting: Adam at 2e-4 / sqrt(latents / 2^14), a linear
    warm-up over min(1000, all) steps then a linear decay to 0 (its schedule), the same step otherwise."""
    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    t0 = time.perf_counter()
    sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=a.latents, k=a.k), "cpu",
                      dtype=torch.float32)
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (a.latents / 2 ** 14) ** 0.5)
    total = a.epochs * -(-train.shape[0] // a.batch)
    warm = min(1000, total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    _sparsify_epochs(sae, opt, train, a, sched.step)
    sae.set_decoder_norm_to_unit_norm()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, **_sparsify_metrics(sae, test, a)}


def worker_sae_lens(train, test, a) -> dict:
    """SAELens: TopKTrainingSAE with its defaults, trained by SAETrainer (its defaults: Adam lr 3e-4)
    from an iterator of batches."""
    import torch
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    t0 = time.perf_counter()
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=train.shape[1], d_sae=a.latents, k=a.k, device="cpu"))
    g = torch.Generator().manual_seed(a.seed)

    def batches():
        while True:
            order = torch.randperm(train.shape[0], generator=g)
            for i in range(0, train.shape[0] - a.batch + 1, a.batch):
                yield train[order[i:i + a.batch]]

    cfg = SAETrainerConfig(total_training_samples=a.epochs * train.shape[0], train_batch_size_samples=a.batch,
                           device="cpu", lr_end=SAETrainerConfig.lr)  # constant: lr_end is set by its runner
    SAETrainer(cfg, sae, batches()).fit()
    seconds = time.perf_counter() - t0
    sae.eval()
    return {"seconds": seconds, **_metrics(sae.encode, sae.decode, test)}


def worker_overcomplete(train, test, a) -> dict:
    """overcomplete: TopKSAE trained by its train_sae with the README's step (Adam 5e-4, MSE, gradient
    clipping 1.0) and the top-k auxiliary loss it ships (penalty 0.1)."""
    import types

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    # overcomplete/__init__ imports its vision models, which import torchvision; this comparison needs
    # neither (and torchvision's CUDA build is uninstalled from the peers' environment)
    stub = types.ModuleType("torchvision")
    stub.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.setdefault("torchvision", stub)
    sys.modules.setdefault("torchvision.transforms", stub.transforms)
    import matplotlib
    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):  # removed in matplotlib 3.9; overcomplete 0.3.0 still calls it
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    from overcomplete.sae import TopKSAE, train_sae
    from overcomplete.sae.losses import top_k_auxiliary_loss

    t0 = time.perf_counter()
    sae = TopKSAE(train.shape[1], nb_concepts=a.latents, top_k=a.k, device="cpu")
    loader = DataLoader(TensorDataset(train), batch_size=a.batch, shuffle=True,
                        generator=torch.Generator().manual_seed(a.seed))
    opt = torch.optim.Adam(sae.parameters(), lr=5e-4)
    train_sae(sae, loader, top_k_auxiliary_loss, opt, nb_epochs=a.epochs, monitoring=0, device="cpu")
    seconds = time.perf_counter() - t0
    sae.eval()
    return {"seconds": seconds, **_metrics(lambda x: sae.encode(x)[1], sae.decode, test)}


def worker_sklearn(train, test, a) -> dict:
    import torch
    from sklearn.decomposition import MiniBatchDictionaryLearning

    t0 = time.perf_counter()
    dl = MiniBatchDictionaryLearning(n_components=a.latents, batch_size=a.batch, max_iter=1,
                                     transform_algorithm="omp", transform_n_nonzero_coefs=a.k,
                                     fit_algorithm="cd", random_state=a.seed)
    dl.fit(train[:a.sklearn_rows].numpy())
    seconds = time.perf_counter() - t0
    atoms = torch.from_numpy(dl.components_).float()
    return {"seconds": seconds, **_metrics(lambda x: torch.from_numpy(dl.transform(x.numpy())).float(),
                                           lambda c: c @ atoms, test)}


WORKERS = {"sparseae": worker_sparseae, "sparsify": worker_sparsify, "sparsify-adam": worker_sparsify_adam,
           "sae-lens": worker_sae_lens,
           "overcomplete": worker_overcomplete, "sklearn": worker_sklearn}


def run_worker(a) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    data = np.load(a.data)
    train, test = torch.from_numpy(data["train"]), torch.from_numpy(data["test"])
    # Every timing runs from building the model and optimizer to the trained model. The first optimizer
    # a process builds imports torch._dynamo (about 1.3 s here), once per process whatever the library:
    # that happens here, outside the timings.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    result = WORKERS[a.worker](train, test, a)
    print(json.dumps({"library": a.worker, **result, "load": os.getloadavg()[0]}))


# --- the driver -----------------------------------------------------------------------------------

def centred_fashion_mnist(path: Path) -> None:
    from sparseae.data import load_dataset

    d = load_dataset("fashion-mnist")
    mean = d.train.mean(0)
    np.savez(path, train=(d.train - mean).numpy(), test=(d.test - mean).numpy())


def version(python: str, library: str) -> str:
    dist = {"sparsify": "eai-sparsify", "sparsify-adam": "eai-sparsify", "sklearn": "scikit-learn"}.get(library,
                                                                                                       library)
    code = f"import importlib.metadata as m; print(m.version('{dist}'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers-python", help="interpreter of the peers' virtual environment")
    p.add_argument("--peers", default=",".join(PEERS), help="which peers (default: %(default)s)")
    p.add_argument("--latents", type=int, default=1024)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="runs of each library, alternated (default: 1)")
    p.add_argument("--sklearn", action="store_true", help="also the dictionary-learning + OMP reference")
    p.add_argument("--sklearn-rows", type=int, default=7680, help="training rows of the reference")
    p.add_argument("--json", help="also write every run as JSON lines to this file")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return run_worker(a)

    tmp = Path(tempfile.mkdtemp(prefix="peers_topk_"))
    data = tmp / "fashion_mnist_centred.npz"
    centred_fashion_mnist(data)
    libraries = ["sparseae-command", "sparseae"] + ([x for x in a.peers.split(",") if x] if a.peers_python else [])
    python = {lib: a.peers_python if lib in PEERS else sys.executable for lib in libraries}
    if a.sklearn:
        python["sklearn"] = a.peers_python or sys.executable
    common = ["--latents", str(a.latents), "--k", str(a.k), "--epochs", str(a.epochs), "--batch", str(a.batch),
              "--seed", str(a.seed), "--sklearn-rows", str(a.sklearn_rows), "--data", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = []
    for r in range(a.rounds):
        order = libraries if r % 2 == 0 else libraries[::-1]
        if a.sklearn and r == 0:
            order = order + ["sklearn"]
        for lib in order:
            if lib == "sparseae-command":
                run = run_command(a, env, tmp / f"run-{r + 1}")
            else:
                run = run_library(lib, python[lib], common, env)
            if run is not None:
                runs.append({**run, "round": r + 1})
                print(json.dumps(runs[-1]), flush=True)
    if a.json:
        Path(a.json).write_text("".join(json.dumps(r) + "\n" for r in runs))
    print(table(runs, python, a))
    print()
    print(medians(runs, python, a))


def command(a, out: Path) -> list[str]:
    """`sparseae train` with the settings of this comparison (defaults left out, as a user types it)."""
    args = [str(Path(sys.executable).with_name("sparseae")), "train", "--penalty", "topk", "--k", str(a.k),
            "--hidden", str(a.latents), "--epochs", str(a.epochs)]
    if a.batch != 256:
        args += ["--batch-size", str(a.batch)]
    if a.seed != 0:
        args += ["--seed", str(a.seed)]
    return args + ["--out", str(out), "--quiet"]


def run_command(a, env: dict, out: Path) -> dict | None:
    """The whole `sparseae train` process by the wall clock; test FVU, L0 and never-firing units from
    its summary.json (its validation split is the 10,000 test images)."""
    t0 = time.perf_counter()
    proc = subprocess.run(command(a, out), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"sparseae-command: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    s = json.loads((out / "summary.json").read_text())
    return {"library": "sparseae-command", "seconds": seconds, "fvu": s["val_fvu"], "l0": s["l0"],
            "dead": s["never_fired_fraction"], "load": os.getloadavg()[0]}


def run_library(lib: str, python: str, common: list[str], env: dict) -> dict | None:
    out = subprocess.run([python, __file__, "--worker", lib, *common], capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"{lib}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def medians(runs: list[dict], python: dict, a) -> str:
    """One row per library: the median seconds over the rounds, and its ratio to sparsify's Adam step."""
    libs = list(dict.fromkeys(r["library"] for r in runs))
    med = {lib: statistics.median(r["seconds"] for r in runs if r["library"] == lib) for lib in libs}
    ref = med.get("sparsify-adam")
    lines = ["| library | runs | median seconds | / sparsify-adam | test FVU | never fire | load avg |",
             "|---|---|---|---|---|---|---|"]
    for lib in libs:
        rs = [r for r in runs if r["library"] == lib]
        ratio = f"{med[lib] / ref:.2f}" if ref else "-"
        lines.append(f"| {lib} | {len(rs)} | {med[lib]:.1f} | {ratio} | {statistics.median(r['fvu'] for r in rs):.4f} "
                     f"| {100 * statistics.median(r['dead'] for r in rs):.1f}% | "
                     f"{min(r['load'] for r in rs):.1f}-{max(r['load'] for r in rs):.1f} |")
    return "\n".join(lines)


def table(runs: list[dict], python: dict, a) -> str:
    base = [r for r in runs if r["library"] == "sparseae-command"] or [r for r in runs if r["library"] == "sparseae"]
    fvu0 = sum(r["fvu"] for r in base) / len(base) if base else float("nan")
    sec0 = sum(r["seconds"] for r in base) / len(base) if base else float("nan")
    lines = [f"{a.latents} latents, k {a.k}, {a.epochs} epochs, batch {a.batch}, one thread, centred FashionMNIST "
             "(test split)", "",
             "| library | version | round | test FVU | L0 | never fire | seconds | FVU / sparseae | time / sparseae "
             "| load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    versions = {}
    for r in runs:
        lib = r["library"]
        if lib not in versions:
            versions[lib] = "(this tree)" if lib.startswith("sparseae") else version(python[lib], lib)
        lines.append(f"| {lib} | {versions[lib]} | {r['round']} | {r['fvu']:.4f} | {r['l0']:.1f} | "
                     f"{100 * r['dead']:.1f}% | {r['seconds']:.1f} | {r['fvu'] / fvu0:.3f} | "
                     f"{r['seconds'] / sec0:.2f} | {r['load']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
