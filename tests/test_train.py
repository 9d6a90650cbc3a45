import csv
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from sparseae import (Dataset, ModelConfig, RunConfig, SparseAutoencoder, SparsityConfig, TrainConfig,
                      load_run, train)
from sparseae.cli import main
from sparseae.run import atomic_write_text
from tests.conftest import FMNIST, needs_fmnist


def blobs(n=600, d=36, seed=0):
    """Images made of a few bright bars: learnable structure in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    basis = (torch.rand(8, d, generator=g) > 0.7).float()
    mix = (torch.rand(n, 8, generator=g) > 0.75).float()
    x = (mix @ basis).clamp(0, 1) * 0.9 + 0.05 * torch.rand(n, d, generator=g)
    return Dataset(x[: n * 5 // 6], x[n * 5 // 6:], image_shape=(6, 6))


def small_config(**sparsity):
    return RunConfig(ModelConfig(hidden=[16]), SparsityConfig(**sparsity),
                     TrainConfig(epochs=3, batch_size=50, lr=1e-2))


def test_run_folder_has_every_file(tmp_path):
    result = train(small_config(), out=tmp_path / "run", dataset=blobs(), progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "metrics.csv", "loss.png", "features.png", "summary.json",
                 "reconstructions/epoch_001.png", "reconstructions/epoch_003.png"):
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    columns = {"train_loss", "train_recon", "train_sparsity", "val_mse", "mean_activation", "dead_fraction"}
    assert columns <= set(rows[0])
    assert not [p for p in run.rglob("*.tmp")]  # no leftovers of atomic writes
    # PNG files are real images
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved model gives back the trained model
    model = load_run(run)
    x = blobs().test
    with torch.no_grad():
        assert torch.allclose(model.encode(x), result.model.encode(x), atol=1e-6)
        assert model.encode(x).shape == (x.shape[0], 16)
    assert set(load_file(run / "model.safetensors")) == set(result.model.state_dict())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["hidden"] == [16] and cfg["model"]["input_dim"] == 36


def test_same_seed_same_weights():
    a = train(small_config(), dataset=blobs(), progress=False).model.state_dict()
    b = train(small_config(), dataset=blobs(), progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_and_validation_losses_are_consistent():
    result = train(small_config(penalty="kl", beta=0.5), dataset=blobs(), progress=False)
    row = result.history[-1]
    # train loss = its parts; validation reports MSE without the penalty
    assert row["train_loss"] == pytest.approx(row["train_recon"] + row["train_sparsity"] + row["train_decay"], rel=1e-6)
    assert row["train_sparsity"] > 0
    assert result.history[-1]["val_mse"] < result.history[0]["val_mse"]


def test_kl_makes_the_code_sparser_than_no_penalty():
    cfg_kl = small_config(penalty="kl", rho=0.05, beta=1.0)
    cfg_kl.train.epochs = 15
    cfg_none = small_config(penalty="none")
    cfg_none.train.epochs = 15
    kl = train(cfg_kl, dataset=blobs(), progress=False).history[-1]["mean_activation"]
    plain = train(cfg_none, dataset=blobs(), progress=False).history[-1]["mean_activation"]
    assert kl < 0.5 * plain
    assert abs(kl - 0.05) < 0.5 * 0.05


def test_target_val_mse_stops_early():
    cfg = small_config(penalty="none")
    cfg.train.epochs = 50
    cfg.train.target_val_mse = 1.0  # met after the first epoch
    result = train(cfg, dataset=blobs(), progress=False)
    assert result.reached_target and len(result.history) == 1


def test_deep_and_tied_models():
    deep = SparseAutoencoder(ModelConfig(input_dim=20, hidden=[12, 8, 4], activation="relu", code_activation="sigmoid"))
    assert [layer.out_features for layer in deep.encoder] == [12, 8, 4]
    assert [layer.out_features for layer in deep.decoder] == [8, 12, 20]
    tied = SparseAutoencoder(ModelConfig(input_dim=20, hidden=[12, 4], tied=True))
    assert len(tied.weights()) == 2  # decoder shares the encoder's weights
    out = tied(torch.rand(3, 20))
    assert out.recon.shape == (3, 20) and [h.shape[1] for h in out.hidden] == [12, 4]
    assert torch.equal(tied.decoder_weights()[0], tied.encoder[1].weight.t())


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "f.json"
    atomic_write_text(p, "old")

    class Boom(Exception):
        pass

    from sparseae.run import atomic_write

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(p, failing)
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.json"]


# ---- CLI ----

def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("args,msg", [
    (["--rho", "1.5"], "rho must be in (0, 1)"),
    (["--rho", "0"], "rho must be in (0, 1)"),
    (["--beta", "-0.1"], "beta must be >= 0"),
    (["--activation", "relu", "--penalty", "kl"], "KL penalty needs activations in (0, 1)"),
    (["--data-dir", "/nonexistent/fmnist"], "does not exist"),
])
def test_cli_bad_input_exit_2(tmp_path, capsys, args, msg):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--quiet", *args]) == 2
    assert msg in one_line_error(capsys)
    assert not out.exists()


@needs_fmnist
@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_cli_corrupt_idx_exit_2(tmp_path, capsys, damage):
    data = tmp_path / "data"
    shutil.copytree(FMNIST, data)
    f = data / "t10k-labels-idx1-ubyte.gz"
    import gzip
    raw = gzip.decompress(f.read_bytes())
    raw = raw[:-100] if damage == "truncate" else b"\x00\x00\x77" + raw[3:]
    f.write_bytes(gzip.compress(raw))
    assert main(["train", "--data-dir", str(data), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert ("truncated" if damage == "truncate" else "wrong magic") in one_line_error(capsys)


def test_cli_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--hidden", "a,b"])
    assert e.value.code == 2


@needs_fmnist
def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--limit-train", "2000", "--epochs", "2", "--hidden", "32", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 10000 and report["penalty"] == "kl"
    assert 0 < report["mean_activation"] < 1 and 0 < report["mse"] < 0.2
    row = list(csv.DictReader(open(out / "metrics.csv")))[-1]
    assert report["mse"] == pytest.approx(float(row["val_mse"]), rel=1e-5)  # validation = test split


def test_cli_eval_missing_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in one_line_error(capsys)


def test_preset_and_add_sparsity_flags():
    from sparseae.cli import build_parser, config_from_args
    cfg = config_from_args(build_parser().parse_args(["train", "--preset", "tutorial", "--reg-param", "0.01"]))
    assert cfg.model.hidden == [256, 128, 64, 32, 16] and cfg.sparsity.beta == 0.01
    assert cfg.model.layer_activations() == ["relu"] * 4 + ["sigmoid"]
    cfg = config_from_args(build_parser().parse_args(["train", "--add-sparsity", "no"]))
    assert cfg.sparsity.penalty == "none"


def test_he_init_scales_relu_layers_only():
    cfg = ModelConfig(input_dim=400, hidden=[300, 20], activation="relu", code_activation="sigmoid")
    model = SparseAutoencoder(cfg)
    before_code = model.encoder[1].weight.clone()
    model.initialize("he", torch.Generator().manual_seed(0))
    w = model.encoder[0].weight  # followed by ReLU: N(0, 2/n_in)
    assert w.std().item() == pytest.approx((2 / 400) ** 0.5, rel=0.02)
    assert torch.count_nonzero(model.encoder[0].bias) == 0
    assert torch.equal(model.encoder[1].weight, before_code)  # sigmoid code layer keeps its init
    assert model.decoder[0].weight.std().item() == pytest.approx((2 / 20) ** 0.5, rel=0.1)
