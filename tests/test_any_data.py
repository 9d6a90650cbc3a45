"""Defaults that hold on any data: the input scale stored with the model, a stated L0 (`--l0`), one definition
of a dead unit (fires on none of the held-out rows), small data sets, and benchmarks/any_data.py's pieces."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseae import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.cli import main
from sparseae.config import resolve
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder
from sparseae.model.transforms import TARGET_RMS, InputTransform
from sparseae.objective import Objective
from sparseae.objective.metrics import evaluate
from sparseae.families import L0_RATE

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import any_data  # noqa: E402


def _spread(y: torch.Tensor) -> float:
    """Root mean squared distance of a feature to its mean."""
    y = y.double()
    return float(((y - y.mean(0)).pow(2).sum(1).mean() / y.shape[1]).sqrt())


# --- the input scale ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["none", "standardize", "zca"])
def test_rescaled_inputs_have_the_target_spread_whatever_the_data_scale(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    t = InputTransform(kind, 6, rescale=True).fit(x)
    y = t(x)
    # the gain is the power of two nearest TARGET_RMS / spread (exact to fold into weights: model/transforms.py)
    assert math.frexp(float(t.gain))[0] == 0.5
    if kind != "zca":  # ZCA's epsilon keeps the whitened spread below 1: the gain sets it from the eigenvalues
        spread = _spread(t._base(x))
        assert float(t.gain) == 2.0 ** round(math.log2(TARGET_RMS / spread))
        assert TARGET_RMS / math.sqrt(2) <= _spread(y) <= TARGET_RMS * math.sqrt(2)
    moved = InputTransform(kind, 6, rescale=True).fit(100 * x + 50)
    if kind == "none":  # a scaled, shifted copy is only shifted after the gain: the spread is measured about the mean
        assert float(moved.gain) == 2.0 ** round(math.log2(TARGET_RMS / (100 * _spread(x))))
        assert TARGET_RMS / math.sqrt(2) <= _spread(moved(100 * x + 50)) <= TARGET_RMS * math.sqrt(2)
    assert torch.allclose(t.inverse_transform(y), x, atol=1e-4)


def test_streamed_statistics_give_the_gain_of_the_rows():
    x = torch.tensor([[0.0, 2.0], [2.0, 6.0], [4.0, 10.0]], dtype=torch.float64)
    fitted = InputTransform("none", 2, rescale=True).fit(x)
    streamed = InputTransform("none", 2, rescale=True)
    streamed.set_statistics(x.mean(0), x.std(0, unbiased=False))
    # variances 8/3 and 32/3: mean 20/3, so 0.3 / sqrt(20/3) = 2**-3.11, and the gain is 2**-3
    assert float(fitted.gain) == 0.125
    assert float(streamed.gain) == pytest.approx(float(fitted.gain), rel=1e-6)
    assert float(InputTransform("none", 2, rescale=True).fit(torch.ones(4, 2)).gain) == 1.0  # constant data


@pytest.mark.parametrize("penalty, dataset, expected", [
    ("l1", "array", True), ("jumprelu", "array", True), ("topk", "array", True), ("batchtopk", "patches", True),
    ("l1", "fashion-mnist", False), ("topk", "fashion-mnist", False), ("kl", "array", False),
    ("none", "array", False)])
def test_the_input_scale_is_on_where_the_recipes_were_not_tuned(penalty, dataset, expected):
    k = 4 if penalty in ("topk", "batchtopk") else None
    config = RunConfig(ModelConfig(hidden=[16], k=k), SparsityConfig(penalty=penalty),
                       TrainConfig(dataset=dataset, data="x.npy"))
    assert resolve(config).model.input_scale is expected
    config.model.input_scale = not expected  # an explicit setting wins
    assert resolve(config).model.input_scale is (not expected)


def test_a_rescaled_model_reconstructs_in_the_input_units(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 8)) * 1000 + 5000).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "array", "--data", str(tmp_path / "x.npy"), "--penalty", "topk", "--k", "2",
                 "--hidden", "16", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["input_scale"] is True
    from sparseae import load_run

    model = load_run(out)
    gain = float(model.input_transform.gain)
    spread = float(np.sqrt(x[:360].astype(np.float64).var(0).mean()))
    assert gain == 2.0 ** round(math.log2(TARGET_RMS / spread))
    with torch.no_grad():
        recon = model.reconstruct(torch.from_numpy(x[:5]))
    assert float((recon - torch.from_numpy(x[:5])).abs().mean()) < 3000  # raw units: near the data, not 0.3


# --- a stated L0 -------------------------------------------------------------------------------------

def test_the_l0_controller_moves_log_beta_by_the_rate_times_the_log_error():
    objective = Objective(SparsityConfig(penalty="l1", beta=0.01, beta_warmup=2, target_l0=4.5))
    code = torch.zeros(4, 10)
    code[:, :9] = 1.0  # L0 9
    objective.step = 0
    objective.penalty((code,))
    objective.adapt_beta(0)  # inside the warm-up (steps 0 and 1): unchanged
    assert float(objective.log_gain) == 0.0
    objective.step = 1
    objective.penalty((code,))
    objective.adapt_beta(1)
    assert float(objective.log_gain) == pytest.approx(L0_RATE * math.log(9.5 / 5.0), rel=1e-12)
    assert objective.adapted_beta() == pytest.approx(0.01 * (9.5 / 5.0) ** L0_RATE, rel=1e-12)
    state = objective.state_tensors()
    fresh = Objective(SparsityConfig(penalty="l1", beta=0.01, beta_warmup=2, target_l0=4.5))
    fresh.load_state_tensors(state, torch.device("cpu"))
    assert torch.equal(fresh.log_gain, objective.log_gain)


@pytest.mark.parametrize("penalty, extra, needle", [
    ("topk", {"k": 4}, "penalty 'topk' has none to adapt"),
    ("kl", {}, "penalty 'kl' has none to adapt"),
    ("l1", {"target_l0": 16}, "sparsity.target_l0 must be below the code size 16"),
])
def test_a_stated_l0_is_refused_where_it_cannot_be_reached(penalty, extra, needle):
    k = extra.pop("k", None)
    config = RunConfig(ModelConfig(hidden=[16], k=k), SparsityConfig(penalty=penalty, target_l0=extra.get(
        "target_l0", 3)), TrainConfig(dataset="array", data="x.npy"))
    with pytest.raises(SparseAEError, match=needle):
        resolve(config)


def test_a_stated_l0_needs_a_minibatch_optimizer():
    config = RunConfig(ModelConfig(hidden=[16]), SparsityConfig(penalty="l1", target_l0=3),
                       TrainConfig(dataset="array", data="x.npy", optimizer="lbfgs"))
    with pytest.raises(SparseAEError, match="target_l0 adapts beta between minibatch steps"):
        resolve(config)


def test_a_run_with_a_stated_l0_reports_the_l0_it_reached(tmp_path, capsys):
    x, _ = any_data.planted(0, d=16, n=32, active=2, rows=3000)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "array", "--data", str(tmp_path / "x.npy"), "--penalty", "l1", "--l0", "2",
                 "--hidden", "32", "--epochs", "8", "--batch-size", "64", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    printed = capsys.readouterr().out
    assert f"L0 reached {summary['l0']:.2f}" in printed and "asked for 2" in printed
    assert 1.0 < summary["l0"] < 4.0  # the default beta alone gives a code many times denser
    assert summary["beta"] > 1e-3  # raised from the default


# --- dead means never fires --------------------------------------------------------------------------

def test_dead_means_fires_on_none_of_the_rows():
    """A unit that fires once, however weakly, is alive (the old rule, a mean activation below 1e-3, called
    it dead); one that never fires is dead; no threshold on raw values."""
    model = SparseAutoencoder(resolve(RunConfig(ModelConfig(input_dim=2, hidden=[3], pre_bias=False),
                                                SparsityConfig(penalty="l1"),
                                                TrainConfig(dataset="array", data="x.npy"))).model)
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.tensor([[1.0, 0.0], [1e-6, 0.0], [-1.0, 0.0]]))
        model.encoder[0].bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 2.0]] * 5)
    m = evaluate(model, x)
    assert m["dead_fraction"] == pytest.approx(1 / 3)
    assert m["l0"] == pytest.approx(2 / 4)


def test_old_config_files_with_dead_threshold_still_read():
    d = RunConfig().to_dict()
    d["train"]["dead_threshold"] = 0.001
    assert "dead_threshold" not in RunConfig.from_dict(d).to_dict()["train"]


# --- small data ----------------------------------------------------------------------------------------

def test_a_few_hundred_rows_warn_and_train_without_most_latents_dead(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) * 50 + 7).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "array", "--data", str(tmp_path / "x.npy"), "--penalty", "l1",
                 "--hidden", "32", "--epochs", "5", "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "training rows" in err and "warning" in err
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["val_fvu"]) and summary["val_fvu"] < 1.0
    assert summary["dead_fraction"] < 0.5
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 8  # 270 rows: 33 steps an epoch


@pytest.mark.parametrize("rows, batch", [(None, 256), (60000, 256), (8192, 256), (8191, 128), (1617, 32),
                                         (450, 8), (20, 8)])
def test_the_default_batch_size_gives_a_small_data_set_32_steps_an_epoch(rows, batch):
    from sparseae.config import batch_size_for

    assert batch_size_for(rows) == batch


def test_an_explicit_batch_size_wins_over_the_row_count():
    config = RunConfig(ModelConfig(hidden=[8]), SparsityConfig(penalty="l1"),
                       TrainConfig(dataset="array", data="x.npy", batch_size=64))
    assert resolve(config, rows=100).train.batch_size == 64
    config.train.batch_size = None
    assert resolve(config, rows=100).train.batch_size == 8 and resolve(config).train.batch_size == 256


# --- the learning rate for the input's size --------------------------------------------------------------

@pytest.mark.parametrize("input_dim, hidden, lr", [(784, 1024, 1.5e-3), (784, 256, 1.5e-3), (784, 4096, 7.5e-4),
                                                   (3072, 512, 1.5e-3), (196, 512, 3e-3), (64, 512, 5.25e-3),
                                                   (16, 512, 6e-3), (49, 4096, 7.5e-4), (64, 1024, 1.5e-3),
                                                   (16, 724, 1.5e-3 * (1024 / 724) ** 2)])
def test_the_topk_rate_grows_as_one_over_sqrt_input_size_below_784(input_dim, hidden, lr):
    # 1.5e-3 * min(1, sqrt(1024 / latents)) * min(4, max(1, sqrt(784 / input_dim)), max(1, (1024 / latents)^2)):
    # 784/196 = 4 -> 2x, 784/64 = 12.25 -> 3.5x, 784/16 = 49 -> 7x capped at 4x; 1,024 latents or more: 1x;
    # 724 latents: (1024/724)^2 = 2.0x
    for penalty in ("topk", "batchtopk", "matryoshka"):
        config = RunConfig(ModelConfig(hidden=[hidden], k=8), SparsityConfig(penalty=penalty),
                           TrainConfig(dataset="array", data="x.npy"))
        assert resolve(config, input_dim=input_dim).train.lr == pytest.approx(lr, rel=1e-12)
        config.train.lr = 1e-4  # an explicit rate wins
        assert resolve(config, input_dim=input_dim).train.lr == 1e-4


def test_a_run_records_the_rate_for_its_data_and_resumes_with_it(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(600, 16)).astype(np.float32))
    config = RunConfig(ModelConfig(hidden=[32], k=4), SparsityConfig(penalty="batchtopk"),
                       TrainConfig(dataset="array", data=str(tmp_path / "x.npy"), epochs=1, seed=0))
    import sparseae

    first = sparseae.train(config, out=tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["lr"] == pytest.approx(6e-3, rel=1e-12)  # 16 inputs: 4x (capped) of 1.5e-3
    assert first.config.train.lr == saved["train"]["lr"] and saved["train"]["batch_size"] == 16  # 540 rows
    from sparseae.training.session import check_run

    plan = check_run(config, tmp_path / "run", resume=True)  # the same request passes the resume checks
    assert plan.config.train.lr == saved["train"]["lr"]


# --- the benchmark's pieces ------------------------------------------------------------------------------

def test_planted_features_are_unit_norm_and_rows_are_their_sparse_sums():
    x, f = any_data.planted(0, d=8, n=16, active=2, rows=2000)
    assert x.shape == (2000, 8) and np.allclose(np.linalg.norm(f, axis=1), 1)
    assert any_data.mmcs(f, f) == pytest.approx((1.0, 1.0))
    assert any_data.mmcs(-2 * f, f) == pytest.approx((1.0, 1.0))  # a sign or a length is not a different feature


def test_pca_curve_is_one_at_zero_and_zero_at_full_rank():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    curve = any_data.pca_curve(x[:200], x[200:])
    assert curve[0] == pytest.approx(1.0, abs=0.05) and curve[-1] == pytest.approx(0.0, abs=1e-9)
    assert any_data.pca_at(curve, 1.5) == pytest.approx((curve[1] + curve[2]) / 2)


def test_the_table_says_pca_is_exact_instead_of_a_huge_ratio():
    row = {"set": "s", "run": "topk", "l0": 8.0, "fvu": 0.2, "dead": 0.0, "dl": None}
    lines = any_data.summarise([{**row, "pca": 0.4}, {**row, "pca": 0.5, "fvu": 0.3}])
    assert lines[2].split(" | ")[5] == "0.550 (0.500-0.600)"  # 0.2 / 0.4 and 0.3 / 0.5
    lines = any_data.summarise([{**row, "pca": 1e-9}])
    assert lines[2].split(" | ")[5] == "PCA ~0"


def test_any_data_extra_flags_parse_as_the_command_line_does():
    assert any_data.extra_settings("--jumprelu-tanh 0 --unit-norm-decoder yes --recon fvu --lr-decay 0.2") == [
        ("model", "unit_norm_decoder", True), ("sparsity", "jumprelu_tanh", 0.0),
        ("train", "lr_decay", 0.2), ("train", "recon", "fvu")]
    assert any_data.extra_settings("") == []
    with pytest.raises(SystemExit):
        any_data.extra_settings("--no-such-flag 1")


def test_spectrum_report_counts_the_signed_directions_of_the_ideal_principal_code():
    # independent columns of std 10, 1, 0.01: with k 1 a row keeps its largest |coefficient|, the first
    # component's on most rows and the second's on about 6% of them (both signs of each), never the third's
    g = np.random.default_rng(0)
    x = g.standard_normal((2000, 3)) * np.array([10.0, 1.0, 0.01])
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1]
    text = any_data.spectrum_report("three", x, 1)
    share = float(text.split(": ")[1].split(" of the training rows' variance in 1 principal components")[0])
    assert share == pytest.approx(eig[0] / eig.sum(), abs=2e-4)  # printed to 4 digits; SVD against eigvalsh
    assert "uses 4 signed directions, the last component used is #2" in text
    # k 2 of 2 equal directions and a tiny third: both signs of both, never the third
    y = g.standard_normal((2000, 3)) * np.array([1.0, 1.0, 1e-9])
    assert "uses 4 signed directions, the last component used is #2" in any_data.spectrum_report("y", y, 2)
