"""The UFLDL sparse autoencoder: image patches, full-batch L-BFGS/CG, gradient check, linear decoder."""
import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from sparseae import ModelConfig, Objective, RunConfig, SparseAutoencoder, SparsityConfig, load_run, train
from sparseae.cli import main
from sparseae.config import PRESETS
from sparseae.data import load_dataset
from sparseae.data.patches import downsample_image, normalize_patches, sample_patches
from sparseae.training.fullbatch import FlatObjective
from sparseae.analysis.gradcheck import numerical_gradient, relative_gradient_error
from sparseae.run.pictures import feature_tiles


def _ufldl_config(**train) -> RunConfig:
    config = RunConfig.from_dict(json.loads(json.dumps(PRESETS["ufldl"])))
    for k, v in train.items():
        setattr(config.train, k, v)
    return config


# --- patches ---------------------------------------------------------------------------------

def test_normalize_patches_hand_computed():
    patches = np.array([[0.0, 2.0, 4.0, 6.0],
                        [1.0, 1.0, 1.0, 9.0]])
    # centred rows: [-3, -1, 1, 3] and [-2, -2, -2, 6]; sample std of these 8 values:
    centred = [-3, -1, 1, 3, -2, -2, -2, 6]
    mean = sum(centred) / 8
    pstd = 3 * math.sqrt(sum((v - mean) ** 2 for v in centred) / 7)
    out, level = normalize_patches(patches)
    assert level == pytest.approx(pstd, rel=1e-12)
    expected = [[(max(min(v, pstd), -pstd) / pstd + 1) * 0.4 + 0.1 for v in row]
                for row in ([-3, -1, 1, 3], [-2, -2, -2, 6])]
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_normalize_patches_clips_to_three_std():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16))
    x[0, 0] = 100.0  # far beyond 3 std: clipped to the top of the range
    out, _ = normalize_patches(x)
    assert out.min() >= 0.1 - 1e-12 and out.max() <= 0.9 + 1e-12
    assert out[0, 0] == pytest.approx(0.9)
    # a patch's mean does not survive: a constant patch maps to the middle, 0.5
    assert normalize_patches(np.vstack([np.full(16, 7.0), x[1:]]))[0][0] == pytest.approx(np.full(16, 0.5))


def test_downsample_is_a_block_mean():
    img = np.arange(20, dtype=float).reshape(4, 5)
    np.testing.assert_allclose(downsample_image(img, 2), [[3.0, 5.0], [13.0, 15.0]])
    assert downsample_image(img, 1) is img


def test_sample_patches_positions_and_errors():
    img = np.arange(36, dtype=float).reshape(6, 6)
    p = sample_patches([("a", img)], 50, 3, np.random.default_rng(0))
    assert p.shape == (50, 9)
    # each row is a 3x3 window: consecutive columns differ by 1, rows by 6
    w = p.reshape(50, 3, 3)
    assert np.all(np.diff(w, axis=2) == 1) and np.all(np.diff(w, axis=1) == 6)
    from sparseae import SparseAEError
    with pytest.raises(SparseAEError, match="larger than image"):
        sample_patches([("a", img)], 1, 7, np.random.default_rng(0))


def test_patches_dataset_seeded_and_shaped():
    a = load_dataset("patches", num_patches=300, seed=3)
    b = load_dataset("patches", num_patches=300, seed=3)
    c = load_dataset("patches", num_patches=300, seed=4)
    assert a.train.shape == (300, 64) and a.test.shape == (60, 64) and a.image_shape == (8, 8)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    assert not torch.equal(a.train[:60], a.test)
    assert a.train.dtype == torch.float32
    assert a.train.min() >= 0.1 - 1e-6 and a.train.max() <= 0.9 + 1e-6
    colour = load_dataset("patches", num_patches=50, patch_size=6, patch_channels=3, whiten_images=False)
    assert colour.train.shape == (50, 108) and colour.image_shape == (6, 6, 3)
    raw = load_dataset("patches", num_patches=50, patch_channels=3, whiten_images=False, normalize=False)
    assert raw.train.min() >= 0.0 and raw.train.max() <= 1.0 and raw.train.std() > 0.05


def test_full_batch_stops_at_target_val_mse():
    data = load_dataset("patches", num_patches=200)
    result = train(_ufldl_config(max_iter=100, target_val_mse=1.0, threads=1), dataset=data, progress=False)
    assert result.reached_target
    assert len(result.history) == 1 and result.history[0]["iteration"] == 5  # first check: max_iter / 20


# --- full batch ------------------------------------------------------------------------------

def test_full_batch_rho_hat_is_the_mean_over_all_examples():
    torch.manual_seed(0)
    cfg = ModelConfig(input_dim=6, hidden=[4])
    model = SparseAutoencoder(cfg).double()
    x = torch.rand(37, 6, dtype=torch.float64)
    # 'running' is a minibatch device; with the whole set in one batch the exact mean is used
    sparsity = SparsityConfig(penalty="kl", rho=0.1, beta=2.0, weight_decay=0.01, rho_hat="running")
    f = FlatObjective(model, Objective(sparsity, "half_sse"), x)
    for _ in range(3):  # repeated evaluations must not mix in earlier estimates
        parts = f.parts()
    with torch.no_grad():
        a = torch.sigmoid(x @ model.encoder[0].weight.T + model.encoder[0].bias)
        rho_hat = [sum(a[i, j].item() for i in range(37)) / 37 for j in range(4)]
        kl = sum(0.1 * math.log(0.1 / q) + 0.9 * math.log(0.9 / (1 - q)) for q in rho_hat)
        recon = model(x).recon
        sse = ((recon - x) ** 2).sum().item() / (2 * 37)
        decay = 0.005 * sum((w ** 2).sum().item() for w in model.weights())
    assert parts.sparsity.item() == pytest.approx(2.0 * kl, rel=1e-12)
    assert parts.recon.item() == pytest.approx(sse, rel=1e-12)
    assert parts.total.item() == pytest.approx(sse + 2.0 * kl + decay, rel=1e-12)


def test_flat_objective_round_trips_parameters():
    model = SparseAutoencoder(ModelConfig(input_dim=5, hidden=[3])).double()
    f = FlatObjective(model, Objective(SparsityConfig(beta=0.003)), torch.rand(4, 5, dtype=torch.float64))
    theta = f.get()
    assert theta.size == sum(p.numel() for p in model.parameters())
    f.set(theta * 2)
    np.testing.assert_allclose(f.get(), theta * 2)


def test_lbfgs_run_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "ufldl", "--num-patches", "400", "--hidden", "6", "--max-iter", "10",
               "--threads", "1", "--quiet", "--out", str(out)])
    assert rc == 0
    for name in ("config.json", "model.safetensors", "metrics.csv", "summary.json", "features.png", "loss.png"):
        assert (out / name).is_file(), name
    assert any((out / "reconstructions").glob("iter_*.png"))
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    assert header[:2] == ["iteration", "evaluations"]
    costs = [float(r[header.index("train_loss")]) for r in rows[1:]]
    assert costs[-1] < costs[0]
    summary = json.loads((out / "summary.json").read_text())
    assert 1 <= summary["iteration"] <= 10
    # the cost printed is the exact objective of the saved model on the training patches
    config = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    model = load_run(out)
    assert next(model.parameters()).dtype == torch.float32
    data = load_dataset("patches", **config.train.dataset_options())
    f = FlatObjective(model.double(), Objective(config.sparsity, config.train.recon), data.train.double())
    assert f.parts().total.item() == pytest.approx(summary["train_loss"], rel=1e-5)


def test_cg_and_adam_train_the_same_model():
    data = load_dataset("patches", num_patches=300)
    cg = train(_ufldl_config(optimizer="cg", max_iter=10, threads=1), dataset=data, progress=False)
    assert cg.history[-1]["iteration"] <= 10 and np.isfinite(cg.history[-1]["train_loss"])
    adam = train(_ufldl_config(optimizer="adam", epochs=2, batch_size=100), dataset=data, progress=False)
    assert len(adam.history) == 2


def test_lbfgs_beats_its_start():
    data = load_dataset("patches", num_patches=300)
    result = train(_ufldl_config(max_iter=40, threads=1), dataset=data, progress=False)
    x = data.train.double()
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert 0 < result.history[-1]["mean_activation"] < 0.2
    assert result.model(x.float()).recon.shape == x.shape


# --- gradient check --------------------------------------------------------------------------

def test_numerical_gradient_of_a_quadratic():
    a = np.array([[3.0, 1.0], [1.0, 2.0]])
    theta = np.array([0.5, -1.0])
    num = numerical_gradient(lambda t: 0.5 * t @ a @ t, theta)
    np.testing.assert_allclose(num, a @ theta, rtol=1e-9)


def test_gradcheck_ufldl_objective():
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=64, hidden=[25]))
    model.initialize("ng")
    x = 0.1 + 0.8 * torch.rand(10, 64, dtype=torch.float64)
    objective = Objective(SparsityConfig(penalty="kl", rho=0.01, beta=3.0, weight_decay=1e-4), "half_sse")
    assert relative_gradient_error(model, objective, x) < 1e-9


def test_gradcheck_deep_relu_l1_objective():
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=12, hidden=[10, 6], activation="relu",
                                          output_activation="linear"))
    x = torch.randn(15, 12, dtype=torch.float64)
    objective = Objective(SparsityConfig(penalty="l1", beta=0.1, weight_decay=1e-3, layers=[0, 1]), "mse")
    assert relative_gradient_error(model, objective, x) < 1e-7


def test_gradcheck_catches_a_wrong_gradient():
    model = SparseAutoencoder(ModelConfig(input_dim=4, hidden=[3]))
    x = torch.rand(5, 4, dtype=torch.float64)

    class Detached(Objective):  # the KL term's gradient is lost: analytic gradient wrong
        def penalty(self, hidden, model=None, out=None):
            return super().penalty(tuple(h.detach() for h in hidden), model, out) + 0 * hidden[-1].sum()

    objective = Detached(SparsityConfig(penalty="kl", rho=0.05, beta=3.0), "half_sse")
    assert relative_gradient_error(model, objective, x) > 1e-3


def test_gradcheck_cli(capsys):
    assert main(["gradcheck", "--input-dim", "10", "--hidden", "4", "--examples", "5"]) == 0
    assert "relative difference" in capsys.readouterr().out
    assert main(["gradcheck", "--input-dim", "10", "--hidden", "4", "--examples", "5", "--tol", "1e-30"]) == 1
    assert main(["gradcheck", "--input-dim", "8", "--hidden", "5,3", "--activation", "relu",
                 "--output-activation", "linear", "--penalty", "l1", "--beta", "0.1", "--tol", "1e-7"]) == 0


# --- linear decoder, pictures ----------------------------------------------------------------

def test_linear_decoder_with_zca_on_colour_patches(tmp_path):
    config = RunConfig.from_dict(json.loads(json.dumps(PRESETS["ufldl-linear"])))
    config.model.hidden = [12]
    config.train.num_patches, config.train.max_iter, config.train.threads = 300, 15, 1
    result = train(config, out=tmp_path / "run", progress=False)
    model = result.model
    assert model.input_transform.kind == "zca" and result.config.model.image_shape == [8, 8, 3]
    # encode applies the stored whitening to raw data
    x = load_dataset("patches", **config.train.dataset_options()).test[:7]
    w, b = model.encoder[0].weight, model.encoder[0].bias
    expected = torch.sigmoid((x - model.input_transform.mean) @ model.input_transform.matrix.T @ w.T + b)
    torch.testing.assert_close(model.encode(x), expected, rtol=1e-4, atol=1e-5)
    # the features are W @ ZCA, drawn in colour
    img = mpimg.imread(tmp_path / "run" / "features.png")
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    rgb = img[..., :3]
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 0.05  # not grey
    filters = model.input_transform.compose(w.detach())
    torch.testing.assert_close(filters, w.detach() @ model.input_transform.matrix)


def test_feature_tiles_colour_layout():
    w = np.zeros((2, 2 * 2 * 3))
    w[0, 0] = 1.0  # unit 0: red channel of pixel (0, 0)
    w[1, 5] = -1.0  # unit 1: blue channel of pixel (0, 1)
    tiles = feature_tiles(w, (2, 2, 3))
    assert tiles.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(tiles[0, 0, 0], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(tiles[1, 0, 1], [0.5, 0.5, 0.0])


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--dataset", "patches", "--patch-size", "500"], "larger than image"),
    (["--dataset", "patches", "--optimizer", "newton"], "optimizer must be one of"),
    (["--dataset", "patches", "--optimizer", "lbfgs", "--max-iter", "0"], "max_iter must be positive"),
    (["--dataset", "patches", "--patch-channels", "2"], "patch_channels"),
    (["--dataset", "patches", "--init", "xavier"], "init must be one of"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert main(["train", *args, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert not out.exists()
