"""Transcoders: `sparseae train --dataset array --data IN --target OUT`, a sparse code of each input row that
predicts its target row, and `collect(..., site="both")`, which writes both from one pass.

The model is the autoencoder with a decoder of the target's width; its rows are the input followed by the
target (data/arrays.py's PairedArrayFile), so the files, the config, the loss and the FVU are checked here
against hand-computed references, and what a transcoder cannot be is refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

import sparseae
from sparseae.activations import collect
from sparseae.cli import main
from sparseae.cli.args import training_config
from sparseae.config import resolve
from sparseae.data.arrays import ArrayData
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder
from sparseae.objective.metrics import evaluate
from sparseae.run.rundir import load_run

D_IN, D_OUT, ATOMS, K = 12, 7, 24, 3


@pytest.fixture(scope="module")
def linear_map(tmp_path_factory) -> tuple[Path, Path]:
    """x = 3 of 24 atoms per row (non-negative weights) plus a little noise, scale ~10; y = A x (7 wide)."""
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((ATOMS, D_IN)) * 4
    codes = np.zeros((3000, ATOMS))
    for row in codes:
        row[rng.choice(ATOMS, K, replace=False)] = rng.random(K) + 0.5
    x = codes @ atoms + 0.05 * rng.standard_normal((3000, D_IN))
    y = x @ rng.standard_normal((D_IN, D_OUT))
    folder = tmp_path_factory.mktemp("pair")
    np.save(folder / "x.npy", x.astype(np.float32))
    np.save(folder / "y.npy", y.astype(np.float32))
    return folder / "x.npy", folder / "y.npy"


def argv(pair, *extra: str, family: str = "topk") -> list[str]:
    k = ["--k", str(K)] if family == "topk" else []
    return ["--penalty", family, *k, "--hidden", str(ATOMS * 2), "--epochs", "8", "--batch-size", "64",
            "--dataset", "array", "--data", str(pair[0]), "--target", str(pair[1]), *extra]


def rows(pair) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation rows (the last tenth, as ArrayData splits them): inputs and targets."""
    x, y = (torch.from_numpy(np.load(p)) for p in pair)
    return x[-300:], y[-300:]


def fvu(pred: torch.Tensor, y: torch.Tensor) -> float:
    y, pred = y.double(), pred.double()
    return ((pred - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()


def test_paired_rows_are_input_then_target(linear_map):
    data = ArrayData(linear_map[0], target=linear_map[1]).prepare("no")
    x, y = (np.load(p) for p in linear_map)
    assert (data.input_dim, data.target_dim) == (D_IN, D_OUT)
    assert torch.equal(data.train, torch.from_numpy(np.concatenate([x, y], 1)[:2700]))
    streamed = ArrayData(linear_map[0], target=linear_map[1]).prepare("yes")
    assert streamed.input_dim == D_IN and streamed.array.n_cols == D_IN + D_OUT
    assert np.array_equal(streamed.array.read(5, 9), np.concatenate([x[5:9], y[5:9]], 1))


@pytest.mark.parametrize("family", ["topk", "l1", "jumprelu"])
def test_a_transcoder_learns_a_linear_map(tmp_path, linear_map, family):
    config = training_config(argv(linear_map, family=family))
    result = sparseae.train(config, out=tmp_path / "run", progress=False)
    model = result.model.eval()
    x, y = rows(linear_map)
    with torch.no_grad():
        pred = model.reconstruct(x)
        untrained = SparseAutoencoder(result.config.model)
        untrained.input_transform.load_state_dict(model.input_transform.state_dict())
        before = fvu(untrained.reconstruct(x), y)
    assert pred.shape == (300, D_OUT)
    ours = fvu(pred, y)
    assert ours < 0.4 and ours < before / 3, (ours, before)
    # evaluate's FVU is measured against the target, on rows of input and target
    metrics = evaluate(model, torch.cat([x, y], 1))
    assert metrics["fvu"] == pytest.approx(ours, rel=1e-4, abs=1e-6)
    assert result.history[-1]["val_fvu"] == pytest.approx(ours, rel=1e-4, abs=1e-6)
    # the code reads the input alone: the same with or without the target columns
    assert torch.equal(model.encode(x), model.encode(torch.cat([x, y], 1)))


def test_the_run_folder_records_the_target(tmp_path, linear_map, capsys):
    sparseae.train(training_config(argv(linear_map, "--epochs", "2")), out=tmp_path / "run", progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["target"] == str(linear_map[1]) and "target_key" not in config["train"]  # unset
    assert (config["model"]["input_dim"], config["model"]["target_dim"]) == (D_IN, D_OUT)
    assert config["model"]["pre_bias"] is False
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert weights["encoder.0.weight"].shape == (ATOMS * 2, D_IN)
    assert weights["decoder.0.weight"].shape == (D_OUT, ATOMS * 2) and weights["decoder.0.bias"].shape == (D_OUT,)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run")]) == 0
    reported = json.loads(capsys.readouterr().out)
    x, y = rows(linear_map)
    with torch.no_grad():
        assert reported["fvu"] == pytest.approx(fvu(load_run(tmp_path / "run").reconstruct(x), y), rel=1e-4)


def test_the_input_and_the_target_get_a_gain_each(tmp_path, linear_map):
    x, y = (np.load(p)[:2700].astype(np.float64) for p in linear_map)  # the training rows
    result = sparseae.train(training_config(argv(linear_map, "--epochs", "1")), out=None, progress=False)
    t = result.model.input_transform
    want = [2.0 ** round(np.log2(0.3 / np.sqrt(a.var(0).mean()))) for a in (x, y)]
    assert t.gain.tolist() == want and want[0] != want[1]
    rows = torch.from_numpy(np.concatenate([x[:4], y[:4]], 1)).float()
    scaled = t(rows)
    assert torch.equal(scaled[:, :D_IN], rows[:, :D_IN] * want[0])
    assert torch.equal(scaled[:, D_IN:], rows[:, D_IN:] * want[1])
    assert torch.equal(t(rows[:, :D_IN]), rows[:, :D_IN] * want[0])  # the input alone
    assert torch.equal(t.inverse_transform(scaled[:, D_IN:]), rows[:, D_IN:])  # outputs are in the target's units


def test_a_streamed_transcoder_trains_on_the_same_rows(tmp_path, linear_map):
    result = sparseae.train(training_config(argv(linear_map, "--epochs", "3", "--stream", "yes")),
                            out=tmp_path / "run", progress=False)
    assert result.config.model.target_dim == D_OUT and result.history[-1]["val_fvu"] < 1


@pytest.mark.parametrize("extra,message", [
    (["--tied", "yes"], "model.tied"),
    (["--pre-bias", "yes"], "model.pre_bias"),
    (["--output-activation", "sigmoid"], "output_activation 'sigmoid'"),
    (["--input-transform", "standardize"], "input_transform 'standardize'"),
])
def test_what_a_transcoder_cannot_be_is_refused_in_one_line(tmp_path, linear_map, capsys, extra, message):
    assert main(["train", *argv(linear_map, *extra), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "transcoder" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_other_bad_targets_are_refused_in_one_line(tmp_path, linear_map, capsys):
    np.save(tmp_path / "short.npy", np.zeros((100, 3), np.float32))
    cases = [(argv((linear_map[0], tmp_path / "short.npy")), "has 100 rows but the data file"),
             (["--penalty", "topk", "--k", "3", "--dataset", "fashion-mnist", "--target", str(linear_map[1])],
              "needs dataset 'array'"),
             (argv(linear_map, family="kl"), "output_activation 'sigmoid'")]
    stack = ["--hidden", "8,4", "--dataset", "array", "--data", str(linear_map[0]), "--target", str(linear_map[1])]
    assert main(["stack", *stack, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.target" in err and len(err.splitlines()) == 1 and not (tmp_path / "run").exists()
    for args, message in cases:
        assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "run").exists()


def test_export_writes_saelens_transcoders_and_refuses_topk(tmp_path, linear_map, capsys):
    for family in ("l1", "jumprelu", "topk"):
        sparseae.train(training_config(argv(linear_map, "--epochs", "2", family=family)), out=tmp_path / family,
                       progress=False)
    assert main(["export", str(tmp_path / "topk"), str(tmp_path / "sl-topk")]) == 2
    err = capsys.readouterr().err.strip()
    assert "TopK transcoder" in err and len(err.splitlines()) == 1 and not (tmp_path / "sl-topk").exists()
    x, _ = rows(linear_map)
    for family, arch in (("l1", "transcoder"), ("jumprelu", "jumprelu_transcoder")):
        out = tmp_path / f"sl-{family}"
        assert main(["export", str(tmp_path / family), str(out)]) == 0
        cfg = json.loads((out / "cfg.json").read_text())
        assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["d_out"]) == (arch, D_IN, ATOMS * 2, D_OUT)
        assert cfg["apply_b_dec_to_input"] is False  # SAELens's TranscoderConfig refuses true
        w = {k: v.double() for k, v in load_file(str(out / "sae_weights.safetensors")).items()}
        assert w["W_dec"].shape == (ATOMS * 2, D_OUT) and w["b_dec"].shape == (D_OUT,)
        z = x.double() @ w["W_enc"] + w["b_enc"]  # SAELens's Transcoder.encode: no b_dec on the input
        acts = z.relu() * (z > w["threshold"]) if arch == "jumprelu_transcoder" else z.relu()
        with torch.no_grad():
            ours = load_run(tmp_path / family).reconstruct(x).double()
        scale = ours.abs().max().item()  # outputs up to ~50: float32 against a float64 reference, relative
        assert (ours - (acts @ w["W_dec"] + w["b_dec"])).abs().max().item() <= 1e-6 * scale


class Block(nn.Module):
    """A residual MLP block: the hooked `mlp` gets the block's input, its output differs in width."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.mlp(x))


def test_collect_both_sites_in_one_pass(tmp_path):
    torch.manual_seed(0)
    model, x = Block(), torch.randn(50, 3, 6)  # 3-D: 150 rows of positions
    calls = []
    handle = model.mlp.register_forward_hook(lambda m, a, out: calls.append((a[0].clone(), out.clone())))
    done = collect(model, "mlp", x, tmp_path / "acts.npy", site="both", batch_size=16, max_rows=100,
                   progress=False)
    handle.remove()
    assert (done.path, done.target) == (tmp_path / "acts.in.npy", tmp_path / "acts.out.npy")
    assert (done.rows, done.features, done.target_features) == (100, 6, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.in.npy", "acts.out.npy"]
    seen_in = torch.cat([a.reshape(-1, 6) for a, _ in calls])[:100]
    seen_out = torch.cat([o.reshape(-1, 4) for _, o in calls])[:100]
    assert np.array_equal(np.load(done.path), seen_in.numpy())
    assert np.array_equal(np.load(done.target), seen_out.numpy())  # row i: the output of input row i
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(np.load(done.target)), model.mlp(torch.from_numpy(np.load(done.path))),
                              atol=1e-6)


def test_collect_both_refuses_rows_that_do_not_pair(tmp_path):
    class Pool(nn.Module):
        def forward(self, x):  # (batch, positions, features) -> (batch, features)
            return x.mean(1)

    model = nn.Sequential(Pool(), nn.Linear(6, 2))
    with pytest.raises(SparseAEError, match="one output row per input row"):
        collect(model, "0", torch.randn(8, 3, 6), tmp_path / "acts.npy", site="both", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_command_writes_both_files_and_they_train(tmp_path, capsys):
    (tmp_path / "models.py").write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                                        "    return torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), "
                                        "torch.nn.Linear(10, 3))\n")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((400, 6)).astype(np.float32))
    out = tmp_path / "acts.npy"
    base = ["activations", "--model", f"{tmp_path / 'models.py'}:make", "--data", str(tmp_path / "x.npy"),
            "--layer", "2", "--site", "both", "--out", str(out), "--quiet"]
    assert main(base) == 0
    said = capsys.readouterr().out
    assert "--target" in said and "10 input and 3 output features" in said
    assert np.load(tmp_path / "acts.in.npy").shape == (400, 10) and np.load(tmp_path / "acts.out.npy").shape == (400, 3)
    assert main(base) == 2 and "exists" in capsys.readouterr().err  # no clobbering
    config = training_config(["--penalty", "topk", "--k", "4", "--hidden", "16", "--epochs", "1", "--dataset",
                              "array", "--data", str(tmp_path / "acts.in.npy"), "--target",
                              str(tmp_path / "acts.out.npy")])
    assert resolve(config).train.target == str(tmp_path / "acts.out.npy")
    result = sparseae.train(config, out=tmp_path / "run", progress=False)
    assert result.model.config.output_dim() == 3
