"""Every family's defaults on data they were not tuned on, next to PCA and dictionary learning at equal L0.

A new user's run: only the family, k (TopK families), the width and the epochs are given; everything else
is the family's default (`sparseae train --dataset array --data X.npy --penalty FAMILY --hidden H --epochs E`).
Each data set is written to an .npy file (its last rows held out, as `--val-fraction` takes them) and trained
through `sparseae.train` exactly as the CLI would. Next to each model, on the same held-out rows:

- PCA at equal L0: the FVU of the first round(L0) principal components fitted on the training rows;
- dictionary learning at equal L0: scikit-learn's MiniBatchDictionaryLearning with as many atoms as the
  model has latents, encoded by OMP with round(L0) non-zeros (the sparse-coding reference).

The data sets:
(a) planted features (Sharkey, Braun & Millidge 2022): N true unit-norm features in d dimensions, each row a
    non-negative sum of ~A of them (Bernoulli with probability A/N) with magnitudes uniform in [lo, hi], plus
    Gaussian noise of std 0.01; MMCS (mean over the true features of their largest cosine with a decoder
    column) and the share recovered at cosine > 0.9. Variants: the base (d 64, N 512, A 5), other sizes
    (d 32, N 256, A 3; d 128, N 1024, A 8), wide magnitudes ([0.1, 10]), correlated features (features in
    groups of 4 that fire together half the time), the base scaled by 100 and shifted by 50 in every column;
(b) Tennessee Eastman normal operation (bibmon's d00.dat, 500 rows x 52 columns on very different scales;
    held out: d00_te.dat, 960 normal rows);
(c) UFLDL natural-image patches (dataset 'patches', 8x8, 10,000 + 2,000);
(d) scikit-learn's 8x8 digits (1,797 x 64; a quarter held out);
(e) an activation-like heavy-tailed set: d 128, 2,048 features with power-law frequencies (the most common
    fires on 30% of rows, p_i ~ i^-1.1), exponential magnitudes, and 4 large dense directions (std 3) added
    to every row; a fifth of the rows held out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/any_data.py                   # everything, 3 seeds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/any_data.py --sets planted --seeds 1 --families topk,l1

Prints one markdown table row per (data set, family): L0, FVU, PCA's FVU at that L0 and the ratio,
dictionary learning's FVU (and MMCS on the planted sets) at that L0, never-firing latents on the held-out
rows, and for the planted sets MMCS and the share recovered; means over the seeds (with the range).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sparseae
from sparseae import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.objective.metrics import evaluate, unit_firing_frequency

FAMILIES = ("topk", "batchtopk", "matryoshka", "l1", "jumprelu", "kl")
K_FAMILIES = ("topk", "batchtopk", "matryoshka")


# --- the data sets -------------------------------------------------------------------------------

def planted(seed: int, d: int = 64, n: int = 512, active: float = 5, lo: float = 0.0, hi: float = 1.0,
            correlated: bool = False, scale: float = 1.0, shift: float = 0.0, rows: int = 24000):
    """Rows that are sparse non-negative sums of `n` unit-norm features; returns (x, features n x d)."""
    g = np.random.default_rng(seed)
    f = g.standard_normal((n, d))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    on = g.random((rows, n)) < active / n
    if correlated:  # groups of 4 features: a group fires together half the time it fires at all
        groups = g.random((rows, n // 4)) < active / n
        together = g.random((rows, n // 4)) < 0.5
        on = np.where(np.repeat(together, 4, axis=1), np.repeat(groups, 4, axis=1), on)
    mags = g.uniform(lo, hi, (rows, n)) * on
    x = mags @ f + 0.01 * g.standard_normal((rows, d))
    return (x * scale + shift).astype(np.float32), f


PLANTED = {
    "planted d64 N512 A5": {},
    "planted d32 N256 A3": {"d": 32, "n": 256, "active": 3},
    "planted d128 N1024 A8": {"d": 128, "n": 1024, "active": 8},
    "planted wide magnitudes 0.1-10": {"lo": 0.1, "hi": 10.0},
    "planted correlated groups": {"correlated": True},
    "planted x100 + 50": {"scale": 100.0, "shift": 50.0},
}


def heavy_tailed(seed: int, d: int = 128, n: int = 2048, rows: int = 24000) -> np.ndarray:
    g = np.random.default_rng(seed)
    f = g.standard_normal((n, d))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    p = 0.3 * np.arange(1, n + 1) ** -1.1
    mags = g.exponential(1.0, (rows, n)) * (g.random((rows, n)) < p)
    dense = g.standard_normal((4, d))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    x = mags @ f + (3.0 * g.standard_normal((rows, 4))) @ dense + 0.01 * g.standard_normal((rows, d))
    return x.astype(np.float32)


def real_set(name: str, seed: int) -> tuple[np.ndarray, int]:
    """(rows, held-out row count at the end) of a real data set."""
    if name == "tennessee eastman (d00)":
        from sparseae.data import tennessee_eastman as te

        root = te.locate(None)
        return np.concatenate([te.load_normal(root), te.load_test(root, 0)]).astype(np.float32), 960
    if name == "patches 8x8":
        ds = sparseae.load_dataset("patches", seed=seed)
        return torch.cat([ds.train, ds.test]).numpy(), ds.test.shape[0]
    if name == "digits":
        from sklearn.datasets import load_digits

        x = load_digits().data.astype(np.float32)
        x = x[np.random.default_rng(seed).permutation(len(x))]
        return x, len(x) // 4  # 449 rows: a latent firing on 1 row in 100 fires on none of them 1% of the time
    if name == "heavy-tailed activations":
        x = heavy_tailed(seed, rows=ROWS[0])
        return x, int(len(x) * HEAVY_HELD_OUT)
    raise KeyError(name)


ROWS = [100000]
# hidden width and k (TopK families) per set. Tennessee Eastman's 52 columns carry 99.6% of their variance in 8
# principal directions: even the ideal signed principal code at k 8 uses 46 latents (--spectrum), so a wider
# code leaves latents that can never fire whatever the training (128: 50-70% never fired; docs/sparsity_families.md).
# Digits: 64 columns and 1,348 training rows: at 256 latents 5-16% of the latents never fired even on the training
# rows (TopK, BatchTopK, Matryoshka, then on 1,618 rows); 64, as many as the columns, leave at most 3%.
REAL = {"tennessee eastman (d00)": (32, 8), "patches 8x8": (256, 8), "digits": (64, 8),
        "heavy-tailed activations": (1024, 16)}
HEAVY_HELD_OUT = 0.2
"""The heavy-tailed set's held-out share. Its features fire on down to about 1 row in 15,000 (p_i = 0.3 i^-1.1,
i <= 2,048): the ideal code of 1,024 latents, one for each of the 1,024 most frequent features, would fire on none
of 4,000 held-out rows with 27% of its latents, of 20,000 (a fifth of the default 100,000) with 1.1% (mean of
(1 - p_i)^rows over i <= 1,024)."""


# --- references ----------------------------------------------------------------------------------

def pca_curve(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    mean = train.astype(np.float64).mean(0)
    _, _, vt = np.linalg.svd(train.astype(np.float64) - mean, full_matrices=False)
    t = test.astype(np.float64) - mean
    captured = np.concatenate([[0.0], np.cumsum(((t @ vt.T) ** 2).sum(0))])
    total = ((test - test.mean(0)) ** 2).sum()
    return ((t ** 2).sum() - captured) / total


def pca_at(curve: np.ndarray, l0: float) -> float:
    l0 = min(max(l0, 0.0), len(curve) - 1.0)
    lo = int(l0)
    hi = min(lo + 1, len(curve) - 1)
    return float((1 - (l0 - lo)) * curve[lo] + (l0 - lo) * curve[hi])


class Dictionary:
    """MiniBatchDictionaryLearning fitted once per (set, seed, width); OMP at any L0."""

    def __init__(self, train: np.ndarray, atoms: int, seed: int):
        from sklearn.decomposition import MiniBatchDictionaryLearning

        self.mean = train.mean(0)
        self.std = float(np.sqrt(((train - self.mean) ** 2).sum(1).mean() / train.shape[1])) or 1.0
        self.dl = MiniBatchDictionaryLearning(n_components=atoms, batch_size=256, max_iter=3, random_state=seed,
                                              transform_algorithm="omp")
        self.dl.fit((train[:20000] - self.mean) / self.std)

    def fvu(self, test: np.ndarray, l0: float) -> float:
        from sklearn.decomposition import sparse_encode

        k = max(1, int(round(l0)))
        k = min(k, test.shape[1])
        t = (test - self.mean) / self.std
        code = sparse_encode(t, self.dl.components_, algorithm="omp", n_nonzero_coefs=k)
        return float(((t - code @ self.dl.components_) ** 2).sum() / ((t - t.mean(0)) ** 2).sum())

    def columns(self) -> np.ndarray:
        return self.dl.components_


def mmcs(columns: np.ndarray, features: np.ndarray) -> tuple[float, float]:
    """(mean max cosine of each true feature with any column, share with max cosine > 0.9)."""
    c = columns / np.maximum(np.linalg.norm(columns, axis=1, keepdims=True), 1e-12)
    best = np.abs(features @ c.T).max(1)
    return float(best.mean()), float((best > 0.9).mean())


def decoder_columns(model) -> np.ndarray:
    """Decoder columns as rows (latents x d), in the raw input's directions: the input transform's
    gain is one number, so directions are unchanged."""
    return model.decoder_weights()[0].detach().double().numpy().T


def spectrum_report(name: str, train: np.ndarray, k: int) -> str:
    """How much of a set's variance lies in a few directions: the share of the training rows' variance in the
    k leading principal components, and how many signed principal directions (+v_i or -v_i) the ideal signed
    principal code uses, the one that keeps each row's k largest |coefficients| (the most a code started from
    them can use at k)."""
    centred = train.astype(np.float64) - train.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    coef = centred @ vt.T
    top = np.argsort(-np.abs(coef), axis=1)[:, :k]
    signs = np.take_along_axis(coef, top, axis=1) > 0
    used = len({(int(i), bool(p)) for i, p in zip(top.ravel(), signs.ravel())})
    share = float((s[:k] ** 2).sum() / (s ** 2).sum())
    return (f"{name}: {share:.4f} of the training rows' variance in {k} principal components; the signed top-{k} "
            f"principal code uses {used} signed directions, the last component used is #{int(top.max()) + 1}")


# --- one run -------------------------------------------------------------------------------------

def train_one(path: Path, val_fraction: float, family: str, hidden: int, k: int | None, epochs: int, seed: int,
              target_l0: float | None = None):
    """One run as the CLI would train it; `--lr`, `--auxk-coef` and `--extra` (LR[0], AUXK_COEF[0], EXTRA[0])
    replace the family's settings when given."""
    config = RunConfig(ModelConfig(hidden=[hidden], k=k if family in K_FAMILIES else None),
                       SparsityConfig(penalty=family, target_l0=target_l0,
                                      **({} if AUXK_COEF[0] is None else {"auxk_coef": AUXK_COEF[0]})),
                       TrainConfig(dataset="array", data=str(path), val_fraction=val_fraction, epochs=epochs,
                                   seed=seed, lr=LR[0]))
    for section, name, value in EXTRA[0]:
        setattr(getattr(config, section), name, value)
    t0 = time.perf_counter()
    try:
        result = sparseae.train(config, progress=False)
    except sparseae.SparseAEError as e:
        return {"error": str(e)}
    model = result.model
    val = torch.from_numpy(np.load(path)[-int(round(val_fraction * np.load(path, mmap_mode="r").shape[0])):])
    m = evaluate(model, val)
    return {"model": model, "l0": m["l0"], "fvu": m["fvu"], "dead": m["dead_fraction"],
            "seconds": time.perf_counter() - t0, "finite": math.isfinite(m["fvu"])}


def runs_for(name: str, families: list[str], k: int, planted_density: float | None) -> list[tuple[str, str, dict]]:
    """(label, family, extra settings) for a set: each family's defaults; l1 and jumprelu also with --l0."""
    out = [(f, f, {}) for f in families]
    target = planted_density if planted_density is not None else k
    out += [(f"{f} --l0 {target:g}", f, {"target_l0": target}) for f in families if f in ("l1", "jumprelu")]
    return [r for r in out if RUNS[0] is None or r[0] in RUNS[0]]


RUNS: list[list[str] | None] = [None]
LR: list[float | None] = [None]
AUXK_COEF: list[float | None] = [None]
WITH_DL = [True]
EXTRA: list[list[tuple[str, str, object]]] = [[]]  # (config section, field, value) from --extra, for every run


def extra_settings(text: str) -> list[tuple[str, str, object]]:
    """`sparseae train` flags (e.g. '--jumprelu-tanh 0 --recon fvu') as (section, field, value), parsed as the
    command line parses them."""
    import shlex

    from sparseae.cli.args import CONFIG_FLAGS, add, dest

    p = argparse.ArgumentParser(prog="--extra")
    add(p, *CONFIG_FLAGS)
    args = p.parse_args(shlex.split(text))
    return [(section, name, getattr(args, dest(flag))) for flag, (section, name, _) in CONFIG_FLAGS.items()
            if getattr(args, dest(flag)) is not None]


def measure_set(name: str, x: np.ndarray, held: int, hidden: int, k: int, families: list[str], epochs: int,
                seed: int, folder: Path, features: np.ndarray | None = None, density: float | None = None):
    path = folder / f"{abs(hash((name, seed)))}.npy"
    np.save(path, x)
    val_fraction = held / x.shape[0]
    held = int(round(val_fraction * x.shape[0]))  # as the array loader takes them
    train, test = x[:-held], x[-held:]
    curve = pca_curve(train, test)
    t0 = time.perf_counter()
    dictionary = Dictionary(train, hidden, seed) if WITH_DL[0] else None
    dl_seconds = time.perf_counter() - t0
    rows = []
    for label, family, extra in runs_for(name, families, k, density):
        r = train_one(path, val_fraction, family, hidden, k, epochs, seed, **extra)
        if "error" in r:
            rows.append({"set": name, "run": label, "error": r["error"]})
            print(f"  {name} | {label}: {r['error']}", file=sys.stderr, flush=True)
            continue
        row = {"set": name, "run": label, "l0": r["l0"], "fvu": r["fvu"], "dead": r["dead"],
               "pca": pca_at(curve, r["l0"]), "dl": dictionary.fvu(test, r["l0"]) if dictionary else None,
               "seconds": r["seconds"],
               "finite": r["finite"]}
        if features is not None:
            row["mmcs"], row["recovered"] = mmcs(decoder_columns(r["model"]), features)
            row["dl_mmcs"] = mmcs(dictionary.columns(), features)[0] if dictionary else None
        rows.append(row)
        on_train, expected = sample_floor(r["model"], train, held)
        print(f"  {name} | {label}: L0 {row['l0']:.1f} FVU {row['fvu']:.4f} PCA {row['pca']:.4f} "
              f"DL {row['dl'] or float('nan'):.4f} dead {row['dead']:.3f} (on the training rows {on_train:.3f}, "
              f"expected on {held} rows from the training rows' firing shares {expected:.3f})"
              + (f" MMCS {row['mmcs']:.3f} rec {row['recovered']:.2f} DL-MMCS {row['dl_mmcs'] or float('nan'):.3f}"
                 if features is not None else "") + f" ({row['seconds']:.1f} s; DL fit {dl_seconds:.1f} s)",
              file=sys.stderr, flush=True)
    path.unlink()
    return rows


def sample_floor(model, train: np.ndarray, held: int) -> tuple[float, float]:
    """(share of latents that never fire on the first 65,536 training rows, the share expected to fire on none
    of `held` rows if each latent fires on each row independently at its training-rows share p: mean (1 - p)^held).
    The second is what the held-out never-firing share measures of the sample alone: with 256 latents at k 8,
    a latent firing on 1 row in 300 fires on none of 180 rows more often than not."""
    p = unit_firing_frequency(model, torch.from_numpy(train[:65536])).double()
    return float((p == 0).double().mean()), float((1 - p).pow(held).mean())


# --- the table -----------------------------------------------------------------------------------

def summarise(rows: list[dict]) -> list[str]:
    def ratio(ok):
        # PCA with round(L0) components leaving under 0.1% of the variance: no sparse code is below it
        if any(r["pca"] < 1e-3 for r in ok):
            return "PCA ~0"
        return agg([r["fvu"] / r["pca"] for r in ok])

    def agg(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "-"
        m = sum(vals) / len(vals)
        return f"{m:.3f}" if len(vals) == 1 else f"{m:.3f} ({min(vals):.3f}-{max(vals):.3f})"

    lines = ["| data set | run | L0 | FVU | PCA FVU at L0 | FVU / PCA | dict. learning FVU at L0 | never fire | "
             "MMCS | recovered > 0.9 | dict. learning MMCS |", "|" + "---|" * 11]
    keys = list(dict.fromkeys((r["set"], r["run"]) for r in rows))
    for s, run in keys:
        group = [r for r in rows if r["set"] == s and r["run"] == run]
        ok = [r for r in group if "error" not in r]
        if not ok:
            lines.append(f"| {s} | {run} | error: {group[0]['error']} |")
            continue
        lines.append("| " + " | ".join([
            s, run, agg([r["l0"] for r in ok]), agg([r["fvu"] for r in ok]), agg([r["pca"] for r in ok]),
            ratio(ok), agg([r["dl"] for r in ok]),
            agg([r["dead"] for r in ok]), agg([r.get("mmcs") for r in ok]), agg([r.get("recovered") for r in ok]),
            agg([r.get("dl_mmcs") for r in ok])]) + " |" + (f" {len(group) - len(ok)} failed" if len(ok) < len(group)
                                                            else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default="planted,real", help="planted, real, or data set names, comma-separated")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rows", type=int, default=100000, help="rows of the planted and heavy-tailed sets")
    p.add_argument("--runs", default=None, help="only these runs, e.g. 'topk,l1 --l0 5'")
    p.add_argument("--no-dl", action="store_true", help="leave out dictionary learning (its fit is the slow part)")
    p.add_argument("--lr", type=float, default=None, help="one learning rate for every run (default: each family's)")
    p.add_argument("--auxk-coef", type=float, default=None, help="AuxK's weight for every run (default: 1/8)")
    p.add_argument("--extra", default="",
                   help="`sparseae train` flags applied to every run, e.g. \"--jumprelu-tanh 0 --recon fvu\" "
                        "(they replace the family's defaults)")
    p.add_argument("--fashion-spread", action="store_true",
                   help="only print FashionMNIST's spread, the scale model.input_scale rescales other data to")
    p.add_argument("--spectrum", action="store_true",
                   help="only print each set's variance share in k principal components (seed 0; training rows)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.fashion_spread:
        x = sparseae.load_dataset("fashion-mnist").train.double()
        rms = float(((x - x.mean(0)).pow(2).sum(1).mean() / x.shape[1]).sqrt())
        print(f"FashionMNIST training images: root mean squared distance of a pixel to its mean {rms:.4f}")
        return 0
    families = args.families.split(",")
    wanted = args.sets.split(",")
    names = [n for n in PLANTED if "planted" in wanted or n in wanted]
    names += [n for n in REAL if "real" in wanted or n in wanted]
    ROWS[0] = args.rows
    WITH_DL[0] = not args.no_dl
    LR[0] = args.lr
    AUXK_COEF[0] = args.auxk_coef
    EXTRA[0] = extra_settings(args.extra)
    RUNS[0] = None if args.runs is None else args.runs.split(",")
    if args.spectrum:
        for name in names:
            if name in PLANTED:
                spec = PLANTED[name]
                x, held, k = planted(0, rows=args.rows, **spec)[0], 4000, max(1, round(spec.get("active", 5)))
            else:
                (x, held), k = real_set(name, 0), REAL[name][1]
            print(spectrum_report(name, x[:-held], k))
        return 0
    rows: list[dict] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="any_data-") as tmp:
        for seed in range(args.seeds):
            for name in names:
                if name in PLANTED:
                    spec = PLANTED[name]
                    x, f = planted(seed, rows=args.rows, **spec)
                    n = spec.get("n", 512)
                    rows += measure_set(name, x, 4000, n, max(1, round(spec.get("active", 5))), families,
                                        args.epochs, seed, Path(tmp), f, spec.get("active", 5))
                else:
                    x, held = real_set(name, seed)
                    hidden, k = REAL[name]
                    rows += measure_set(name, x, held, hidden, k, families, args.epochs, seed, Path(tmp))
    print(f"{args.seeds} seed(s), {args.epochs} epochs, {time.perf_counter() - t0:.0f} s, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("\n".join(summarise(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
