"""The application subcommands: `monitor`, `cluster`, `report` (registered in cli.COMMANDS)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SparseAEError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def read_rows(path: str) -> np.ndarray:
    """All rows of a .npy/.csv/... array file (data.arrays, the library's one reader) as float64."""
    from ..data.arrays import open_array

    a = open_array(path)
    return a.read(0, a.n_rows).astype(np.float64)


def _write_json(path: str, obj: Any) -> None:
    from ..run.files import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _fmt(v: float | None) -> str:
    return "   -" if v is None or not np.isfinite(v) else f"{100 * v:5.1f}"


def _add_model_arguments(p: argparse.ArgumentParser, hidden: str, activation: str, penalty: str, epochs: int,
                         batch_size: int, lr: float, beta: float, rho: float, weight_decay: float) -> None:
    g = p.add_argument_group("sparse autoencoder")
    g.add_argument("--hidden", type=_int_list, default=_int_list(hidden), help=f"code sizes (default: {hidden})")
    g.add_argument("--activation", default=activation, help=f"hidden activation (default: {activation})")
    g.add_argument("--penalty", default=penalty, help=f"kl, l1 or none (default: {penalty})")
    g.add_argument("--rho", type=float, default=rho, help=f"KL target activation (default: {rho})")
    g.add_argument("--beta", type=float, default=beta, help=f"sparsity weight (default: {beta})")
    g.add_argument("--weight-decay", type=float, default=weight_decay,
                   help=f"lambda/2 sum ||W||^2 (default: {weight_decay})")
    g.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default: {epochs})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default: {batch_size})")
    g.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default: {lr})")
    g.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")


def _model_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"activation": args.activation, "penalty": args.penalty, "rho": args.rho, "beta": args.beta,
            "weight_decay": args.weight_decay, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "device": args.device}


# --- monitor ---------------------------------------------------------------------------------------

def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    from ..apps.monitor import LIMIT_METHODS

    src = p.add_argument_group("data (the Tennessee Eastman files of bibmon, or your own)")
    src.add_argument("--data", default=None, help="built-in data set: tep (Tennessee Eastman, from the bibmon "
                                                  "package; the default when --normal is not given)")
    src.add_argument("--data-dir", default=None, help="folder of d00.dat ... (default: the bibmon package's)")
    src.add_argument("--faults", type=_int_list, default=None, help="tep: test files to score (default: 0..21)")
    src.add_argument("--normal", default=None, metavar="FILE", help="normal-operation rows (.csv or .npy)")
    src.add_argument("--test", nargs="+", default=None, metavar="FILE", help="test files (.csv or .npy)")
    src.add_argument("--onset", type=int, default=None,
                     help="rows before the fault in each test file (omit when they are all normal)")
    lim = p.add_argument_group("control limits")
    lim.add_argument("--limit", choices=LIMIT_METHODS, default="kde",
                     help="kde: quantile of a KDE of the reference statistic; theory: F (T^2) and "
                          "moment-matched chi-square (SPE) (default: kde)")
    lim.add_argument("--alpha", type=float, default=0.99, help="confidence level of the limits (default: 0.99)")
    lim.add_argument("--holdout", type=float, default=0.2,
                     help="share of the normal rows (the last ones) kept out of fitting; the limits come from "
                          "their statistics (default: 0.2; 0: limits from the training rows)")
    lim.add_argument("--pca-components", type=int, default=15, help="PCA baseline components (default: 15)")
    _add_model_arguments(p, hidden="52", activation="relu", penalty="l1", epochs=300, batch_size=32, lr=1e-3,
                         beta=0.01, rho=0.05, weight_decay=0.0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")


def run_monitor(args: argparse.Namespace) -> int:
    from ..data import tennessee_eastman as te
    from ..apps.monitor import AutoencoderModel, Monitor, PCAModel, rates

    t_start = time.perf_counter()
    if args.normal is not None or args.test is not None:
        if args.data is not None:
            raise SparseAEError("give either --data or --normal/--test, not both")
        if args.normal is None or not args.test:
            raise SparseAEError("your own data needs both --normal FILE and --test FILE...")
        normal = read_rows(args.normal)
        tests = {Path(f).name: read_rows(f) for f in args.test}
        onsets = {name: args.onset for name in tests}
        scored: list[str] = [n for n in tests if args.onset is not None]
        source = args.normal
    else:
        name = args.data or "tep"
        if name != "tep":
            raise SparseAEError(f"unknown monitoring data set '{name}'; known: tep (or --normal/--test files)")
        root = te.locate(args.data_dir)
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

    models = {"SAE": AutoencoderModel(hidden=args.hidden, seed=args.seed, **_model_params(args)),
              "PCA": PCAModel(args.pca_components)}
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
    print(f"SAE: hidden {args.hidden}, {args.activation}, {args.penalty} (rho {args.rho}, beta {args.beta}), "
          f"weight decay {args.weight_decay}, {args.epochs} epochs: fitted in {seconds['SAE']:.1f} s; "
          f"PCA: {args.pca_components} components, {seconds['PCA']:.2f} s")
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

def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    from ..apps.cluster import FEATURE_SETS, GRAPHS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--graph", help=f"built-in graph ({', '.join(GRAPHS)}) or a file: an adjacency matrix "
                                     "(.npy, square .csv) or an edge list (rows 'u v [weight]')")
    src.add_argument("--features", help=f"built-in feature set ({', '.join(FEATURE_SETS)}) or a feature "
                                        "matrix file (.npy, .csv); turned into a Gaussian similarity graph")
    p.add_argument("--labels", default=None, metavar="FILE", help="ground-truth labels, one per node, for NMI")
    p.add_argument("--clusters", type=int, default=None, help="number of clusters (default: number of labels)")
    p.add_argument("--knn", type=int, default=None, help="features: keep each row's k nearest neighbours")
    p.add_argument("--self-loops", choices=("yes", "no"), default="yes",
                   help="s_ii = 1 (a node is similar to itself) before normalising; both methods use the same "
                        "matrix (default: yes)")
    p.add_argument("--restarts", type=int, default=5,
                   help="train the autoencoder from this many initialisations and keep the one with the lowest "
                        "reconstruction error of D^-1 S (default: 5)")
    p.add_argument("--input-transform", default="none", help="transform of the rows of D^-1 S before the "
                                                             "first layer: none or standardize (default: none)")
    p.add_argument("--output-activation", default="sigmoid",
                   help="first layer's output: sigmoid (rows are probabilities) or linear (with standardize) "
                        "(default: sigmoid)")
    _add_model_arguments(p, hidden="16", activation="sigmoid", penalty="kl", epochs=500, batch_size=256, lr=1e-2,
                         beta=0.01, rho=0.2, weight_decay=0.0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write labels and scores as JSON")


def _cluster_source(args: argparse.Namespace):
    from ..apps.cluster import FEATURE_SETS, GRAPHS, Graph, feature_set, karate, load_graph, similarity_from_features

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
    from ..apps.cluster import (check_similarity, graph_encoder_embedding, kmeans_labels, nmi, spectral_labels,
                          with_self_loops)

    graph = _cluster_source(args)
    s = check_similarity(graph.similarity)
    if args.self_loops == "yes":
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
    emb = graph_encoder_embedding(s, args.hidden, seed=args.seed, restarts=args.restarts,
                                  input_transform=args.input_transform,
                                  output_activation=args.output_activation, **_model_params(args))
    sae = kmeans_labels(emb, k, args.seed)
    t_sae = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec = spectral_labels(s, k, args.seed)
    t_spec = time.perf_counter() - t0
    results = {"GraphEncoder (sparse AE + k-means)": (sae, t_sae), "spectral clustering": (spec, t_spec)}

    edges = int((np.triu(s, 1) > 0).sum())
    print(f"{graph.name or 'graph'}: {len(s)} nodes, {edges} pairs with positive similarity, {k} clusters, "
          f"self-loops {args.self_loops}; input D^-1 S; autoencoder layers {args.hidden}, best of "
          f"{args.restarts} restarts")
    print(f"{'method':<36s} {'NMI':>6s} {'seconds':>8s}")
    out: dict[str, Any] = {"graph": graph.name, "nodes": len(s), "clusters": k, "hidden": args.hidden}
    for method, (pred, sec) in results.items():
        score = nmi(labels, pred) if labels is not None else None
        print(f"{method:<36s} {'-' if score is None else f'{score:.3f}':>6s} {sec:8.1f}")
        out[method] = {"nmi": score, "seconds": sec, "labels": pred.tolist()}
    if args.json:
        _write_json(args.json, out)
    return 0


# --- report ----------------------------------------------------------------------------------------

def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by `sparseae train`")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--data-dir", default=None, help="where the data set is, for the activation histogram "
                                                    "when the run folder has none")


def run_report(args: argparse.Namespace) -> int:
    from ..run.report import write_report

    t0 = time.perf_counter()
    out = write_report(args.run_dir, args.out, data_dir=args.data_dir)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - t0:.1f} s)")
    return 0
