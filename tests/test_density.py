"""Pruning to a density: cubic schedule, ERK allocation, exact per-tensor counts,
prune-and-regrow, permanent masks in the final phase, the config fields."""

import numpy as np
import pytest

from sparseae import TrainConfig
from sparseae.compress import compress
from sparseae.data import binary_clustering
from sparseae.density import (DEFAULT_ALLOCATION, MIN_FANIN, allocate, counts_for, cubic_density,
                              prune_to, row_quotas, tensors)
from sparseae.errors import ConfigError
from sparseae.evaluation import model_l1
from sparseae.model import Autoencoder
from sparseae.runs import make_run

TINY = dict(clusters=3, dim=40, per_cluster=5)
OPS = ("random", "variance", "conjunctive", "magnitude")


def live_counts(enc, dec, ie=0, id_=0, output_bias=False):
    out = []
    for a, l, b in tensors(enc, dec, output_bias):
        i = ie if a is enc else id_
        out.append(int((a.bias(i, l, "mask") if b else a.weight(i, l, "mask")).sum()))
    return out


def test_cubic_schedule_matches_hand_values():
    # d = target + (1 - target) (1 - p)^3, p = (t - start T) / ((end - start) T)
    assert cubic_density(0, 100, 0.1, 0.0, 0.5) == 1.0
    assert cubic_density(25, 100, 0.1, 0.0, 0.5) == pytest.approx(0.1 + 0.9 * 0.125)
    assert cubic_density(10, 100, 0.2, 0.0, 0.4) == pytest.approx(0.2 + 0.8 * 0.75 ** 3)
    assert cubic_density(50, 100, 0.1, 0.0, 0.5) == 0.1
    assert cubic_density(99, 100, 0.1, 0.0, 0.5) == 0.1
    assert cubic_density(10, 100, 0.1, 0.2, 0.6) == 1.0  # before the window
    assert cubic_density(40, 100, 0.3, 0.2, 0.6) == pytest.approx(0.3 + 0.7 * 0.125)
    # non-increasing over the run
    d = [cubic_density(t, 40, 0.05, 0.1, 0.8) for t in range(41)]
    assert all(a >= b for a, b in zip(d, d[1:])) and d[-1] == 0.05


def test_erk_allocation_is_exact_and_favours_small_layers():
    shapes = [(30, 1000), (30,), (10, 30), (10,), (30, 10), (30,), (1000, 30)]
    sizes = [int(np.prod(s)) for s in shapes]
    for budget in (0, 1, 777, 3000, 12345, sum(sizes) - 1, sum(sizes)):
        c = allocate(shapes, budget, "erk")
        assert int(c.sum()) == budget
        assert all(0 <= k <= n for k, n in zip(c, sizes))
    c = allocate(shapes, 30000, "erk")
    assert c[2] == 300 and c[4] == 300  # the bottleneck layers stay dense
    assert c[0] / 30000 < 0.5 and abs(int(c[0]) - int(c[6])) <= 1
    c = allocate(shapes, 6000, "erk")  # a smaller share of the wide layers survives
    assert c[2] / 300 > 2 * c[0] / 30000


@pytest.mark.parametrize("operator", OPS)
def test_target_density_reached_exactly_per_tensor_canonical(operator):
    run = make_run(TrainConfig(paradigm="canonical", operator=operator, epochs=6, seed=3,
                               target_density=0.2, density_end=0.5, **TINY))
    s = run.run()
    e, d = run.model.encoder, run.model.decoder
    _, counts = counts_for(e, d, 0.2)
    assert live_counts(e, d) == [int(k) for k in counts]
    assert e.mask[0].sum() + d.mask[0].sum() == round(0.2 * (e.n + d.n))
    assert s["preserved"] == pytest.approx(round(0.2 * (e.n + d.n)) / (e.n + d.n))
    # pruned entries are exactly 0 (parameters and Adam moments)
    for a in (e, d):
        dead = a.mask[0] == 0
        assert not a.params[0][dead].any() and not a.m[0][dead].any() and not a.v[0][dead].any()


def test_target_density_in_lipi_every_centre_and_regrow():
    run = make_run(TrainConfig(paradigm="lipi", population=3, operator="magnitude,random",
                               epochs=5, seed=1, target_density=0.3, density_end=0.6,
                               regrow="gradient", **TINY))
    run.run()
    E, D = run.encoders, run.decoders
    _, counts = counts_for(E, D, 0.3)
    for k in range(3):
        assert live_counts(E, D, k, k) == [int(c) for c in counts]


def test_schedule_density_each_epoch_and_masks_permanent_after_the_window():
    run = make_run(TrainConfig(paradigm="canonical", operator="magnitude", epochs=9, seed=0,
                               target_density=0.25, density_start=0.0, density_end=0.5,
                               regrow="random", **TINY))
    T = run.config.final_epoch()
    masks = []
    for epoch in range(9):
        run.run_epoch()
        e, d = run.model.encoder, run.model.decoder
        want = cubic_density(epoch, T, 0.25, 0.0, 0.5)
        assert live_counts(e, d) == [int(c) for c in counts_for(e, d, want)[1]]
        masks.append(np.concatenate([e.mask[0], d.mask[0]]))
    first_at_target = int(np.ceil(0.5 * T))
    for m in masks[first_at_target + 1:]:  # no regrowth after the window: masks fixed
        assert np.array_equal(m, masks[first_at_target])


def test_regrow_keeps_live_counts_and_new_entries_start_at_zero():
    data = binary_clustering(3, 40, 5, 0.05, 0)
    m = Autoencoder((40, 30, 10), seed=2)
    rng = np.random.default_rng(0)
    e, d = m.encoder, m.decoder
    prune_to("magnitude", e, d, 0, 0, 0.3, rng)
    before = live_counts(e, d)
    mask0 = np.concatenate([e.mask[0], d.mask[0]]).copy()
    e.m[0][e.mask[0] == 1] = 0.5  # moments of live entries: regrown ones must get 0
    e.v[0][e.mask[0] == 1] = 0.5
    for kind in ("gradient", "random"):
        prune_to("random", e, d, 0, 0, 0.3, rng, regrow=kind, regrow_amount=0.2,
                 grow_rows=data.train)
        assert live_counts(e, d) == before
    mask1 = np.concatenate([e.mask[0], d.mask[0]])
    params = np.concatenate([e.params[0], d.params[0]])
    grown = (mask0 == 0) & (mask1 == 1)
    assert grown.sum() > 0
    assert not params[grown].any()
    assert not e.m[0][(mask0[:e.n] == 0) & (e.mask[0] == 1)].any()
    assert not e.v[0][(mask0[:e.n] == 0) & (e.mask[0] == 1)].any()


def test_gradient_regrow_picks_the_largest_gradients():
    from sparseae.density import gradients

    data = binary_clustering(3, 40, 5, 0.05, 0)
    m = Autoencoder((40, 30, 10), seed=4)
    e, d = m.encoder, m.decoder
    prune_to("magnitude", e, d, 0, 0, 0.4, np.random.default_rng(0))
    g = gradients(e, d, 0, 0, data.train)[0][0]  # encoder layer 0 weight
    mask_before = e.weight(0, 0, "mask").copy()
    prune_to("magnitude", e, d, 0, 0, 0.4, np.random.default_rng(0), regrow="gradient",
             regrow_amount=0.1, grow_rows=data.train)
    grown = (mask_before == 0) & (e.weight(0, 0, "mask") == 1)
    pruned_now = e.weight(0, 0, "mask") == 0
    assert grown.sum() > 0
    # every regrown entry has a gradient at least as large as any entry left pruned
    # that was not pruned in this event
    left = pruned_now & (mask_before == 0)
    assert np.abs(g[grown]).min() >= np.abs(g[left]).max()


def test_gradients_match_finite_differences():
    from sparseae.density import gradients

    data = binary_clustering(3, 40, 5, 0.05, 0)
    m = Autoencoder((40, 30, 10), seed=5)
    X = data.train[:8]
    g = gradients(m.encoder, m.decoder, 0, 0, X)
    w = m.decoder.weight(0, 1)
    for (r, c) in ((0, 0), (3, 7), (39, 29)):
        old = float(w[r, c])
        w[r, c] = old + 1e-2
        up = m.l1(X)
        w[r, c] = old - 1e-2
        down = m.l1(X)
        w[r, c] = old
        assert g[3][0][r, c] == pytest.approx((up - down) / 2e-2, abs=2e-4)


@pytest.mark.parametrize("operator", OPS)
def test_final_phase_reaches_density_and_pruned_weights_stay_zero(operator):
    data = binary_clustering(3, 40, 5, 0.05, 0)
    m = Autoencoder((40, 30, 10), seed=1)
    small, info = compress(m, data, 0.15, operator, 6, seed=3)
    e, d = small.encoder, small.decoder
    assert live_counts(e, d) == [int(c) for c in counts_for(e, d, 0.15)[1]]
    assert info["preserved"] == pytest.approx(round(0.15 * m.n_params) / m.n_params)
    for a in (e, d):
        assert not a.params[0][a.mask[0] == 0].any()
    again, info2 = compress(m, data, 0.15, operator, 6, seed=3)
    assert np.array_equal(again.encoder.params, e.params)
    assert info2["test_l1"] == info["test_l1"]
    # the input model is not changed
    assert m.encoder.mask.all() and m.decoder.mask.all()


def test_final_phase_with_fanin_allocation():
    data = binary_clustering(3, 40, 5, 0.05, 0)
    m = Autoencoder((40, 30, 10), seed=1)
    small, info = compress(m, data, 0.15, "magnitude", 6, seed=3, allocation="fanin")
    e, d = small.encoder, small.decoder
    assert live_counts(e, d) == [int(c) for c in counts_for(e, d, 0.15, allocation="fanin")[1]]
    assert info["allocation"] == "fanin"
    for a in (e, d):
        assert not a.params[0][a.mask[0] == 0].any()
        for l in range(a.n_layers):
            rows = a.weight(0, l, "mask").sum(axis=1)
            assert rows.max() - rows.min() <= 1


def test_final_density_in_a_run_summary():
    run = make_run(TrainConfig(paradigm="lipi", population=3, operator="random", epochs=2,
                               seed=0, final_density=0.3, finetune_epochs=2, **TINY))
    s = run.run()
    assert s["final_preserved"] == pytest.approx(0.3, abs=1e-3)
    assert s["final_operator"] == "random" and "final_cell" in s
    assert set(("final_test_l1", "final_test_l1_before", "final_flops")) <= set(s)
    # the centre compressed is the one of lowest validation L1, never chosen on the test split
    val = [model_l1(run.centre(k), run.data.validation) for k in range(run.n_cells)]
    assert s["final_cell"] == int(np.argmin(val))
    test = [model_l1(run.centre(k), run.data.test) for k in range(run.n_cells)]
    assert s["final_test_l1_before"] == pytest.approx(test[s["final_cell"]], rel=1e-6)


def test_final_refit_in_a_run_summary():
    cfg = dict(paradigm="canonical", operator="magnitude", epochs=3, seed=0,
               final_density=0.08, finetune_epochs=2, **TINY)
    plain = make_run(TrainConfig(**cfg)).run()
    s = make_run(TrainConfig(final_refit=True, **cfg)).run()
    assert isinstance(s["final_refit"], bool) and "final_refit" not in plain
    assert s["final_preserved"] == plain["final_preserved"]  # the same budget
    assert s["final_test_l1_before"] == plain["final_test_l1_before"]
    if not s["final_refit"]:
        assert s["final_test_l1"] == plain["final_test_l1"]


@pytest.mark.parametrize("fields, name", [
    (dict(target_density=0.0), "target_density"),
    (dict(target_density=1.5), "target_density"),
    (dict(target_density="x"), "target_density"),
    (dict(target_density=0.2, operator="none"), "target_density"),
    (dict(density_start=1.0), "density_start"),
    (dict(density_start=0.5, density_end=0.5), "density_end"),
    (dict(density_end=0.0), "density_end"),
    (dict(regrow="rigl"), "regrow"),
    (dict(regrow="random"), "regrow"),
    (dict(final_density=0.0), "final_density"),
    (dict(final_density=2), "final_density"),
    (dict(final_operator="none"), "final_operator"),
    (dict(finetune_epochs=-1), "finetune_epochs"),
    (dict(finetune_epochs=1.5), "finetune_epochs"),
    (dict(finetune_lr=0), "finetune_lr"),
    (dict(final_refit="yes"), "final_refit"),
])
def test_new_config_fields_are_validated(fields, name):
    with pytest.raises(ConfigError, match=f"^{name}:"):
        TrainConfig(**fields).validate()


def test_target_density_refuses_regrowing_profile_and_works_in_files(tmp_path):
    with pytest.raises(ConfigError, match="^target_density:.*regrowth"):
        TrainConfig.from_profile("gecco25", paradigm="lipi", operator="random",
                                 target_density=0.2)
    TrainConfig.from_profile("gecco25", paradigm="lipi", operator="random", target_density=0.2,
                             regrowth=False)
    p = tmp_path / "c.toml"
    p.write_text('paradigm = "canonical"\noperator = "magnitude"\ntarget_density = 0.1\n'
                 'regrow = "gradient"\nfinal_density = 0.05\n')
    c = TrainConfig.from_toml(p)
    assert (c.target_density, c.regrow, c.final_density) == (0.1, "gradient", 0.05)
    assert c.final_op() == "magnitude"
    assert TrainConfig(operator="none", paradigm="canonical").validate().final_op() == "magnitude"


def test_global_allocation_keeps_the_largest_weights_over_all_tensors():
    m = Autoencoder((40, 30, 10), seed=6)
    e, d = m.encoder, m.decoder
    ts = tensors(e, d)
    mags = np.concatenate([np.abs(a.bias(0, l) if b else a.weight(0, l)).ravel()
                           for a, l, b in ts])
    fixed = e.n + d.n - mags.size
    keep = round(0.2 * (e.n + d.n)) - fixed
    thresh = np.sort(mags)[::-1][keep - 1]
    prune_to("magnitude", e, d, 0, 0, 0.2, np.random.default_rng(0), allocation="global")
    assert e.mask[0].sum() + d.mask[0].sum() == round(0.2 * (e.n + d.n))
    masks = np.concatenate([(a.bias(0, l, "mask") if b else a.weight(0, l, "mask")).ravel()
                            for a, l, b in ts])
    # global magnitude pruning: live exactly where |w| was among the largest (no ties here)
    assert np.array_equal(masks == 1, mags >= thresh)
    c = TrainConfig(paradigm="canonical", operator="random", target_density=0.3,
                    density_allocation="global", epochs=3, **TINY).validate()
    run = make_run(c)
    run.run()
    e, d = run.model.encoder, run.model.decoder
    assert e.mask[0].sum() + d.mask[0].sum() == round(0.3 * (e.n + d.n))
    with pytest.raises(ConfigError, match="^density_allocation:"):
        TrainConfig(density_allocation="uniform").validate()


def test_fanin_allocation_gives_every_unit_the_same_fan_in():
    assert TrainConfig().density_allocation == DEFAULT_ALLOCATION == "fanin"  # one default
    shapes = [(30, 1000), (30,), (10, 30), (10,), (30, 10), (30,), (1000, 30)]
    sizes = [int(np.prod(s)) for s in shapes]
    for budget in (0, 1, 777, 6113, 30000, sum(sizes) - 1, sum(sizes)):
        c = allocate(shapes, budget, "fanin")
        assert int(c.sum()) == budget and all(0 <= k <= n for k, n in zip(c, sizes))
    c = allocate(shapes, 6113, "fanin")
    # about 5.7 inputs per unit: the 1000 output units get 1000/30 of the first layer's
    assert [int(c[k]) for k in (1, 3, 5)] == [30, 10, 30]  # biases (fan-in 1) stay whole
    per_unit = [c[k] / shapes[k][0] for k in (0, 2, 4, 6)]
    assert max(per_unit) - min(per_unit) < 1.0, per_unit
    assert abs(per_unit[0] - 5.7) < 0.3


def test_fanin_floor_keeps_the_narrow_layers_alive():
    # default architecture at density 0.05: 2,084 prunable live entries
    shapes = [(30, 1000), (30,), (10, 30), (10,), (30, 10), (30,), (1000, 30)]
    c = allocate(shapes, 2084, "fanin")
    assert int(c.sum()) == 2084
    f = c[6] / 1000  # the widest layer's fan-in
    assert 1.6 < f < 1.9
    for k in (0, 2, 4):  # the narrow layers keep min(4, 2 f) inputs per unit (to rounding)
        assert abs(c[k] / shapes[k][0] - min(MIN_FANIN, 2 * f)) <= 1.0 / shapes[k][0] + 1e-9
    assert [int(c[k]) for k in (1, 3, 5)] == [30, 10, 30]
    c = allocate(shapes, 2700, "fanin")  # fan-in over 2: the floor itself
    assert [int(c[k]) for k in (0, 2, 4)] == [120, 40, 120] and int(c[6]) == 2350
    # every count falls with the budget (to one entry of rounding), and the sum is exact
    prev = None
    for budget in range(3000, 0, -7):
        c = allocate(shapes, budget, "fanin")
        assert int(c.sum()) == budget
        if prev is not None:
            assert np.all(c <= prev + 1), (budget, prev, c)
        prev = c


def test_row_quotas_are_even_and_exact():
    assert row_quotas([5, 5, 5], 7).tolist() == [3, 2, 2]
    assert row_quotas([1, 9, 9, 0], 10).tolist() == [1, 5, 4, 0]  # short rows keep all
    assert row_quotas([4, 4], 0).tolist() == [0, 0]
    assert row_quotas([4, 4], 8).tolist() == [4, 4]
    rng = np.random.default_rng(3)
    for _ in range(50):
        live = rng.integers(0, 12, size=rng.integers(1, 9))
        keep = int(rng.integers(0, live.sum() + 1))
        q = row_quotas(live, keep)
        assert q.sum() == keep and np.all(q <= live)
        full = q < live  # rows that gave something up are within one of each other
        if full.any():
            assert q[full].max() - q[full].min() <= 1 and np.all(q[~full] <= q[full].max() + 1)


@pytest.mark.parametrize("operator", OPS)
def test_fanin_pruning_is_balanced_per_unit_and_exact(operator):
    m = Autoencoder((40, 30, 10), seed=8)
    m0 = Autoencoder((40, 30, 10), seed=8)  # the weights before pruning
    scores = (np.random.default_rng(1).random(40), np.random.default_rng(2).random(70))
    if operator == "conjunctive":
        scores = tuple(s > 0.5 for s in scores)

    def prune(model):
        prune_to(operator, model.encoder, model.decoder, 0, 0, 0.2, np.random.default_rng(0),
                 allocation="fanin", scores_e=scores[0], scores_d=scores[1])

    prune(m)
    e, d = m.encoder, m.decoder
    _, counts = counts_for(e, d, 0.2, allocation="fanin")
    assert live_counts(e, d) == [int(k) for k in counts]
    for a, a0 in ((e, m0.encoder), (d, m0.decoder)):
        dead = a.mask[0] == 0
        assert not a.params[0][dead].any()
        assert np.array_equal(a.params[0][~dead], a0.params[0][~dead])
        for l in range(a.n_layers):
            mask = a.weight(0, l, "mask").astype(bool)
            rows = mask.sum(axis=1)
            assert rows.max() - rows.min() <= 1, (l, rows)  # one fan-in for every unit
            if operator in ("magnitude", "conjunctive"):  # each unit keeps its largest |w|
                w = np.abs(a0.weight(0, l))
                for r in range(mask.shape[0]):
                    if mask[r].any() and (~mask[r]).any():
                        assert w[r][mask[r]].min() >= w[r][~mask[r]].max()
    again = Autoencoder((40, 30, 10), seed=8)
    prune(again)  # the same draws give the same masks
    assert np.array_equal(again.encoder.mask, e.mask)
    assert np.array_equal(again.decoder.mask, d.mask)


def test_sweep_specs_take_the_new_fields():
    from sparseae.sweep.spec import parse_spec

    spec = parse_spec({"base": {"paradigm": "canonical", "operator": "magnitude", **TINY},
                       "grid": {"target_density": [0.5, 0.2], "regrow": ["none", "gradient"]},
                       "variant": [{"name": "final", "final_density": 0.1,
                                    "finetune_epochs": 2}]})
    assert len(spec.variants) == 5
    assert {v.config.target_density for v in spec.variants} == {0.5, 0.2, None}
    with pytest.raises(ConfigError, match="regrow"):
        parse_spec({"base": {"operator": "random"}, "grid": {"regrow": ["random"]}})


def test_a_density_below_the_output_biases_share_is_refused():
    # 40 output biases of 3,110 parameters are never pruned: 0.01 cannot be reached
    with pytest.raises(ConfigError, match="^target_density: must be >= 0.01286"):
        make_run(TrainConfig(paradigm="canonical", operator="magnitude", target_density=0.01,
                             epochs=2, **TINY))
    make_run(TrainConfig(paradigm="canonical", operator="magnitude", target_density=0.01,
                         prune_output_bias=True, epochs=2, **TINY))
    data = binary_clustering(3, 40, 5, 0.05, 0)
    with pytest.raises(ConfigError, match="^density: must be >="):
        compress(Autoencoder((40, 30, 10), seed=1), data, 0.01, "magnitude", 0)
