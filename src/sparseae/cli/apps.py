"""Application commands: `monitor`, `cluster`, `report`.

monitor and cluster train the scikit-learn estimator; its settings are the training flags of the
same names, starting from each command's own values (MONITOR_START, CLUSTER_START). The library,
numpy included, is imported inside the run functions.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import SparseAEError
from . import args as flags
from .args import config_from_args


def read_rows(path: str):
    """All rows of a .npy/.csv/... array file (data.arrays, the library's one reader) as float64."""
    import numpy as np

    from ..data.arrays import open_array

    a = open_array(path)
    return a.read(0, a.n_rows).astype(np.float64)


def _write_json(path: str, obj: Any) -> None:
    import json

    from ..run.files import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _fmt(v: float | None) -> str:
    return "   -" if v is None or not math.isfinite(v) else f"{100 * v:5.1f}"


def _add_estimator(p: argparse.ArgumentParser, start: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    g = p.add_argument_group("sparse autoencoder")
    flags.add(g, *flags.ESTIMATOR, *extra, shown=flags.shown_defaults(flags.start_config(start)))


def _estimator_params(config: RunConfig, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The estimator's parameters, which are named as the configuration fields the flags set."""
    fields = (flags.CONFIG_FLAGS[f][:2] for f in (*flags.ESTIMATOR, *extra))
    return {name: getattr(getattr(config, section), name) for section, name in fields}


# --- monitor ---------------------------------------------------------------------------------------

# The monitor's starting values (docs/monitoring.md): one layer of 52 ReLU units, L1 penalty, 300
# epochs of Adam at batch 32; the estimator's linear decoder.
MONITOR_START = {"model": {"hidden": [52], "activation": "relu"},
                 "sparsity": {"penalty": "l1", "rho": 0.05, "beta": 0.01, "weight_decay": 0.0},
                 "train": {"dataset": "tep", "epochs": 300, "batch_size": 32, "lr": 1e-3, "seed": 0}}


def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (the Tennessee Eastman files of bibmon, or your own)")
    flags.add(src, "--dataset", "--data-dir", "--faults", "--normal", "--test", "--onset",
              shown={"--dataset": "tep, when --normal is not given"})
    lim = p.add_argument_group("control limits")
    flags.add(lim, "--limit", "--alpha", "--holdout", "--pca-components")
    _add_estimator(p, MONITOR_START)
    flags.add(p, "--json")


def run_monitor(args: argparse.Namespace) -> int:
    import numpy as np

    from ..apps.monitor import AutoencoderModel, Monitor, PCAModel, rates
    from ..data import tennessee_eastman as te

    t_start = time.perf_counter()
    config = config_from_args(args, MONITOR_START)
    params = _estimator_params(config)
    if args.normal is not None or args.test is not None:
        if args.dataset is not None:
            raise SparseAEError("give either --dataset or --normal/--test, not both")
        if args.normal is None or not args.test:
            raise SparseAEError("your own data needs both --normal FILE and --test FILE...")
        normal = read_rows(args.normal)
        tests = {Path(f).name: read_rows(f) for f in args.test}
        onsets = {name: args.onset for name in tests}
        scored: list[str] = [n for n in tests if args.onset is not None]
        source = args.normal
    else:
        name = config.train.dataset
        if name != "tep":
            raise SparseAEError(f"unknown monitoring data set '{name}'; known: tep (or --normal/--test files)")
        root = te.locate(config.train.data_dir)
        faults = list(range(22)) if args.faults is None else args.faults
        normal = te.load_normal(root)
        tests = {f"d{f:02d}_te": te.load_test(root, f) for f in faults}
        # d00_te is normal throughout: all of it counts for the false-alarm rate
        onsets = {n: (None if n == "d00_te" else te.TEST_ONSET) for n in tests}
        scored = [f"d{f:02d}_te" for f in faults if f in te.FAULTS and f not in te.UNDETECTABLE]
        source = f"Tennessee Eastman ({root})"
    for name, x in tests.items():
        if x.ndim != 2 or x.shape[1] != normal.shape[1]:
            raise SparseAEError(f"test file {name} has {x.shape[1]} columns but the normal data has "
                                f"{normal.shape[1]}")
        if onsets[name] is not None and not 0 <= onsets[name] <= len(x):
            raise SparseAEError(f"onset {onsets[name]} is outside test file {name} ({len(x)} rows)")

    models = {"SAE": AutoencoderModel(**params), "PCA": PCAModel(args.pca_components)}
    monitors, seconds = {}, {}
    for label, model in models.items():
        t0 = time.perf_counter()
        monitors[label] = Monitor(model, alpha=args.alpha, limit_method=args.limit, holdout=args.holdout).fit(normal)
        seconds[label] = time.perf_counter() - t0

    rows = []
    for name, x in tests.items():
        row: dict[str, Any] = {"file": name}
        for label, mon in monitors.items():
            for stat, alarms in mon.alarms(x).items():
                far, fdr = rates(alarms, onsets[name])
                row[f"{label}_{stat}_far"], row[f"{label}_{stat}_fdr"] = far, fdr
        rows.append(row)
    keys = [f"{m}_{s}_{r}" for m in monitors for s in ("t2", "spe") for r in ("far", "fdr")]
    mean = {k: float(np.mean([r[k] for r in rows if r["file"] in scored])) if scored else float("nan") for k in keys}

    print(f"normal rows: {len(normal)} x {normal.shape[1]} from {source}; limits: {args.limit}, "
          f"alpha {args.alpha}, holdout {args.holdout}")
    print(f"SAE: hidden {params['hidden']}, {params['activation']}, {params['penalty']} (rho {params['rho']}, "
          f"beta {params['beta']}), weight decay {params['weight_decay']}, {params['epochs']} epochs: fitted in "
          f"{seconds['SAE']:.1f} s; PCA: {args.pca_components} components, {seconds['PCA']:.2f} s")
    print("FAR: false alarms before the onset (%); FDR: detections after it (%)")
    head = "                 " + "".join(f"{m + ' ' + s:>14s}    " for m in monitors for s in ("T2", "SPE"))
    print(head)
    print(f"{'file':<16s} " + "   FAR    FDR   " * 4)
    for r in rows:
        print(f"{r['file']:<16s} " + "".join(f" {_fmt(r[f'{m}_{s}_far'])}  {_fmt(r[f'{m}_{s}_fdr'])}   "
                                             for m in monitors for s in ("t2", "spe")))
    if scored:
        label = f"mean ({len(scored)} files)" if args.normal else f"mean {len(scored)} faults"
        print(f"{label:<16s} " + "".join(f" {_fmt(mean[f'{m}_{s}_far'])}  {_fmt(mean[f'{m}_{s}_fdr'])}   "
                                         for m in monitors for s in ("t2", "spe")))
        if not args.normal:
            print("(mean over the faults other than 3, 9 and 15, which are practically undetectable)")
    total = time.perf_counter() - t_start
    print(f"total {total:.1f} s")
    if args.json:
        _write_json(args.json, {"source": source, "limit": args.limit, "alpha": args.alpha,
                                "holdout": args.holdout, "limits": {m: mon.limits for m, mon in monitors.items()},
                                "fit_seconds": seconds, "rows": rows, "mean": mean, "mean_over": scored,
                                "seconds": total})
    return 0


# --- cluster ---------------------------------------------------------------------------------------

# The cluster's starting values (docs/clustering.md): 16 sigmoid units with a KL penalty; the rows
# of D^-1 S are probabilities, hence no input transform and a sigmoid output.
CLUSTER_START = {"model": {"hidden": [16], "activation": "sigmoid", "input_transform": "none",
                           "output_activation": "sigmoid"},
                 "sparsity": {"penalty": "kl", "rho": 0.2, "beta": 0.01, "weight_decay": 0.0},
                 "train": {"epochs": 500, "batch_size": 256, "lr": 1e-2, "seed": 0}}
CLUSTER_EXTRA = ("--input-transform", "--output-activation")


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    flags.add(src, "--graph", "--features")
    flags.add(p, "--labels", "--clusters", "--knn", "--self-loops", "--restarts")
    _add_estimator(p, CLUSTER_START, CLUSTER_EXTRA)
    flags.add(p, "--json")


def _cluster_source(args: argparse.Namespace):
    from ..apps.cluster import Graph, feature_set, karate, load_graph, similarity_from_features
    from ..config import FEATURE_SETS, GRAPHS

    if args.graph is not None:
        if args.graph in GRAPHS:
            return karate()
        if not Path(args.graph).exists():
            raise SparseAEError(f"unknown graph '{args.graph}': not a file, and the built-in graphs are "
                                f"{', '.join(GRAPHS)}")
        return load_graph(args.graph)
    if args.features in FEATURE_SETS:
        return feature_set(args.features, args.knn)
    if not Path(args.features).exists():
        raise SparseAEError(f"unknown feature set '{args.features}': not a file, and the built-in sets are "
                            f"{', '.join(FEATURE_SETS)}")
    x = read_rows(args.features)
    return Graph(similarity_from_features(x, args.knn), None, Path(args.features).stem)


def run_cluster(args: argparse.Namespace) -> int:
    import numpy as np

    from ..apps.cluster import (check_similarity, graph_encoder_embedding, kmeans_labels, nmi, spectral_labels,
                                with_self_loops)

    params = _estimator_params(config_from_args(args, CLUSTER_START), CLUSTER_EXTRA)
    graph = _cluster_source(args)
    s = check_similarity(graph.similarity)
    if args.self_loops:
        s = with_self_loops(s)
    labels = graph.labels
    if args.labels is not None:
        labels = np.loadtxt(args.labels, dtype=str, ndmin=1)
    if labels is not None and len(labels) != len(s):
        raise SparseAEError(f"{len(labels)} labels for {len(s)} nodes")
    k = args.clusters or (len(np.unique(labels)) if labels is not None else None)
    if k is None:
        raise SparseAEError("without labels, give the number of clusters with --clusters")
    if not 2 <= k < len(s):
        raise SparseAEError(f"clusters must be in 2..{len(s) - 1}; got {k}")

    t0 = time.perf_counter()
    emb = graph_encoder_embedding(s, restarts=args.restarts, **params)
    sae = kmeans_labels(emb, k, params["seed"])
    t_sae = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec = spectral_labels(s, k, params["seed"])
    t_spec = time.perf_counter() - t0
    results = {"GraphEncoder (sparse AE + k-means)": (sae, t_sae), "spectral clustering": (spec, t_spec)}

    edges = int((np.triu(s, 1) > 0).sum())
    print(f"{graph.name or 'graph'}: {len(s)} nodes, {edges} pairs with positive similarity, {k} clusters, "
          f"self-loops {'yes' if args.self_loops else 'no'}; input D^-1 S; autoencoder layers {params['hidden']}, "
          f"best of {args.restarts} restarts")
    print(f"{'method':<36s} {'NMI':>6s} {'seconds':>8s}")
    out: dict[str, Any] = {"graph": graph.name, "nodes": len(s), "clusters": k, "hidden": params["hidden"]}
    for method, (pred, sec) in results.items():
        score = nmi(labels, pred) if labels is not None else None
        print(f"{method:<36s} {'-' if score is None else f'{score:.3f}':>6s} {sec:8.1f}")
        out[method] = {"nmi": score, "seconds": sec, "labels": pred.tolist()}
    if args.json:
        _write_json(args.json, out)
    return 0


# --- report ----------------------------------------------------------------------------------------

def add_report_arguments(p: argparse.ArgumentParser) -> None:
    flags.add(p, "run_dir", "--out", "--data-dir", shown={"--out": "RUN_DIR/report.html"})


def run_report(args: argparse.Namespace) -> int:
    from ..run.report import write_report

    t0 = time.perf_counter()
    out = write_report(args.run_dir, args.out, data_dir=args.data_dir)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - t0:.1f} s)")
    return 0
