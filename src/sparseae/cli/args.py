"""Every flag of the `sparseae` command, defined once here; the commands compose them.

Decisions (issue 10): a flag has one name, dest, type, default and meaning in every command.
- Flags that set a configuration field (CONFIG_FLAGS) take their help from the field's docstring in
  config.py and default to None, "not given": the value then comes from the command's starting
  configuration (train/stack/sweep: RunConfig() or --preset; gradcheck: the ufldl preset; monitor
  and cluster: their own start values; train --resume: the run's), named in that command's help.
  So --hidden, --epochs, --seed, --lr, --device ... are the same flag wherever they appear.
- --device: auto everywhere (cuda when there is one); eval, probe, monitor and cluster said cpu.
- --dataset is always a built-in data set's name, --data always an array file. monitor's
  `--data tep` is now `--dataset tep`; the old spelling is not kept, as --data means a file.
- --data-dir, --classes, --limit-train: the config fields' flags also in eval, probe, monitor,
  report (the folder of the data files; use only these labels; only the first N training rows).
- The probe's L-BFGS iterations are --probe-iter (was --max-iter, the training optimizer's).
- --out is where a command writes: train/stack a run folder (default: the first free runs/train-NNN,
  runs/stack-NNN, so that running a command twice never replaces a run), sweep a folder of runs
  (runs/sweep-NNN), report the HTML file (RUN_DIR/report.html); its own default is None. A folder
  that already holds files is refused unless --overwrite (issue 12: a user's files are sacred).
- --preset defaults to none everywhere; gradcheck then starts from ufldl.
- --json FILE (monitor, cluster): also write the results as JSON. Settings are yes|no values
  (cluster's --self-loops too); switches (--quiet, --no-raw, --self-taught) take none; --auxk alone
  means yes and takes `no` too, since the TopK families turn AuxK on by default (issue 11).
- The sweep's grid flags come from the family records (families.py: --k-grid, --kl-beta, ...), and its
  errors name them.

Start-up: this module imports only the standard library and the light settings modules (config.py,
families.py, apps/monitor_settings.py for the monitor's defaults); the commands import the
library inside their run functions, so `sparseae --help` never loads torch, numpy or matplotlib.
"""
from __future__ import annotations

import argparse
import copy
from typing import Any

from ..apps.monitor_settings import DEFAULTS as MONITOR
from ..families import FAMILIES, MP, NONE as FAMILY_NONE, TOPK
from ..config import FEATURE_SETS, GRAPHS, LIMIT_METHODS, PRESETS, RunConfig, TrainConfig

# What --device means when it is not given, in every command: cuda when there is one.
DEFAULT_DEVICE = TrainConfig.device

# --- values --------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def yes_no(text: str) -> bool:
    if text.lower() in ("yes", "y", "true", "1"):
        return True
    if text.lower() in ("no", "n", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got '{text}'")


def l2_value(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got '{text}'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"l2 must be >= 0, got {text}")
    return value


_YES_NO = {"type": yes_no, "metavar": "yes|no"}

# --- flags that set a configuration field ----------------------------------------------------------

# flag -> (config section, field, argparse keywords); help and defaults come from config.py.
CONFIG_FLAGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "--dataset": ("train", "dataset", {}),
    "--data-dir": ("train", "data_dir", {}),
    "--hidden": ("model", "hidden", {"type": int_list, "help": "encoder sizes, e.g. 256 or 256,128,64"}),
    "--decoder": ("model", "decoder", {"type": int_list, "help": "decoder hidden sizes (default: mirrored)"}),
    "--activation": ("model", "activation", {}),
    "--code-activation": ("model", "code_activation", {}),
    "--output-activation": ("model", "output_activation", {}),
    "--tied": ("model", "tied", _YES_NO),
    "--topk": ("model", "topk", {}),
    "--k": ("model", "k", {"type": int}),
    "--encode-alpha": ("model", "encode_alpha", {"type": float}),
    "--unit-norm-decoder": ("model", "unit_norm_decoder", _YES_NO),
    "--pre-bias": ("model", "pre_bias", _YES_NO),
    "--bias-init": ("model", "bias_init", {}),
    "--jumprelu-threshold": ("model", "jumprelu_threshold", {"type": float}),
    "--jumprelu-bandwidth": ("model", "jumprelu_bandwidth", {"type": float}),
    "--active-threshold": ("model", "active_threshold", {"type": float}),
    "--dead-window": ("model", "dead_window", {"type": int}),
    "--topk-kernel": ("model", "topk_kernel", {}),
    "--input-transform": ("model", "input_transform", {}),
    "--zca-epsilon": ("model", "zca_epsilon", {"type": float}),
    "--input-scale": ("model", "input_scale", _YES_NO),
    "--principal-start": ("model", "principal_start", _YES_NO),
    "--penalty": ("sparsity", "penalty", {}),
    "--rho": ("sparsity", "rho", {"type": float}),
    "--beta": ("sparsity", "beta", {"type": float}),
    "--penalty-layers": ("sparsity", "layers", {"type": int_list}),
    "--rho-hat": ("sparsity", "rho_hat", {}),
    "--rho-momentum": ("sparsity", "rho_momentum", {"type": float}),
    "--weight-decay": ("sparsity", "weight_decay", {"type": float}),
    # `--auxk` alone means yes (as before); `--auxk no` turns off the TopK families' default
    "--auxk": ("sparsity", "auxk", {"type": yes_no, "nargs": "?", "const": True, "metavar": "yes|no"}),
    "--auxk-coef": ("sparsity", "auxk_coef", {"type": float}),
    "--k-aux": ("sparsity", "k_aux", {"type": int}),
    "--decoder-norm-l1": ("sparsity", "decoder_norm_l1", _YES_NO),
    "--beta-warmup": ("sparsity", "beta_warmup", {"type": int}),
    "--prefixes": ("sparsity", "prefixes", {"type": int_list}),
    "--l0": ("sparsity", "target_l0", {"type": float, "metavar": "TARGET"}),
    "--l0-rate": ("sparsity", "l0_rate", {"type": float, "metavar": "RATE"}),
    "--preact-coef": ("sparsity", "preact_coef", {"type": float}),
    "--jumprelu-tanh": ("sparsity", "jumprelu_tanh", {"type": float}),
    "--batchtopk-warmup": ("sparsity", "batchtopk_warmup", {"type": float, "metavar": "SHARE"}),
    "--topk-start": ("sparsity", "topk_start", {"type": float, "metavar": "SHARE"}),
    "--classes": ("train", "classes", {"type": int_list,
                                       "help": "use only the examples of these labels, e.g. 5,6,7,8,9"}),
    "--limit-train": ("train", "limit_train", {"type": int}),
    "--epochs": ("train", "epochs", {"type": int}),
    "--batch-size": ("train", "batch_size", {"type": int}),
    "--lr": ("train", "lr", {"type": float}),
    "--lr-decay": ("train", "lr_decay", {"type": float}),
    "--refit-decoder": ("train", "refit_decoder", _YES_NO),
    "--optimizer": ("train", "optimizer", {}),
    "--momentum": ("train", "momentum", {"type": float}),
    "--max-iter": ("train", "max_iter", {"type": int}),
    "--threads": ("train", "threads", {"type": int}),
    "--init": ("train", "init", {}),
    "--recon": ("train", "recon", {}),
    "--device": ("train", "device", {}),
    "--seed": ("train", "seed", {"type": int}),
    "--target-val-mse": ("train", "target_val_mse", {"type": float}),
    "--data": ("train", "data", {"metavar": "PATH"}),
    "--data-key": ("train", "data_key", {}),
    "--target": ("train", "target", {"metavar": "PATH"}),
    "--target-key": ("train", "target_key", {}),
    "--val-fraction": ("train", "val_fraction", {"type": float}),
    "--stream": ("train", "stream", {}),
    "--checkpoint-every": ("train", "checkpoint_every", {"type": int}),
    "--precision": ("train", "precision", {}),
    "--compile": ("train", "compile", _YES_NO),
    "--cuda-graph": ("train", "cuda_graph", _YES_NO),
    "--patch-size": ("train", "patch_size", {"type": int}),
    "--num-patches": ("train", "num_patches", {"type": int}),
    "--patch-channels": ("train", "patch_channels", {"type": int}),
    "--whiten-images": ("train", "whiten_images", _YES_NO),
    "--image-downsample": ("train", "image_downsample", {"type": int}),
    "--patch-normalize": ("train", "patch_normalize", _YES_NO),
}


# --- the other flags -----------------------------------------------------------------------------

# flag -> argparse keywords. A help ending in "(default: ...)" names a fixed default; flags whose
# default is None get the command's value appended by `add`.
OTHER_FLAGS: dict[str, dict[str, Any]] = {
    # what to train and where it goes
    "--preset": {"choices": sorted(PRESETS),
                 "help": "start from a named configuration (tutorial: 784-256-128-64-32-16 mirrored, KL on the "
                         "code; ufldl: Ng's 64-25-64 exercise on image patches with L-BFGS; ufldl-linear: "
                         "192-400-192 linear decoder on ZCA-whitened colour patches; ksparse: Makhzani & Frey's "
                         "tied linear TopK, give --k)"},
    "--reg-param": {"dest": "beta", "type": float, "help": "alias of --beta"},
    "--add-sparsity": {**_YES_NO, "help": "'no' trains the plain autoencoder (same as --penalty none)"},
    "--out": {"metavar": "PATH", "help": "where to write the output"},
    "--quiet": {"action": "store_true", "help": "no progress bar"},
    "--overwrite": {"action": "store_true",
                    "help": "replace what an output flag names when it exists (default: refuse): a folder only if "
                            "sparseae wrote every file in it (the new results are written beside it and take its "
                            "place once complete), a file only outside the folders sparseae writes"},
    "--check": {"action": "store_true",
                "help": "check the settings, the data and the output folder, say what would be done, and stop "
                        "(nothing is written)"},
    "--resume": {"metavar": "RUN_DIR", "help": "continue the killed run in RUN_DIR from its last checkpoint; "
                                                "settings default to the run's, and any that differ are refused"},
    "--json": {"metavar": "FILE", "help": "also write the results as JSON to FILE"},
    "--csv": {"metavar": "FILE", "help": "also write the table as CSV to FILE"},
    "--tensorboard": {"metavar": "DIR",
                      "help": "also log each epoch's scalars (losses, validation MSE/FVU, L0, dead fraction) and "
                              "its reconstruction and feature images to DIR for TensorBoard (needs the optional "
                              "extra: pip install 'sparseae[tensorboard]')"},
    "--screenshot": {"metavar": "PNG",
                     "help": "then open the page in headless Chromium, check that every image decodes, and save "
                             "a picture of its feature browser to PNG (needs chromium: apt-get install chromium)"},
    "run_dir": {"help": "a run folder written by `sparseae train`"},
    "run_dirs": {"nargs": "*", "metavar": "RUN_DIR", "help": "run folders whose features to probe"},
    # activations, export, import (apps/activations.py, apps/ecosystem.py)
    "--model": {"metavar": "MODULE:FACTORY",
                "help": "the PyTorch model: a module (pkg.mod) or a Python file (path/to/file.py), a colon, and a "
                        "function of no arguments there that returns the nn.Module (with its trained weights)"},
    "--layer": {"metavar": "NAME", "help": "the submodule to hook, as model.named_modules() names it (e.g. "
                                           "encoder.layers.0)"},
    "--site": {"choices": ["out", "in", "both"], "default": "out",
               "help": "record the submodule's output, its (first) input, or both in one pass for a transcoder "
                       "(--out X.npy then writes X.in.npy and X.out.npy) (default: %(default)s)"},
    "--max-rows": {"type": int, "metavar": "N", "help": "stop after N rows (default: all the data gives)"},
    "--format": {"choices": ["saelens", "sparsify"], "default": "saelens",
                 "help": "saelens: cfg.json + sae_weights.safetensors (SAE.load_from_disk); sparsify: cfg.json + "
                         "sae.safetensors (SparseCoder.load_from_disk) (default: %(default)s)"},
    "out_dir": {"metavar": "OUT_DIR", "help": "the folder to write the SAE into (new or empty; with --overwrite, "
                                              "one holding only that format's files)"},
    "peer_dir": {"metavar": "DIR", "help": "a SAELens folder (cfg.json + sae_weights.safetensors) or an "
                                           "eai-sparsify checkpoint folder (cfg.json + sae.safetensors)"},
    # eval: model/pursuit.ENCODE_METHODS after the first (spelled here: --help never imports torch)
    "--encode": {"choices": ["omp", MP],
                 "help": f"also measure the code chosen by orthogonal ('omp') or plain ('mp') matching pursuit "
                         f"over the decoder's columns, k atoms (one-layer models with a linear output); the "
                         f"default is the model's own code ('{TOPK}' in model.encode)"},
    # gradcheck
    "--input-dim": {"type": int, "default": 64, "help": "input features (default: %(default)s)"},
    "--examples": {"type": int, "default": 20, "help": "random examples in [0.1, 0.9] (default: %(default)s)"},
    "--epsilon": {"type": float, "default": 1e-4, "help": "central-difference step (default: %(default)s)"},
    "--tol": {"type": float, "default": 1e-9,
              "help": "largest relative difference accepted; exit code 1 above it (default: %(default)s)"},
    # stack
    "--finetune": {"default": "unsupervised", "choices": ["unsupervised", "supervised", "none"],
                   "help": "after greedy pretraining: whole-stack reconstruction, softmax on the labels (L-BFGS), "
                           "or nothing (default: %(default)s)"},
    "--finetune-epochs": {"type": int, "help": "epochs of unsupervised fine-tuning (default: --epochs)"},
    "--finetune-iter": {"type": int, "default": 100,
                        "help": "L-BFGS iterations of supervised fine-tuning (default: %(default)s)"},
    # probe
    "--no-raw": {"action": "store_true", "help": "leave out the raw-pixel baseline"},
    "--self-taught": {"action": "store_true",
                      "help": "UFLDL self-taught learning: probe on labels 0-4 only (train the autoencoders "
                              "with --classes 5,6,7,8,9)"},
    "--probe-iter": {"type": int, "default": 300, "help": "L-BFGS iterations of the probe (default: %(default)s)"},
    "--l2": {"type": l2_value, "default": 1e-4,
             "help": "L2 penalty on the probe's weights, or 'auto': chosen from 1e-4, 1e-3, 1e-2 on the last "
                     "sixth of the training rows, never on the test split (default: %(default)s)"},
    # sweep
    # the sweep's grid flags, one per family (families.py): the values of what it varies
    **{f.sweep_flag: {"type": float_list, "default": [], "metavar": f"{f.swept.upper()},...",
                      "help": f"{f.name} ({f.help}): values of {f.swept}"}
       for f in FAMILIES.values() if f.sweep_flag},
    "--pca": {**_YES_NO, "default": True,
              "help": "draw PCA at equal L0 as the reference curve and print each model's FVU ratio to it "
                      "(default: yes)"},
    # monitor
    "--faults": {"type": int_list, "help": "tep: test files to score (default: 0..21)"},
    "--normal": {"nargs": "+", "metavar": "FILE",
                 "help": "normal-operation runs (.csv, .npy, ... or .dat), one file per run: lags never join two"},
    "--test": {"nargs": "+", "metavar": "FILE", "help": "test files (.csv, .npy, ... or .dat)"},
    "--onset": {"type": int, "help": "rows before the fault in each test file (omit when they are all normal)"},
    "mon_dir": {"metavar": "MON_DIR", "help": "a monitor folder written by `sparseae monitor fit`"},
    "files": {"nargs": "*", "metavar": "FILE",
              "help": "runs to score (.csv, .npy, ... or .dat), named in the table by the path as given"},
    # the monitor's settings: defaults from apps/monitor_settings.py (MonitorSettings); --persist and
    # --far stay None when not given (score: the folder's rule; --far needs --calibrate)
    "--lags": {"type": int, "default": MONITOR.lags,
               "help": "the autoencoder's time-lagged inputs: each row stacked with its L predecessors (PCA: "
                       "--pca-lags); the first L rows of a file get no statistic (default: %(default)s)"},
    "--persist": {"type": int,
                  "help": f"alarm rule: an alarm after N consecutive rows above the limit (default: {MONITOR.persist}; "
                          "score: the monitor folder's)"},
    "--calibrate": {"nargs": "+", "metavar": "FILE",
                    "help": "normal runs not used for fitting that set the limits instead: the lowest at which the "
                            "alarm rule raises at most --far alarms on them (with --dataset tep, d00_te names its "
                            "normal test run; its false-alarm rate is then in-sample)"},
    "--far": {"type": float,
              "help": f"the false-alarm rate --calibrate sets the limits for (default: {MONITOR.far})"},
    "--window": {"type": int, "default": MONITOR.window,
                 "help": "contributions: the mean over the first N alarm rows from the onset on "
                         "(default: %(default)s)"},
    "--limit": {"choices": LIMIT_METHODS, "default": MONITOR.limit,
                "help": "kde: quantile of a KDE of the reference statistic; theory: F (T^2) and "
                        "moment-matched chi-square (SPE) (default: %(default)s)"},
    "--alpha": {"type": float, "default": MONITOR.alpha,
                "help": "confidence level of the limits (default: %(default)s)"},
    "--holdout": {"type": float, "default": MONITOR.holdout,
                  "help": "share of the normal rows (the last ones) kept out of fitting; the limits come from "
                          "their statistics (default: %(default)s; 0: limits from the training rows)"},
    "--pca-components": {"type": int, "default": MONITOR.pca_components,
                         "help": "PCA monitor components (default: all but the 8 smallest directions of its "
                                 "lagged rows, fewer than its fitting rows: 200 on Tennessee Eastman)"},
    "--pca-lags": {"type": int, "default": MONITOR.pca_lags,
                   "help": "time lags of the PCA monitor, its own (dynamic PCA; --lags is the autoencoder's) "
                           "(default: %(default)s)"},
    # cluster
    "--graph": {"help": f"built-in graph ({', '.join(GRAPHS)}) or a file: an adjacency matrix (.npy, square "
                        ".csv) or an edge list (rows 'u v [weight]')"},
    "--features": {"help": f"built-in feature set ({', '.join(FEATURE_SETS)}) or a feature matrix file (.npy, "
                           ".csv); turned into a Gaussian similarity graph"},
    "--labels": {"metavar": "FILE", "help": "ground-truth labels, one per node, for NMI"},
    "--clusters": {"type": int, "help": "number of clusters (default: number of labels)"},
    "--knn": {"type": int, "help": "features: keep each row's k nearest neighbours"},
    "--self-loops": {**_YES_NO, "default": True,
                     "help": "s_ii = 1 (a node is similar to itself) before normalising; both methods use the "
                             "same matrix (default: yes)"},
    "--restarts": {"type": int, "default": 5,
                   "help": "train the autoencoder from this many initialisations and keep the one with the "
                           "lowest reconstruction error of D^-1 S (default: %(default)s)"},
}

# --- shared groups -------------------------------------------------------------------------------

# A training run: every configuration field, the preset and the switch off of sparsity.
TRAINING = ("--preset", *CONFIG_FLAGS, "--reg-param", "--add-sparsity")
# The model and its loss alone (gradcheck): no data, no optimizer.
OBJECTIVE = tuple(f for f, (section, name, _) in CONFIG_FLAGS.items()
                  if section != "train" or name in ("recon", "init", "seed"))
# The scikit-learn estimator that monitor and cluster train.
ESTIMATOR = ("--hidden", "--activation", "--penalty", "--rho", "--beta", "--weight-decay", "--epochs",
             "--batch-size", "--lr", "--seed", "--device")


def add(p: argparse._ActionsContainer, *flags: str, shown: dict[str, Any] | None = None) -> None:
    """Add `flags` to a parser or argument group. `shown` names, for the help, the value the command
    uses when a flag whose own default is None is not given (its starting configuration's)."""
    shown = shown or {}
    for flag in flags:
        if flag in CONFIG_FLAGS:
            section, name, kw = CONFIG_FLAGS[flag]
            kw = {"metavar": name.upper(), "help": _field_docs()[section].get(name, "").replace("%", "%%"), **kw,
                  "default": None}  # argparse formats help with %
        else:
            kw = dict(OTHER_FLAGS[flag])
        value = shown.get(flag)
        if value is not None:
            value = ",".join(map(str, value)) if isinstance(value, list) else value  # as it is typed
            kw["help"] += f" (default: {value})".replace("%", "%%")
        p.add_argument(flag, **kw)


def shown_defaults(config: RunConfig) -> dict[str, Any]:
    """{flag: value} of a configuration, for `add`'s help."""
    return {flag: getattr(getattr(config, section), name) for flag, (section, name, _) in CONFIG_FLAGS.items()}


def config_from_args(args: argparse.Namespace, start: dict[str, Any] | None = None,
                     preset: str | None = None) -> RunConfig:
    """The requested configuration, checked: RunConfig() updated with `start` (a run's config.json, or a
    command's own values), then the preset (--preset, else `preset`), then every flag given. Settings
    left unset stay None: the library resolves them (`config.resolve`), once."""
    base = RunConfig().to_dict()
    for section, values in (start or {}).items():
        base[section].update(copy.deepcopy(values))
    preset = getattr(args, "preset", None) or preset
    if preset:
        for section, values in PRESETS[preset].items():
            base[section].update(copy.deepcopy(values))
    for flag, (section, name, _) in CONFIG_FLAGS.items():
        value = getattr(args, dest(flag), None)
        if value is not None:
            base[section][name] = value
    if getattr(args, "add_sparsity", None) is False:
        base["sparsity"]["penalty"] = FAMILY_NONE
    config = RunConfig.from_dict(base)
    config.validate()
    return config


def training_config(argv: list[str]) -> RunConfig:
    """The configuration `sparseae train ARGV` trains with (resolved: every family default filled in), for
    benchmarks and tests that train through the library as the command line would."""
    from ..config import resolve

    p = argparse.ArgumentParser()
    add(p, *TRAINING)
    return resolve(config_from_args(p.parse_args(list(argv))))


def start_config(start: dict[str, Any] | None = None, preset: str | None = None) -> RunConfig:
    """A command's starting configuration, no flags given (what its help names as defaults)."""
    return config_from_args(argparse.Namespace(), start, preset)


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


_FIELD_DOCS: dict[str, dict[str, str]] = {}


def _field_docs() -> dict[str, dict[str, str]]:
    """{section: {field: docstring}} of the config dataclasses, from config.py's source.

    One ast.parse of the file (about 3 ms); inspect.getsource per class took 50 ms.
    """
    if not _FIELD_DOCS:
        import ast
        from pathlib import Path

        from .. import config

        sections = {"ModelConfig": "model", "SparsityConfig": "sparsity", "TrainConfig": "train"}
        for cls in ast.parse(Path(config.__file__).read_text()).body:
            if isinstance(cls, ast.ClassDef) and cls.name in sections:
                body = cls.body
                _FIELD_DOCS[sections[cls.name]] = {
                    node.target.id: " ".join(str(nxt.value.value).split())
                    for node, nxt in zip(body, body[1:])
                    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)}
    return _FIELD_DOCS
