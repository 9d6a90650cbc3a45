"""Graph clustering with a stacked sparse autoencoder (GraphEncoder, Tian et al., AAAI 2014).

The rows of the normalised similarity matrix D^-1 S (S symmetric, non-negative,
D = diag(row sums)) are the inputs of a sparse autoencoder; its code is the
input of the next one (greedy layer-wise stacking, as in the paper); k-means
on the deepest code gives the communities. The baseline is spectral
clustering on the same similarity matrix.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import FEATURE_SETS
from ..data.paths import regular_file
from ..errors import SparseAEError



@dataclass
class Graph:
    """A similarity matrix with optional ground-truth labels."""

    similarity: np.ndarray
    labels: np.ndarray | None = None
    name: str = ""


def karate() -> Graph:
    """Zachary's karate club (networkx); labels: the `club` node attribute."""
    try:
        import networkx as nx
    except ImportError:
        raise SparseAEError("--graph karate needs networkx (pip install networkx, or the sparseae[apps] extra)") \
            from None
    g = nx.karate_club_graph()
    nodes = sorted(g.nodes)
    s = nx.to_numpy_array(g, nodelist=nodes, weight=None)
    clubs = [g.nodes[v]["club"] for v in nodes]
    return Graph(s, np.unique(clubs, return_inverse=True)[1], "karate")


def _load_matrix(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: reported below as a graph without edges
            return np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except (OSError, ValueError) as e:
        raise SparseAEError(f"{path}: cannot read a numeric matrix ({e})") from None


def read_labels(path: str | Path, n: int) -> np.ndarray:
    """One ground-truth label per node, one per line (any text): exactly `n` of them."""
    path = regular_file(path, "labels file")
    try:
        labels = np.loadtxt(path, dtype=str, ndmin=1, encoding="utf-8")
    except (UnicodeDecodeError, ValueError) as e:
        raise SparseAEError(f"{path}: not a text file of labels, one per line ({e})") from None
    if labels.ndim != 1:
        raise SparseAEError(f"{path}: expected one label per line, got {labels.shape[1]} columns")
    if len(labels) != n:
        raise SparseAEError(f"{path}: {len(labels)} labels for {n} nodes")
    return labels


def load_graph(path: str | Path) -> Graph:
    """An adjacency matrix (.npy, or a square .csv/.txt) or an edge list (rows `u v [weight]`).

    Edge-list node ids are relabelled 0..n-1 in sorted order; edges are made symmetric.
    Graphs have no self-similarity; `with_self_loops` adds it.
    """
    path = regular_file(path, "graph file")
    m = _load_matrix(path)
    if m.size == 0:
        raise SparseAEError(f"{path}: the graph has no edges (empty file)")
    if m.ndim == 2 and m.shape[0] == m.shape[1] and m.shape[0] > 3 or path.suffix == ".npy":
        return Graph(m.astype(np.float64), None, path.stem)
    if m.ndim != 2 or m.shape[1] not in (2, 3):
        raise SparseAEError(f"{path}: expected a square adjacency matrix or an edge list with rows "
                            f"'u v' or 'u v weight'; got shape {m.shape}")
    ids, idx = np.unique(m[:, :2], return_inverse=True)
    idx = idx.reshape(-1, 2)
    w = m[:, 2] if m.shape[1] == 3 else np.ones(len(m))
    s = np.zeros((len(ids), len(ids)))
    np.add.at(s, (idx[:, 0], idx[:, 1]), w)
    return Graph(s, None, path.stem)


def similarity_from_features(x: np.ndarray, knn: int | None = None) -> np.ndarray:
    """Gaussian similarity exp(-d^2 / (2 sigma^2)) of standardised rows, sigma the median distance.

    With `knn`, only each row's k nearest neighbours are kept (then symmetrised).
    """
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(x, dtype=np.float64))  # a constant column stays 0
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    sigma2 = np.median(d2[np.triu_indices(len(x), 1)])
    s = np.exp(-d2 / (2 * max(sigma2, 1e-12)))  # s_ii = 1: each row is fully similar to itself
    if knn is not None:
        if not 0 < knn < len(x):
            raise SparseAEError(f"knn must be in 1..{len(x) - 1}; got {knn}")
        keep = np.eye(len(x), dtype=bool)
        others = s - 2 * np.eye(len(x))  # a row is not its own neighbour
        nearest = np.argsort(-others, axis=1)[:, :knn]
        keep[np.arange(len(x))[:, None], nearest] = True
        s = np.where(keep | keep.T, s, 0.0)
    return s


def feature_set(name: str, knn: int | None = None) -> Graph:
    """A scikit-learn data set as a similarity graph, its classes as labels."""
    from sklearn import datasets

    loaders = {"wine": datasets.load_wine, "iris": datasets.load_iris, "digits": datasets.load_digits}
    if name not in loaders:
        raise SparseAEError(f"unknown feature set '{name}'; known: {', '.join(FEATURE_SETS)}")
    x, y = loaders[name](return_X_y=True)
    return Graph(similarity_from_features(x, knn), y, name)


def check_similarity(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise SparseAEError(f"a similarity matrix must be square; got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any():
        raise SparseAEError("a similarity matrix must be finite and non-negative")
    s = np.maximum(s, s.T)  # undirected
    if not (s > 0).any():
        raise SparseAEError("the graph has no edges")
    isolated = np.flatnonzero(s.sum(1) == 0)
    if len(isolated):
        raise SparseAEError(f"{len(isolated)} node(s) have no edges (first: {isolated[0]}); "
                            "D^-1 S is undefined for them: remove them or add self-loops")
    return s


def with_self_loops(s: np.ndarray) -> np.ndarray:
    """S with s_ii = max(s_ii, 1): a node is similar to itself, so neighbours share more of a row of D^-1 S."""
    s = np.array(s, dtype=np.float64)
    np.fill_diagonal(s, np.maximum(np.diag(s), 1.0))
    return s


def normalized_similarity(s: np.ndarray) -> np.ndarray:
    """D^-1 S: each row divided by its sum (a random-walk transition matrix)."""
    s = check_similarity(s)
    return s / s.sum(1, keepdims=True)


def graph_encoder_embedding(s: np.ndarray, hidden: list[int], seed: int = 0, restarts: int = 1,
                            **params) -> np.ndarray:
    """The deepest code of sparse autoencoders stacked greedily on the rows of D^-1 S.

    The rows are probabilities in [0, 1]: no input transform and a sigmoid
    output by default, as in the paper. With `restarts` > 1 the stack is
    trained from that many initialisations (seeds seed*restarts + r) and the
    one that reconstructs D^-1 S best is kept: on a graph of a few dozen nodes
    the result depends on the initialisation, and the reconstruction error
    picks without looking at labels.
    """
    from .estimator import SparseAutoencoderTransformer

    if restarts < 1:
        raise SparseAEError(f"restarts must be >= 1; got {restarts}")
    params = {"input_transform": "none", "output_activation": "sigmoid", **params}
    p = normalized_similarity(s)
    best, best_err = None, np.inf
    for r in range(restarts):
        est = SparseAutoencoderTransformer(hidden=tuple(hidden), seed=seed * restarts + r, greedy=True, **params)
        est.fit(p)
        err = float(((est.reconstruct(p) - p) ** 2).mean())
        if err < best_err:
            best, best_err = est, err
    return best.transform(p)


def kmeans_labels(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=20, random_state=seed).fit_predict(x)


def spectral_labels(s: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Spectral clustering (normalised Laplacian of S, k-means on the leading eigenvectors)."""
    from sklearn.cluster import SpectralClustering

    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                              n_init=20).fit_predict(check_similarity(s))


def nmi(labels: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels, predicted))
