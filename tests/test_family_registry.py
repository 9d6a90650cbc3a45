"""One record per sparsity family (families.py): everything else is derived from it."""
import ast
import json
from pathlib import Path

import pytest
import torch

import sparseae
from sparseae import families
from sparseae.cli import args as flags
from sparseae.cli.analysis import GRID_FLAGS
from sparseae.config import PENALTIES, TOPK_MODES, ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.data import Dataset
from sparseae.model import SparseAutoencoder

SRC = Path(sparseae.__file__).parent


def _literals(tree: ast.AST):
    """String constants of a module that are not docstrings, dict keys or a (section, field) pair."""
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:  # docstrings: of modules, classes, functions and dataclass fields
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    skip.add(id(stmt.value))
        if isinstance(node, ast.Dict):
            skip.update(id(k) for k in node.keys if k is not None)  # the field name model.topk, not the family
        if isinstance(node, ast.Tuple) and len(node.elts) > 1 and isinstance(node.elts[0], ast.Constant):
            skip.add(id(node.elts[1]))  # ("model", "topk", ...): a section and a field name
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in skip]


def test_family_names_are_literals_only_in_the_registry():
    # 'none' is left out: it also names "no input transform" and "no fine-tuning"
    names = set(families.NAMES) - {families.NONE}
    found = [f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}"
             for path in sorted(SRC.rglob("*.py")) if path.name != "families.py"
             for node in _literals(ast.parse(path.read_text())) if node.value in names]
    assert found == []


def test_choices_and_grid_flags_come_from_the_registry():
    assert PENALTIES == tuple(families.FAMILIES)
    assert set(TOPK_MODES) == {f.code for f in families.FAMILIES.values()}
    assert set(GRID_FLAGS) == set(families.SWEPT)
    assert GRID_FLAGS[families.TOPK] == "--k-grid" and GRID_FLAGS[families.KL] == "--kl-beta"
    assert set(GRID_FLAGS.values()) <= set(flags.OTHER_FLAGS)


def test_resolve_is_pure_and_fills_every_family_default():
    requested = RunConfig(ModelConfig(hidden=[4096], k=64), SparsityConfig(penalty=families.TOPK))
    before = json.dumps(requested.to_dict(), sort_keys=True)
    c = resolve(requested)
    assert json.dumps(requested.to_dict(), sort_keys=True) == before  # the request is left as it is
    assert (c.model.topk, c.model.activation, c.model.output_activation) == ("topk", "relu", "linear")
    assert (c.model.unit_norm_decoder, c.model.pre_bias, c.sparsity.auxk, c.train.recon) == (True, True, True, "fvu")
    assert c.train.lr == pytest.approx(1.5e-3 * 0.5) and c.train.lr_decay == 0.2  # lr by width: 4096 latents
    assert c.model.encode_alpha == 1.0
    assert resolve(c) == c  # resolving twice changes nothing


def test_validate_only_checks():
    c = RunConfig(ModelConfig(hidden=[16]), SparsityConfig(penalty=families.L1))
    c.validate()
    assert c.model.activation is None and c.train.lr is None and c.sparsity.beta is None


@pytest.mark.parametrize("k", [12, 5])
def test_encode_returns_the_code_the_decoder_uses(k):
    """A TopK model's encode() has at most k non-zeros per row; alpha * k only when asked for."""
    config = resolve(RunConfig(ModelConfig(input_dim=20, hidden=[64], k=k), SparsityConfig(penalty=families.TOPK)))
    model = SparseAutoencoder(config.model).eval()
    x = torch.rand(50, 20)
    with torch.no_grad():
        code = model.encode(x)
        assert int((code != 0).sum(dim=1).max()) <= k
        wide = model.encode(x, alpha=2)
        assert int((wide != 0).sum(dim=1).max()) == 2 * k  # ReLU after the selection may zero a few, not here
        torch.testing.assert_close(model.decode(code), model(x).recon, rtol=1e-5, atol=1e-6)


def test_encode_alpha_below_one_is_refused():
    model = SparseAutoencoder(ModelConfig(input_dim=6, hidden=[8], topk="topk", k=2)).eval()
    with pytest.raises(sparseae.SparseAEError, match="alpha must be >= 1"):
        model.encode(torch.rand(3, 6), alpha=0.5)


# --- a sweep point is the model `train` builds ----------------------------------------------------

SWEEP_VALUES = {families.TOPK: 4, families.BATCHTOPK: 4, families.MATRYOSHKA: 8, families.KL: 0.01,
                families.L1: 1e-3, families.JUMPRELU: 1e-3, families.MP: 4}
COMMON = ["--hidden", "16", "--epochs", "1", "--batch-size", "50", "--seed", "3", "--quiet"]


def _array(tmp_path):
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((300, 12)).astype(np.float32))
    return ["--dataset", "array", "--data", str(path)]


def _trained_config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


@pytest.mark.parametrize("family", sorted(families.SWEPT))
def test_sweep_point_config_equals_train_config_cli(family, tmp_path):
    from sparseae.cli import main

    value = SWEEP_VALUES[family]
    data = _array(tmp_path)
    swept = "--k" if families.SWEPT[family] == "k" else "--beta"
    assert main(["sweep", *data, *COMMON, GRID_FLAGS[family], str(value), "--pca", "no",
                 "--out", str(tmp_path / "sw")]) == 0
    assert main(["train", *data, *COMMON, "--penalty", family, swept, str(value),
                 "--out", str(tmp_path / "tr")]) == 0
    assert _trained_config(tmp_path / "sw" / f"{family}_{value:g}") == _trained_config(tmp_path / "tr")


@pytest.mark.parametrize("family", sorted(families.SWEPT))
def test_sweep_point_config_equals_train_config_python(family, tmp_path):
    from sparseae.analysis.sweep import run_sweep

    value = SWEEP_VALUES[family]
    x = torch.from_numpy(__import__("numpy").random.default_rng(0).random((300, 12)).astype("float32"))
    data = Dataset(x[:250], x[250:])
    base = RunConfig(ModelConfig(hidden=[16]), SparsityConfig(), TrainConfig(epochs=1, batch_size=50, seed=3))
    base.validate()  # a validated base is still the request: each family fills in its own lr, decay, ...
    run_sweep(base, {family: [value]}, tmp_path / "sw", data, progress=False, pca=False)
    point = RunConfig(ModelConfig(hidden=[16]), SparsityConfig(penalty=family),
                      TrainConfig(epochs=1, batch_size=50, seed=3))
    if families.SWEPT[family] == "k":
        point.model.k = value
    else:
        point.sparsity.beta = value
    sparseae.train(point, tmp_path / "tr", data, progress=False)
    assert _trained_config(tmp_path / "sw" / f"{family}_{value:g}") == _trained_config(tmp_path / "tr")


def test_encode_alpha_on_probe_and_report(tmp_path, capsys):
    """Makhzani & Frey's alpha * k features are asked for at use time; the run's files stay as they are."""
    from sparseae.cli import main

    run = tmp_path / "run"
    assert main(["train", "--penalty", "topk", "--k", "4", "--hidden", "16", "--epochs", "1", "--limit-train", "500",
                 "--quiet", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    model = sparseae.load_run(run)
    x = torch.rand(20, 784)
    with torch.no_grad():
        assert int((model.encode(x) != 0).sum(1).max()) <= 4
        assert int((model.with_encode_alpha(2).encode(x) != 0).sum(1).max()) == 8
    probe = ["probe", str(run), "--no-raw", "--limit-train", "300", "--probe-iter", "3"]
    assert main([*probe, "--encode-alpha", "0.5"]) == 2
    assert "alpha must be >= 1" in capsys.readouterr().err
    assert main([*probe, "--encode-alpha", "2"]) == 0
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
