"""`sparseae export` / `sparseae import`: SAELens folders and sparsify checkpoints out and in.

No peer library is needed: the formats' rules (their loaders' encode and decode) are written out here
from SAELens 6's and sparsify 1.3's source; benchmarks/ecosystem_compat.py checks the same folders with
the libraries themselves."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sparseae
from sparseae.apps.ecosystem import export_run, import_folder
from sparseae.cli import main
from sparseae.cli.args import training_config
from sparseae.run.rundir import load_run

from conftest import needs_fmnist

K = {"topk": 6, "batchtopk": 6, "matryoshka": 6}


def saelens_reconstruct(folder: Path, x: torch.Tensor) -> torch.Tensor:
    """SAELens 6's SAE.decode(SAE.encode(x)) for a folder, written from its source (standard, topk,
    jumprelu; apply_b_dec_to_input; topk's rescale_acts_by_decoder_norm)."""
    cfg = json.loads((folder / "cfg.json").read_text())
    if cfg.get("activation_fn_str") == "topk":  # SAELens's handle_pre_6_0_config
        cfg.update(architecture="topk", k=cfg["activation_fn_kwargs"]["k"])
    w = {k: v.double() for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    x = x.double()
    z = (x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)) @ w["W_enc"] + w["b_enc"]
    arch = cfg["architecture"]
    if arch == "topk":
        rescale = cfg.get("rescale_acts_by_decoder_norm", False)
        norms = w["W_dec"].norm(dim=-1)
        z = z * norms if rescale else z
        vals, idx = z.topk(cfg["k"], dim=-1)
        acts = torch.zeros_like(z).scatter_(-1, idx, vals.relu())
        acts = acts / norms if rescale else acts
    elif arch == "jumprelu":
        acts = z.relu() * (z > w["threshold"])
    else:
        acts = z.relu()
    return acts @ w["W_dec"] + w["b_dec"]


def sparsify_reconstruct(folder: Path, x: torch.Tensor) -> torch.Tensor:
    """sparsify's SparseCoder: the k largest of ReLU((x - b_dec) W^T + b), times W_dec, plus b_dec."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = {k: v.double() for k, v in load_file(str(folder / "sae.safetensors")).items()}
    pre = torch.relu((x.double() - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    vals, idx = pre.topk(cfg["k"], dim=-1)
    return torch.zeros_like(pre).scatter_(-1, idx, vals) @ w["W_dec"] + w["b_dec"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    """1,200 rows of 20 features in [0, 1] (pixel-like): a few directions plus noise."""
    rng = np.random.default_rng(0)
    x = rng.random((1200, 6)) @ rng.random((6, 20)) / 3 + 0.05 * rng.random((1200, 20))
    path = tmp_path_factory.mktemp("data") / "x.npy"
    np.save(path, x.astype(np.float32))
    return path


def trained(tmp: Path, rows: Path, family: str, *extra: str) -> Path:
    argv = ["--penalty", family, "--hidden", "40", "--epochs", "2", "--batch-size", "64", "--dataset", "array",
            "--data", str(rows), *extra]
    if family in K:
        argv += ["--k", str(K[family])]
    sparseae.train(training_config(argv), out=tmp / family, progress=False)
    return tmp / family


def reconstruct(run: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load_run(run).reconstruct(x)


def eval_fvu(run: Path, capsys) -> float:
    assert main(["eval", str(run)]) == 0
    return json.loads(capsys.readouterr().out)["fvu"]


@pytest.mark.parametrize("family,architecture", [("topk", "topk"), ("l1", "standard"), ("jumprelu", "jumprelu"),
                                                 ("batchtopk", "jumprelu"), ("matryoshka", "jumprelu")])
def test_round_trip_through_saelens_gives_the_same_model(tmp_path, rows, capsys, family, architecture):
    run = trained(tmp_path, rows, family)
    out, back = tmp_path / "sl", tmp_path / "back"
    assert main(["export", str(run), "--format", "saelens", str(out)]) == 0
    assert main(["import", str(out), "--format", "saelens", "--out", str(back), "--data", str(rows)]) == 0
    capsys.readouterr()
    x = torch.from_numpy(np.load(rows)[:1000])
    ours, again = reconstruct(run, x), reconstruct(back, x)
    assert (ours - again).abs().max().item() <= 1e-6
    assert (ours.double() - saelens_reconstruct(out, x)).abs().max().item() <= 1e-5  # SAELens's own rule
    assert abs(eval_fvu(run, capsys) - eval_fvu(back, capsys)) <= 1e-6
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == architecture and (cfg["d_in"], cfg["d_sae"]) == (20, 40)
    assert cfg["dtype"] == "float32" and cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none" and cfg["metadata"]["sae_lens_version"].startswith("6.")
    assert cfg.get("k") == (K[family] if architecture == "topk" else None)
    shapes = {k: list(v.shape) for k, v in load_file(str(out / "sae_weights.safetensors")).items()}
    want = {"W_enc": [20, 40], "b_enc": [40], "W_dec": [40, 20], "b_dec": [20]}
    assert shapes == ({**want, "threshold": [40]} if architecture == "jumprelu" else want)
    assert sorted(p.name for p in back.iterdir()) == [".sparseae", "config.json", "model.safetensors",
                                                      "summary.json"]


def test_round_trip_through_sparsify(tmp_path, rows, capsys):
    run = trained(tmp_path, rows, "topk")
    out, back = tmp_path / "sp", tmp_path / "back"
    assert main(["export", str(run), "--format", "sparsify", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae.safetensors"]
    cfg = json.loads((out / "cfg.json").read_text())
    assert (cfg["d_in"], cfg["num_latents"], cfg["k"], cfg["activation"]) == (20, 40, 6, "topk")
    assert main(["import", str(out), "--format", "sparsify", "--out", str(back), "--data", str(rows)]) == 0
    x = torch.from_numpy(np.load(rows)[:1000])
    assert (reconstruct(run, x) - reconstruct(back, x)).abs().max().item() <= 1e-6
    assert (reconstruct(run, x).double() - sparsify_reconstruct(out, x)).abs().max().item() <= 1e-5
    capsys.readouterr()
    assert main(["export", str(trained(tmp_path, rows, "l1")), "--format", "sparsify", str(tmp_path / "l1sp")]) == 2
    assert "sparsify holds TopK SAEs" in capsys.readouterr().err and not (tmp_path / "l1sp").exists()


def test_a_tied_model_without_input_gain_exports_exactly(tmp_path, rows):
    run = trained(tmp_path, rows, "l1", "--tied", "yes", "--input-scale", "no", "--pre-bias", "no")
    export_run(run, tmp_path / "sl")
    w = load_file(str(tmp_path / "sl" / "sae_weights.safetensors"))
    assert torch.equal(w["W_enc"], w["W_dec"].T)  # one matrix, used both ways
    assert json.loads((tmp_path / "sl" / "cfg.json").read_text())["apply_b_dec_to_input"] is False
    import_folder(tmp_path / "sl", tmp_path / "back", data=str(rows))
    x = torch.from_numpy(np.load(rows)[:500])
    assert torch.equal(reconstruct(run, x), reconstruct(tmp_path / "back", x))


@pytest.mark.parametrize("argv,why", [
    (["--penalty", "kl", "--hidden", "12", "--output-activation", "linear"], "not ReLU"),
    (["--penalty", "l1", "--hidden", "16,8"], "deep or stacked"),
    (["--penalty", "topk", "--k", "4", "--hidden", "16", "--input-transform", "standardize"], "transform"),
    (["--penalty", "l1", "--hidden", "16", "--output-activation", "sigmoid"], "not linear"),
])
def test_what_saelens_cannot_hold_is_refused_in_one_line(tmp_path, rows, capsys, argv, why):
    run = tmp_path / "run"
    sparseae.train(training_config([*argv, "--epochs", "1", "--dataset", "array", "--data", str(rows)]), out=run,
                   progress=False)
    assert main(["export", str(run), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert why in err and "cannot be written as a SAELens SAE" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_follows_the_ownership_rules(tmp_path, rows, capsys):
    run = trained(tmp_path, rows, "topk")
    out = tmp_path / "sl"
    assert main(["export", str(run), str(out)]) == 0
    before = (out / "cfg.json").read_bytes()
    assert main(["export", str(run), str(out)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run), str(out), "--overwrite"]) == 0 and (out / "cfg.json").read_bytes() == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["export", str(run), str(tmp_path / "mine"), "--overwrite"]) == 2
    assert "holds notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    assert main(["export", str(run), str(run / "saelens")]) == 2  # inside a run folder: never
    assert "a run folder sparseae wrote" in capsys.readouterr().err and not (run / "saelens").exists()
    assert main(["import", str(out), "--out", str(run)]) == 2  # a run that holds files: refused
    assert "already holds files" in capsys.readouterr().err


def _saelens_folder(path: Path, cfg: dict, tensors: dict) -> Path:
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))
    return path


def _random_sae(d_in: int = 10, d_sae: int = 24, dtype=torch.float32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": torch.randn(d_sae, generator=g) / 4,
         "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.randn(d_in, generator=g)}
    return {k: v.to(dtype) for k, v in w.items()}


@pytest.mark.parametrize("cfg,extra", [
    ({"architecture": "standard", "apply_b_dec_to_input": False}, {}),
    ({"architecture": "topk", "k": 5}, {}),
    ({"architecture": "topk", "k": 5, "rescale_acts_by_decoder_norm": True}, {}),
    ({"architecture": "jumprelu"}, {"threshold": torch.rand(24)}),
    ({"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3}, "hook_point": "blocks.0.hook_resid_pre"}, {}),
    ({"architecture": "topk", "k": 5, "dtype": "bfloat16"}, "bfloat16"),
])
def test_import_of_saelens_folders_computes_what_saelens_does(tmp_path, cfg, extra):
    dtype = torch.bfloat16 if extra == "bfloat16" else torch.float32
    tensors = {**_random_sae(dtype=dtype), **(extra if isinstance(extra, dict) else {})}
    folder = _saelens_folder(tmp_path / "sl", {"d_in": 10, "d_sae": 24, "dtype": "float32", **cfg}, tensors)
    import_folder(folder, tmp_path / "run")
    x = torch.randn(300, 10, generator=torch.Generator().manual_seed(1))
    got = reconstruct(tmp_path / "run", x).double()
    assert (got - saelens_reconstruct(folder, x)).abs().max().item() <= 1e-4 * (1 + got.abs().max().item())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["format"] == "saelens" and summary["d_sae"] == 24


def test_import_of_a_sparsify_checkpoint(tmp_path, capsys):
    w = _random_sae()
    folder = tmp_path / "layers.3"
    folder.mkdir()
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": 24, "k": 4,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": 10}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"],
               "b_dec": w["b_dec"]}, str(folder / "sae.safetensors"))
    x = torch.randn(200, 10)
    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["import", str(folder), "--format", "sparsify", "--out", str(tmp_path / "run"), "--data",
                 str(tmp_path / "x.npy")]) == 0
    got = reconstruct(tmp_path / "run", x).double()
    assert (got - sparsify_reconstruct(folder, x)).abs().max().item() <= 1e-4
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run")]) == 0  # given the data, eval works on it
    assert json.loads(capsys.readouterr().out)["l0"] <= 4


def _mutations():
    """(name, change to a good SAELens folder, the message expected)."""
    def cfg(**kw):
        return lambda folder: (folder / "cfg.json").write_text(json.dumps({**json.loads(
            (folder / "cfg.json").read_text()), **kw}))

    def tensors(fn):
        def change(folder):
            w = load_file(str(folder / "sae_weights.safetensors"))
            save_file(fn(w), str(folder / "sae_weights.safetensors"))
        return change

    return [
        ("not json", lambda f: (f / "cfg.json").write_text("{nope"), "not valid JSON"),
        ("a list", lambda f: (f / "cfg.json").write_text("[1, 2]"), "expected a JSON object"),
        ("no weights", lambda f: (f / "sae_weights.safetensors").unlink(), "no sae_weights.safetensors"),
        ("damaged weights", lambda f: (f / "sae_weights.safetensors").write_bytes(b"\x10\x00garbage"),
         "cannot read the weights"),
        ("gated", cfg(architecture="gated"), "architecture 'gated' cannot be imported"),
        ("normalised", cfg(normalize_activations="expected_average_only_in"), "applied at run time"),
        ("d_sae", cfg(d_sae=25), "W_enc has shape [10, 24], the cfg.json says [10, 25]"),
        ("k", cfg(k=0), "k must be a positive integer"),
        ("big k", cfg(k=99), "k 99 is larger than d_sae 24"),
        ("extra", tensors(lambda w: {**w, "W_gate": torch.zeros(3)}), "tensor W_gate is not part"),
        ("missing", tensors(lambda w: {k: v for k, v in w.items() if k != "b_enc"}), "no tensor b_enc"),
        ("nan", tensors(lambda w: {**w, "b_dec": torch.full((10,), float("nan"))}), "not finite"),
        ("ints", tensors(lambda w: {**w, "b_dec": torch.zeros(10, dtype=torch.int32)}), "not floating point"),
        ("scaled", tensors(lambda w: {**w, "scaling_factor": torch.full((24,), 2.0)}), "scaling_factor"),
    ]


@pytest.mark.parametrize("name,change,message", _mutations(), ids=[m[0] for m in _mutations()])
def test_bad_or_foreign_folders_are_one_line_and_nothing_is_written(tmp_path, capsys, name, change, message):
    folder = _saelens_folder(tmp_path / "sl", {"architecture": "topk", "d_in": 10, "d_sae": 24, "k": 5},
                             _random_sae())
    change(folder)
    assert main(["import", str(folder), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_foreign_checkpoints_are_refused(tmp_path, capsys):
    for fmt, files in (("saelens", {"sae.safetensors": b""}), ("sparsify", {"sae_weights.safetensors": b""})):
        folder = tmp_path / fmt
        folder.mkdir()
        (folder / "cfg.json").write_text(json.dumps({"d_in": 4, "k": 2, "num_latents": 8, "d_sae": 8}))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        assert main(["import", str(folder), "--format", fmt, "--out", str(tmp_path / "run")]) == 2
        assert "not a " + fmt + " folder" in capsys.readouterr().err
    sparsify = tmp_path / "sparsify"
    (sparsify / "cfg.json").write_text(json.dumps({"d_in": 4, "k": 2, "num_latents": 8, "skip_connection": True}))
    assert main(["import", str(sparsify), "--format", "sparsify", "--out", str(tmp_path / "run")]) == 2
    assert "skip_connection is set" in capsys.readouterr().err
    np.save(tmp_path / "wide.npy", np.zeros((5, 9), dtype=np.float32))
    folder = _saelens_folder(tmp_path / "sl", {"architecture": "standard", "d_in": 10, "d_sae": 24}, _random_sae())
    assert main(["import", str(folder), "--out", str(tmp_path / "run"), "--data", str(tmp_path / "wide.npy")]) == 2
    assert "has 9 features per row but the SAE reads 10" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_imported_run_gets_a_report(tmp_path, rows, capsys):
    run = trained(tmp_path, rows, "topk")
    export_run(run, tmp_path / "sl")
    import_folder(tmp_path / "sl", tmp_path / "back", data=str(rows))
    assert main(["report", str(tmp_path / "back")]) == 0
    html = (tmp_path / "back" / "report.html").read_text()
    assert "latents" in html and "<html" in html.lower()


@needs_fmnist
def test_round_trip_on_fashion_mnist(tmp_path, capsys):
    config = training_config(["--penalty", "topk", "--k", "16", "--hidden", "128", "--epochs", "1",
                              "--limit-train", "3000"])
    sparseae.train(config, out=tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "sl")]) == 0
    assert main(["import", str(tmp_path / "sl"), "--out", str(tmp_path / "back"), "--dataset", "fashion-mnist"]) == 0
    capsys.readouterr()
    x = sparseae.load_dataset("fashion-mnist").test[:1000]
    assert (reconstruct(tmp_path / "run", x) - reconstruct(tmp_path / "back", x)).abs().max().item() <= 1e-6
    assert abs(eval_fvu(tmp_path / "run", capsys) - eval_fvu(tmp_path / "back", capsys)) <= 1e-6


def test_the_fitted_input_gain_is_a_power_of_two():
    from sparseae.model.transforms import TARGET_RMS, InputTransform, power_of_two_gain

    assert power_of_two_gain(TARGET_RMS) == 1.0 and power_of_two_gain(0.0) == 1.0
    assert power_of_two_gain(TARGET_RMS * 8) == 0.125 and power_of_two_gain(TARGET_RMS / 3) == 4.0  # log2 3 = 1.58
    x = torch.randn(500, 7, dtype=torch.float64) * 37.0 + 5.0
    gain = InputTransform("none", 7, rescale=True).fit(x).gain.item()
    mantissa, exponent = np.frexp(gain)
    assert mantissa == 0.5 and gain == 2.0 ** -7  # 0.3 / 37 = 2**-6.95
    spread = ((x - x.mean(0)) * gain).pow(2).mean().sqrt().item()
    assert TARGET_RMS / 2 ** 0.5 <= spread <= TARGET_RMS * 2 ** 0.5


@pytest.fixture(scope="module")
def large_rows(tmp_path_factory) -> Path:
    """1,200 rows of 20 features with values up to ~100 (activation-like magnitudes, a gain far from 1)."""
    rng = np.random.default_rng(1)
    x = rng.random((1200, 6)) @ rng.random((6, 20)) * 30 + 3 * rng.random((1200, 20))
    path = tmp_path_factory.mktemp("large") / "x.npy"
    np.save(path, x.astype(np.float32))
    return path


@pytest.mark.parametrize("family", ["topk", "l1", "jumprelu"])
def test_round_trip_with_a_folded_input_gain_is_exact(tmp_path, large_rows, capsys, family):
    run = trained(tmp_path, large_rows, family)
    assert load_run(run).input_transform.gain.item() != 1.0  # the gain is folded into the exported weights
    assert main(["export", str(run), str(tmp_path / "sl")]) == 0
    assert main(["import", str(tmp_path / "sl"), "--out", str(tmp_path / "back"), "--data", str(large_rows)]) == 0
    capsys.readouterr()
    x = torch.from_numpy(np.load(large_rows)[:1000])
    assert x.abs().max().item() > 50
    assert (reconstruct(run, x) - reconstruct(tmp_path / "back", x)).abs().max().item() <= 1e-6
    assert abs(eval_fvu(run, capsys) - eval_fvu(tmp_path / "back", capsys)) <= 1e-6
