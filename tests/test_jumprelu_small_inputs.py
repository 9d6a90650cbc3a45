"""JumpReLU's start on a short run on inputs of fewer than 784 columns (families.is_short_run: minibatch steps times
code units under families.SHORT_RUN; config.resolve counts the steps from the training rows, batch and epochs):
a higher rate, a 10x starting beta and a 30-step warm-up, so that a run of a few hundred steps reaches its L0 early;
longer runs, runs of unknown length, 784 columns and FashionMNIST keep the start they were tuned with."""
import math

import pytest

from sparseae import families
from sparseae.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve, run_steps
from sparseae.objective import Objective

FAST, PLAIN = (7e-3, 1e-2, 30), (3e-3, 1e-3, 200)


def _resolved(input_dim, rows=500, epochs=5, dataset="array", latents=128, optimizer="adam", **sparsity):
    return resolve(RunConfig(ModelConfig(hidden=[latents]), SparsityConfig(penalty="jumprelu", **sparsity),
                             TrainConfig(dataset=dataset, data="x.npy" if dataset == "array" else None,
                                         epochs=epochs, optimizer=optimizer)),
                   rows=rows, input_dim=input_dim)


def test_run_steps_are_the_steps_the_loop_takes():
    import torch

    from sparseae.data.dataset import Dataset

    for rows in (500, 1000, 96000):  # batch 8, 16 and 256; the last batch of an epoch short or not
        train = _resolved(52, rows=rows, target_l0=8).train
        batches = Dataset(torch.zeros(rows, 2), torch.zeros(2, 2)).training("cpu", train.batch_size, None)
        assert run_steps(train, rows) == train.epochs * batches.steps()  # training/loop.py's count


def _start(run):
    return run.train.lr, run.sparsity.beta, run.sparsity.beta_warmup


def test_run_steps_are_epochs_times_the_batches_of_an_epoch():
    # 500 rows take batch 8 (63 steps an epoch, the last one short); 96,000 take 256 (375)
    assert run_steps(_resolved(52, rows=500, target_l0=8).train, 500) == 5 * 63
    assert run_steps(_resolved(64, rows=96000, target_l0=5).train, 96000) == 5 * 375
    assert run_steps(_resolved(64, rows=None, target_l0=5).train, None) is None
    assert run_steps(_resolved(64, optimizer="lbfgs", beta=1e-3, rows=500).train, 500) is None


@pytest.mark.parametrize("latents", [128, 1024])
def test_a_short_run_on_small_inputs_starts_faster_at_any_width(latents):
    short = _resolved(52, latents=latents, target_l0=8)  # 315 steps
    assert _start(short) == FAST
    # the rest of the small-input recipe is unchanged
    assert (short.sparsity.jumprelu_tanh, short.model.unit_norm_decoder, short.train.recon,
            short.train.lr_decay, short.sparsity.preact_coef) == (0.75, False, "mse", 0.2, 1e-2)


@pytest.mark.parametrize("rows,epochs,latents,tanh,batch", [(2000, 20, 512, 0.5, 32), (96000, 5, 512, 0.5, 128),
                                                            (96000, 5, 1024, 0.5, 128), (None, 5, 128, 0.75, 256)])
def test_long_runs_and_runs_of_unknown_length_keep_the_plain_start(rows, epochs, latents, tanh, batch):
    # 1,260 steps x 512, 1,875 x 512, 1,875 x 1,024 latent-steps; streamed data (length not known)
    run = _resolved(64, rows=rows, epochs=epochs, latents=latents, target_l0=5)
    assert _start(run) == PLAIN
    assert (run.sparsity.jumprelu_tanh, run.model.unit_norm_decoder, run.train.recon) == (tanh, False, "mse")
    # a long run takes batch 128 (twice the steps at 96,000 rows), never above the small-data batch (32 at 2,000)
    assert run.train.batch_size == batch


def test_a_long_run_is_judged_at_the_batch_it_would_have_without_the_long_run_batch():
    # 96,000 rows at batch 256: 1,875 steps; 266 latents make 498,750 latent-steps (short), 267 make 500,625
    # (long), though at batch 128 either would be long
    short, long = (_resolved(64, rows=96000, latents=n, target_l0=5) for n in (266, 267))
    assert (short.train.batch_size, short.sparsity.jumprelu_tanh, _start(short)) == (256, 0.75, FAST)
    assert (long.train.batch_size, long.sparsity.jumprelu_tanh, _start(long)) == (128, 0.5, PLAIN)


def test_stated_settings_win_over_the_long_run_ones():
    run = resolve(RunConfig(ModelConfig(hidden=[512]), SparsityConfig(penalty="jumprelu", target_l0=5,
                                                                       jumprelu_tanh=0.75),
                            TrainConfig(dataset="array", data="x.npy", epochs=5, batch_size=512)),
                  rows=96000, input_dim=64)
    assert (run.train.batch_size, run.sparsity.jumprelu_tanh) == (512, 0.75)
    for penalty in ("l1", "topk", "batchtopk"):  # no other family has long-run settings
        other = resolve(RunConfig(ModelConfig(hidden=[512], k=5 if "topk" in penalty else None),
                                  SparsityConfig(penalty=penalty),
                                  TrainConfig(dataset="array", data="x.npy", epochs=5)), rows=96000, input_dim=64)
        assert other.train.batch_size == 256


def test_the_boundary_is_short_run_latent_steps():
    # 64 rows take a batch of 8 (8 steps an epoch); 128 latents: epochs * 8 * 128 latent-steps
    below = math.ceil(families.SHORT_RUN / (8 * 128)) - 1
    assert below * 8 * 128 < families.SHORT_RUN <= (below + 1) * 8 * 128
    assert _start(_resolved(64, rows=64, epochs=below, target_l0=2)) == FAST
    assert _start(_resolved(64, rows=64, epochs=below + 1, target_l0=2)) == PLAIN


def test_784_columns_and_fashion_mnist_keep_their_start_on_short_runs():
    for big in (_resolved(784, target_l0=8), _resolved(784, dataset="fashion-mnist", rows=500)):
        assert _start(big) == PLAIN
        assert (big.sparsity.jumprelu_tanh, big.model.unit_norm_decoder, big.train.recon) == (0.0, True, "fvu")


def test_stated_settings_win_over_the_short_run_start():
    run = _resolved(64, target_l0=5, beta=1e-3, beta_warmup=200)
    assert (run.sparsity.beta, run.sparsity.beta_warmup, run.train.lr) == (1e-3, 200, 7e-3)


@pytest.mark.parametrize("input_dim,beta,warmup", [(64, 1e-2, 30), (784, 1e-3, 200)])
def test_beta_warm_up_of_the_resolved_recipe(input_dim, beta, warmup):
    # beta(step) = beta * min(1, (step + 1) / warmup): hand-computed at a few steps
    obj = Objective(_resolved(input_dim, target_l0=8).sparsity, recon="mse")
    for step, expected in ((0, beta / warmup), (9, beta * 10 / warmup), (29, beta * min(1.0, 30 / warmup)),
                           (199, beta), (1000, beta)):
        assert obj.beta(step) == pytest.approx(expected, rel=1e-12)
