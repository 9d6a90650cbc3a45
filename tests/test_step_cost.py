"""Work a training step and an evaluation pass leave out without changing what they compute: AuxK's
dead decoder columns as a leaf of their own (no decoder-sized gradient), the firing counters and the
evaluation's counts read off a TopK code's k kept values instead of the whole code, and a decoder kept
code-major while it trains on the CPU (no transposing copies; Adam on the same memory in row order)."""
import pytest
import torch

from sparseae import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.config import resolve
from sparseae.model import SparseAutoencoder
from sparseae.model.layout import storage_view
from sparseae.objective import Objective
from sparseae.objective.auxk import ColumnLeaves, auxk_loss
from sparseae.objective.metrics import evaluate_with_frequency
from sparseae.training.adam import CpuAdam
from sparseae.training.loop import fit


def _model(tied=False, seed=0):
    torch.manual_seed(seed)
    return SparseAutoencoder(ModelConfig(input_dim=24, hidden=[40], activation="relu", output_activation="linear",
                                         topk="topk", k=3, dead_window=1, tied=tied, unit_norm_decoder=True))


def _rows(n=64, seed=1):
    return torch.randn(n, 24, generator=torch.Generator().manual_seed(seed))


def _grads(model, x, leaves, auxk=True):
    """The parameters' gradients of one training loss (after one batch that marks units dead)."""
    objective = Objective(SparsityConfig(penalty="topk", auxk=auxk, beta=0.0))
    objective.column_leaves = ColumnLeaves() if leaves else None
    model.zero_grad(set_to_none=True)
    objective(model, model(x)).total.backward()
    if leaves:
        objective.column_leaves.add_grads()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("tied", [False, True])
def test_auxk_through_column_leaves_gives_autograds_gradient(tied):
    x = _rows(8)  # 8 rows x k 3 < 40 units: some units do not fire
    model = _model(tied)
    model.train()
    model(x)  # most units have not fired for a whole example: dead
    state = {k: v.clone() for k, v in model.state_dict().items()}
    through_autograd = _grads(model, x, leaves=False)
    model.load_state_dict(state)
    by_hand = _grads(model, x, leaves=True)
    model.load_state_dict(state)
    without_auxk = _grads(model, x, leaves=False, auxk=False)
    assert through_autograd.keys() == by_hand.keys()
    for name in through_autograd:
        torch.testing.assert_close(by_hand[name], through_autograd[name])
    # the decoder's gradient has AuxK's part (a test that would pass without add_grads proves nothing)
    decoder = "encoder.0.weight" if tied else "decoder.0.weight"
    assert (through_autograd[decoder] - without_auxk[decoder]).abs().max() > 1e-4


def test_leaves_left_by_an_unfinished_step_are_dropped_by_the_next():
    model, x = _model(), _rows()
    model.train()
    model(x)
    leaves = ColumnLeaves()
    objective = Objective(SparsityConfig(penalty="topk", auxk=True, beta=0.0))
    objective.column_leaves = leaves
    objective(model, model(x))  # a forward pass without backward
    first = leaves.pending
    objective(model, model(x))
    assert first is not None and leaves.pending is not None and leaves.pending[3] is not first[3]  # the last one only
    leaves.add_grads()  # no backward ran: nothing is added, and nothing is left pending
    assert leaves.pending is None and model.decoder[0].weight.grad is None


def test_auxk_keeping_every_dead_unit_is_their_relu():
    pre = torch.tensor([[1.0, 3.0, -1.0, 2.0], [1.0, 3.0, -1.0, 2.0]])
    dead = torch.tensor([False, True, True, True])
    residual = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    w = torch.tensor([[1.0, 0.5, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])  # out x code
    # k_aux 3 >= 3 dead units: relu(3, -1, 2) = (3, 0, 2) -> e_hat = (3.5, 3), as with k_aux 2 (36.5 / 0.5)
    for k_aux in (3, 50):
        assert auxk_loss(pre, dead, residual, w, k_aux).item() == pytest.approx(73.0, rel=1e-6)


def test_an_evaluation_counts_a_topk_code_as_its_dense_code_does():
    model, x = _model(), _rows(300)
    with torch.no_grad():
        model.encoder[0].bias[:6] = -50.0  # six units that never fire
        model.encoder[0].bias[6:9] = 50.0  # three that fire on every row
    model.eval()
    out = model(x)
    assert out.topk_support is not None
    metrics, frequency = evaluate_with_frequency(model, x, chunk=128)
    code = out.hidden[-1].detach()
    counts = (code != 0).sum(0).double()  # whole counts, k a row at most
    assert torch.equal((frequency * 300).round(), counts)
    torch.testing.assert_close(frequency * 300, counts, rtol=0, atol=1e-9)  # shares of 300 rows
    assert frequency[:6].eq(0).all() and frequency[6:9].eq(1).all()
    assert metrics["l0"] == pytest.approx(float((code != 0).sum()) / 300, abs=1e-12)
    assert metrics["dead_fraction"] == pytest.approx(float((frequency == 0).double().mean()), abs=1e-12)
    assert metrics["mean_activation"] == pytest.approx(float(code.double().mean()), rel=1e-6)


def test_the_firing_counters_read_off_the_kept_values_as_off_the_code():
    model, x = _model(), _rows(16)
    with torch.no_grad():
        model.encoder[0].bias[:6] = -50.0
    model.train()
    out = model(x)
    fired_code = (out.hidden[-1] != 0).any(0)
    assert torch.equal(model.examples_since_fired == 0, fired_code)
    assert not fired_code[:6].any()


def test_storage_view_is_the_same_memory_in_row_order():
    w = torch.arange(12.0).reshape(4, 3)
    t = w.t()  # 3 x 4, not contiguous
    v = storage_view(t)
    assert v.is_contiguous() and v.data_ptr() == w.data_ptr() and torch.equal(v, w)
    c = torch.zeros(2, 3)
    assert storage_view(c) is c
    odd = torch.zeros(4, 6)[:, ::2]  # not a permutation of a contiguous tensor: left as it is
    assert storage_view(odd) is odd


def test_adam_steps_a_code_major_weight_as_a_row_major_one():
    g = torch.Generator().manual_seed(3)
    values, grads = torch.randn(5, 7, generator=g), [torch.randn(5, 7, generator=g) for _ in range(3)]
    results = []
    for code_major in (False, True):
        p = torch.nn.Parameter(values.t().contiguous().t() if code_major else values.clone())
        opt = CpuAdam([p], lr=0.01)
        for grad in grads:
            p.grad = grad.t().contiguous().t() if code_major else grad.clone()
            opt.step()
        assert p.stride() == ((1, 5) if code_major else (7, 1))
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-7)  # elementwise: the same numbers


def test_training_keeps_the_decoder_code_major_and_hands_it_back_row_major():
    cfg = resolve(RunConfig(ModelConfig(input_dim=24, hidden=[40], k=3), SparsityConfig(penalty="topk"),
                            TrainConfig(epochs=2, batch_size=16)))
    torch.manual_seed(0)
    model = SparseAutoencoder(cfg.model)
    weight = model.decoder[0].weight
    before = weight.detach().clone()
    seen = []
    x = _rows(64)
    fit(model, Objective(cfg.sparsity, cfg.train.recon), x, x[:16], cfg.train,
        on_epoch=lambda row, frequency: seen.append(weight.stride()), progress=False)
    assert seen == [(1, 24), (1, 24)]  # each unit's column contiguous while training
    assert model.decoder[0].weight is weight and weight.is_contiguous() and weight.shape == (24, 40)
    assert not torch.equal(weight, before)  # it trained
    norms = weight.detach().pow(2).sum(0).sqrt()
    torch.testing.assert_close(norms, torch.ones(40))  # unit-norm columns, normalised in the code-major layout
