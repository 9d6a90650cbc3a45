"""What a run measures once and uses twice: the last validation's pass also gives the feature density
(no second pass over the rows at the end), and an evaluation pass of a TopK model decodes by gathering
its k decoder columns, as training does."""
import numpy as np
import torch

from sparseae import Dataset, ModelConfig, RunConfig, SparsityConfig, TrainConfig, train
from sparseae.config import resolve
from sparseae.model import SparseAutoencoder
from sparseae.objective.metrics import evaluate, evaluate_with_frequency, never_fired_fraction, \
    unit_firing_frequency
from sparseae.run.rundir import load_run


def _model(hidden=48, k=5, seed=0):
    cfg = resolve(RunConfig(ModelConfig(input_dim=20, hidden=[hidden], topk="topk", k=k),
                            SparsityConfig(penalty="topk"), TrainConfig(batch_size=32)))
    torch.manual_seed(seed)
    return SparseAutoencoder(cfg.model)


def _rows(n=300, d=20, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_the_frequency_is_unit_firing_frequencys_and_the_metrics_evaluates():
    model, x = _model(), _rows()
    with torch.no_grad():
        model.encoder[0].bias[:10] = -50.0  # ten units that never fire
    metrics, frequency = evaluate_with_frequency(model, x, chunk=64)  # several chunks
    assert torch.equal(frequency, unit_firing_frequency(model, x).double())
    assert metrics == evaluate(model, x, chunk=64)
    assert (frequency[:10] == 0).all() and metrics["dead_fraction"] == never_fired_fraction(frequency)
    # each unit's share of the 300 rows: whole counts over 300
    counts = frequency * 300
    assert torch.allclose(counts, counts.round(), atol=1e-9) and abs(float(frequency.sum()) - 5.0) < 1e-9  # k 5 a row


def test_an_evaluation_pass_decodes_the_code_it_reports():
    model, x = _model(), _rows()
    model.eval()
    with torch.no_grad():
        out = model(x)
        dense = model.decode(out.hidden[-1])
    assert (out.hidden[-1] != 0).sum(1).max() <= 5
    torch.testing.assert_close(out.recon, dense, rtol=1e-5, atol=1e-6)


def test_a_runs_density_and_never_fired_share_are_the_final_models(tmp_path):
    g = torch.Generator().manual_seed(3)
    data = Dataset(torch.randn(512, 20, generator=g), torch.randn(200, 20, generator=g))
    cfg = RunConfig(ModelConfig(hidden=[64], topk="topk", k=4), SparsityConfig(penalty="topk"),
                    TrainConfig(epochs=2, batch_size=32, device="cpu"))
    result = train(cfg, out=tmp_path / "run", dataset=data, progress=False)
    model = load_run(tmp_path / "run")
    recount = unit_firing_frequency(model, data.test)
    summary = result.run_dir.read_json("summary.json")
    assert summary["never_fired_fraction"] == never_fired_fraction(recount)
    assert (tmp_path / "run" / "feature_density.png").stat().st_size > 0
    assert np.isclose(summary["l0"], float(recount.sum()), atol=1e-9)
