"""scikit-learn front end: a transformer whose features are a sparse autoencoder's code.

`SparseAutoencoderTransformer.fit` builds a `RunConfig` from the constructor
arguments, wraps the arrays in a `Dataset` and calls `trainer.train` without a
run folder: the same model, objective and loop as `sparseae train`.

General arrays are not pixels in [0, 1], so the defaults are a standardising
input transform (fitted on the training rows, stored with the model) and a
linear output layer; `transform` returns the code of raw rows and
`inverse_transform` maps a code back to the original units.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..families import KL
from ..config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from ..data import Dataset
from ..errors import SparseAEError
from ..model import SparseAutoencoder
from ..run.files import to_json_text

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, X, reset=True, **kw):
        return est._validate_data(X, reset=reset, **kw)


def _hidden_list(hidden: Any) -> list[int]:
    if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool):
        return [int(hidden)]
    try:
        sizes = [int(h) for h in hidden]
    except (TypeError, ValueError):
        raise SparseAEError(f"hidden must be a positive int or a sequence of them; got {hidden!r}") from None
    if not sizes or any(h <= 0 or h != v for h, v in zip(sizes, hidden)):
        raise SparseAEError(f"hidden must be a positive int or a sequence of them; got {hidden!r}")
    return sizes


def _number(name: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise SparseAEError(f"{name} must be {'an integer' if kind is int else 'a number'}; got {value!r}")
    return kind(value)


class SparseAutoencoderTransformer(TransformerMixin, BaseEstimator):
    """Sparse autoencoder features for scikit-learn pipelines.

    Parameters mirror `ModelConfig`, `SparsityConfig` and `TrainConfig` (see
    those for their meaning); they are checked when `fit` runs and a bad value
    raises `SparseAEError` (a `ValueError`) naming the parameter, the value and
    what is allowed.

    `greedy=True` trains a deep `hidden` layer by layer (`stacked.train_stacked`,
    each layer on the codes of the previous one, no fine-tuning) instead of end
    to end.

    Attributes after fit: `model_` (the trained `SparseAutoencoder`, eval mode),
    `history_` (one dict per epoch; greedy: one summary per layer), `n_features_in_`.
    """

    def __init__(self, hidden=64, activation="sigmoid", code_activation=None, output_activation="linear",
                 penalty=KL, rho=0.05, beta=0.1, weight_decay=0.0, input_transform="standardize",
                 epochs=50, batch_size=64, lr=1e-3, optimizer="adam", greedy=False, seed=0, device="cpu"):
        self.hidden = hidden
        self.activation = activation
        self.code_activation = code_activation
        self.output_activation = output_activation
        self.penalty = penalty
        self.rho = rho
        self.beta = beta
        self.weight_decay = weight_decay
        self.input_transform = input_transform
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.greedy = greedy
        self.seed = seed
        self.device = device

    def run_config(self, n_features: int) -> RunConfig:
        """The validated `RunConfig` these parameters describe."""
        num = {name: _number(name, getattr(self, name), kind) for name, kind in (
            ("rho", float), ("beta", float), ("weight_decay", float), ("lr", float), ("epochs", int),
            ("batch_size", int), ("seed", int))}
        # The model these parameters describe and nothing more: the L1 family's recipe extras (pre-encoder
        # bias at the data mean, decoder-norm weighting, a warm-up of beta, the small-input rules: a rate decay,
        # the pre-activation loss, JumpReLU's tanh penalty) are not parameters here, so
        # they stay off and results stay what the parameters say (`sparseae monitor` and `cluster` rely on it).
        config = RunConfig(
            model=ModelConfig(input_dim=n_features, hidden=_hidden_list(self.hidden), activation=self.activation,
                              code_activation=self.code_activation, output_activation=self.output_activation,
                              input_transform=self.input_transform, pre_bias=False, unit_norm_decoder=False,
                              bias_init="default", input_scale=False),
            sparsity=SparsityConfig(penalty=self.penalty, rho=num["rho"], beta=num["beta"],
                                    weight_decay=num["weight_decay"], decoder_norm_l1=False, beta_warmup=0,
                                    preact_coef=0.0, jumprelu_tanh=0.0),
            train=TrainConfig(dataset="arrays", epochs=num["epochs"], batch_size=num["batch_size"], lr=num["lr"],
                              lr_decay=0.0, optimizer=self.optimizer, seed=num["seed"], device=self.device))
        return resolve(config)

    def fit(self, X, y=None):
        from ..training.session import train

        X = _validate_data(self, X, dtype=np.float64, ensure_min_samples=1)
        config = self.run_config(X.shape[1])
        x = torch.from_numpy(X.astype(np.float32))
        # No held-out split here: the per-epoch validation rows are computed on the training rows.
        data = Dataset(train=x, test=x)
        if self.greedy not in (True, False):
            raise SparseAEError(f"greedy must be True or False; got {self.greedy!r}")
        if self.greedy and len(config.model.hidden) > 1:
            from .stacked import train_stacked

            result = train_stacked(config, None, data, finetune="none", progress=False)
            self.model_, self.history_ = result.model, result.layers
        else:
            result = train(config, out=None, dataset=data, progress=False)
            self.model_, self.history_ = result.model, result.history
        return self

    def _model64(self) -> SparseAutoencoder:
        # A float64 copy for inference: float32 sums depend on how rows are blocked,
        # and a row's features should not depend on which other rows come with it.
        return copy.deepcopy(self.model_).double()

    def _rows(self, X) -> torch.Tensor:
        X = _validate_data(self, X, dtype=np.float64, reset=False)
        return torch.tensor(X, device=next(self.model_.parameters()).device)

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """The code (innermost layer) of each row."""
        check_is_fitted(self, "model_")
        return self._model64().encode(self._rows(X)).cpu().numpy()

    @torch.no_grad()
    def inverse_transform(self, X) -> np.ndarray:
        """Rows in the original units decoded from codes (the output of `transform`)."""
        check_is_fitted(self, "model_")
        from sklearn.utils import check_array

        Z = check_array(X, dtype=np.float64)
        width = self.model_.config.hidden[-1]
        if Z.shape[1] != width:
            raise SparseAEError(f"inverse_transform expects codes with {width} columns; got {Z.shape[1]}")
        model = self._model64()
        z = torch.tensor(Z, device=next(model.parameters()).device)
        return model.input_transform.inverse_transform(model.decode(z)).cpu().numpy()

    @torch.no_grad()
    def reconstruct(self, X) -> np.ndarray:
        """The model's reconstruction of each row, in the original units."""
        check_is_fitted(self, "model_")
        return self._model64().reconstruct(self._rows(X)).cpu().numpy()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "model_")
        return np.asarray([f"sae{i}" for i in range(self.model_.config.hidden[-1])], dtype=object)

    # Pickling (scikit-learn's clone/joblib use it): the model travels as its
    # config JSON plus safetensors bytes, never as a pickled nn.Module.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            state["_model_config"] = to_json_text(RunConfig(model=model.config).to_dict()["model"], compact=True)
            state["_model_tensors"] = save_tensors(tensors)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        config = state.pop("_model_config", None)
        blob = state.pop("_model_tensors", None)
        self.__dict__.update(state)
        if config is not None:
            model = SparseAutoencoder(ModelConfig(**json.loads(config)))
            model.load_state_dict(load_tensors(blob))
            self.model_ = model.eval()
