import numpy as np
import pytest

from sparseae import DataError, Dataset, binary_clustering
from sparseae.data import check_split


def test_binary_clustering_semantics():
    d = binary_clustering(n_clusters=4, dim=2000, per_cluster=50, noise=0.05, seed=7)
    for split in (d.train, d.test, d.validation):
        assert split.shape == (200, 2000) and split.dtype == np.float32
        assert set(np.unique(split)) <= {0.0, 1.0}
    # rows come in blocks c0..c3 repeated; the per-block majority recovers the centroids
    centroids = (d.train.reshape(50, 4, 2000).mean(axis=0) > 0.5)
    assert 0.45 < centroids.mean() < 0.55  # Bernoulli(0.5) bits
    for split in (d.train, d.test, d.validation):
        flips = split.reshape(50, 4, 2000) != centroids[None]
        assert 0.045 < flips.mean() < 0.055
    # independent noise per split
    assert not np.array_equal(d.train, d.test) and not np.array_equal(d.test, d.validation)


def test_binary_clustering_is_seeded():
    a = binary_clustering(3, 50, 4, 0.1, seed=5)
    b = binary_clustering(3, 50, 4, 0.1, seed=5)
    c = binary_clustering(3, 50, 4, 0.1, seed=6)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)


@pytest.mark.parametrize("arr, match", [
    (np.zeros(5), "2-D"),
    (np.zeros((0, 5)), "empty"),
    (np.array([[0.5, np.nan]]), "NaN"),
    (np.array([[0.5, np.inf]]), "NaN or inf"),
    (np.array([[0.5, 1.5]]), r"\[0, 1\]"),
    (np.array([[-0.1, 0.5]]), r"\[0, 1\]"),
])
def test_check_split_rejects_bad_arrays(arr, match):
    with pytest.raises(DataError, match=match):
        check_split(arr, "train")


def test_dataset_rejects_mismatched_widths():
    with pytest.raises(DataError, match="different widths"):
        Dataset(np.zeros((3, 4)), np.zeros((3, 5)), np.zeros((3, 4)))


@pytest.mark.parametrize("kw", [dict(n_clusters=0), dict(dim=0), dict(noise=1.5), dict(per_cluster=2.5)])
def test_generator_rejects_bad_sizes(kw):
    with pytest.raises(DataError):
        binary_clustering(**kw)
