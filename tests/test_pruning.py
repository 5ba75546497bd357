"""Operators, schedules, structural consistency, metrics and compaction."""

import math

import numpy as np
import pytest

from sparseae import Autoencoder, CanonicalRun, ConfigError, TrainConfig
from sparseae import operators as ops
from sparseae import schedules
from sparseae.metrics import compact, flops, preserved

SMALL = dict(clusters=4, dim=60, per_cluster=10, batch_size=5, lr=3e-3)


# ------------------------------------------------------------------ amounts


def test_n_to_prune_float_is_fraction_of_live_int_is_count():
    assert ops.n_to_prune(0.1, 95) == 10 and ops.n_to_prune(0.0, 95) == 0
    assert ops.n_to_prune(1.0, 95) == 95
    assert ops.n_to_prune(7, 95) == 7 and ops.n_to_prune(200, 95) == 95
    with pytest.raises(ConfigError):
        ops.n_to_prune(1.5, 10)
    with pytest.raises(ConfigError):
        ops.n_to_prune(-1, 10)


# ------------------------------------------------------------------ operators


def test_random_prunes_fraction_of_live_entries_and_accumulates():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((13, 7))
    mask = np.ones((13, 7), np.uint8)
    m1 = ops.random_mask(t, mask, 0.1, rng)
    assert mask.sum() == 91  # input untouched
    assert m1.sum() == 91 - 9  # round(0.1 * 91)
    m2 = ops.random_mask(t, m1, 0.1, rng)
    assert m2.sum() == 82 - 8 and not np.any(m2 > m1)  # of the live 82; never regrows
    m3 = ops.random_mask(t, m2, 5, rng)
    assert m3.sum() == 69


def test_random_is_uniform_over_live_entries():
    rng = np.random.default_rng(1)
    mask = np.ones(20, np.uint8)
    mask[:5] = 0
    counts = np.zeros(20)
    for _ in range(4000):
        counts += 1 - ops.random_mask(np.zeros(20), mask, 3, rng)
    assert counts[:5].tolist() == [4000] * 5  # already pruned stay pruned
    live = counts[5:] / 4000
    assert np.allclose(live, 3 / 15, atol=0.03)


def test_magnitude_prunes_smallest_live_entries():
    t = np.array([[0.5, -0.1, 3.0], [-0.05, 2.0, 0.2]])
    mask = np.array([[1, 1, 1], [0, 1, 1]], np.uint8)  # -0.05 already pruned
    new = ops.magnitude_mask(t, mask, 2)
    np.testing.assert_array_equal(new, [[1, 0, 1], [0, 1, 0]])


def test_variance_prunes_low_spread_units_more_and_keeps_amount():
    rng = np.random.default_rng(2)
    spread = np.array([0.0, 1.0, 0.5])  # unit 0 low spread, unit 1 high spread
    mask = np.ones((3, 50), np.uint8)
    hits = np.zeros(3)
    for _ in range(300):
        new = ops.variance_mask(np.zeros((3, 50)), mask, 0.1, spread, rng)
        assert new.sum() == 150 - 15  # amount keeps its meaning
        hits += 50 - new.sum(axis=1)
    assert hits[0] > hits[2] > hits[1]
    # probability proportional to (1 - normalised spread) + floor
    w = np.array([1.0, 0.0, 0.5]) + ops.VARIANCE_FLOOR
    assert hits[1] / hits.sum() == pytest.approx(w[1] / w.sum(), abs=0.01)


def test_unit_spread_from_fused_statistics():
    z = np.random.default_rng(3).standard_normal((40, 4)) * [1, 2, 0, 5]
    stats = np.stack([np.full(4, 40.0), z.sum(0), (z * z).sum(0)], axis=1)
    np.testing.assert_allclose(ops.unit_spread(stats), z.std(axis=0), atol=1e-12)
    np.testing.assert_allclose(ops.normalise([2.0, 4.0, 3.0]), [0, 1, 0.5])
    assert ops.normalise([1.0, 1.0]).tolist() == [0.0, 0.0]


def test_conjunctive_prunes_whole_units():
    mask = np.ones((4, 3), np.uint8)
    new = ops.conjunctive_mask(np.zeros((4, 3)), mask, np.array([0, 1, 0, 1], np.uint8))
    np.testing.assert_array_equal(new.sum(axis=1), [3, 0, 3, 0])
    b = ops.conjunctive_mask(np.zeros(4), np.ones(4, np.uint8), np.array([1, 0, 0, 0]))
    np.testing.assert_array_equal(b, [0, 1, 1, 1])


def test_unknown_operator():
    ae = Autoencoder("5,3", seed=0)
    with pytest.raises(ConfigError, match="operator"):
        ops.prune_pair("lasso", ae.encoder, ae.decoder, 0, 0, 0.1, np.random.default_rng())


# ------------------------------------------------- prune_pair and structure


def _trained_like(seed=0, arch="9,7,4"):
    ae = Autoencoder(arch, seed=seed)
    rng = np.random.default_rng(seed)
    for half in (ae.encoder, ae.decoder):
        half.m[0] = rng.random(half.n)
        half.v[0] = rng.random(half.n)
    return ae


def _network_output(ae, X):
    return ae.reconstruct(X)


def test_prune_pair_zeroes_params_and_adam_state():
    ae = _trained_like()
    n = ops.prune_pair("random", ae.encoder, ae.decoder, 0, 0, 0.3, np.random.default_rng(0))
    assert n > 0
    for half in (ae.encoder, ae.decoder):
        dead = half.mask[0] == 0
        assert dead.any()
        assert not half.params[0][dead].any() and not half.m[0][dead].any() and not half.v[0][dead].any()
    assert n == ae.n_params - int(ae.encoder.mask.sum() + ae.decoder.mask.sum())


def test_conjunctive_unit_pruning_propagates_to_next_layer():
    ae = _trained_like()
    marks_e = np.zeros(ae.encoder.n_units, np.uint8)
    marks_e[2] = 1  # hidden unit 2 of encoder layer 0 (9 -> 7)
    marks_d = np.zeros(ae.decoder.n_units, np.uint8)
    ops.prune_pair("conjunctive", ae.encoder, ae.decoder, 0, 0, 0.1, None,
                   marks_e=marks_e, marks_d=marks_d)
    e = ae.encoder
    assert not e.weight(0, 0, "mask")[2].any() and e.bias(0, 0, "mask")[2] == 0
    assert not e.weight(0, 1, "mask")[:, 2].any()  # outgoing weights dead too
    assert e.weight(0, 1, "mask").sum() == 4 * 6
    # latent unit pruned in the encoder kills the decoder's first-layer column
    ae2 = _trained_like(1)
    me = np.zeros(ae2.encoder.n_units, np.uint8)
    me[7 + 1] = 1  # layer 1 (7 -> 4), unit 1
    ops.prune_pair("conjunctive", ae2.encoder, ae2.decoder, 0, 0, 0.1, None,
                   marks_e=me, marks_d=np.zeros(ae2.decoder.n_units, np.uint8))
    assert not ae2.decoder.weight(0, 0, "mask")[:, 1].any()


def test_structural_propagation_leaves_function_unchanged():
    X = np.random.default_rng(5).random((6, 9)).astype(np.float32)
    ae = _trained_like(2)
    e = ae.encoder
    e.weight(0, 0, "mask")[3] = 0
    e.bias(0, 0, "mask")[3] = 0
    e.params[0][e.mask[0] == 0] = 0
    ae.decoder.weight(0, 1, "mask")[:, 5] = 0  # decoder hidden unit 5 has no live output
    ae.decoder.params[0][ae.decoder.mask[0] == 0] = 0
    before = _network_output(ae, X)
    ops.propagate_dead_units(ae.encoder, ae.decoder, 0, 0)
    assert not e.weight(0, 1, "mask")[:, 3].any()
    assert not ae.decoder.weight(0, 0, "mask")[5].any() and ae.decoder.bias(0, 0, "mask")[5] == 0
    np.testing.assert_array_equal(_network_output(ae, X), before)


# ------------------------------------------------------------------ schedules


@pytest.mark.parametrize("name, t, T, n, expected", [
    ("fixed", 3, 10, 3, 0.5),
    ("increase", 3, 10, 3, 0.15),
    ("decrease", 3, 10, 3, 0.85),
    ("decrease", 0, 10, 3, 1.0),
    ("population", 3, 10, 3, 0.05),
    ("exponential", 5, 10, 3, 0.5 * (1 - math.exp(-1))),
    ("exponential", 0, 10, 3, 0.0),
    ("final_n", 7, 10, 3, 0.0),
    ("final_n", 8, 10, 3, 0.5),
    ("prune_after", 9, 10, 3, 0.0),
    ("prune_after", 10, 10, 3, 0.5),
])
def test_schedules(name, t, T, n, expected):
    assert schedules.probability(name, 0.5, t, T, n) == pytest.approx(expected)


@pytest.mark.parametrize("name", list(schedules.SCHEDULES))
def test_schedules_with_T_zero_do_not_divide_by_zero(name):
    p = schedules.probability(name, 0.5, 0, 0, 3)
    assert 0.0 <= p <= 1.0


def test_unknown_schedule():
    with pytest.raises(ConfigError, match="schedule"):
        schedules.probability("sometimes", 0.5, 0, 1)


# ------------------------------------------------------- training with pruning


@pytest.mark.parametrize("operator", ["random", "variance", "conjunctive", "magnitude"])
def test_pruned_weights_stay_exactly_zero_during_training(operator):
    cfg = TrainConfig(epochs=8, operator=operator, schedule="fixed", prune_probability=1.0,
                      seed=1, **SMALL)
    run = CanonicalRun(cfg)
    masks = []
    for _ in range(cfg.epochs):
        run.run_epoch()
        for half in (run.model.encoder, run.model.decoder):
            dead = half.mask[0] == 0
            assert np.all(half.params[0][dead] == 0)
            assert np.all(half.m[0][dead] == 0) and np.all(half.v[0][dead] == 0)
        masks.append(np.concatenate([run.model.encoder.mask[0], run.model.decoder.mask[0]]))
    for a, b in zip(masks, masks[1:]):
        assert not np.any(b > a)  # permanent: nothing regrows
    assert masks[-1].sum() < masks[0].size
    assert sum(run.history["pruned"]) == masks[0].size - masks[-1].sum()
    assert run.history["preserved"][-1] == pytest.approx(masks[-1].mean())


def test_pruning_event_follows_schedule():
    run = CanonicalRun(TrainConfig(epochs=4, operator="random", schedule="prune_after",
                                   prune_probability=1.0, **SMALL))
    run.run()
    # default profile: T = epochs - 1, so prune_after fires once, after the last epoch
    assert run.history["pruned"][:3] == [0, 0, 0] and run.history["pruned"][3] > 0
    run = CanonicalRun(TrainConfig(epochs=4, operator="random", schedule="prune_after",
                                   prune_probability=1.0, schedule_t="reference", **SMALL))
    run.run()
    # the reference's canonical T = epochs: prune_after never fires within epochs 0..T-1
    assert run.history["pruned"] == [0, 0, 0, 0]
    run = CanonicalRun(TrainConfig(epochs=4, operator="random", schedule="fixed",
                                   prune_probability=0.0, **SMALL))
    run.run()
    assert sum(run.history["pruned"]) == 0


def test_summary_reports_sparsity_and_flops():
    run = CanonicalRun(TrainConfig(epochs=5, operator="random", schedule="fixed",
                                   prune_probability=1.0, prune_amount=0.2, **SMALL))
    s = run.run()
    pres = preserved(run.model)
    assert s["preserved"] == pytest.approx(pres["total"])
    assert s["preserved"] < 0.5
    assert s["preserved_encoder"] == pytest.approx(pres["encoder"])
    assert s["preserved_decoder"] == pytest.approx(pres["decoder"])
    fl = flops(run.model)
    assert s["flops"] == fl["masked"] < s["flops_dense"] == fl["dense"]
    assert s["flops_dense"] == sum(2 * i * o + o for i, o in [(60, 30), (30, 10), (10, 30), (30, 60)])


# ------------------------------------------------------------------ compaction


def test_compact_removes_dead_units_and_reconstructs_identically():
    run = CanonicalRun(TrainConfig(epochs=6, operator="conjunctive", schedule="fixed",
                                   prune_probability=1.0, threshold=0.5, seed=3, **SMALL))
    run.run()
    model = run.model
    small = compact(model)
    X = run.data.test
    np.testing.assert_allclose(small.reconstruct(X), model.reconstruct(X), rtol=1e-5, atol=1e-6)
    assert small.widths[0] == small.widths[-1] == 60
    assert small.n_params < model.n_params
    assert small.flops == flops(model)["compacted"] <= flops(model)["dense"]


def test_compact_of_handmade_masks():
    ae = _trained_like(4)
    e, d = ae.encoder, ae.decoder
    e.weight(0, 0, "mask")[[1, 4]] = 0  # two hidden units with no inputs...
    e.bias(0, 0, "mask")[[1]] = 0       # ...unit 1 also has no bias -> outputs 0
    d.weight(0, 1, "mask")[:, 6] = 0    # decoder hidden unit 6 unused
    for h in (e, d):
        h.params[0][h.mask[0] == 0] = 0
    X = np.random.default_rng(0).random((5, 9)).astype(np.float32)
    small = compact(ae)
    assert small.widths == [9, 6, 4, 6, 9]  # unit 1 and decoder unit 6 removed; unit 4 (bias) kept
    np.testing.assert_allclose(small.reconstruct(X), ae.reconstruct(X), rtol=1e-5, atol=1e-6)


def test_useless_units_fixed_point():
    """One rule for pruning and compaction (``metrics.useless_units``)."""
    from sparseae.metrics import useless_units

    # 3 -> 4 -> 2 -> 3: hidden unit 0 of layer 1 has no live input and a pruned
    # bias, unit 3 has no live output; so unit 1 of layer 2, fed only by unit
    # 0, and with a pruned bias, becomes useless once unit 0 is gone
    w1 = np.ones((4, 3), bool)
    b1 = np.ones(4, bool)
    w1[0] = False
    b1[0] = False
    w2 = np.zeros((2, 4), bool)
    w2[0, 1:3] = True
    w2[1, 0] = True
    b2 = np.array([True, False])
    w3 = np.ones((3, 2), bool)
    w3[:, :] = True
    b3 = np.ones(3, bool)
    u1, u2 = useless_units([(w1, b1), (w2, b2), (w3, b3)])
    assert u1.tolist() == [True, False, False, True]
    assert u2.tolist() == [False, True]
    assert w1[0].sum() == 0 and w2.sum() == 3  # the inputs are not modified


@pytest.mark.parametrize("seed", range(4))
def test_propagation_and_compaction_remove_the_same_units(seed):
    ae = Autoencoder("12,9,5", seed=seed)
    rng = np.random.default_rng(seed)
    for h in (ae.encoder, ae.decoder):
        h.mask[0][rng.random(h.n) < 0.55] = 0
        h.params[0][h.mask[0] == 0] = 0.0
    small = compact(ae)
    ops.propagate_dead_units(ae.encoder, ae.decoder, 0, 0)
    # after propagation, a unit is live iff compaction kept it
    live_hidden = [int((ae.encoder.weight(0, 0, "mask").any(1) |
                        ae.encoder.bias(0, 0, "mask").astype(bool)).sum())]
    assert small.widths[1] <= live_hidden[0]
    assert small.flops == flops(ae)["compacted"]
    x = rng.random((6, 12)).astype(np.float32)
    np.testing.assert_allclose(small.reconstruct(x), ae.reconstruct(x), atol=1e-5)


def test_arena_copy_and_take():
    ae = Autoencoder("7,5,3", seed=1)
    a = ae.encoder.take([0, 0, 0])
    assert a.population == 3 and np.array_equal(a.params[2], ae.encoder.params[0])
    a.params[1, 0] += 1.0  # a copy: the source is untouched
    assert a.params[1, 0] != ae.encoder.params[0, 0]
    b = ae.encoder.copy()
    for key, arr in ae.encoder.arrays().items():
        assert np.array_equal(getattr(b, key), arr) and getattr(b, key) is not arr
