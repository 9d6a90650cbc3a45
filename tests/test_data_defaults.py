"""Defaults that depend on the data: a linear output for sigmoid-output families on values outside [0, 1],
and a default L0 target for l1 and jumprelu on data other than FashionMNIST (families.OUTSIDE_UNIT_INTERVAL,
families.default_l0, config.resolve)."""
import json

import numpy as np
import pytest
import torch

from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.data.arrays import ArrayData
from sparseae.data.dataset import Dataset, within_unit_interval
from sparseae.training.session import train


def _config(penalty, input_dim=64, hidden=(256,), dataset="array", **sparsity):
    return RunConfig(ModelConfig(input_dim=input_dim, hidden=list(hidden)), SparsityConfig(penalty=penalty, **sparsity),
                     TrainConfig(dataset=dataset, data="x.npy" if dataset == "array" else None))


@pytest.mark.parametrize("penalty", ["l1", "jumprelu"])
@pytest.mark.parametrize("input_dim,hidden,target", [(64, 256, 8), (52, 128, 6), (128, 1024, 16),
                                                     (4096, 16384, 64), (64, 16, 4), (40, 12, 3), (3, 8, 1)])
def test_penalty_families_aim_at_input_dim_over_8_on_other_data(penalty, input_dim, hidden, target):
    # round(input_dim / 8), at least 1, at most 64 and at most a quarter of the code
    c = resolve(_config(penalty, input_dim, (hidden,)))
    assert c.sparsity.target_l0 == target


@pytest.mark.parametrize("penalty", ["l1", "jumprelu"])
def test_a_stated_beta_or_l0_fashion_mnist_or_a_deep_model_keep_their_settings(penalty):
    assert resolve(_config(penalty, beta=0.01)).sparsity.target_l0 is None
    assert resolve(_config(penalty, target_l0=3.0)).sparsity.target_l0 == 3.0
    assert resolve(_config(penalty, 784, dataset="fashion-mnist")).sparsity.target_l0 is None
    assert resolve(_config(penalty, hidden=(128, 64))).sparsity.target_l0 is None
    lbfgs = _config(penalty)
    lbfgs.train.optimizer = "lbfgs"
    assert resolve(lbfgs).sparsity.target_l0 is None
    assert resolve(_config(penalty, hidden=(3,))).sparsity.target_l0 is None  # no L0 below a 3-unit code


def test_the_families_without_beta_get_no_target():
    for penalty in ("kl", "topk", "none"):
        c = _config(penalty)
        if penalty == "topk":
            c.model.k = 8
        assert resolve(c).sparsity.target_l0 is None


def test_values_outside_the_unit_interval_give_sigmoid_output_families_a_linear_decoder():
    for penalty in ("kl", "none"):
        inside = resolve(_config(penalty), unit_interval=True).model
        unknown = resolve(_config(penalty)).model
        outside = resolve(_config(penalty), unit_interval=False).model
        assert inside.output_activation == unknown.output_activation == "sigmoid"
        assert not inside.input_scale and not inside.pre_bias and inside.bias_init == "default"
        assert outside.output_activation == "linear" and outside.input_scale
        assert outside.pre_bias and outside.bias_init == "mean"
        assert outside.activation == "sigmoid"  # Ng's code layer: KL needs its (0, 1) units
    deep = resolve(_config("kl", hidden=(64, 32)), unit_interval=False).model
    assert deep.output_activation == "linear" and not deep.pre_bias and deep.bias_init == "default"
    stated = _config("kl")
    stated.model.output_activation = "sigmoid"
    assert resolve(stated, unit_interval=False).model.output_activation == "sigmoid"  # the user's word wins
    topk = _config("topk")
    topk.model.k = 8
    assert resolve(topk, unit_interval=False) == resolve(topk, unit_interval=True)  # already linear


def test_within_unit_interval_in_memory_and_streamed(tmp_path):
    x = torch.rand(50, 4)
    assert within_unit_interval(Dataset(train=x, test=x)) is True
    y = x.clone()
    y[49, 2] = 1.5
    assert within_unit_interval(Dataset(train=y, test=x)) is False
    assert within_unit_interval(Dataset(train=y, test=x), limit=49) is True  # only the rows that train
    np.save(tmp_path / "a.npy", (x.numpy() - 0.25))
    streamed = ArrayData(tmp_path / "a.npy", val_fraction=0.2)
    assert within_unit_interval(streamed) is None  # not scanned yet
    assert streamed.prepare(stream="yes") is streamed
    assert streamed.stats.low == pytest.approx(float(x[:40].min()) - 0.25, abs=1e-6)
    assert streamed.stats.high == pytest.approx(float(x[:40].max()) - 0.25, abs=1e-6)
    assert within_unit_interval(streamed) is False


def test_kl_on_raw_sensor_like_values_reconstructs_them(tmp_path):
    # columns around 4,000 and 50 with spreads 30 and 1: a sigmoid output could not come near them
    g = np.random.default_rng(0)
    z = g.standard_normal((1200, 2))
    x = np.concatenate([4000 + 30 * z[:, :1], 50 + z, 50 + z[:, :1] - z[:, 1:]], axis=1).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    config = RunConfig(ModelConfig(hidden=[16]), SparsityConfig(penalty="kl"),
                       TrainConfig(dataset="array", data=str(tmp_path / "x.npy"), epochs=20, seed=0))
    result = train(config, out=tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["output_activation"] == "linear" and saved["model"]["input_scale"] is True
    val = torch.from_numpy(x[-120:])
    with torch.no_grad():
        recon = result.model.reconstruct(val)
    fvu = float(((recon - val) ** 2).sum() / ((val - val.mean(0)) ** 2).sum())
    assert fvu < 0.5  # the old sigmoid output: millions


def test_the_command_names_a_default_target_as_such(tmp_path, capsys):
    from cli_helpers import run

    g = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", (g.random((600, 16)) < 0.1).astype(np.float32) * g.random((600, 16)))
    code, out, err = run(capsys, "train", "--dataset", "array", "--data", str(tmp_path / "x.npy"), "--penalty", "l1",
                         "--hidden", "16", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    assert "(the default target 2 for 16 input columns; --l0 or --beta to choose; beta adapted to" in out
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["sparsity"]
    assert saved["target_l0"] == 2.0 and saved["beta"] == pytest.approx(1e-3)
