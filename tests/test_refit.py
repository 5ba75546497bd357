"""The output layer's refit (sparseae.refit): fits, choices, budget, and compress --refit."""

import numpy as np
import pytest
from scipy.optimize import minimize

from sparseae import refit
from sparseae.compress import compress
from sparseae.data import binary_clustering
from sparseae.model import Autoencoder


def _objective(coef, A, t, w, ridge):
    z = np.clip(A @ coef, -30, 30)
    y = np.clip(1 / (1 + np.exp(-z)), refit.EPS_P, 1 - refit.EPS_P)
    return -(w * (t * np.log(y) + (1 - t) * np.log(1 - y))).sum() + 0.5 * ridge * coef @ coef


@pytest.mark.parametrize("q", [1, 2, 3])
def test_logistic_fit_is_the_ridge_minimum(q):
    rng = np.random.default_rng(q)
    C = 13
    A = np.ones((C, q))  # features, then the bias column
    A[:, :q - 1] = rng.normal(size=(C, q - 1))
    t = rng.uniform(0.05, 0.95, C)
    w = rng.uniform(0.5, 1.5, C)
    w /= w.sum()
    coef, M, g = np.zeros(3), np.zeros((3, 3)), np.zeros(3)
    ce = refit._logistic(A, q, t, w, 40, refit.RIDGE, coef, M, g)
    ref = minimize(_objective, np.zeros(q), args=(A[:, :q], t, w, refit.RIDGE), method="BFGS",
                   options={"gtol": 1e-12})
    np.testing.assert_allclose(coef[:q], ref.x, rtol=1e-5, atol=1e-7)
    # the returned score is the cross-entropy at the fit (without the ridge term)
    assert np.isclose(ce, _objective(coef[:q], A[:, :q], t, w, 0.0), rtol=1e-10)


def test_fit_candidates_finds_the_planted_inputs():
    rng = np.random.default_rng(5)
    C, h, D = 24, 7, 5
    Z = rng.normal(size=(C, h))
    w = np.full(C, 1.0 / C)
    planted = [(1, 4), (0, 6), (2, 3), (5, 6), (0, 1)]
    T = np.stack([1 / (1 + np.exp(-(4 * Z[:, p] - 4 * Z[:, q] + 0.5))) for p, q in planted], 1)
    e0, b0, e1, i1, c1, e2, i2, c2 = refit.fit_candidates(
        Z, w, np.ascontiguousarray(T), np.ones(D, np.uint8), 30, 1e-6)
    for d, (p, q) in enumerate(planted):
        assert tuple(i2[d]) == (p, q)
        np.testing.assert_allclose(c2[d], [4, -4, 0.5], rtol=1e-3, atol=1e-3)
        assert i1[d] in (p, q)
        assert e2[d] < e1[d] < e0[d]
    # without a bias the fitted bias is exactly 0
    _, b0n, _, _, c1n, _, _, c2n = refit.fit_candidates(
        Z, w, np.ascontiguousarray(T), np.zeros(D, np.uint8), 30, 1e-6)
    assert np.all(b0n == 0) and np.all(c1n[:, 1] == 0) and np.all(c2n[:, 2] == 0)


def test_split_budget_spends_exactly_by_the_largest_gains():
    e0 = np.array([1.0, 1.0, 1.0, 1.0])
    e1 = np.array([0.5, 0.9, 0.2, 0.9])
    e2 = np.array([0.4, 0.3, 0.19, 0.9])
    assert refit.split_budget(e0, e1, e2, 0).tolist() == [0, 0, 0, 0]
    assert refit.split_budget(e0, e1, e2, 2).tolist() == [1, 0, 1, 0]
    assert refit.split_budget(e0, e1, e2, 4).tolist() == [1, 1, 1, 1]
    assert refit.split_budget(e0, e1, e2, 6).tolist() == [2, 2, 1, 1]
    assert refit.split_budget(e0, e1, e2, 8).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError):
        refit.split_budget(e0, e1, e2, 9)


def test_summarise_weights_and_targets():
    rng = np.random.default_rng(2)
    H = np.repeat(np.eye(3), [5, 3, 2], axis=0) * 10  # three well separated codes
    Y = rng.random((10, 4))
    feats, w, T = refit.summarise(H, Y, np.random.default_rng(0), centres=3)
    order = np.argsort(-w)
    np.testing.assert_allclose(w[order], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(feats[order], np.eye(3) * 10)
    np.testing.assert_allclose(T[order[0]], Y[:5].mean(0))
    np.testing.assert_allclose(T[order[2]], Y[8:].mean(0))


def _small_model(data, density, refit_on, seed=3, epochs=6):
    m = Autoencoder("40,8,4", seed=1)
    return compress(m, data, density, "magnitude", epochs, seed=seed, refit=refit_on)


@pytest.fixture(scope="module")
def tiny():
    return binary_clustering(n_clusters=4, dim=40, per_cluster=12, seed=2)


def test_refit_output_keeps_the_budget_and_at_most_two_inputs(tiny):
    small, _ = _small_model(tiny, 0.08, False)
    dec = small.decoder
    L = dec.n_layers - 1
    before = int(np.count_nonzero(dec.weight(0, L, "mask")))
    assert before <= 2 * dec.weight(0, L).shape[0]
    other = [h.params[0].copy() for h in (small.encoder,)] + [dec.weight(0, 0).copy()]
    assert refit.refit_output(small, tiny.train, np.random.default_rng(0))
    Wm = dec.weight(0, L, "mask")
    assert int(np.count_nonzero(Wm)) == before
    assert np.count_nonzero(Wm, axis=1).max() <= 2
    assert np.all(dec.weight(0, L)[Wm == 0] == 0)
    np.testing.assert_array_equal(small.encoder.params[0], other[0])  # only the output layer
    np.testing.assert_array_equal(dec.weight(0, 0), other[1])


def test_refit_output_leaves_a_denser_layer_alone(tiny):
    small, _ = _small_model(tiny, 0.5, False)
    state = [h.params[0].copy() for h in (small.encoder, small.decoder)]
    masks = [h.mask[0].copy() for h in (small.encoder, small.decoder)]
    assert not refit.refit_output(small, tiny.train, np.random.default_rng(0))
    for h, p, mk in zip((small.encoder, small.decoder), state, masks):
        np.testing.assert_array_equal(h.params[0], p)
        np.testing.assert_array_equal(h.mask[0], mk)


def test_compress_refit_is_deterministic_keeps_density_and_masks_permanent(tiny):
    a, ia = _small_model(tiny, 0.08, True)
    b, ib = _small_model(tiny, 0.08, True)
    plain, ip = _small_model(tiny, 0.08, False)
    for x, y in ((a.encoder, b.encoder), (a.decoder, b.decoder)):
        np.testing.assert_array_equal(x.params[0], y.params[0])
        np.testing.assert_array_equal(x.mask[0], y.mask[0])
    assert ia["test_l1"] == ib["test_l1"] and ia["refit"] == ib["refit"]
    assert ia["live"] == ip["live"]  # the same density
    assert ia["test_l1_before"] == ip["test_l1_before"]  # the input model's, unchanged
    assert ia["validation_l1_before_refit"] == ip["validation_l1"]
    for h in (a.encoder, a.decoder):
        assert np.all(h.params[0][h.mask[0] == 0] == 0)  # pruned weights exactly 0
    if ia["refit"]:
        assert ia["validation_l1"] < ia["validation_l1_before_refit"]
    else:  # not kept: the plain result
        assert ia["test_l1"] == ip["test_l1"]


def test_refit_beats_magnitude_alone_at_a_low_density():
    """The reason the refit exists, on a task small enough for the suite: the output
    layer at about 1.5 inputs per unit."""
    data = binary_clustering(n_clusters=6, dim=60, per_cluster=20, seed=4)
    m = Autoencoder("60,12,6", seed=0)
    from sparseae.canonical import CanonicalRun
    from sparseae.config import TrainConfig

    run = CanonicalRun(TrainConfig(paradigm="canonical", arch="60,12,6", epochs=60, seed=0,
                                   lr=3e-3, clusters=6, dim=60, per_cluster=20), data)
    run.run()
    m = run.model
    _, plain = compress(m, data, 0.08, "magnitude", 40, seed=1)
    _, fit = compress(m, data, 0.08, "magnitude", 40, seed=1, refit=True)
    assert fit["refit"]
    assert fit["test_l1"] < plain["test_l1"] - 0.01
