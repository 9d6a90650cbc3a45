"""The encoder gap: how far a TopK SAE's one-matrix code sits from the best sparse code of its dictionary.

    OMP_NUM_THREADS=1 python benchmarks/encoder_gap.py planted [--rows 200000] [--k 5,8] [--sklearn]
    OMP_NUM_THREADS=1 python benchmarks/encoder_gap.py fashion [--k 32] [--sklearn-rows 7680]
    OMP_NUM_THREADS=1 python benchmarks/encoder_gap.py steps [--k 32] [--rows 20000]

`planted` generates its own data (seeds 0 and 1, nothing read from disk): 512 true unit-norm features
in 64 dimensions (Gaussian directions, normalised), each row a sum of the features that are on (each
independently with probability 5/512, so ~5 per row) with magnitudes uniform on [0, 1], plus Gaussian
noise of std 0.01; `--rows` training rows, 10,000 held-out rows. Because the truth is known, two
limits are printed: the oracle (least squares on the k true features with the largest true
coefficients of each row) and MMCS (mean over true features of the best cosine with a decoder column).
`fashion` uses FashionMNIST's 60,000 training and 10,000 test images (raw pixels, each method fits
its own centring).

Codes compared at equal L0 = k on held-out rows (FVU = sum ||x - x_hat||^2 / sum ||x - mean||^2):
- PCA with k components (the simplest baseline);
- sparseae `--penalty topk --k K --hidden N` (its defaults), its own code (`encode()`), and the same
  model's dictionary coded by OMP and MP (`encode(method="omp"|"mp")`, model/pursuit.py);
- sparseae `--penalty mp` (MP-SAE: matching pursuit in the forward pass);
- scikit-learn MiniBatchDictionaryLearning (N atoms, one pass over `--sklearn-rows` rows) + OMP at k
  non-zeros (`--sklearn`; slow to encode);
- the oracle (planted only).
`steps` times one training step (forward, backward; batch 256, 784 inputs, 1024 latents) of the TopK
and the MP family, interleaved in rounds so that a change of load hits both alike, the median of each;
then whole `sparseae.train` runs (1 epoch on the first `--rows` FashionMNIST training images, validation
on the test split included) in the order TopK, MP, MP, TopK.
Training seconds and encode microseconds per held-out row are measured in this one process, one
thread (set OMP_NUM_THREADS=1; torch.set_num_threads(1) is called too). Output: one JSON line per
result, then a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

import sparseae
from sparseae import families
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.data import Dataset


def planted(rows: int, seed: int, features: np.ndarray, p_on: float = 5 / 512, noise: float = 0.01):
    """(rows x d data, rows x N true coefficients) drawn with `seed`."""
    rng = np.random.default_rng(seed)
    n = features.shape[0]
    coef = (rng.random((rows, n)) < p_on) * rng.random((rows, n))
    x = coef @ features + noise * rng.standard_normal((rows, features.shape[1]))
    return x.astype(np.float32), coef.astype(np.float32)


def true_features(n: int = 512, d: int = 64, seed: int = 0) -> np.ndarray:
    f = np.random.default_rng(seed + 1000).standard_normal((n, d))
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def oracle_fvu(x: np.ndarray, coef: np.ndarray, features: np.ndarray, k: int) -> float:
    """Least squares of each row on the features of its k largest true coefficients."""
    idx = np.argsort(-coef, axis=1)[:, :k]
    x_hat = np.zeros_like(x)
    for i in range(x.shape[0]):
        s = idx[i][coef[i, idx[i]] > 0]
        if len(s):
            a = features[s].T
            x_hat[i] = a @ np.linalg.lstsq(a, x[i], rcond=None)[0]
    return fvu(x, x_hat)


def mmcs(decoder: np.ndarray, features: np.ndarray) -> float:
    """Mean over true features of the largest cosine with a (d x N) decoder's columns."""
    cols = decoder / np.linalg.norm(decoder, axis=0, keepdims=True).clip(1e-12)
    return float((features @ cols).max(axis=1).mean())


def pca_fvu(train: np.ndarray, test: np.ndarray, k: int) -> float:
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train[:50000] - mean, full_matrices=False)
    v = vt[:k].T
    return fvu(test, (test - mean) @ v @ v.T + mean)


def train_sae(train: np.ndarray, test: np.ndarray, penalty: str, k: int, hidden: int, epochs: int):
    config = RunConfig(ModelConfig(hidden=[hidden], k=k), SparsityConfig(penalty=penalty),
                       TrainConfig(epochs=epochs, seed=0))
    data = Dataset(torch.from_numpy(train), torch.from_numpy(test))
    start = time.perf_counter()
    result = sparseae.train(config, dataset=data, progress=False)
    return result.model.eval(), time.perf_counter() - start


def sae_rows(name: str, model, test: np.ndarray, methods, seconds: float, features=None):
    """One result per encode method of a trained model: FVU, L0, encode time per row."""
    x = torch.from_numpy(test)
    weight = model.dictionary()[0].detach().numpy()
    out = []
    for method in methods:
        with torch.no_grad():
            start = time.perf_counter()
            code = model.encode(x, method=method)
            per_row = (time.perf_counter() - start) / len(test)
            x_hat = model.input_transform.inverse_transform(model.decode(code)).numpy()
        out.append({"code": f"{name}, encode {method}", "fvu": fvu(test, x_hat),
                    "l0": float((code != 0).sum(1).float().mean()), "encode_us_per_row": per_row * 1e6,
                    "train_s": seconds, "mmcs": None if features is None else mmcs(weight, features)})
    return out


def sklearn_rows(train: np.ndarray, test: np.ndarray, k: int, atoms: int, rows: int, features=None):
    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.linear_model import orthogonal_mp_gram

    mean = train.mean(0)
    start = time.perf_counter()
    dl = MiniBatchDictionaryLearning(n_components=atoms, batch_size=256, max_iter=1, transform_algorithm="omp",
                                     transform_n_nonzero_coefs=k, random_state=0, n_jobs=1)
    dl.fit(train[:rows] - mean)
    seconds = time.perf_counter() - start
    d = dl.components_.astype(np.float64)
    start = time.perf_counter()
    y = (test - mean).astype(np.float64)
    code = orthogonal_mp_gram(d @ d.T, d @ y.T, n_nonzero_coefs=k).T
    per_row = (time.perf_counter() - start) / len(test)
    return [{"code": f"scikit-learn dictionary learning ({rows} rows) + OMP", "fvu": fvu(test, code @ d + mean),
             "l0": float((code != 0).sum(1).mean()), "encode_us_per_row": per_row * 1e6, "train_s": seconds,
             "mmcs": None if features is None else mmcs(d.T, features)}]


def methods_for(k: int):
    return [families.TOPK, "omp", families.MP]


def run_k(train, test, k, hidden, epochs, args, features=None, coef=None) -> list[dict]:
    rows = [{"code": "PCA", "fvu": pca_fvu(train, test, k), "l0": k}]
    model, seconds = train_sae(train, test, families.TOPK, k, hidden, epochs)
    rows += sae_rows(f"sparseae topk {epochs} ep", model, test, methods_for(k), seconds, features)
    model, seconds = train_sae(train, test, families.MP, k, hidden, epochs)
    rows += sae_rows(f"sparseae mp {epochs} ep", model, test, [families.TOPK, "omp"], seconds, features)
    if args.sklearn:
        rows += sklearn_rows(train, test, k, hidden, args.sklearn_rows, features)
    if coef is not None:
        rows.append({"code": "oracle (k largest true coefficients, least squares)",
                     "fvu": oracle_fvu(test, coef, features, k), "l0": k, "mmcs": 1.0})
    for row in rows:
        row["k"] = k
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| k | code | FVU | L0 | FVU / PCA | MMCS | train s | encode us/row |",
             "|---|---|---|---|---|---|---|---|"]
    pca = {r["k"]: r["fvu"] for r in rows if r["code"] == "PCA"}

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in rows:
        lines.append(f"| {r['k']} | {r['code']} | {r['fvu']:.4f} | {r['l0']:.1f} | {r['fvu'] / pca[r['k']]:.3f} | "
                     f"{f(r.get('mmcs'), '.3f')} | {f(r.get('train_s'), '.0f')} | "
                     f"{f(r.get('encode_us_per_row'), '.1f')} |")
    return "\n".join(lines)


def step_times(k: int, rounds: int = 8, steps: int = 5) -> list[dict]:
    from sparseae.config import resolve
    from sparseae.model import SparseAutoencoder

    models = {}
    for penalty in (families.TOPK, families.MP):
        config = resolve(RunConfig(ModelConfig(input_dim=784, hidden=[1024], k=k), SparsityConfig(penalty=penalty)))
        models[penalty] = SparseAutoencoder(config.model)
    x = torch.rand(256, 784, generator=torch.Generator().manual_seed(0))
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                out = model(x)
                (out.recon - out.target).pow(2).mean().backward()
                model.zero_grad()
            times[name].append((time.perf_counter() - start) / steps)
    rows = [{"family": name, "k": k, "ms_per_step": 1e3 * float(np.median(v))} for name, v in times.items()]
    for row in rows:
        row["ratio_to_topk"] = row["ms_per_step"] / rows[0]["ms_per_step"]
        print(json.dumps(row))
    return rows


def train_times(k: int, rows: int) -> None:
    data = sparseae.load_dataset("fashion-mnist")
    train, test = data.train[:rows].numpy(), data.test.numpy()
    seconds = {families.TOPK: [], families.MP: []}
    for penalty in (families.TOPK, families.MP, families.MP, families.TOPK):
        seconds[penalty].append(train_sae(train, test, penalty, k, 1024, 1)[1])
    ratio = sum(seconds[families.MP]) / sum(seconds[families.TOPK])
    print(json.dumps({"train_rows": rows, "epochs": 1, "seconds": seconds, "mp_over_topk": ratio}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", choices=["planted", "fashion", "steps"])
    p.add_argument("--rows", type=int, default=200000, help="planted: training rows")
    p.add_argument("--k", default=None, help="comma-separated L0 values (planted: 5,8; fashion: 32)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--sklearn", action="store_true", help="add dictionary learning + OMP")
    p.add_argument("--sklearn-rows", type=int, default=50000, help="rows dictionary learning sees (one pass)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    if args.data == "steps":
        step_times(int(args.k or 32))
        train_times(int(args.k or 32), args.rows)
        return 0
    if args.data == "planted":
        features = true_features()
        train, _ = planted(args.rows, 0, features)
        test, coef = planted(10000, 1, features)
        for k in [int(v) for v in (args.k or "5,8").split(",")]:
            rows += run_k(train, test, k, 512, args.epochs, args, features, coef)
    else:
        data = sparseae.load_dataset("fashion-mnist")
        train, test = data.train.numpy(), data.test.numpy()
        for k in [int(v) for v in (args.k or "32").split(",")]:
            rows += run_k(train, test, k, 1024, args.epochs, args)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
