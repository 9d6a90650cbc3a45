"""The configuration schema (config.py): each field's type from its annotation, its range or choices
from its declaration, cross-field rules in validate(); and run folders whose config.json or
checkpoint/state.json were tampered with, refused in one line that names the file and the key."""
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from sparseae.cli import main
from sparseae.config import MAX_PARAMETERS, ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparseae.schema import build, in_file, param
from sparseae.errors import SparseAEError
from sparseae.model import SparseAutoencoder

from cli_helpers import copy_run, digest as _digest, refused_naming as _refused

# --- the schema itself ------------------------------------------------------------------------------


def test_bool_is_not_an_int():
    with pytest.raises(SparseAEError, match=r"model.hidden must be a list of integers; got \[True\]"):
        ModelConfig(hidden=[True]).validate()
    with pytest.raises(SparseAEError, match="train.epochs must be an integer; got True"):
        TrainConfig(epochs=True).validate()
    with pytest.raises(SparseAEError, match="model.k must be an integer or null; got False"):
        RunConfig.from_dict({"model": {"topk": "topk", "k": False}})


def test_int_is_a_float_and_comes_back_as_one():
    c = TrainConfig(lr=1, momentum=0).resolved()
    assert c.lr == 1.0 and type(c.lr) is float and type(c.momentum) is float
    r = RunConfig.from_dict({"sparsity": {"beta": 2}, "model": {"hidden": (8, 4)}})
    assert type(r.sparsity.beta) is float and r.model.hidden == [8, 4]
    with pytest.raises(SparseAEError, match="train.epochs must be an integer; got 2.0"):
        RunConfig.from_dict({"train": {"epochs": 2.0}})  # but a float is not an int


@pytest.mark.parametrize("section, name", [("train", "lr"), ("train", "momentum"), ("sparsity", "beta"),
                                           ("model", "zca_epsilon"), ("sparsity", "target_l0")])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(section, name, bad):
    with pytest.raises(SparseAEError, match=f"{section}.{name} must be a finite number; got {bad}"):
        RunConfig.from_dict({section: {name: bad}}).validate()


def test_unknown_key_is_named_with_what_was_meant():
    with pytest.raises(SparseAEError, match="unknown key sparsity.betta .*did you mean sparsity.beta"):
        RunConfig.from_dict({"sparsity": {"betta": 1.0}})
    with pytest.raises(SparseAEError, match="unknown key optimiser .*allowed: model, sparsity, train"):
        RunConfig.from_dict({"optimiser": "adam"})


def test_none_only_where_the_annotation_allows_it():
    RunConfig.from_dict({"model": {"k": None, "decoder": None}, "train": {"threads": None}}).validate()
    with pytest.raises(SparseAEError, match="train.momentum must be a number; got None"):
        TrainConfig(momentum=None).validate()
    TrainConfig(lr=None).validate()  # lr may be unset: the family's, or 1e-3


def test_generic_build_of_any_dataclass():
    @dataclass
    class Point:
        x: int = param(gt=0)
        label: str | None = param(None, pattern="[a-z]+", what="lower-case letters")

    assert build(Point, {"x": 3}) == Point(3)
    with pytest.raises(SparseAEError, match=r"missing key p.x \(an integer\)"):
        build(Point, {}, "p")
    with pytest.raises(SparseAEError, match="p.x must be positive; got 0"):
        build(Point, {"x": 0}, "p")
    with pytest.raises(SparseAEError, match="p.label must be lower-case letters; got 'A1'"):
        build(Point, {"x": 1, "label": "A1"}, "p")
    with pytest.raises(SparseAEError, match=r"^f.json: p must be an object with keys x, label; got \[1\]$"):
        with in_file("f.json"):
            build(Point, [1], "p")


@pytest.mark.parametrize("section, values, needle", [
    ("train", {"momentum": -1.0}, "train.momentum must be >= 0; got -1.0"),
    ("train", {"seed": -1}, "train.seed must be in [0, 9223372036854775807]; got -1"),
    ("train", {"seed": 2**63}, "train.seed must be in [0, 9223372036854775807]"),
    ("train", {"image_downsample": 0}, "train.image_downsample must be in [1, 64]"),
    ("train", {"image_downsample": 1000}, "train.image_downsample must be in [1, 64]"),
    ("train", {"patch_size": 5000}, "train.patch_size must be in [1, 1024]"),
    ("sparsity", {"target_l0": -0.1}, "sparsity.target_l0 must be positive; got -0.1"),
    ("model", {"zca_epsilon": -0.1}, "model.zca_epsilon must be positive; got -0.1"),
    ("model", {"input_dim": 0}, "model.input_dim must be positive; got 0"),
    ("model", {"hidden": [8, 0]}, "model.hidden entries must be positive; got [8, 0]"),
    ("model", {"hidden": []}, "model.hidden must not be empty"),
    ("model", {"decoder": [-4]}, "model.decoder entries must be positive"),
    ("model", {"input_transform": "pca"}, "model.input_transform must be one of none, standardize, zca; got 'pca'"),
    ("train", {"patch_channels": 2}, "train.patch_channels must be one of 1, 3; got 2"),
])
def test_declared_ranges_and_choices(section, values, needle):
    with pytest.raises(SparseAEError) as e:
        RunConfig.from_dict({section: values}).validate()
    assert needle in str(e.value)
    assert "lr" not in str(e.value)  # zca_epsilon was blamed on the learning rate


def test_model_too_large_is_refused_before_allocation():
    config = ModelConfig(input_dim=100_000, hidden=[40_000], output_activation="linear")
    assert config.parameter_count() == 2 * 100_000 * 40_000 > MAX_PARAMETERS
    with pytest.raises(SparseAEError, match=r"8,000,000,000 float32 weights \(29.8 GiB\).*2\*\*31"):
        SparseAutoencoder(config)  # 32 GB if it were allocated
    zca = ModelConfig(input_dim=40_000, hidden=[8], input_transform="zca")
    with pytest.raises(SparseAEError, match="3,200,640,000 float32 weights"):
        zca.validate()  # mostly its two 40,000 x 40,000 whitening matrices


@pytest.mark.parametrize("config, needle", [
    (RunConfig(sparsity=SparsityConfig(rho_hat="running"), train=TrainConfig(cuda_graph=True)),
     "train.cuda_graph cannot be used with sparsity.rho_hat 'running'"),
    (RunConfig(ModelConfig(hidden=[16], topk="batchtopk", k=2, activation="relu"), SparsityConfig(penalty="topk"),
               TrainConfig(cuda_graph=True)), "model.topk 'batchtopk'"),
    (RunConfig(ModelConfig(hidden=[16], topk="topk", k=2, activation="relu", output_activation="linear",
                           topk_kernel="sparse"), SparsityConfig(penalty="topk", auxk=True)),
     "model.topk_kernel 'sparse' does not compute AuxK"),
    (RunConfig(ModelConfig(unit_norm_decoder=True), train=TrainConfig(optimizer="lbfgs")),
     "model.unit_norm_decoder is a constraint applied between minibatch steps"),
    (RunConfig(ModelConfig(hidden=[16], activation="relu")), "the KL penalty needs activations in (0, 1)"),
    (RunConfig(sparsity=SparsityConfig(penalty="l1", auxk=True)), "sparsity.auxk needs a topk"),
    (RunConfig(ModelConfig(hidden=[16], topk="topk", k=17)), "model.k must be at most the code size 16"),
    (RunConfig(train=TrainConfig(dataset="array")), "dataset 'array' needs train.data"),
])
def test_cross_field_rules_live_in_run_config_validate(config, needle):
    """What accel, fullbatch and kernels checked before is refused here, with no device at hand."""
    with pytest.raises(SparseAEError) as e:
        config.validate()
    assert needle in str(e.value)
    assert "--" not in str(e.value)  # library messages speak of parameters, not flags


def test_stack_rules():
    with pytest.raises(SparseAEError, match=r"a stack needs at least two hidden layers; got model.hidden \[16\]"):
        RunConfig(ModelConfig(hidden=[16])).validate_stack("none")
    with pytest.raises(SparseAEError, match="finetune must be one of unsupervised, supervised, none"):
        RunConfig(ModelConfig(hidden=[16, 8])).validate_stack("sometimes")
    with pytest.raises(SparseAEError, match="leave model.decoder and model.pre_bias unset"):
        RunConfig(ModelConfig(hidden=[16, 8], pre_bias=True)).validate_stack("none")
    RunConfig(ModelConfig(hidden=[16, 8])).validate_stack("unsupervised")


# --- tampered run folders, through the CLI ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run of a 12-6-12 model (with its last checkpoint)."""
    root = tmp_path_factory.mktemp("schema")
    data = root / "x.npy"
    np.save(data, np.random.default_rng(0).uniform(0.1, 0.9, size=(200, 12)).astype(np.float32))
    out = root / "run"
    assert main(["train", "--dataset", "array", "--data", str(data), "--hidden", "6", "--epochs", "2",
                 "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def run(trained, tmp_path, capsys):
    return copy_run(trained, tmp_path, capsys)


def _edit(path, change):
    """Rewrite a JSON file with `change(obj)` (which edits in place, or returns the new object or text)."""
    obj = json.loads(path.read_text())
    new = change(obj)
    new = obj if new is None else new
    path.write_text(new if isinstance(new, str) else json.dumps(new))


def _set(section, key, value):
    def change(d):
        d[section][key] = value
    return change


CONFIG_CASES = {
    "hidden is a string": (_set("model", "hidden", "abc"), ["model.hidden", "'abc'", "a list of integers"]),
    "hidden holds a bool": (_set("model", "hidden", [True]), ["model.hidden", "[True]"]),
    "input_dim is a string": (_set("model", "input_dim", "784"), ["model.input_dim", "'784'", "an integer"]),
    "list instead of object": (lambda d: {**d, "model": [12, 6]},
                               ["model must be an object", "[12, 6]"]),
    "whole file a list": (lambda d: [d], ["top level must be an object with keys model, sparsity, train"]),
    "deep nesting": (_set("model", "hidden", json.loads("[" * 200 + "]" * 200)),
                     ["model.hidden", "a list of integers"]),
    "unknown key": (_set("model", "hiden", [6]), ["unknown key model.hiden", "did you mean model.hidden"]),
    "lr is NaN": (lambda d: json.dumps(d).replace('"lr": 0.001', '"lr": NaN'), ["train.lr", "finite", "nan"]),
    "negative momentum": (_set("train", "momentum", -1), ["train.momentum", ">= 0", "-1"]),
    "unknown activation": (_set("model", "activation", "swish"), ["model.activation", "'swish'", "one of sigmoid"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
@pytest.mark.parametrize("command", ["eval", "resume"])
def test_tampered_config_json_is_refused(run, capsys, case, command):
    change, needles = CONFIG_CASES[case]
    _edit(run / "config.json", change)
    before = _digest(run)
    argv = ["eval", str(run)] if command == "eval" else ["train", "--resume", str(run), "--quiet"]
    _refused(capsys, argv, f"{run / 'config.json'}: ", *needles)
    assert _digest(run) == before


def test_json_nested_too_deeply_to_parse(run, capsys):
    (run / "config.json").write_text('{"model": {"hidden": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    _refused(capsys, ["eval", str(run)], f"{run / 'config.json'}: invalid JSON (nested too deeply)")


def test_config_json_that_disagrees_with_the_weights(run, capsys):
    _edit(run / "config.json", _set("model", "hidden", [7]))
    _refused(capsys, ["eval", str(run)], str(run / "model.safetensors"), "encoder.0.weight", "[6, 12]",
             "[7, 12]", "config.json")
    before = _digest(run)
    tensors = json.loads((run / "checkpoint" / "state.json").read_text())["tensors"]
    _refused(capsys, ["train", "--resume", str(run), "--quiet"], str(run / "checkpoint" / tensors),
             "model.encoder.0.weight", "[6, 12]", "[7, 12]", "config.json")
    assert _digest(run) == before


def _drop(key):
    def change(d):
        del d[key]
    return change


STATE_CASES = {
    **{f"missing {k}": (_drop(k), [f"missing key {k}"]) for k in ("sha256", "tensors", "epoch", "history")},
    "tensors leaves the folder": (lambda d: {**d, "tensors": "../x.safetensors"},
                                  ["tensors must be a plain file name in checkpoint/", "'../x.safetensors'"]),
    "tensors is an absolute path": (lambda d: {**d, "tensors": "/etc/passwd"}, ["tensors", "'/etc/passwd'"]),
    "epoch is a string": (lambda d: {**d, "epoch": "3"}, ["epoch must be an integer; got '3'"]),
    "epoch and history disagree": (lambda d: {**d, "epoch": 1}, ["history has 2 rows; epoch 1 needs 0"]),
    "sha256 is a number": (lambda d: {**d, "sha256": 12}, ["sha256 must be a string; got 12"]),
    "history is an object": (lambda d: {**d, "history": {"epoch": 1}}, ["history must be a list of objects"]),
    "history value of the wrong type": (lambda d: d["history"][1].update(val_mse=[0.1]),
                                        ["history[1].val_mse must be a number; got [0.1]"]),
    "whole file a list": (lambda d: [d], ["the top level must be an object"]),
    "unknown key": (lambda d: {**d, "tensor": d["tensors"]}, ["unknown key tensor", "did you mean tensors"]),
    "optimizer lr of the wrong type": (lambda d: d["optimizer"]["param_groups"][0].update(lr="fast"),
                                       ["optimizer.param_groups[0].lr must be a finite number; got 'fast'"]),
    "config inside of the wrong type": (lambda d: d["config"]["train"].update(epochs="2"),
                                        ["config.train.epochs must be an integer; got '2'"]),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_tampered_state_json_is_refused(run, capsys, case):
    change, needles = STATE_CASES[case]
    state = run / "checkpoint" / "state.json"
    _edit(state, change)
    before = _digest(run)
    _refused(capsys, ["train", "--resume", str(run), "--quiet"], f"{state}: ", *needles)
    assert _digest(run) == before  # refused before anything is written


def test_checkpoint_tensor_file_that_is_not_there(run, capsys):
    _edit(run / "checkpoint" / "state.json", lambda d: {**d, "tensors": "e9999-s0000000.safetensors"})
    _refused(capsys, ["train", "--resume", str(run), "--quiet"], "e9999-s0000000.safetensors is missing",
             "tensors")


@pytest.mark.parametrize("key, change, needle", [
    ("optim.0.exp_avg", lambda v: v[:3], "tensor optim.0.exp_avg has shape [3, 12] but parameter 0"),
    ("rng.epoch", lambda v: v[:10], "rng.epoch must be a uint8 tensor of shape"),
    ("model.decoder.0.bias", lambda v: v[:1], "model.decoder.0.bias has shape [1] but the model of config.json "
                                               "needs [12]"),
    ("model.encoder.0.weight", None, "no tensor model.encoder.0.weight"),
])
def test_checkpoint_tensors_that_do_not_fit(run, capsys, key, change, needle):
    """A tensor file rewritten (with its SHA-256 in state.json): shapes are checked, not broadcast."""
    state = run / "checkpoint" / "state.json"
    meta = json.loads(state.read_text())
    path = run / "checkpoint" / meta["tensors"]
    t = load_tensors(path.read_bytes())
    if change is None:
        del t[key]
    else:
        t[key] = change(t[key]).contiguous()
    data = save_tensors(t)
    path.write_bytes(data)
    _edit(state, lambda d: d.update(sha256=hashlib.sha256(data).hexdigest()))
    _refused(capsys, ["train", "--resume", str(run), "--quiet"], f"{path}: ", needle)
