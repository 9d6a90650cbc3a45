"""The training session: its steps leave no trace but the run folder."""
import torch

from sparseae import Dataset, ModelConfig, RunConfig, SparsityConfig, TrainConfig, train
from sparseae.model.collectives import ONE_PROCESS


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 16, generator=g) * 0.8 + 0.1


def _config() -> RunConfig:
    return RunConfig(ModelConfig(hidden=[24], activation="relu", output_activation="linear", topk="batchtopk",
                                 k=3, unit_norm_decoder=True, pre_bias=True, dead_window=64),
                     SparsityConfig(penalty="topk", auxk=True),
                     TrainConfig(epochs=3, batch_size=32, device="cpu"))


def test_run_folder_pictures_leave_the_model_state_alone(tmp_path):
    # Drawing each epoch's reconstructions must not move BatchTopK's threshold or the firing counters.
    data = Dataset(_images(256, 0), _images(64, 1), image_shape=(4, 4))
    with_folder = train(_config(), out=tmp_path / "run", dataset=data, progress=False).model
    without = train(_config(), dataset=data, progress=False).model
    assert (tmp_path / "run" / "reconstructions" / "epoch_003.png").is_file()
    assert with_folder.batchtopk_threshold.item() > 0
    assert with_folder.batchtopk_threshold.item() == without.batchtopk_threshold.item()
    assert torch.equal(with_folder.examples_since_fired, without.examples_since_fired)
    for a, b in zip(with_folder.parameters(), without.parameters()):
        assert torch.equal(a, b)


def test_train_returns_the_resolved_config_and_leaves_the_request_alone():
    config = _config()
    config.model.input_dim = 1
    result = train(config, dataset=Dataset(_images(64, 0), _images(16, 1)), progress=False)
    assert result.config.model.input_dim == 16 and result.config.model.image_shape is None
    assert result.config.train.lr is not None and result.config.model.activation is not None  # resolved
    assert config.model.input_dim == 1  # the caller's request is left as it is


def test_one_process_collectives_are_the_identity():
    x = torch.randn(5, 3)
    assert ONE_PROCESS.total(x) is x and ONE_PROCESS.shard(x) is x and ONE_PROCESS.sum_(x) is x
    assert torch.equal(ONE_PROCESS.mean_activation(x), x.mean(0))
    fired = torch.tensor([True, False, True])
    assert ONE_PROCESS.firing(fired, 5) == (fired, 5)
    assert ONE_PROCESS.loss_weight(7) == 1.0 and ONE_PROCESS.agree(True) and ONE_PROCESS.is_main
