"""BatchTopK's per-example warm-up (sparsity.batchtopk_warmup): the first share of the steps keeps each example's
own k units, then the batch's k * B largest; the inference threshold is learned from the batch steps only. On by
default (0.75) for one-layer batchtopk on inputs of fewer than 784 columns; FashionMNIST keeps 0."""
import pytest
import torch

from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.data.dataset import Dataset
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder
from sparseae.training.session import train


def _resolved(penalty="batchtopk", input_dim=64, hidden=(256,), optimizer="adam", model=None, **sparsity):
    c = RunConfig(ModelConfig(hidden=list(hidden), k=4, **(model or {})), SparsityConfig(penalty=penalty, **sparsity),
                  TrainConfig(dataset="array", data="rows.npy", optimizer=optimizer))
    return resolve(c, rows=1000, input_dim=input_dim).sparsity.batchtopk_warmup


def test_the_default_is_three_quarters_of_the_run_on_small_inputs_and_none_from_784_columns():
    assert _resolved(input_dim=64) == 0.75
    assert _resolved(input_dim=783) == 0.75
    assert _resolved(input_dim=784) == 0.0
    assert resolve(RunConfig(ModelConfig(hidden=[1024], k=32), SparsityConfig(penalty="batchtopk"))
                   ).sparsity.batchtopk_warmup == 0.0  # FashionMNIST
    assert _resolved("topk") == 0.0
    # Matryoshka's code is a BatchTopK one: the same share below 784 inputs, none on FashionMNIST or a TopK code
    assert _resolved("matryoshka") == 0.75 and _resolved("matryoshka", input_dim=784) == 0.0
    assert _resolved("matryoshka", model={"topk": "topk"}) == 0.0
    assert _resolved(batchtopk_warmup=0.2) == 0.2
    assert _resolved(optimizer="lbfgs", model={"unit_norm_decoder": False}) == 0.0  # no minibatch steps


def test_it_needs_a_batchtopk_code_and_a_share():
    with pytest.raises(SparseAEError, match="batchtopk_warmup needs a batchtopk code"):
        _resolved("topk", batchtopk_warmup=0.5)
    with pytest.raises(SparseAEError, match="batchtopk_warmup"):
        _resolved(batchtopk_warmup=1.5)


def test_a_per_example_step_keeps_each_rows_own_k():
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=6, hidden=[10], topk="batchtopk", k=2, activation="relu",
                                          output_activation="linear")).train()
    x = torch.randn(5, 6) * torch.tensor([5.0, 0.1, 0.1, 0.1, 0.1])[:, None]  # row 0 far larger
    batch = model(x).hidden[-1]
    assert (batch != 0).sum(1).tolist() != [2] * 5  # the batch's 10 largest, not 2 a row
    model.per_example_topk = True
    out = model(x)
    z = out.code_preact.detach()
    expected = torch.zeros_like(z).scatter_(1, z.relu().topk(2, dim=1).indices, z.relu().topk(2, dim=1).values)
    assert torch.equal(out.hidden[-1].detach(), expected)
    assert out.kept_min is None  # no threshold learned from a per-example step


def _fit(share, steps_per_epoch=5, epochs=2):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40 * steps_per_epoch, 8, generator=g)
    config = RunConfig(ModelConfig(hidden=[16], k=2), SparsityConfig(penalty="batchtopk", batchtopk_warmup=share),
                       TrainConfig(dataset="array", data="rows.npy", epochs=epochs, batch_size=40, seed=0))
    seen = []
    original = SparseAutoencoder.forward

    def forward(self, xb, *args, **kwargs):
        if self.training:
            seen.append(self.per_example_topk)
        return original(self, xb, *args, **kwargs)

    SparseAutoencoder.forward = forward
    try:
        result = train(config, out=None, dataset=Dataset(train=x, test=x[:40]), progress=False)
    finally:
        SparseAutoencoder.forward = original
    return seen, result.model


def test_the_loop_runs_the_first_share_of_steps_per_example_then_the_batch():
    seen, model = _fit(0.3)  # 10 steps: int(0.3 * 10) = 3 per-example steps
    assert seen == [True] * 3 + [False] * 7
    assert model.per_example_topk is False and float(model.batchtopk_threshold) > 0
    seen, model = _fit(1.0)
    assert seen == [True] * 10
    assert float(model.batchtopk_threshold) < 0  # never learned: inference keeps each row's k
    model.eval()
    code = model(torch.rand(7, 8)).hidden[-1]
    assert (code != 0).sum(1).le(2).all()


def test_a_run_stopped_during_the_per_example_steps_leaves_the_model_in_batch_mode():
    # the loop's end-of-run resets hold after an error too: a model kept in a Python session infers as BatchTopK
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 8, generator=g)
    config = RunConfig(ModelConfig(hidden=[16], k=2, input_dim=8),
                       SparsityConfig(penalty="batchtopk", batchtopk_warmup=0.5),
                       TrainConfig(dataset="array", data="rows.npy", epochs=2, batch_size=40, seed=0))
    model = SparseAutoencoder(resolve(config, rows=200).model)
    calls = []
    original = SparseAutoencoder.forward

    def forward(self, xb, *args, **kwargs):
        if self.training:
            calls.append(self.per_example_topk)
            if len(calls) == 3:
                raise KeyboardInterrupt
        return original(self, xb, *args, **kwargs)

    SparseAutoencoder.forward = forward
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config, out=None, dataset=Dataset(train=x, test=x[:40]), progress=False, model=model)
    finally:
        SparseAutoencoder.forward = original
    assert calls == [True, True, True]
    assert model.per_example_topk is False
