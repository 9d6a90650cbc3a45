"""Stacked training: greedy layer-wise pretraining, assembly, fine-tuning."""
import json

import pytest
import torch

from sparseae.cli import main
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.data import Dataset
from sparseae.errors import SparseAEError
from sparseae.analysis.probe import encode_features, probe_features
from sparseae.run import load_run
from sparseae.apps.stacked import layer_config, train_stacked


def _labelled(n=600, d=30, classes=3, seed=0):
    """Gaussian clusters squashed into (0, 1), labels = cluster."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 1.5
    y = torch.arange(n) % classes
    x = torch.sigmoid(centres[y] + torch.randn(n, d, generator=g))
    m = n * 4 // 5
    return Dataset(x[:m], x[m:], y[:m], y[m:])


def _config(epochs=2):
    return RunConfig(ModelConfig(hidden=[16, 8], activation="sigmoid", output_activation="sigmoid"),
                     SparsityConfig(penalty="kl", rho=0.1, beta=0.1),
                     TrainConfig(epochs=epochs, batch_size=32, lr=1e-2))


def test_layer_configs_chain_the_codes():
    c = _config()
    c.model.input_dim = 30
    l1, l2 = layer_config(c, 0, 30), layer_config(c, 1, 16)
    assert (l1.model.hidden, l1.model.input_dim, l1.model.output_activation) == ([16], 30, "sigmoid")
    assert (l2.model.hidden, l2.model.input_dim, l2.model.input_transform) == ([8], 16, "none")


def test_greedy_stack_is_the_composition_of_its_layers(tmp_path):
    ds = _labelled()
    res = train_stacked(_config(), tmp_path / "s", ds, finetune="unsupervised", finetune_epochs=1,
                        progress=False)
    for name in ("layer1", "layer2", "greedy", "."):
        assert (tmp_path / "s" / name / "config.json").is_file()
        assert (tmp_path / "s" / name / "model.safetensors").is_file()
    l1, l2 = load_run(tmp_path / "s" / "layer1"), load_run(tmp_path / "s" / "layer2")
    greedy = load_run(tmp_path / "s" / "greedy")
    x = ds.test
    with torch.no_grad():
        assert torch.allclose(greedy.encode(x), l2.encode(l1.encode(x)), atol=1e-6)
        # the decoder runs the layers' decoders in reverse
        assert torch.allclose(greedy.decode(greedy.encode(x)), l1.decode(l2.decode(l2.encode(l1.encode(x)))),
                              atol=1e-6)
    finetuned = load_run(tmp_path / "s")
    assert finetuned.config.hidden == [16, 8]
    assert not torch.allclose(finetuned.encoder[0].weight, greedy.encoder[0].weight)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["finetune"] == "unsupervised" and "greedy" in summary
    assert res.summary["mse"] == pytest.approx(summary["mse"])


def test_supervised_finetuning_improves_the_probe(tmp_path):
    ds = _labelled(seed=1)
    res = train_stacked(_config(epochs=1), tmp_path / "s", ds, finetune="supervised", finetune_iter=30,
                        progress=False)

    def acc(model):
        return probe_features("m", encode_features(model, ds.train), ds.train_labels,
                              encode_features(model, ds.test), ds.test_labels, max_iter=100).test_accuracy

    assert acc(res.model) >= acc(res.greedy)
    assert acc(res.model) > 0.9


def test_stack_needs_two_layers_and_exits_2(capsys, tmp_path):
    c = _config()
    c.model.hidden = [16]
    with pytest.raises(SparseAEError, match="at least two hidden layers"):
        train_stacked(c, None, _labelled())
    assert main(["stack", "--hidden", "16", "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "at least two hidden layers" in capsys.readouterr().err
    assert main(["stack", "--hidden", "16,8", "--penalty", "topk", "--k", "9", "--quiet",
                 "--out", str(tmp_path / "s")]) == 2
    assert "k must be at most the code size 8" in capsys.readouterr().err
