import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from sparseae import SparseAEError, SparseAutoencoderTransformer


def small(**kw):
    return SparseAutoencoderTransformer(**{"hidden": 4, "epochs": 3, "batch_size": 16, **kw})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_check_estimator_passes():
    # every applicable scikit-learn check (check_array_api_input skips itself without SCIPY_ARRAY_API)
    results = check_estimator(small(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_pipeline_with_logistic_regression():
    x, y = load_digits(return_X_y=True)
    x, y = x[:600], y[:600]
    pipe = make_pipeline(SparseAutoencoderTransformer(hidden=48, epochs=30, batch_size=32, lr=3e-3, beta=0.05),
                         LogisticRegression(max_iter=500))
    pipe.fit(x[:450], y[:450])
    acc = pipe.score(x[450:], y[450:])
    assert acc > 0.8  # 10 classes: chance is 0.1
    assert pipe[0].transform(x[:5]).shape == (5, 48)


def test_grid_search_clones_and_refits():
    x, y = load_digits(return_X_y=True)
    x, y = x[:200], y[:200]
    search = GridSearchCV(make_pipeline(small(hidden=8), LogisticRegression(max_iter=200)),
                          {"sparseautoencodertransformer__hidden": [4, 8]}, cv=2)
    search.fit(x, y)
    assert search.best_params_["sparseautoencodertransformer__hidden"] in (4, 8)
    assert search.best_estimator_[0].transform(x).shape[1] == search.best_params_[
        "sparseautoencodertransformer__hidden"]


@pytest.mark.parametrize("param, value, name", [
    ("rho", 1.5, "rho"), ("activation", "swish", "activation"), ("hidden", 0, "hidden"),
    ("penalty", "l3", "penalty"), ("epochs", 0, "epochs"), ("input_transform", "pca", "input_transform"),
    ("greedy", "yes", "greedy"), ("lr", "fast", "lr"), ("epochs", 2.5, "epochs"),
])
def test_bad_parameter_is_named_at_fit(param, value, name):
    est = small(**{param: value})  # construction never checks (scikit-learn convention)
    with pytest.raises(SparseAEError, match=name):
        est.fit(np.random.default_rng(0).normal(size=(20, 5)))


def test_inverse_transform_returns_original_units():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 2))
    x = z @ rng.normal(size=(2, 6)) * 50 + 1000  # far from [0, 1]: standardize + linear output
    est = SparseAutoencoderTransformer(hidden=8, epochs=60, batch_size=32, lr=1e-2, beta=0.01).fit(x)
    back = est.inverse_transform(est.transform(x))
    assert back.shape == x.shape
    assert np.allclose(back, est.reconstruct(x))
    # explains most of the variance around the mean of 1000
    assert ((back - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum() < 0.1
    with pytest.raises(SparseAEError, match="8 columns"):
        est.inverse_transform(np.zeros((2, 3)))


def test_pickle_carries_safetensors_not_a_module():
    x = np.random.default_rng(1).normal(size=(40, 5))
    est = small().fit(x)
    state = est.__getstate__()
    assert "model_" not in state and isinstance(state["_model_tensors"], bytes)
    again = pickle.loads(pickle.dumps(est))
    assert np.array_equal(again.transform(x), est.transform(x))


def test_greedy_stack_uses_layerwise_training():
    x = np.random.default_rng(2).random((60, 10))
    est = SparseAutoencoderTransformer(hidden=(6, 3), greedy=True, epochs=3, input_transform="none",
                                       output_activation="sigmoid").fit(x)
    assert est.transform(x).shape == (60, 3)
    assert len(est.history_) == 2  # one summary per pretrained layer
