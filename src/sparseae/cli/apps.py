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

from .. import families
from ..apps.monitor_settings import AUTOENCODER_START, RECOMMENDATION, SETTINGS, MonitorSettings
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
    from ..run.files import atomic_write_json

    atomic_write_json(path, obj)


def _add_estimator(p: argparse.ArgumentParser, start: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    g = p.add_argument_group("sparse autoencoder")
    flags.add(g, *flags.ESTIMATOR, *extra, shown=flags.shown_defaults(flags.start_config(start)))


def _estimator_params(config: RunConfig, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The estimator's parameters, which are named as the configuration fields the flags set."""
    fields = (flags.CONFIG_FLAGS[f][:2] for f in (*flags.ESTIMATOR, *extra))
    return {name: getattr(getattr(config, section), name) for section, name in fields}


# --- monitor ---------------------------------------------------------------------------------------

# The monitor's autoencoder starts from MONITOR_START; its other settings are one MonitorSettings
# (the flags' defaults). Both live in the library (apps/monitor_settings.py).
MONITOR_START = AUTOENCODER_START
MONITOR_RUNS = "runs"  # monitor fit --out when not given: the first free runs/monitor-NNN


def _monitor_fitting(p: argparse.ArgumentParser) -> None:
    """The settings of the monitors: limits, alarm rule and lags, the autoencoder's training."""
    lim = p.add_argument_group("control limits")
    flags.add(lim, "--limit", "--alpha", "--holdout", "--calibrate", "--far", "--pca-components")
    rule = p.add_argument_group("alarm rule and inputs")
    flags.add(rule, "--persist", "--lags", "--pca-lags")
    _add_estimator(p, MONITOR_START)


def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (the Tennessee Eastman files of bibmon, or your own)")
    flags.add(src, "--dataset", "--data-dir", "--faults", "--normal", "--test", "--onset",
              shown={"--dataset": "tep, when --normal is not given"})
    _monitor_fitting(p)
    flags.add(p, "--json", "--overwrite")
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
                if action.help and "%(default)" in action.help:  # argparse leaves SUPPRESS out of %(default)s
                    action.help = action.help.replace("%(default)s", str(action.default).replace("%", "%%"))
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


def _settings(args: argparse.Namespace) -> MonitorSettings:
    """The monitor settings the flags give (those not given: the defaults), checked before any data is read."""
    return MonitorSettings.resolve(**{name: getattr(args, name, None) for name in SETTINGS})


def _describe_fit(settings: MonitorSettings, params, data, monitors, seconds, calibrate) -> list[str]:
    normal = data.normal
    n_rows = sum(len(r.rows) for r in normal)
    mon = next(iter(monitors.values()))
    if calibrate:
        cal = mon.calibration
        limits = (f"limits: set on {', '.join(r.key for r in calibrate)} ({cal['rows']} rows) for at most "
                  f"{100 * cal['far']:g}% alarms")
    else:
        limits = f"limits: {settings.limit}, alpha {settings.alpha}, holdout {settings.holdout}"
    lines = [f"normal rows: {n_rows} x {normal[0].rows.shape[1]} from {data.source}; {limits}; "
             "alarm rule: " + ("every row above the limit" if mon.persist == 1 else
                               f"{mon.persist} consecutive rows above the limit")]
    pca = monitors["PCA"]
    lines.append(f"SAE: hidden {params['hidden']}, {params['activation']}, {params['penalty']} (rho {params['rho']}, "
                 f"beta {params['beta']}), weight decay {params['weight_decay']}, {params['epochs']} epochs, lags "
                 f"{settings.lags}: fitted in {seconds['SAE']:.1f} s; PCA: {pca.model.components} components, lags "
                 f"{pca.lags} ({len(pca.scaler_.mean_)} columns), {seconds['PCA']:.2f} s")
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


def _fitted(args: argparse.Namespace, settings: MonitorSettings, tests: bool):
    """(autoencoder parameters, runs, calibration runs, monitors, seconds) of the one-shot command or `fit`."""
    from ..apps.monitor_folder import calibration_runs, check_columns, fit_sae_and_pca, select_runs

    params = _estimator_params(config_from_args(args, MONITOR_START))
    data = select_runs(dataset=args.dataset, data_dir=args.data_dir, normal=args.normal, test=args.test,
                       onset=args.onset, faults=args.faults, score=tests)
    calibrate = calibration_runs(settings.calibrate, data.dataset, args.data_dir)
    variables = data.normal[0].columns or [f"x{j + 1}" for j in range(data.normal[0].rows.shape[1])]
    for run in data.tests:  # before any fitting
        check_columns(run, variables, data.normal[0].rows.shape[1])
    monitors, seconds = fit_sae_and_pca(data.normal, settings, params, calibrate)
    return params, data, calibrate, monitors, seconds


def run_monitor_benchmark(args: argparse.Namespace) -> int:
    from ..apps.monitor_folder import score_runs, table
    from ..run.output import claim_file

    t_start = time.perf_counter()
    settings = _settings(args)
    if args.json:
        claim_file(args.json, "--json", args.overwrite)  # before any fitting
    params, data, calibrate, monitors, seconds = _fitted(args, settings, tests=True)
    rows, mean = table(score_runs(monitors, data.tests), data.scored)

    for line in _describe_fit(settings, params, data, monitors, seconds, calibrate):
        print(line)
    _print_table(rows, mean, list(monitors), data.scored, data.dataset is None)
    if calibrate and any(r.key in {t.key for t in data.tests} for r in calibrate):
        print("(the limits were set on " + ", ".join(r.key for r in calibrate) + ": its false-alarm rate is "
              "in-sample)")
    print(RECOMMENDATION)
    total = time.perf_counter() - t_start
    print(f"total {total:.1f} s")
    if args.json:
        mon = next(iter(monitors.values()))
        _write_json(args.json, {"source": data.source, "limit": settings.limit, "alpha": settings.alpha,
                                "holdout": settings.holdout, "limits": {m: mon.limits for m, mon in monitors.items()},
                                "lags": settings.lags, "pca_lags": settings.pca_lags,
                                "pca_components": monitors["PCA"].model.components,
                                "persist": mon.persist, "calibration": mon.calibration,
                                "fit_seconds": seconds, "rows": rows, "mean": mean, "mean_over": data.scored,
                                "seconds": total})
    return 0


def run_monitor_fit(args: argparse.Namespace) -> int:
    from ..apps.monitor_folder import save_folder
    from ..run.output import OutputFolder, next_free

    settings = _settings(args)
    out = args.out if args.out is not None else str(next_free(MONITOR_RUNS, "monitor"))
    output = OutputFolder(out, "replace" if args.overwrite else "refuse", kind="monitor")  # before any fitting
    params, data, calibrate, monitors, seconds = _fitted(args, settings, tests=False)
    save_folder(output, monitors, {"dataset": data.dataset, "normal": [r.key for r in data.normal],
                                   "calibrate": [r.key for r in calibrate] if calibrate else None,
                                   "settings": {**settings.record(), "autoencoder": params}})
    for line in _describe_fit(settings, params, data, monitors, seconds, calibrate):
        print(line)
    for label, mon in monitors.items():
        print(f"{label} limits: T2 {mon.limits['t2']:.6g}, SPE {mon.limits['spe']:.6g}")
    print(RECOMMENDATION)
    print(f"wrote {out} (monitors.json, " + ", ".join(f"{m}/" for m in monitors) + ")")
    return 0


def run_monitor_score(args: argparse.Namespace) -> int:
    from ..apps.monitor_folder import load_folder, score_runs, score_sources, table, write_scores
    from ..run.output import OutputFolder, claim_file, next_free

    t_start = time.perf_counter()
    record, monitors = load_folder(args.mon_dir)
    data = score_sources(args.files, dataset=args.dataset, data_dir=args.data_dir, faults=args.faults,
                         onset=args.onset)
    settings = _settings(args)  # the window; --persist when given (else each monitor's own rule) is checked
    out = args.out if args.out is not None else str(next_free(args.mon_dir, "score"))
    output = OutputFolder(out, "replace" if args.overwrite else "refuse", kind="score")
    if args.json:
        claim_file(args.json, "--json", args.overwrite, inside=[out])
    scores = score_runs(monitors, data.tests, args.persist)
    rows, mean = table(scores, data.scored)
    info = {"monitor_folder": str(args.mon_dir), "persist": {m: (args.persist or mon.persist)
                                                              for m, mon in monitors.items()},
            "lags": {m: mon.lags for m, mon in monitors.items()},
            "limits": {m: mon.limits for m, mon in monitors.items()},
            "window": settings.window, "mean_over": data.scored}
    with output:  # complete, or the folder it replaces stays as it was
        found = write_scores(output.create(), data.tests, monitors, scores, rows, mean, info, settings.window)

    _print_scores(args, monitors, info, data, rows, mean)
    _print_contributions(data.tests, found, monitors, settings.window)
    if args.json:
        _write_json(args.json, {"monitor_folder": str(args.mon_dir), "rows": rows, "mean": mean,
                                "mean_over": data.scored, "limits": info["limits"]})
    print(f"wrote {out} (per run: CSV, control chart, contributions; summary.csv, summary.json, report.html) "
          f"in {time.perf_counter() - t_start:.1f} s")
    return 0


def _print_scores(args: argparse.Namespace, monitors, info, data, rows, mean) -> None:
    labels = list(monitors)
    mon = next(iter(monitors.values()))
    rule = ", ".join(f"{m} {info['persist'][m]}" for m in labels)
    lags = ", ".join(f"{m} {info['lags'][m]}" for m in labels)
    print(f"monitor folder {args.mon_dir}: {', '.join(labels)}; {len(mon.variables)} variables, lags: {lags}; "
          f"alarm rule: consecutive rows above the limit: {rule}")
    for m, one in monitors.items():
        if one.calibration and args.persist and args.persist != one.calibration["persist"]:
            print(f"note: {m}'s limits were set for an alarm rule of {one.calibration['persist']} rows, "
                  f"not {args.persist}")
    _print_table(rows, mean, labels, data.scored, data.dataset is None)


def _print_contributions(runs, found, monitors, window: int) -> None:
    from ..apps.monitor_folder import top_contributors

    first = next(iter(monitors))
    names = monitors[first].variables
    print(f"largest contributions over the first {window} alarm rows from the onset on ({first}; SPE: share "
          "of SPE; T2: reconstruction-based contribution)")
    width = max(len(r.key) for r in runs)
    for run in runs:
        c = found[run.key][first]
        if c is None:
            print(f"{run.key:<{width}s}  no alarm")
            continue
        total = float(c["spe"].sum())
        spe = ", ".join(f"{n} {100 * v / total:.0f}%" for n, v in top_contributors(c, names, "spe"))
        t2 = ", ".join(f"{n} {v:.3g}" for n, v in top_contributors(c, names, "t2"))
        print(f"{run.key:<{width}s}  SPE: {spe}; T2: {t2}")


# --- cluster ---------------------------------------------------------------------------------------

# The cluster's starting values (docs/clustering.md): 16 sigmoid units with a KL penalty; the rows
# of D^-1 S are probabilities, hence no input transform and a sigmoid output.
CLUSTER_START = {"model": {"hidden": [16], "activation": "sigmoid", "input_transform": "none",
                           "output_activation": "sigmoid"},
                 "sparsity": {"penalty": families.KL, "rho": 0.2, "beta": 0.01, "weight_decay": 0.0},
                 "train": {"epochs": 500, "batch_size": 256, "lr": 1e-2, "seed": 0}}
CLUSTER_EXTRA = ("--input-transform", "--output-activation")


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    flags.add(src, "--graph", "--features")
    flags.add(p, "--labels", "--clusters", "--knn", "--self-loops", "--restarts")
    _add_estimator(p, CLUSTER_START, CLUSTER_EXTRA)
    flags.add(p, "--json", "--overwrite")


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
    from ..run.output import claim_file

    params = _estimator_params(config_from_args(args, CLUSTER_START), CLUSTER_EXTRA)
    if args.json:
        claim_file(args.json, "--json", args.overwrite)  # before any training
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
    flags.add(p, "run_dir", "--out", "--data-dir", "--encode-alpha", "--screenshot", "--overwrite",
              shown={"--out": "RUN_DIR/report.html"})


def run_report(args: argparse.Namespace) -> int:
    from ..run.output import claim_file
    from ..run.report import check_screenshot, screenshot, write_report

    # both files before the report is written: the run's own report.html may be replaced, as may an
    # earlier report elsewhere (it names its writer); anything else only with --overwrite
    own = Path(args.run_dir) / "report.html"
    claim_file(args.out if args.out is not None else own, "--out", args.overwrite, own=own, ours=_is_report)
    if args.screenshot:
        check_screenshot(args.screenshot)  # chromium is there, and no file but a PNG is replaced
        claim_file(args.screenshot, "--screenshot", args.overwrite)
    t0 = time.perf_counter()
    out = write_report(args.run_dir, args.out, data_dir=args.data_dir, encode_alpha=args.encode_alpha)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB = {size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
    if args.screenshot:
        t0 = time.perf_counter()
        shot = screenshot(out, args.screenshot)
        print(f"chromium decoded every image; wrote {shot} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _is_report(path: Path) -> bool:
    """A file `sparseae report` wrote (run/report.py recognises its own pages)."""
    from ..run.report import check_replaceable

    try:
        check_replaceable(path)
    except SparseAEError:
        return False
    return True
