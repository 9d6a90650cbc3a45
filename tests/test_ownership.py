"""Only what sparseae wrote is ever replaced (run/output.py): `--overwrite` replaces a folder only if
sparseae wrote every entry in it, refused in one line naming the first entry it did not write, before
anything is trained; every flag that names a file follows one rule; staging folders of a killed run
are removed by the next run on the same --out."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from sparseae.cli import main
from sparseae.errors import SparseAEError
from sparseae.run.output import MARK, LeftoverWarning, OutputFolder, claim_file, owner, write_mark

from cli_helpers import digest, refused, rows_file

TINY = ["--hidden", "6", "--epochs", "1", "--batch-size", "32", "--limit-train", "500", "--quiet"]
FIXTURES = Path(__file__).parent / "fixtures" / "runs_v0_1"
MONITOR = ["--hidden", "6", "--epochs", "2", "--pca-components", "4"]


@pytest.fixture
def data(tmp_path) -> Path:
    return rows_file(tmp_path, 6)


@pytest.fixture
def normal_csv(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    p = tmp_path / "normal.csv"
    np.savetxt(p, rng.normal(size=(200, 5)), delimiter=",", header="a,b,c,d,e", comments="")
    return p


def train_args(data: Path, out, *extra: str) -> list[str]:
    return ["train", "--dataset", "array", "--data", str(data), *TINY, "--out", str(out), *extra]


@pytest.fixture
def decoy(tmp_path) -> Path:
    """A home folder: dotfiles, a config folder, a text file."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".bashrc").write_text("export PATH=$HOME/bin:$PATH\n")
    (home / ".config" / "app.conf").write_text("colour = blue\n")
    (home / "a.txt").write_text("my notes\n")
    return home


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything is trained or fitted."""
    import sparseae.cli.apps as cli_apps
    import sparseae.training.session as session

    def trained(*a, **k):
        raise AssertionError("trained before the output was refused")

    monkeypatch.setattr(session, "_train", trained)
    monkeypatch.setattr(cli_apps, "_fitted", trained)


@pytest.fixture
def run_dir(tmp_path, data, capsys) -> Path:
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0, capsys.readouterr().err
    capsys.readouterr()
    return out


# --- folders: --overwrite replaces only what sparseae wrote -------------------------------------------

def test_a_run_folder_carries_its_mark(run_dir):
    assert json.loads((run_dir / MARK).read_text()) == {"format": "sparseae-folder", "version": 1, "kind": "run"}
    assert owner(run_dir / "checkpoint") == (run_dir.resolve(), "run")


def test_a_decoy_home_folder_survives_train_overwrite(tmp_path, data, decoy, no_training, capsys):
    before = digest(decoy, folders=True)
    err = refused(capsys, *train_args(data, decoy, "--overwrite"))
    assert ".bashrc" in err and "sparseae wrote" in err
    assert digest(decoy, folders=True) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "home"]  # no staging folder either
    refused(capsys, *train_args(data, decoy, "--overwrite", "--check"))


def test_a_decoy_home_folder_survives_monitor_fit_overwrite(tmp_path, normal_csv, decoy, no_training, capsys):
    before = digest(decoy, folders=True)
    err = refused(capsys, "monitor", "fit", "--normal", str(normal_csv), "--out", str(decoy), "--overwrite", *MONITOR)
    assert ".bashrc" in err
    assert digest(decoy, folders=True) == before


def test_one_foreign_file_in_a_run_is_named_and_the_run_kept(run_dir, data, no_training, capsys):
    (run_dir / "checkpoint" / "notes.txt").write_text("mine")
    before = digest(run_dir, folders=True)
    err = refused(capsys, *train_args(data, run_dir, "--overwrite"))
    assert "checkpoint/notes.txt" in err
    assert digest(run_dir, folders=True) == before


def test_a_symbolic_link_is_never_sparseaes(run_dir, data, tmp_path, no_training, capsys):
    (tmp_path / "elsewhere").write_text("precious")
    (run_dir / "loss.png").unlink()
    (run_dir / "loss.png").symlink_to(tmp_path / "elsewhere")
    assert "loss.png" in refused(capsys, *train_args(data, run_dir, "--overwrite"))
    assert (tmp_path / "elsewhere").read_text() == "precious"


def test_a_run_sparseae_wrote_is_replaced(run_dir, data, capsys):
    assert main(train_args(data, run_dir, "--overwrite", "--seed", "5")) == 0
    assert json.loads((run_dir / "config.json").read_text())["train"]["seed"] == 5
    assert (run_dir / MARK).is_file() and not list(run_dir.parent.glob(".run.*"))


def test_the_current_folder_and_root_are_refused_before_training(run_dir, data, monkeypatch, no_training, capsys):
    monkeypatch.chdir(run_dir)  # even a run folder: replacing the current folder would pull it away
    before = digest(run_dir, folders=True)
    for extra in ([], ["--check"]):
        assert "current folder" in refused(capsys, *train_args(data, ".", "--overwrite", *extra))
        assert "current folder" in refused(capsys, *train_args(data, "..", "--overwrite", *extra))
        assert "/ or a mount point" in refused(capsys, *train_args(data, "/", "--overwrite", *extra))
    assert digest(run_dir, folders=True) == before


def test_a_run_written_before_the_mark_is_recognised(tmp_path, data, capsys):
    old = tmp_path / "old"
    shutil.copytree(FIXTURES / "batchtopk-done", old)
    assert not (old / MARK).exists()
    assert main(train_args(data, old, "--overwrite")) == 0, capsys.readouterr().err
    assert (old / MARK).is_file() and (old / "model.safetensors").is_file()
    # but not with a file it does not write
    legacy = tmp_path / "legacy"
    shutil.copytree(FIXTURES / "kl-killed", legacy)
    (legacy / "todo.md").write_text("mine")
    assert "todo.md" in refused(capsys, *train_args(data, legacy, "--overwrite"))
    assert (legacy / "todo.md").read_text() == "mine"


def test_a_folder_inside_a_run_is_refused(run_dir, data, no_training, capsys):
    assert "inside" in refused(capsys, *train_args(data, run_dir / "sub"))
    assert not (run_dir / "sub").exists()


# --- staging folders of a killed run ------------------------------------------------------------------

def test_staging_folders_left_by_a_killed_run_are_removed(run_dir, data, tmp_path, capsys):
    new = tmp_path / ".run.new-abc123"  # a killed --overwrite: its staging folder, marked first
    new.mkdir()
    write_mark(new, "run")
    (new / "config.json").write_text("{}")
    (new / ".metrics.csvx1y2.tmp").write_text("half")
    old = tmp_path / ".run.old-def456"  # killed just after a commit's second rename
    shutil.copytree(run_dir, old / "run")
    foreign = tmp_path / ".run.new-zzz999"  # same name pattern, not sparseae's
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.warns(LeftoverWarning, match="zzz999"):
        assert main(train_args(data, run_dir, "--overwrite")) == 0
    assert not new.exists() and not old.exists()
    assert (foreign / "notes.txt").read_text() == "mine"


def test_the_staging_folder_of_a_sigkilled_overwrite_is_removed_by_the_next_run(run_dir, data, tmp_path):
    argv = [sys.executable, "-m", "sparseae", "train", "--dataset", "array", "--data", str(data), "--hidden", "6",
            "--batch-size", "1", "--epochs", "1000", "--quiet", "--out", str(run_dir), "--overwrite"]
    proc = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any((p / "metrics.csv").exists() for p in tmp_path.glob(".run.new-*")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(tmp_path.glob(".run.new-*"))  # left behind by the kill
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # removed, not merely named
        assert main(train_args(data, run_dir, "--overwrite")) == 0
    assert not list(tmp_path.glob(".run.*"))


# --- the context manager ------------------------------------------------------------------------------

def test_output_folder_commits_on_success_and_discards_on_an_exception(run_dir):
    before = digest(run_dir, folders=True)
    with pytest.raises(RuntimeError):
        with OutputFolder(run_dir, "replace") as out:
            (out.create() / "config.json").write_text("{}")
            raise RuntimeError("the run failed")
    assert digest(run_dir, folders=True) == before and not list(run_dir.parent.glob(".run.*"))
    with OutputFolder(run_dir, "replace") as out:
        (out.create() / "config.json").write_text('{"new": 1}')
    assert sorted(p.name for p in run_dir.iterdir()) == [MARK, "config.json"]


def test_inside_a_sweep_only_its_points_are_made(tmp_path):
    sweep = tmp_path / "sweep"
    OutputFolder(sweep, kind="sweep").create()
    OutputFolder(sweep / "topk_8", kind="run").create()
    with pytest.raises(SparseAEError, match="inside"):
        OutputFolder(sweep / "notes", kind="run")
    with pytest.raises(SparseAEError, match="inside"):
        OutputFolder(sweep / "topk_8" / "deeper", kind="run")


# --- files: one rule for every flag that names a file -------------------------------------------------

def test_probe_csv_at_the_runs_config_is_refused(run_dir, capsys):
    before = digest(run_dir, folders=True)
    for extra in ([], ["--overwrite"]):
        err = refused(capsys, "probe", str(run_dir), "--csv", str(run_dir / "config.json"), *extra)
        assert "sparseae wrote" in err
    refused(capsys, "probe", str(run_dir), "--csv", str(run_dir / "new.csv"))  # nor a new file inside it
    assert digest(run_dir, folders=True) == before


def test_cluster_json_at_the_runs_weights_is_refused(run_dir, no_training, capsys):
    before = digest(run_dir, folders=True)
    refused(capsys, "cluster", "--graph", "karate", "--json", str(run_dir / "model.safetensors"), "--overwrite")
    assert digest(run_dir, folders=True) == before


def test_monitor_score_json_at_the_monitor_record_is_refused(tmp_path, normal_csv, capsys):
    mon = tmp_path / "mon"
    assert main(["monitor", "fit", "--normal", str(normal_csv), "--out", str(mon), *MONITOR]) == 0
    capsys.readouterr()
    before = digest(mon, folders=True)
    for extra in ([], ["--overwrite"]):
        refused(capsys, "monitor", "score", str(mon), str(normal_csv), "--json", str(mon / "monitors.json"), *extra)
    assert digest(mon, folders=True) == before
    scores = tmp_path / "scores"
    assert "the folder this command writes" in refused(
        capsys, "monitor", "score", str(mon), str(normal_csv), "--out", str(scores), "--json", str(scores / "s.json"))
    assert not scores.exists()


def test_report_screenshot_at_another_runs_picture_is_refused(run_dir, tmp_path, data, monkeypatch, capsys):
    import sparseae.run.chromium as chromium

    other = tmp_path / "other"
    assert main(train_args(data, other)) == 0
    capsys.readouterr()
    monkeypatch.setattr(chromium, "find_chromium", lambda: "/usr/bin/chromium")  # never started: refused before
    before = digest(other, folders=True)
    for extra in ([], ["--overwrite"]):
        refused(capsys, "report", str(run_dir), "--out", str(tmp_path / "r.html"),
                "--screenshot", str(other / "loss.png"), *extra)
        refused(capsys, "report", str(run_dir), "--out", str(other / "report.html"), *extra)
    assert digest(other, folders=True) == before and not (tmp_path / "r.html").exists()
    # the run's own report is its own file, replaced by the next report
    assert main(["report", str(run_dir)]) == 0 and main(["report", str(run_dir)]) == 0


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text("mine")
    with pytest.raises(SparseAEError, match="--overwrite"):
        claim_file(notes, "--json")
    assert claim_file(notes, "--json", overwrite=True) == notes
    assert claim_file(tmp_path / "new.json", "--json") == tmp_path / "new.json"
    with pytest.raises(SparseAEError, match="not a regular file"):
        claim_file(tmp_path, "--json", overwrite=True)


def test_tensorboard_inside_the_run_folder_is_refused(tmp_path, data, no_training, capsys):
    out = tmp_path / "run"
    assert "the folder this command writes" in refused(capsys, *train_args(data, out, "--tensorboard",
                                                                           str(out / "tb")))
    assert not out.exists()
