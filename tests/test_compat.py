"""Run folders written before the typed schema (tests/fixtures/runs_v0_1) still read, evaluate and resume
with the numbers the old code gave (expected.json)."""
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from sparseae.cli import main
from sparseae.run import RunDir, load_run
from sparseae.training.checkpoint import Checkpointer

FIXTURES = Path(__file__).parent / "fixtures" / "runs_v0_1"


@pytest.fixture
def expected(tmp_path, monkeypatch):
    """The fixture folder copied to tmp_path and made the working directory (the runs name "data.npy")."""
    shutil.copytree(FIXTURES, tmp_path / "runs")
    monkeypatch.chdir(tmp_path / "runs")
    return json.loads(Path("expected.json").read_text())


def test_eval_of_a_finished_run_gives_the_old_metrics(expected, capsys):
    assert main(["eval", "batchtopk-done"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key, value in expected["batchtopk-done eval"].items():
        assert report[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.parametrize("name, hidden, topk", [("batchtopk-done", [16], "batchtopk"), ("kl-killed", [6], "none")])
def test_load_run_reads_old_folders(expected, name, hidden, topk):
    model = load_run(name)
    assert model.config.hidden == hidden and model.config.topk == topk and not model.training
    # the stricter schema reads the old files as they are: no value changed, none added; a removed setting
    # (train.dead_threshold, a threshold on raw activations) is dropped
    saved = json.loads(Path(name, "config.json").read_text())
    assert saved["train"].pop("dead_threshold") == 0.001
    assert RunDir(name).read_config().to_dict() == saved
    meta = Checkpointer(RunDir(name)).read_meta()
    assert len(meta["history"]) == meta["epoch"] - 1


def test_resuming_the_killed_run_ends_as_the_old_code_did(expected):
    want = expected["kl-killed resumed to the end"]
    # The expected numbers come from the CPU; the run's device 'auto' would pick a GPU where there is one.
    assert main(["train", "--resume", "kl-killed", "--quiet", "--device", "cpu"]) == 0
    summary = json.loads(Path("kl-killed/summary.json").read_text())
    assert summary["epochs"] == want["epochs"]
    assert summary["val_mse"] == pytest.approx(want["val_mse"], rel=1e-6)
    assert summary["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)
    w = load_file("kl-killed/model.safetensors")["encoder.0.weight"][0, :3]
    assert w.tolist() == pytest.approx(want["encoder.0.weight[0,:3]"], rel=1e-6)
