"""Linear probes and FVU-vs-L0 sweeps."""
import csv

import pytest
import torch

from sparseae.cli import main
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.data import Dataset
from sparseae.data.dataset import select_classes
from sparseae.errors import SparseAEError
from sparseae.analysis.probe import RAW, probe_features, probe_runs, results_table, write_results_csv
from sparseae.analysis.sweep import check_grid, family_config, run_sweep
from sparseae.training import train


def _labelled(n=500, d=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 2
    y = torch.arange(n) % classes
    x = torch.sigmoid(centres[y] + 0.5 * torch.randn(n, d, generator=g))
    return Dataset(x[:400], x[400:], y[:400], y[400:])


def test_probe_separates_linearly_separable_classes():
    ds = _labelled()
    r = probe_features("x", ds.train, ds.train_labels, ds.test, ds.test_labels, max_iter=100)
    assert r.train_accuracy == 1.0 and r.test_accuracy == 1.0 and r.features == 20


def test_probe_uses_labels_it_was_given_only():
    # classes 5 and 7: the probe maps them to 0/1 internally and reports accuracy on those labels
    x = torch.tensor([[0.0], [0.1], [1.0], [1.1]]).repeat(10, 1)
    y = torch.tensor([5, 5, 7, 7]).repeat(10)
    r = probe_features("x", x, y, x, y, max_iter=50)
    assert r.test_accuracy == 1.0


def test_probe_runs_table_and_csv(tmp_path):
    ds = _labelled()
    config = RunConfig(ModelConfig(hidden=[12], activation="relu", output_activation="linear", k=3),
                       SparsityConfig(penalty="topk"), TrainConfig(epochs=2, batch_size=50))
    train(config, tmp_path / "topk", ds, progress=False)
    results = probe_runs([str(tmp_path / "topk")], dataset=ds, max_iter=50)
    assert [r.name for r in results] == [RAW, str(tmp_path / "topk")]
    assert results[1].features == 12 and results[1].l0 <= 3
    table = results_table(results)
    assert table.splitlines()[0].startswith("| features | dim | L0")
    assert len(table.splitlines()) == 4
    write_results_csv(results, tmp_path / "p.csv")
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert rows[0]["features"] == RAW and float(rows[1]["test_accuracy"]) == pytest.approx(results[1].test_accuracy)
    # self-taught split: probe on two of the classes
    sub = probe_runs([str(tmp_path / "topk")], dataset=ds, classes=[0, 1], max_iter=50, raw=False)
    assert len(sub) == 1 and 0.0 <= sub[0].test_accuracy <= 1.0


def test_select_classes():
    ds = select_classes(_labelled(), [1, 3])
    assert set(ds.train_labels.tolist()) == {1, 3} and set(ds.test_labels.tolist()) == {1, 3}
    with pytest.raises(SparseAEError, match="labelled"):
        select_classes(Dataset(torch.zeros(3, 2), torch.zeros(1, 2)), [0])


def test_probe_cli_errors(capsys, tmp_path):
    assert main(["probe", str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["probe", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["probe", "--no-raw"]) == 2
    assert "nothing to probe" in capsys.readouterr().err


def test_family_configs():
    base = RunConfig(ModelConfig(hidden=[32]))
    t, k, l1 = (resolve(family_config(base, f, v)) for f, v in (("topk", 4), ("kl", 0.5), ("l1", 1e-3)))
    assert (t.model.topk, t.model.k, t.model.layer_activations(), t.sparsity.penalty) == ("topk", 4, ["relu"], "topk")
    assert (k.model.layer_activations(), k.sparsity.penalty, k.sparsity.beta) == (["sigmoid"], "kl", 0.5)
    assert (l1.model.layer_activations(), l1.sparsity.penalty, l1.sparsity.beta) == (["relu"], "l1", 1e-3)
    # each family's own learning rate and decay, unless the base sets them
    assert [(c.train.lr, c.train.lr_decay) for c in (t, k, l1)] == [(1.5e-3, 0.2), (1e-3, 0.0), (3e-3, 0.0)]
    base.validate()  # checks only: the base stays as requested
    base.train.lr, base.train.lr_decay = 0.01, 0.5
    for family, value in (("topk", 4), ("kl", 0.5)):
        c = resolve(family_config(base, family, value))
        assert (c.train.lr, c.train.lr_decay) == (0.01, 0.5)


def test_sweep_writes_csv_and_plot(tmp_path):
    ds = _labelled()
    base = RunConfig(ModelConfig(hidden=[16], output_activation="sigmoid"), SparsityConfig(),
                     TrainConfig(epochs=1, batch_size=50))
    rows = run_sweep(base, {"topk": [2, 4], "kl": [0.1], "l1": [1e-3]}, tmp_path / "sw", ds, progress=False)
    assert [r["method"] for r in rows] == ["topk", "topk", "kl", "l1"]
    assert rows[0]["l0"] <= 2 and rows[1]["l0"] <= 4
    assert all(0 <= r["fvu"] for r in rows)
    read = list(csv.DictReader(open(tmp_path / "sw" / "sweep.csv")))
    assert len(read) == 4 and read[2]["param"] == "beta"
    assert (tmp_path / "sw" / "fvu_vs_l0.png").stat().st_size > 0
    assert (tmp_path / "sw" / "topk_2" / "model.safetensors").is_file()


@pytest.mark.parametrize("argv, needle", [
    ([], "empty grid"),
    (["--k-grid", ""], "empty grid"),
    (["--k-grid", "0"], "bad topk grid value"),
    (["--k-grid", "2.5"], "bad topk grid value"),
    (["--l1-beta", "-1"], "bad l1 grid value"),
    (["--k-grid", "8,600", "--hidden", "512"], "k must be at most the code size 512"),
])
def test_sweep_bad_grid_exits_2(argv, needle, capsys, tmp_path):
    assert main(["sweep", *argv, "--out", str(tmp_path / "sw"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "sw").exists()


def test_check_grid_library_error():
    with pytest.raises(SparseAEError, match="empty grid"):
        check_grid({"topk": [], "kl": []})


def test_probe_l2_auto_is_chosen_without_the_test_split():
    from sparseae.analysis.probe import L2_GRID
    g = torch.Generator().manual_seed(3)
    x = torch.randn(600, 30, generator=g)
    w = torch.randn(30, 3, generator=g)
    y = (x @ w + 2.0 * torch.randn(600, 3, generator=g)).argmax(1)  # noisy: regularisation matters
    xt = torch.randn(200, 30, generator=g)
    yt = (xt @ w).argmax(1)
    a = probe_features("auto", x, y, xt, yt, max_iter=50, l2=None)
    b = probe_features("auto", x, y, xt, yt[torch.randperm(200, generator=g)], max_iter=50, l2=None)
    assert a.l2 in L2_GRID and a.l2 == b.l2  # test labels shuffled: same choice
    fixed = probe_features("fixed", x, y, xt, yt, max_iter=50, l2=a.l2)
    assert a.test_accuracy == pytest.approx(fixed.test_accuracy)  # final fit uses all training rows


def test_probe_l2_flag_parsing(capsys):
    with pytest.raises(SystemExit) as e:
        main(["probe", "--l2", "lots"])
    assert e.value.code == 2
