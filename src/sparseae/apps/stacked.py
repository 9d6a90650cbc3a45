"""Stacked sparse autoencoders: greedy layer-wise pretraining, then fine-tuning.

Layer i is an ordinary one-hidden-layer sparse autoencoder trained by
`trainer.train` on the codes of layer i-1 (UFLDL, Bengio et al. 2007). The
layers are then assembled into one deep `SparseAutoencoder` (encoders in
order, decoders in reverse) and the whole stack is fine-tuned:

- 'unsupervised': `trainer.train` continues on the stack (reconstruction of the
  input + the sparsity penalty on the deepest code);
- 'supervised': a softmax on the deepest code, encoder and softmax trained
  together by L-BFGS on the labels (UFLDL's fine-tuning; `probe.train_softmax`);
- 'none': greedy only.

The run folder holds layer1/, layer2/, ... (each a run folder), greedy/ (the
assembled stack before fine-tuning) and, at its top, the fine-tuned stack.
"""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .. import families
from ..config import RunConfig, resolve
from ..data import Dataset, load_dataset
from ..data.dataset import require_in_memory, require_labels, select_classes
from ..errors import SparseAEError
from ..objective.metrics import evaluate
from ..model import SparseAutoencoder
from ..analysis.probe import encode_features, train_softmax
from ..run.output import OutputFolder
from ..run.rundir import RunDir
from ..training.loop import resolve_device
from ..training.session import train


@dataclass
class StackResult:
    greedy: SparseAutoencoder
    model: SparseAutoencoder
    """The fine-tuned stack (the greedy one if finetune is 'none')."""
    layers: list[dict[str, Any]]
    """Each layer's training summary."""
    summary: dict[str, Any]


def layer_config(config: RunConfig, i: int, input_dim: int) -> RunConfig:
    """The one-layer autoencoder that pretrains encoder layer `i` of the stack."""
    n = len(config.model.hidden)
    c = copy.deepcopy(config)
    m = c.model
    last = i == n - 1
    m.hidden = [config.model.hidden[i]]
    m.decoder = None
    m.input_dim = input_dim
    # Layer i's code is a hidden layer of the stack, its output reconstructs layer i-1's activations.
    m.code_activation = config.model.code_activation if last else None
    if i > 0:
        m.output_activation = config.model.activation
        m.input_transform = "none"
        m.image_shape = None
    if not last:
        m.topk, m.k, m.unit_norm_decoder = families.NONE, None, False
        if c.sparsity.penalty == families.TOPK:
            c.sparsity.penalty = families.NONE
    c.sparsity.layers = [-1]
    c.train.classes = None  # the data handed to the layer is already selected
    return c


def assemble(config: RunConfig, layers: list[SparseAutoencoder]) -> SparseAutoencoder:
    """One deep autoencoder from greedily trained layers: encoders in order, decoders reversed."""
    stack = SparseAutoencoder(copy.deepcopy(config.model))
    n = len(layers)
    with torch.no_grad():
        stack.input_transform.load_state_dict(layers[0].input_transform.state_dict())
        for i, layer in enumerate(layers):
            stack.encoder[i].load_state_dict(layer.encoder[0].state_dict())
            if config.model.tied:
                stack.decoder_bias[n - 1 - i].copy_(layer.decoder_bias[0])
            else:
                stack.decoder[n - 1 - i].load_state_dict(layer.decoder[0].state_dict())
        if config.model.topk == families.BATCHTOPK:
            stack.batchtopk_threshold.copy_(layers[-1].batchtopk_threshold)
    return stack


def _save_stack(run: RunDir, config: RunConfig, model: SparseAutoencoder, summary: dict[str, Any]) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    run.save_model(model, config)
    run.write_json("summary.json", summary)


def train_stacked(config: RunConfig, out: str | Path | None = None, dataset: Dataset | None = None,
                  finetune: str = "unsupervised", finetune_epochs: int | None = None,
                  finetune_iter: int = 100, progress: bool = True, if_exists: str = "refuse") -> StackResult:
    """Greedy layer-wise pretraining of `config.model.hidden`, then fine-tuning of the whole stack.

    `out` gets layer1/, layer2/, ..., greedy/ and the fine-tuned model; `if_exists` ('refuse' or
    'replace') says what to do when it already holds files (run/output.py)."""
    config.validate_stack(finetune)
    config = resolve(config)
    for name, value in (("finetune_epochs", finetune_epochs), ("finetune_iter", finetune_iter)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise SparseAEError(f"{name} must be a positive integer, got {value!r}")  # before any layer trains
    output = OutputFolder(out, if_exists, kind="stack") if out is not None else None
    with output if output is not None else nullcontext():  # a failed stack: a replaced folder stays as it was
        return _train_stacked(config, output, dataset, finetune, finetune_epochs, finetune_iter, progress)


def _stack_dataset(config: RunConfig, dataset: Dataset | None, finetune: str) -> Dataset:
    """The data set the stack trains on (in memory, its classes selected); sets the model's input shape."""
    tc = config.train
    if dataset is None:
        dataset = load_dataset(tc.dataset, tc.data_dir, **tc.dataset_options())
    dataset = require_in_memory(dataset, "stacked training")  # each layer learns on the codes of the last
    if tc.classes:
        dataset = select_classes(dataset, tc.classes)
    if finetune == "supervised":
        require_labels(dataset, "supervised fine-tuning")
    config.model.input_dim = dataset.input_dim
    config.model.image_shape = list(dataset.image_shape) if dataset.image_shape else None
    return dataset


def _train_stacked(config: RunConfig, output: OutputFolder | None, dataset: Dataset | None, finetune: str,
                   finetune_epochs: int | None, finetune_iter: int, progress: bool) -> StackResult:
    m = config.model
    tc = config.train
    dataset = _stack_dataset(config, dataset, finetune)
    device = resolve_device(tc.device)
    root = output.create() if output is not None else None  # after every check: nothing written before
    t0 = time.perf_counter()

    layers, layer_rows = [], []
    data = dataset
    for i in range(len(m.hidden)):
        lc = layer_config(config, i, data.input_dim)
        res = train(lc, root / f"layer{i + 1}" if root else None, data, progress)
        layers.append(res.model)
        layer_rows.append(res.summary)
        # the next layer learns on this layer's codes (eval mode: what the stack will compute)
        data = Dataset(encode_features(res.model, data.train.to(device)).cpu(),
                       encode_features(res.model, data.test.to(device)).cpu(),
                       data.train_labels, data.test_labels, None)

    greedy = assemble(config, layers).to(device)
    val_x = dataset.test.to(device)
    greedy_metrics = evaluate(greedy, val_x)
    if root is not None:
        greedy_dir = OutputFolder(root / "greedy", kind="run").create()  # marked, as each layer's run folder
        _save_stack(RunDir(greedy_dir), config, greedy, {"stage": "greedy", **greedy_metrics})

    model = copy.deepcopy(greedy)
    ft_config = copy.deepcopy(config)
    if finetune == "unsupervised":
        if finetune_epochs is not None:
            ft_config.train.epochs = finetune_epochs
        ft_config.train.classes = None
        model = train(ft_config, root, dataset, progress, model=model, if_exists="add").model
    elif finetune == "supervised":
        train_x = dataset.train[: tc.limit_train].to(device)
        train_y = dataset.train_labels[: tc.limit_train].to(device)
        classes, target = torch.unique(train_y, return_inverse=True)
        head = nn.Linear(m.hidden[-1], len(classes)).to(device)
        model.train()
        train_softmax(model.encode, head, train_x, target, list(model.encoder.parameters()) + list(head.parameters()),
                      max_iter=finetune_iter, l2=config.sparsity.weight_decay or 1e-4)
    model.eval()
    metrics = evaluate(model, val_x)
    summary = {"stage": "finetuned", "finetune": finetune, "seconds": time.perf_counter() - t0,
               "greedy": greedy_metrics, **metrics}
    if root is not None:
        if finetune == "unsupervised":
            RunDir(root).write_json("summary.json", {**RunDir(root).read_json("summary.json"), **summary})
        else:
            _save_stack(RunDir(root), ft_config, model, summary)
    return StackResult(greedy.eval(), model, layer_rows, summary)
