"""One-line messages that say what is wrong (issue 20): a file where a run folder is expected, a folder
where the weights are expected, a damaged .npy header, NaN weights, a bad --finetune-epochs caught
before anything is written."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sparseae.objective.metrics import require_finite_weights
from sparseae.apps.stacked import train_stacked
from sparseae.config import ModelConfig, RunConfig
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder

from cli_helpers import refused, run

TINY = ["--hidden", "6", "--epochs", "2", "--batch-size", "32", "--quiet"]


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npy"
    np.save(p, (rng.random((300, 12)) * 0.8 + 0.1).astype(np.float32))
    return p


@pytest.fixture
def finished(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "--dataset", "array", "--data", str(data), *TINY, "--out", str(out))[0] == 0
    return out


def test_eval_of_a_file_says_it_is_a_file(tmp_path, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text("mine\n")
    err = refused(capsys, "eval", str(precious))
    assert "is a file, not a run folder" in err and "does not exist" not in err
    assert precious.read_text() == "mine\n"
    assert "does not exist" in refused(capsys, "eval", str(tmp_path / "nothing"))


def test_eval_where_the_weights_are_a_folder_says_so(finished, capsys):
    (finished / "model.safetensors").unlink()
    (finished / "model.safetensors").mkdir()
    err = refused(capsys, "eval", str(finished))
    assert "model.safetensors is a folder" in err and "has no" not in err


def test_eval_of_nan_weights_is_refused(finished, capsys):
    weights = finished / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()  # kept: only the values change
    tensors = load_file(str(weights))
    name = sorted(k for k in tensors if k.endswith("weight"))[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights), metadata=metadata)
    err = refused(capsys, "eval", str(finished))
    assert "the model's weights are not finite" in err and name in err


def test_require_finite_weights_names_the_tensor():
    model = SparseAutoencoder(ModelConfig(input_dim=4, hidden=[3]).resolved())
    require_finite_weights(model)  # a fresh model passes
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("inf"))
    with pytest.raises(SparseAEError, match="not finite"):
        require_finite_weights(model)


def test_a_negative_shape_in_a_npy_header_is_called_damaged(tmp_path, data, capsys):
    bad = tmp_path / "bad.npy"
    raw = data.read_bytes()
    assert b"(300, 12)" in raw
    bad.write_bytes(raw.replace(b"(300, 12)", b"( -5, 12)"))  # same length: the header stays aligned
    err = refused(capsys, "train", "--dataset", "array", "--data", str(bad), *TINY, "--out", str(tmp_path / "o"))
    assert "header is damaged" in err and "(-5, 12)" in err and "too few" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--finetune-epochs", "--finetune-iter"])
@pytest.mark.parametrize("value", ["-1", "0"])
def test_stack_refuses_a_bad_finetune_count_before_writing(tmp_path, data, capsys, flag, value):
    out = tmp_path / "stack"
    before = listing(tmp_path)
    err = refused(capsys, "stack", "--dataset", "array", "--data", str(data), "--hidden", "8,4", "--epochs", "1",
                  "--quiet", flag, value, "--out", str(out))
    assert f"{flag} must be a positive integer, got {value}" in err and "train.epochs" not in err
    assert not out.exists() and listing(tmp_path) == before


def test_train_stacked_refuses_a_bad_finetune_epochs_before_writing(tmp_path, data):
    config = RunConfig.from_dict({"model": {"hidden": [8, 4]},
                                  "train": {"dataset": "array", "data": str(data), "epochs": 1}})
    with pytest.raises(SparseAEError, match="finetune_epochs must be a positive integer, got -1"):
        train_stacked(config, tmp_path / "stack", finetune_epochs=-1, progress=False)
    assert not (tmp_path / "stack").exists()
