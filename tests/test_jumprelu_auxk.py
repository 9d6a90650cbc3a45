"""JumpReLU on inputs of fewer than 128 columns trains with AuxK (families.jumprelu_auxk) over its dead latents and
over latents whose free decoder column collapsed below families.COLLAPSED_NORM of the median norm
(SparseAutoencoder.auxk_mask): such a latent still fires now and then, so no dead window catches it. FashionMNIST
and inputs of 128 columns and more keep the recipe they were measured with."""

import pytest
import torch

from sparseae import families
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective


def _resolved(input_dim: int, dataset: str = "array", **sparsity) -> RunConfig:
    return resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty="jumprelu", **sparsity),
                             TrainConfig(dataset=dataset, data="rows.npy" if dataset == "array" else None)),
                   rows=4000, input_dim=input_dim)


@pytest.mark.parametrize("input_dim,auxk", [(16, True), (64, True), (127, True), (128, False), (783, False)])
def test_jumprelu_takes_auxk_below_128_inputs(input_dim, auxk):
    assert _resolved(input_dim).sparsity.auxk is auxk


def test_fashion_mnist_and_a_stated_value_keep_theirs():
    assert resolve(RunConfig(ModelConfig(hidden=[256]), SparsityConfig(penalty="jumprelu"))).sparsity.auxk is False
    assert _resolved(64, auxk=False).sparsity.auxk is False
    assert _resolved(784, auxk=True).sparsity.auxk is True  # allowed on any one-layer jumprelu code


def test_auxk_still_refuses_a_code_without_selection_or_threshold():
    with pytest.raises(SparseAEError, match="sparsity.auxk needs a topk, batchtopk or jumprelu model"):
        resolve(RunConfig(ModelConfig(hidden=[64]), SparsityConfig(penalty="l1", auxk=True),
                          TrainConfig(dataset="array", data="rows.npy")), rows=4000, input_dim=32)


def _model(unit_norm: bool) -> SparseAutoencoder:
    torch.manual_seed(0)
    return SparseAutoencoder(ModelConfig(input_dim=12, hidden=[20], activation="relu", output_activation="linear",
                                         topk="jumprelu", unit_norm_decoder=unit_norm, dead_window=10 ** 9))


def test_a_collapsed_free_column_counts_for_auxk_and_a_unit_norm_one_does_not():
    model = _model(unit_norm=False)
    with torch.no_grad():
        norms = model.decoder[0].weight.norm(dim=0)
        model.decoder[0].weight.mul_(1 / norms)  # every column norm 1: none collapsed
        model.decoder[0].weight[:, 3] *= 0.1  # under 0.2 x the median
        model.decoder[0].weight[:, 7] *= 0.3  # over it
    assert not model.dead_mask().any()
    assert model.auxk_mask().nonzero().flatten().tolist() == [3]
    assert families.COLLAPSED_NORM == 0.2
    unit = _model(unit_norm=True)
    assert not unit.auxk_mask().any()  # norms fixed at 1: only the dead window counts


def test_the_auxk_term_trains_a_collapsed_latent():
    model = _model(unit_norm=False)
    with torch.no_grad():
        model.decoder[0].weight[:, 3] *= 1e-3
    model.train()
    x = torch.rand(64, 12)
    out = model(x)
    loss = Objective(SparsityConfig(penalty="jumprelu", beta=0.0, auxk=True))(model, out).sparsity
    assert loss.item() > 0
    loss.backward()
    grad = model.decoder[0].weight.grad
    assert grad[:, 3].abs().sum() > 0  # the collapsed column is pulled towards the residual
