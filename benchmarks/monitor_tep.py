"""Tennessee Eastman: the sparse autoencoder's monitor next to the best classical monitor (PCA and
dynamic PCA at their best number of components), every choice made on the training fault runs
(docs/monitoring.md).

Protocol, every model alike (the library's Monitor, as `sparseae monitor` uses it):
- fit on d00.dat (500 normal rows, all of them: `--holdout 0`);
- time-lagged inputs: each row with its L predecessors (dynamic PCA's augmentation);
- limits set on d00_te (960 normal rows) for each statistic: the lowest at which the alarm rule
  (`--persist` N consecutive rows above the limit) alarms on at most `--far` of its rows
  (Monitor.calibrate; `sparseae monitor --holdout 0 --calibrate d00_te --far F --persist N`);
- the settings (lags, components, statistic) are ranked by the mean FDR over the 18 detectable faults
  on the *training* fault runs d01.dat .. d21.dat (480 rows each, the fault present throughout), with
  those limits; the test files d01_te .. d21_te (fault from row 160) give the table's test columns,
  never a choice.
Statistics: T^2 on the code, SPE on the residual, and the combined index T^2/m_T + SPE/m_S (m: the mean
of the statistic on the training rows; Yue & Qin's phi with the means as weights), calibrated as one
statistic, so the false-alarm budget is shared. The autoencoder's ensemble: each seed's statistic
divided by its training mean, averaged over the seeds, calibrated as one.
Printed: FAR on d00_te (in-sample for the limits: <= far by construction), FAR on the 160 normal rows
before the onset of the 18 detectable fault runs (2,880 rows the limits never saw), mean FDR over the
18 (all but 3, 9, 15), the mean detection delay (rows of 3 minutes), per-fault FDR and delay.

    OMP_NUM_THREADS=1 python benchmarks/monitor_tep.py              # the tables (about a minute)
    OMP_NUM_THREADS=1 python benchmarks/monitor_tep.py --sweep-sae  # also the autoencoder's grid (about 4 minutes)
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

from sparseae.apps.monitor import (AutoencoderModel, Monitor, PCAModel, calibrated_limit, detection_delay,
                                   persistent, rates)
from sparseae.data import tennessee_eastman as te

SCORED = [f for f in te.FAULTS if f not in te.UNDETECTABLE]
KINDS = ("t2", "spe", "combined")
NAMES = {"t2": "T2", "spe": "SPE", "combined": "combined"}
# Published unsupervised and supervised figures on the same files (ANCHORS.md section 9).
PUBLISHED = [
    ("PCA, 11-12 components (Lv et al. 2016 via Agarwal et al. 2022)", "T2 / Q", "1 (set on d00_te)",
     "61.8 / 74.7 (17 faults: also without 21)"),
    ("PCA, 11 components, classical 99% limits (Diallo et al. 2025)", "T2 / SPE", "1.67 / 7.08 on d00_te", "-"),
    ("supervised CNN / LSTM-attention / deep LSTM-SAE (trained on the faults)", "-", "not given",
     "79.9-85.5 / 87.9 / 93.1"),
]


def load(root):
    normal = te.load_normal(root)
    calibration = te.load_test(root, 0)
    tests = {f: te.load_test(root, f) for f in te.FAULTS}
    training = {f: te.read_dat(root / f"d{f:02d}.dat") for f in te.FAULTS}
    return normal, calibration, tests, training


def autoencoder(hidden: int, beta: float, seed: int, epochs: int) -> AutoencoderModel:
    # the one-shot command's settings (apps/monitor_settings.py AUTOENCODER_START) but the code width and beta
    return AutoencoderModel(hidden=[hidden], activation="relu", penalty="l1", rho=0.05, beta=beta, weight_decay=0.0,
                            epochs=epochs, batch_size=32, lr=1e-3, seed=seed, device="cpu")


def statistics(mon: Monitor, data) -> dict:
    """{run key: {'t2', 'spe', 'combined': per-row values}}; keys 'cal', ('train', f), ('test', f)."""
    _, calibration, tests, training = data
    weight = {s: 1.0 / float(np.mean(mon.reference_[s])) for s in ("t2", "spe")}
    runs = {"cal": calibration, **{("train", f): x for f, x in training.items()},
            **{("test", f): x for f, x in tests.items()}}
    out = {}
    for key, x in runs.items():
        st = mon.statistics(x)
        st["combined"] = weight["t2"] * st["t2"] + weight["spe"] * st["spe"]
        out[key] = st
    return out


def judge(values: dict, lags: int, far: float, persist: int) -> dict:
    """One statistic's figures: the limit set on d00_te, the training-run FDR (for the choice) and the
    test figures (for the table)."""
    limit = calibrated_limit([values["cal"]], far, persist)

    def alarms(key):
        with np.errstate(invalid="ignore"):  # NaN (the first `lags` rows): no statistic, no alarm
            return persistent(values[key] > limit, persist)
    test = {f: alarms(("test", f)) for f in SCORED}
    per_fault = {f: rates(test[f], te.TEST_ONSET, lags)[1] for f in SCORED}
    delays = {f: detection_delay(test[f], te.TEST_ONSET) for f in SCORED}
    found = [d for d in delays.values() if d is not None]
    return {"val": float(np.mean([rates(alarms(("train", f)), 0, lags)[1] for f in SCORED])),
            "fdr": float(np.mean(list(per_fault.values()))), "per_fault": per_fault, "delays": delays,
            "far_d00te": rates(alarms("cal"), None, lags)[0],
            "far_pre": float(np.mean(np.concatenate([test[f][lags:te.TEST_ONSET] for f in SCORED]))),
            "delay": float(np.mean(found)) if found else float("nan"), "limit": limit}


def judged(mon: Monitor, data, far: float, persist: int) -> dict:
    """{statistic: judge(...)} of one fitted monitor: what `sparseae monitor fit --holdout 0 --calibrate
    d00_te --far F --persist N` then `monitor score --dataset tep` print for it (tests/test_monitor.py)."""
    stats = statistics(mon, data)
    return {s: judge({k: v[s] for k, v in stats.items()}, mon.lags, far, persist) for s in KINDS}


def classical(data, args) -> list[dict]:
    """PCA (lags 0) and dynamic PCA (lags 1..) on a grid of components, every statistic judged."""
    normal = data[0]
    results = []
    for lags in args.lags_grid:
        d = te.N_VARIABLES * (lags + 1)
        grid = sorted({c for c in (10, 15, 20, 30, 40, 50, d - 8, d - 4, d - 2, d - 1) if 0 < c < d})
        for comps in grid:
            mon = Monitor(PCAModel(comps), holdout=0.0, lags=lags).fit(normal)
            for s, got in judged(mon, data, args.far, args.persist).items():
                results.append({"model": "PCA" if lags == 0 else f"DPCA lags {lags}", "lags": lags,
                                "components": comps, "statistic": s, **got})
    return results


def sparse(data, args, lags: int, hidden: int, beta: float) -> list[dict]:
    """The autoencoder's monitor for each seed and statistic, and the ensemble over the seeds."""
    normal = data[0]
    per_seed, results = [], []
    for seed in args.seeds:
        t0 = time.perf_counter()
        mon = Monitor(autoencoder(hidden, beta, seed, args.epochs), holdout=0.0, lags=lags).fit(normal)
        stats = statistics(mon, data)
        weight = {s: 1.0 / float(np.mean(mon.reference_[s])) for s in ("t2", "spe")}
        weight["combined"] = 1.0
        per_seed.append({k: {s: v[s] * weight[s] for s in KINDS} for k, v in stats.items()})
        desc = f"SAE lags {lags}, {hidden} units, beta {beta}"
        for s in KINDS:
            results.append({"model": f"{desc}, seed {seed}", "lags": lags, "statistic": s, "seed": seed,
                            **judge({k: v[s] for k, v in stats.items()}, lags, args.far, args.persist)})
        print(f"  fitted {desc}, seed {seed} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    if len(per_seed) > 1:
        for s in KINDS:
            mean = {k: np.mean([p[k][s] for p in per_seed], axis=0) for k in per_seed[0]}
            results.append({"model": f"SAE lags {lags}, {hidden} units, beta {beta}, mean of seeds "
                                     f"{','.join(map(str, args.seeds))}", "lags": lags, "statistic": s,
                            "seed": "ensemble", **judge(mean, lags, args.far, args.persist)})
    return results


def row(r: dict, chosen: bool = False) -> str:
    mark = " (chosen)" if chosen else ""
    comps = f", {r['components']} comp." if "components" in r else ""
    return (f"| {r['model']}{comps}{mark} | {NAMES[r['statistic']]} | {100 * r['val']:.1f} | "
            f"{100 * r['far_d00te']:.1f} | {100 * r['far_pre']:.1f} | **{100 * r['fdr']:.1f}** | {r['delay']:.1f} |")


HEAD = ("| model | statistic | training-run FDR % | FAR d00_te % | FAR pre-onset % | test FDR % | delay |\n"
        "|---|---|---|---|---|---|---|")


def best_of(results: list[dict], **match) -> dict:
    pool = [r for r in results if all(r.get(k) == v for k, v in match.items())]
    return max(pool, key=lambda r: r["val"])


def sae_choice(results: list[dict]) -> list[dict]:
    """The autoencoder's monitor chosen on the training runs: the statistic (each seed alone, ranked by
    the mean over the seeds, or the ensemble) with the highest training-run FDR."""
    options = {}
    for r in results:
        key = (r["model"].rsplit(", seed", 1)[0] if r["seed"] != "ensemble" else r["model"], r["statistic"])
        options.setdefault(key, []).append(r)
    return max(options.values(), key=lambda rs: float(np.mean([r["val"] for r in rs])))


def per_fault(label: str, r: dict) -> str:
    return (f"| {label} | " + " | ".join(f"{100 * r['per_fault'][f]:.0f}" for f in SCORED) + " |\n"
            "| (delay) | " + " | ".join("-" if r["delays"][f] is None else str(r["delays"][f]) for f in SCORED)
            + " |")


def report(pca: list[dict], sae: list[dict], args) -> dict:
    print(f"Tennessee Eastman: fit on d00 (500 rows); limits set on d00_te for at most {100 * args.far:g}% alarms "
          f"with the rule '{args.persist} consecutive rows above the limit'; settings ranked on the training runs "
          "d01..d21.dat; test: d01_te..d21_te (fault from row 160)")
    print("FAR pre-onset: the 160 normal rows before each of the 18 detectable faults (2,880 rows, out-of-sample); "
          "FDR: mean over the 18; delay: mean rows from the onset to the first alarm (3 min each), over those "
          "detected\n")
    best = best_of(pca)
    print("Classical monitors, the best number of components of each model and statistic (on the training runs):")
    print(HEAD)
    for model in dict.fromkeys(r["model"] for r in pca):
        for s in KINDS:
            r = best_of(pca, model=model, statistic=s)
            print(row(r, r is best))
    for s in KINDS:
        print(row(best_of(pca, model="PCA", components=15, statistic=s)))
    chosen = sae_choice(sae)
    print("\nThe sparse autoencoder (its settings ranked on the training runs likewise):")
    print(HEAD)
    for r in sae:
        print(row(r, any(r is c for c in chosen)))
    print("\nPublished figures on the same files (ANCHORS.md section 9):")
    print("| model | statistic | FAR % | mean FDR % |\n|---|---|---|---|")
    for line in PUBLISHED:
        print("| " + " | ".join(line) + " |")
    fdr, far_pre = [r["fdr"] for r in chosen], [r["far_pre"] for r in chosen]
    gap = float(np.mean(fdr)) - best["fdr"]
    print(f"\nchosen classical: {best['model']}, {best['components']} components, {NAMES[best['statistic']]}: "
          f"test FDR {100 * best['fdr']:.1f}% at {100 * best['far_pre']:.1f}% FAR pre-onset")
    print(f"chosen autoencoder: {chosen[0]['model'].rsplit(', seed', 1)[0]}, {NAMES[chosen[0]['statistic']]}: "
          f"test FDR {', '.join(f'{100 * v:.1f}' for v in fdr)}% at "
          f"{', '.join(f'{100 * v:.1f}' for v in far_pre)}% FAR pre-onset: "
          f"{100 * gap:+.1f} points against the classical monitor")
    print("\nFDR % (and delay, rows) of each detectable fault:")
    print("| monitor | " + " | ".join(str(f) for f in SCORED) + " |\n|---|" + "---|" * len(SCORED))
    print(per_fault(f"{best['model']} {best['components']} {NAMES[best['statistic']]}", best))
    print(per_fault("PCA 15 SPE", best_of(pca, model="PCA", components=15, statistic="spe")))
    print(per_fault(f"SAE {NAMES[chosen[0]['statistic']]} ({chosen[0]['seed']})", chosen[0]))
    return {"classical": best, "autoencoder": chosen, "gap": gap}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--persist", type=int, default=6)
    p.add_argument("--far", type=float, default=0.05)
    p.add_argument("--lags-grid", type=lambda t: [int(v) for v in t.split(",")], default=[0, 1, 2, 3],
                   help="the lags of the classical grid")
    p.add_argument("--lags", type=int, default=1, help="the autoencoder's lags")
    p.add_argument("--hidden", type=int, help="the autoencoder's code width (default: 52 x (lags + 1))")
    p.add_argument("--beta", type=float, default=0.003)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0, 1, 2])
    p.add_argument("--sweep-sae", action="store_true",
                   help="also rank the autoencoder's lags 0-2 and beta 0.01/0.003 on the training runs")
    p.add_argument("--data-dir")
    p.add_argument("--json", help="also write the chosen monitors' figures to this file")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    data = load(te.locate(args.data_dir))
    pca = classical(data, args)
    settings = [(args.lags, args.hidden or te.N_VARIABLES * (args.lags + 1), args.beta)]
    if args.sweep_sae:
        grid = itertools.product((0, 1, 2), (0.01, 0.003))
        settings = [(lags, te.N_VARIABLES * (lags + 1), beta) for lags, beta in grid]
    sae = [r for lags, hidden, beta in settings for r in sparse(data, args, lags, hidden, beta)]
    if args.sweep_sae:
        print("The autoencoder's grid, ranked on the training runs (each seed alone: mean over the seeds):")
        print("| model | statistic | training-run FDR % | test FDR % | FAR pre-onset % |\n|---|---|---|---|---|")
        groups: dict = {}
        for r in sae:
            groups.setdefault((r["model"].rsplit(", seed", 1)[0], r["statistic"]), []).append(r)
        for (model, s), rs in sorted(groups.items(), key=lambda kv: -np.mean([r["val"] for r in kv[1]])):
            print(f"| {model} | {NAMES[s]} | " + " | ".join(", ".join(f"{100 * r[k]:.1f}" for r in rs)
                                                          for k in ("val", "fdr", "far_pre")) + " |")
        keep = sae_choice(sae)[0]["model"].rsplit(", seed", 1)[0].split(", mean of")[0]
        sae = [r for r in sae if r["model"].startswith(keep + ",")]
        print()
    out = report(pca, sae, args)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        from sparseae.run.files import atomic_write_text, to_json_text

        atomic_write_text(args.json, to_json_text(out))
    return out


if __name__ == "__main__":
    main()
