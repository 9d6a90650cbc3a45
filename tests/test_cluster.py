import json

import numpy as np
import pytest

from sparseae import SparseAEError
from sparseae.cli import main
from sparseae.apps.cluster import (check_similarity, graph_encoder_embedding, kmeans_labels, load_graph, nmi,
                              normalized_similarity, similarity_from_features, spectral_labels, with_self_loops)


def two_cliques(size=6):
    """Two complete graphs joined by one edge: communities any method should find."""
    n = 2 * size
    s = np.zeros((n, n))
    s[:size, :size] = 1
    s[size:, size:] = 1
    np.fill_diagonal(s, 0)
    s[size - 1, size] = s[size, size - 1] = 1
    return s, np.repeat([0, 1], size)


def test_normalized_similarity_by_hand():
    s = np.array([[0, 2, 1], [2, 0, 0], [1, 0, 0]], dtype=float)
    p = normalized_similarity(s)
    assert np.allclose(p, [[0, 2 / 3, 1 / 3], [1, 0, 0], [1, 0, 0]])
    assert np.allclose(normalized_similarity(with_self_loops(s))[1], [2 / 3, 1 / 3, 0])


def test_graph_without_edges_and_isolated_nodes_are_refused():
    with pytest.raises(SparseAEError, match="no edges"):
        check_similarity(np.zeros((4, 4)))
    s = np.zeros((3, 3))
    s[0, 1] = s[1, 0] = 1
    with pytest.raises(SparseAEError, match="1 node"):
        check_similarity(s)
    with pytest.raises(SparseAEError, match="square"):
        check_similarity(np.ones((2, 3)))


def test_edge_list_and_adjacency_files(tmp_path):
    (tmp_path / "g.txt").write_text("10 20\n20 30 2.5\n".replace(" 2.5", ""))
    g = load_graph(tmp_path / "g.txt")
    assert np.array_equal(check_similarity(g.similarity), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    s, _ = two_cliques()
    np.save(tmp_path / "a.npy", s)
    assert np.array_equal(load_graph(tmp_path / "a.npy").similarity, s)
    np.savetxt(tmp_path / "a.csv", s, delimiter=",")
    assert np.array_equal(load_graph(tmp_path / "a.csv").similarity, s)


def test_gaussian_similarity_by_hand():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    s = similarity_from_features(x)
    xs = (x - x.mean(0)) / x.std(0)
    d2 = ((xs[:, None] - xs[None]) ** 2).sum(-1)
    sigma2 = np.median(d2[np.triu_indices(3, 1)])
    assert np.allclose(s, np.exp(-d2 / (2 * sigma2)))
    knn = similarity_from_features(np.random.default_rng(0).normal(size=(20, 3)), knn=2)
    assert ((knn > 0).sum(1) >= 3).all()  # itself + 2 neighbours at least (symmetrised)


def test_two_cliques_are_found_by_both_methods():
    s, labels = two_cliques()
    s = with_self_loops(s)
    emb = graph_encoder_embedding(s, [4], epochs=300, batch_size=64, lr=1e-2, beta=0.01, rho=0.2)
    assert emb.shape == (12, 4)
    assert nmi(labels, kmeans_labels(emb, 2)) == pytest.approx(1.0)
    assert nmi(labels, spectral_labels(s, 2)) == pytest.approx(1.0)


def test_cluster_cli_on_an_edge_list(tmp_path, capsys):
    s, labels = two_cliques()
    edges = np.argwhere(np.triu(s) > 0)
    np.savetxt(tmp_path / "edges.txt", edges, fmt="%d")
    np.savetxt(tmp_path / "labels.txt", labels, fmt="%d")
    rc = main(["cluster", "--graph", str(tmp_path / "edges.txt"), "--labels", str(tmp_path / "labels.txt"),
               "--hidden", "4", "--epochs", "300", "--restarts", "2", "--json", str(tmp_path / "c.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "GraphEncoder" in out and "spectral clustering" in out
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["spectral clustering"]["nmi"] == pytest.approx(1.0)
    assert res["GraphEncoder (sparse AE + k-means)"]["nmi"] == pytest.approx(1.0)


def test_cluster_cli_bad_input(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    np.save(tmp_path / "zeros.npy", np.zeros((5, 5)))
    assert main(["cluster", "--graph", str(tmp_path / "zeros.npy"), "--clusters", "2"]) == 2
    assert "no edges" in capsys.readouterr().err
    assert main(["cluster", "--graph", str(tmp_path / "empty.txt"), "--clusters", "2"]) == 2
    assert "no edges" in capsys.readouterr().err
    assert main(["cluster", "--features", "mushrooms"]) == 2
    assert "unknown feature set 'mushrooms'" in capsys.readouterr().err
    assert main(["cluster", "--graph", "football"]) == 2
    assert "unknown graph 'football'" in capsys.readouterr().err


def test_karate_club_graph():
    pytest.importorskip("networkx")
    from sparseae.apps.cluster import karate

    g = karate()
    assert g.similarity.shape == (34, 34) and g.similarity.sum() == 2 * 78
    assert np.bincount(g.labels).tolist() == [17, 17]  # Mr. Hi and Officer


def test_karate_graph_encoder_matches_spectral(tmp_path, capsys):
    pytest.importorskip("networkx")
    # the documented command (docs/clustering.md): defaults, seed 0
    assert main(["cluster", "--graph", "karate", "--json", str(tmp_path / "k.json")]) == 0
    res = json.loads((tmp_path / "k.json").read_text())
    sae, spectral = res["GraphEncoder (sparse AE + k-means)"]["nmi"], res["spectral clustering"]["nmi"]
    assert spectral == pytest.approx(0.732, abs=0.001)
    assert sae >= spectral
