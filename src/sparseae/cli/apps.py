"""Application commands: `monitor`, `cluster`, `report`.

monitor and cluster train the scikit-learn estimator; its settings are the training flags of the
same names, starting from each command's own values (MONITOR_START, CLUSTER_START). The library,
numpy included, is imported inside the run functions.
"""
from __future__ import annotations

import argparse
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
MONITOR_RUNS = "runs"  # monitor fit --out when not given: the first free runs/monitor-NNN


def _monitor_fitting(p: argparse.ArgumentParser) -> None:
    """The settings of the monitors: limits, alarm rule and lags, the autoencoder's training."""
    lim = p.add_argument_group("control limits")
    flags.add(lim, "--limit", "--alpha", "--holdout", "--calibrate", "--far", "--pca-components")
    rule = p.add_argument_group("alarm rule and inputs")
    flags.add(rule, "--persist", "--lags")
    _add_estimator(p, MONITOR_START)


def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (the Tennessee Eastman files of bibmon, or your own)")
    flags.add(src, "--dataset", "--data-dir", "--faults", "--normal", "--test", "--onset",
              shown={"--dataset": "tep, when --normal is not given"})
    _monitor_fitting(p)
    flags.add(p, "--json")
    actions = p.add_subparsers(dest="monitor_action", metavar="ACTION",
                               title="actions (without one: fit, score and print the table in one go, the benchmark)")
    fit = actions.add_parser("fit", help="fit the monitors on normal runs and write a monitor folder",
                             description="Fit the sparse autoencoder's and PCA's monitors on normal runs and write "
                                         "them to a monitor folder (safetensors + JSON), to score other runs later.")
    src = fit.add_argument_group("data")
    flags.add(src, "--dataset", "--data-dir", "--normal", shown={"--dataset": "tep, when --normal is not given"})
    out = fit.add_argument_group("output")
    flags.add(out, "--out", "--overwrite", shown={"--out": f"the first free {MONITOR_RUNS}/monitor-NNN"})
    _monitor_fitting(fit)
    score = actions.add_parser("score", help="score runs with a monitor folder: table, per-row CSV, control "
                                             "charts, contributions, HTML report",
                               description="Score runs with the monitors of a monitor folder: the table of false-"
                                           "alarm rates, detection rates and delays, and in --out each run's "
                                           "statistics and alarms (CSV), its control chart and the contributions "
                                           "of its first alarm rows (CSV, PNG), summary.csv/json, report.html.")
    flags.add(score, "mon_dir", "files")
    src = score.add_argument_group("data")
    flags.add(src, "--dataset", "--data-dir", "--faults", "--onset",
              shown={"--dataset": "none: the FILEs (tep: its test runs)"})
    flags.add(score, "--persist", "--window")
    out = score.add_argument_group("output")
    flags.add(out, "--out", "--overwrite", "--json", shown={"--out": "the first free MON_DIR/score-NNN"})
    # A flag the one-shot command also has may come before the action or after it: the action's copy
    # stays out of the result unless given, so that it does not replace the value given before. One
    # the action does not take is refused (run_monitor), not ignored.
    one_shot = {a.dest: (a.option_strings[0], a.default) for a in p._actions if a.option_strings and a.dest != "help"}
    for parser in (fit, score):
        for action in parser._actions:
            if action.dest in one_shot:
                action.default = argparse.SUPPRESS
    p.set_defaults(monitor_flags=(one_shot, {"fit": {a.dest for a in fit._actions},
                                             "score": {a.dest for a in score._actions}}))


def run_monitor(args: argparse.Namespace) -> int:
    action = getattr(args, "monitor_action", None)
    one_shot, takes = args.monitor_flags
    for dest, (flag, default) in one_shot.items():
        if action is not None and dest not in takes[action] and getattr(args, dest, default) != default:
            raise SparseAEError(f"{flag} does not apply to `monitor {action}`")
    if action == "fit":
        return run_monitor_fit(args)
    if action == "score":
        return run_monitor_score(args)
    return run_monitor_benchmark(args)


def _runs(args: argparse.Namespace, normal: bool, tests: bool):
    """(normal runs, test runs, the test runs the mean is over, the data's name, 'tep' or None)."""
    from ..apps.monitor_folder import file_runs, tep_runs
    from ..data import tennessee_eastman as te

    own = (getattr(args, "normal", None) is not None and normal) or getattr(args, "test", None) is not None
    if own:
        if args.dataset is not None:
            raise SparseAEError("give either --dataset or --normal/--test, not both")
        if normal and args.normal is None:
            raise SparseAEError("your own data needs --normal FILE..." + (" and --test FILE..." if tests else ""))
        if tests and not args.test:
            raise SparseAEError("your own data needs both --normal FILE... and --test FILE...")
        normal_runs = file_runs(args.normal, None) if normal else []
        test_runs = file_runs(args.test, args.onset) if tests else []
        scored = [r.key for r in test_runs] if args.onset is not None else []
        return normal_runs, test_runs, scored, ", ".join(args.normal), None
    name = args.dataset or "tep"
    if name != "tep":
        raise SparseAEError(f"unknown monitoring data set '{name}'; known: tep (or --normal/--test files)")
    if getattr(args, "onset", None) is not None:
        raise SparseAEError("--onset is for your own files; the Tennessee Eastman runs have theirs (row 160)")
    root = te.locate(args.data_dir)
    faults = list(range(22)) if getattr(args, "faults", None) is None else args.faults
    for f in faults:
        if f not in (0, *te.FAULTS):
            raise SparseAEError(f"fault must be 0..21; got {f}")
    normal_runs = tep_runs(root, ["d00"]) if normal else []
    test_runs = tep_runs(root, [f"d{f:02d}_te" for f in faults]) if tests else []
    scored = [f"d{f:02d}_te" for f in faults if f in te.FAULTS and f not in te.UNDETECTABLE]
    return normal_runs, test_runs, scored, f"Tennessee Eastman ({root})", "tep"


def _calibration_runs(args: argparse.Namespace, dataset: str | None):
    """The runs of --calibrate: files, or with --dataset tep also the names d00 / d00_te."""
    from ..apps.monitor_folder import file_runs, tep_runs
    from ..data import tennessee_eastman as te

    if args.calibrate is None:
        if args.far is not None:
            raise SparseAEError("--far sets the limits on the runs of --calibrate; give them too")
        return None
    runs = []
    for item in args.calibrate:
        if dataset == "tep" and not Path(item).exists() and te.FILE_NAME.fullmatch(item):
            runs += tep_runs(te.locate(args.data_dir), [item])
        else:
            runs += file_runs([item], None)
    return runs


def _fit(args: argparse.Namespace, normal, calibrate):
    from ..apps.monitor import AutoencoderModel, PCAModel
    from ..apps.monitor_folder import fit_monitors

    params = _estimator_params(config_from_args(args, MONITOR_START))
    models = {"SAE": AutoencoderModel(**params), "PCA": PCAModel(args.pca_components)}
    monitors, seconds = fit_monitors(models, normal, alpha=args.alpha, limit=args.limit, holdout=args.holdout,
                                     lags=args.lags, persist=1 if args.persist is None else args.persist,
                                     calibrate=calibrate, far=0.01 if args.far is None else args.far)
    return params, monitors, seconds


def _describe_fit(args, params, normal, source, monitors, seconds, calibrate) -> list[str]:
    n_rows = sum(len(r.rows) for r in normal)
    mon = next(iter(monitors.values()))
    if calibrate:
        cal = mon.calibration
        limits = (f"limits: set on {', '.join(r.key for r in calibrate)} ({cal['rows']} rows) for at most "
                  f"{100 * cal['far']:g}% alarms")
    else:
        limits = f"limits: {args.limit}, alpha {args.alpha}, holdout {args.holdout}"
    lines = [f"normal rows: {n_rows} x {normal[0].rows.shape[1]} from {source}; {limits}"]
    if args.lags or mon.persist != 1:
        lines.append(f"inputs: each row with its {args.lags} predecessors ({len(mon.scaler_.mean_)} columns); "
                     f"alarm rule: {mon.persist} consecutive rows above the limit")
    lines.append(f"SAE: hidden {params['hidden']}, {params['activation']}, {params['penalty']} (rho {params['rho']}, "
                 f"beta {params['beta']}), weight decay {params['weight_decay']}, {params['epochs']} epochs: fitted "
                 f"in {seconds['SAE']:.1f} s; PCA: {args.pca_components} components, {seconds['PCA']:.2f} s")
    return lines


def _print_table(rows, mean, labels, scored, own_files: bool) -> None:
    from ..apps.monitor_folder import format_table

    label = None
    if scored:
        label = f"mean ({len(scored)} files)" if own_files else f"mean {len(scored)} faults"
    for line in format_table(rows, mean, labels, label):
        print(line)
    if scored and not own_files:
        print("(mean over the faults other than 3, 9 and 15, which are practically undetectable; the delay's over "
              "those detected)")


def run_monitor_benchmark(args: argparse.Namespace) -> int:
    from ..apps.monitor_folder import check_columns, score_runs, table

    t_start = time.perf_counter()
    normal, tests, scored, source, dataset = _runs(args, normal=True, tests=True)
    calibrate = _calibration_runs(args, dataset)
    variables = normal[0].columns or [f"x{j + 1}" for j in range(normal[0].rows.shape[1])]
    for run in tests:  # before any fitting
        check_columns(run, variables, normal[0].rows.shape[1])
    params, monitors, seconds = _fit(args, normal, calibrate)
    rows, mean = table(score_runs(monitors, tests), scored)

    for line in _describe_fit(args, params, normal, source, monitors, seconds, calibrate):
        print(line)
    _print_table(rows, mean, list(monitors), scored, dataset is None)
    if calibrate and any(r.key in {t.key for t in tests} for r in calibrate):
        print("(the limits were set on " + ", ".join(r.key for r in calibrate) + ": its false-alarm rate is "
              "in-sample)")
    total = time.perf_counter() - t_start
    print(f"total {total:.1f} s")
    if args.json:
        _write_json(args.json, {"source": source, "limit": args.limit, "alpha": args.alpha,
                                "holdout": args.holdout, "limits": {m: mon.limits for m, mon in monitors.items()},
                                "lags": args.lags, "persist": next(iter(monitors.values())).persist,
                                "calibration": next(iter(monitors.values())).calibration,
                                "fit_seconds": seconds, "rows": rows, "mean": mean, "mean_over": scored,
                                "seconds": total})
    return 0


def run_monitor_fit(args: argparse.Namespace) -> int:
    from ..apps.monitor_folder import save_folder
    from ..run.output import OutputFolder, next_free

    out = args.out if args.out is not None else str(next_free(MONITOR_RUNS, "monitor"))
    output = OutputFolder(out, "replace" if args.overwrite else "refuse")  # refused before any fitting
    normal, _, _, source, dataset = _runs(args, normal=True, tests=False)
    calibrate = _calibration_runs(args, dataset)
    params, monitors, seconds = _fit(args, normal, calibrate)
    settings = {"lags": args.lags, "persist": next(iter(monitors.values())).persist, "limit": args.limit,
                "alpha": args.alpha, "holdout": args.holdout, "far": args.far, "pca_components": args.pca_components,
                "autoencoder": params}
    save_folder(output, monitors, {"dataset": dataset, "normal": [r.key for r in normal],
                                   "calibrate": [r.key for r in calibrate] if calibrate else None,
                                   "settings": settings})
    for line in _describe_fit(args, params, normal, source, monitors, seconds, calibrate):
        print(line)
    for label, mon in monitors.items():
        print(f"{label} limits: T2 {mon.limits['t2']:.6g}, SPE {mon.limits['spe']:.6g}")
    print(f"wrote {out} (monitors.json, " + ", ".join(f"{m}/" for m in monitors) + ")")
    return 0


def run_monitor_score(args: argparse.Namespace) -> int:
    from ..apps.monitor_folder import file_runs, load_folder, score_runs, table, top_contributors, write_scores
    from ..run.output import OutputFolder, next_free

    t_start = time.perf_counter()
    record, monitors = load_folder(args.mon_dir)
    if args.files and args.dataset is not None:
        raise SparseAEError("give either FILEs to score or --dataset, not both")
    if args.files:
        if getattr(args, "faults", None) is not None:
            raise SparseAEError("--faults chooses Tennessee Eastman runs; it does not go with FILEs")
        runs, own = file_runs(args.files, args.onset), True
        scored = list(args.files) if args.onset is not None else []
    elif args.dataset is not None:
        args.test = None
        _, runs, scored, _, _ = _runs(args, normal=False, tests=True)
        own = False
    else:
        raise SparseAEError("nothing to score: give FILEs, or --dataset tep")
    if args.window < 1:
        raise SparseAEError(f"window must be at least 1; got {args.window}")
    out = args.out if args.out is not None else str(next_free(args.mon_dir, "score"))
    output = OutputFolder(out, "replace" if args.overwrite else "refuse")
    scores = score_runs(monitors, runs, args.persist)
    rows, mean = table(scores, scored)
    labels = list(monitors)
    info = {"monitor_folder": str(args.mon_dir), "persist": {m: (args.persist or mon.persist)
                                                              for m, mon in monitors.items()},
            "lags": {m: mon.lags for m, mon in monitors.items()},
            "limits": {m: mon.limits for m, mon in monitors.items()},
            "window": args.window, "mean_over": scored}
    try:
        found = write_scores(output.create(), runs, monitors, scores, rows, mean, info, args.window)
    except BaseException:
        output.discard()
        raise
    output.commit()

    mon = next(iter(monitors.values()))
    rule = ", ".join(f"{m} {info['persist'][m]}" for m in labels)
    print(f"monitor folder {args.mon_dir}: {', '.join(labels)}; {len(mon.variables)} variables, lags "
          f"{mon.lags}; alarm rule: consecutive rows above the limit: {rule}")
    for m, one in monitors.items():
        if one.calibration and args.persist and args.persist != one.calibration["persist"]:
            print(f"note: {m}'s limits were set for an alarm rule of {one.calibration['persist']} rows, "
                  f"not {args.persist}")
    _print_table(rows, mean, labels, scored, own)
    first = labels[0]
    print(f"largest contributions over the first {args.window} alarm rows from the onset on ({first}; SPE: share "
          "of SPE; T2: reconstruction-based contribution)")
    width = max(len(r.key) for r in runs)
    for run in runs:
        c = found[run.key][first]
        if c is None:
            print(f"{run.key:<{width}s}  no alarm")
            continue
        total = float(c["spe"].sum())
        spe = ", ".join(f"{n} {100 * v / total:.0f}%" for n, v in top_contributors(c, mon.variables, "spe"))
        t2 = ", ".join(f"{n} {v:.3g}" for n, v in top_contributors(c, mon.variables, "t2"))
        print(f"{run.key:<{width}s}  SPE: {spe}; T2: {t2}")
    if args.json:
        _write_json(args.json, {"monitor_folder": str(args.mon_dir), "rows": rows, "mean": mean,
                                "mean_over": scored, "limits": info["limits"]})
    print(f"wrote {out} (per run: CSV, control chart, contributions; summary.csv, summary.json, report.html) "
          f"in {time.perf_counter() - t_start:.1f} s")
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

    from ..apps.cluster import (check_similarity, graph_encoder_embedding, kmeans_labels, nmi, read_labels,
                                spectral_labels, with_self_loops)

    params = _estimator_params(config_from_args(args, CLUSTER_START), CLUSTER_EXTRA)
    graph = _cluster_source(args)
    s = check_similarity(graph.similarity)
    if args.self_loops:
        s = with_self_loops(s)
    labels = graph.labels if args.labels is None else read_labels(args.labels, len(s))
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
    flags.add(p, "run_dir", "--out", "--data-dir", "--screenshot", shown={"--out": "RUN_DIR/report.html"})


def run_report(args: argparse.Namespace) -> int:
    from ..run.report import check_screenshot, screenshot, write_report

    if args.screenshot:
        check_screenshot(args.screenshot)  # before the report is written
    t0 = time.perf_counter()
    out = write_report(args.run_dir, args.out, data_dir=args.data_dir)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB = {size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
    if args.screenshot:
        t0 = time.perf_counter()
        shot = screenshot(out, args.screenshot)
        print(f"chromium decoded every image; wrote {shot} ({time.perf_counter() - t0:.1f} s)")
    return 0
