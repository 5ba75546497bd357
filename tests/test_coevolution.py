"""Lipi-AE-S: neighbourhoods, selection, the cell loop, determinism, resume."""

import numpy as np
import pytest

from sparseae import ConfigError, TrainConfig
from sparseae.coevolution import LipiRun
from sparseae.ring import best_case_fitness, mutate_lr, neighbourhood, tournament, waves

TINY = dict(paradigm="lipi", clusters=3, dim=40, per_cluster=6, batch_size=3, lr=3e-3,
            population=4, radius=1)


@pytest.mark.parametrize("cell, n, r, expected", [
    (0, 1, 1, [0, 0, 0]),
    (0, 1, 2, [0, 0, 0, 0, 0]),
    (0, 2, 1, [0, 1, 1]),
    (1, 2, 2, [1, 0, 0, 1, 1]),
    (0, 3, 1, [0, 2, 1]),
    (2, 3, 2, [2, 1, 0, 0, 1]),
    (0, 10, 1, [0, 9, 1]),
    (9, 10, 1, [9, 8, 0]),
    (5, 10, 2, [5, 4, 6, 3, 7]),
    (1, 10, 2, [1, 0, 2, 9, 3]),
    (4, 10, 0, [4]),
])
def test_neighbourhood_indices(cell, n, r, expected):
    assert neighbourhood(cell, n, r).tolist() == expected


def test_best_case_fitness_is_row_minimum():
    losses = np.array([[0.5, 0.2, 0.9], [0.3, 0.4, 0.35], [0.8, 0.8, 0.1]])
    assert best_case_fitness(losses).tolist() == [0.2, 0.3, 0.1]


class FixedDraws:
    """Stands in for a Generator whose integers() returns given pairs."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def integers(self, lo, hi, size):
        a, b = self.pairs.pop(0)
        assert 0 <= a < hi and 0 <= b < hi and size == 2
        return np.array([a, b])


def test_tournament_lower_wins_ties_to_second_draw():
    f = np.array([0.2, 0.3, 0.1, 0.3])
    rng = FixedDraws([(0, 1), (1, 0), (1, 3), (3, 1), (2, 2), (0, 2)])
    assert [tournament(f, rng) for _ in range(6)] == [0, 0, 3, 1, 2, 2]


def test_tournament_draws_with_replacement_and_prefers_better():
    rng = np.random.default_rng(0)
    f = np.array([0.1, 0.5, 0.9])
    wins = np.bincount([tournament(f, rng) for _ in range(6000)], minlength=3) / 6000
    # P(win) for rank k of 3 with replacement: best 5/9, middle 3/9, worst 1/9
    np.testing.assert_allclose(wins, [5 / 9, 3 / 9, 1 / 9], atol=0.02)


def test_mutate_lr_is_clipped():
    rng = np.random.default_rng(0)
    assert mutate_lr(1e-9, 1.0, rng) >= 1e-9
    assert mutate_lr(10.0, 100.0, np.random.default_rng(1)) <= 10.0
    assert mutate_lr(0.5, 0.0, rng) == 0.5


def test_mutate_lr_adds_gaussian_noise_of_sigma():
    rng = np.random.default_rng(3)
    lrs = np.array([mutate_lr(1e-3, 1e-5, rng) for _ in range(4000)])
    assert abs(lrs.mean() - 1e-3) < 4 * 1e-5 / np.sqrt(4000)
    assert lrs.std() == pytest.approx(1e-5, rel=0.05)
    # the run's own Generator draws it: the same seed gives the same lr
    assert mutate_lr(1e-3, 1e-5, np.random.default_rng(7)) == \
        1e-3 + np.random.default_rng(7).normal(0.0, 1e-5)


def _state(run):
    return [run.encoders.params.copy(), run.decoders.params.copy(), run.encoders.mask.copy(),
            run.decoders.mask.copy(), run.encoders.m.copy(), run.decoders.v.copy(),
            run.cell_lr.copy(), run.order.copy()]


def test_same_seed_is_bit_identical_and_seeds_differ():
    a = LipiRun(TrainConfig(epochs=3, seed=5, **TINY))
    b = LipiRun(TrainConfig(epochs=3, seed=5, **TINY))
    a.run(), b.run()
    for x, y in zip(_state(a), _state(b)):
        np.testing.assert_array_equal(x, y)
    c = LipiRun(TrainConfig(epochs=3, seed=6, **TINY))
    c.run()
    assert not np.array_equal(a.encoders.params, c.encoders.params)


def test_first_epoch_visits_in_index_order_then_reshuffles():
    run = LipiRun(TrainConfig(epochs=4, population=6, **{k: v for k, v in TINY.items()
                                                        if k != "population"}))
    assert run.order.tolist() == list(range(6))
    run.waves = False  # one cell at a time: the begins follow the visiting order
    visits = []
    orig = run.begin_cell
    run.begin_cell = lambda cell, *a, **k: (visits.append(cell), orig(cell, *a, **k))[1]
    run.run_epoch()
    assert visits == list(range(6))
    orders = []
    for _ in range(3):
        orders.append(run.order.tolist())
        visits.clear()
        run.run_epoch()
        assert visits == orders[-1]
    assert all(sorted(o) == list(range(6)) for o in orders)
    assert any(o != list(range(6)) for o in orders)


@pytest.mark.parametrize("n, r", [(4, 1), (5, 1), (7, 2), (10, 1), (12, 2), (3, 1), (1, 1)])
def test_waves_keep_every_conflict_in_visiting_order(n, r):
    rng = np.random.default_rng(n * 10 + r)
    near = [set(neighbourhood(c, n, r).tolist()) for c in range(n)]
    sizes = []
    for _ in range(200):
        order = rng.permutation(n)
        plan = waves(order, n, r)
        assert sorted(c for w in plan for c in w) == list(range(n))
        at = {c: k for k, w in enumerate(plan) for c in w}
        pos = {int(c): j for j, c in enumerate(order)}
        for w in plan:
            assert [pos[c] for c in w] == sorted(pos[c] for c in w)  # visiting order kept
            assert all(b not in near[a] for a in w for b in w if a != b)  # no conflict inside
        for a in range(n):
            for b in near[a] - {a}:
                if pos[a] < pos[b]:
                    assert at[a] < at[b]  # a conflict runs in visiting order
        for c in range(n):  # every cell runs as early as its conflicts allow
            before = [at[a] for a in near[c] if a != c and pos[a] < pos[c]]
            assert at[c] == 1 + max(before, default=-1)
        sizes.append(len(plan))
    if 2 * r + 1 >= n:
        assert set(sizes) == {n}  # every cell sees every other: one at a time
    else:
        assert min(sizes) < n


@pytest.mark.parametrize("profile, fields", [
    ("default", dict(operator="random,variance,conjunctive,none", schedule="fixed",
                     prune_probability=0.7)),
    ("default", dict(operator="magnitude", target_density=0.5, population=6)),
    ("gecco25", dict(operator="conjunctive,variance,random", schedule="exponential",
                     population=5)),
])
def test_waves_equal_one_cell_at_a_time(profile, fields, monkeypatch):
    import numba

    # waves run on more than one thread (one-thread machines visit one at a time)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    cfg = TrainConfig.from_profile(profile, **dict(TINY, epochs=4, seed=9, **fields))
    together, alone = LipiRun(cfg), LipiRun(cfg)
    alone.waves = False
    widths = []
    orig = together.train_requests
    together.train_requests = lambda ctxs: (widths.append(len(ctxs)), orig(ctxs))[1]
    together.run(), alone.run()
    assert max(widths) >= 2 and len(widths) < 4 * cfg.population  # cells did train together
    for x, y in zip(_state(together), _state(alone)):
        np.testing.assert_array_equal(x, y)
    for k in alone.history:
        np.testing.assert_array_equal(np.asarray(together.history[k]),
                                      np.asarray(alone.history[k]))
    assert together.summary()["centres_test_l1"] == alone.summary()["centres_test_l1"]


def test_waves_can_be_switched_on_after_one_row_work_space():
    run = LipiRun(TrainConfig(epochs=3, seed=4, **TINY))
    run.waves = False
    run.run_epoch()
    run.waves = True  # the work space grows to a row per cell
    run.run_epoch()
    ref = LipiRun(TrainConfig(epochs=3, seed=4, **TINY))
    ref.run_epoch(), ref.run_epoch()
    for x, y in zip(_state(run), _state(ref)):
        np.testing.assert_array_equal(x, y)


def spy_neighbourhoods(monkeypatch) -> list:
    """Record the encoder rows of every neighbourhood's all-pairs evaluation."""
    from sparseae.kernels import cpu

    seen = []
    real = cpu.pairs_l1_many

    def spy(PE, le, PD, ld, X, enc, dec, rows, chunk):
        if enc.shape[1] == 3:  # a neighbourhood's all-pairs (not a replacement's L1)
            seen.append(PE[enc[0]].copy())
        return real(PE, le, PD, ld, X, enc, dec, rows, chunk)

    monkeypatch.setattr(cpu, "pairs_l1_many", spy)
    return seen


def test_later_cell_sees_centres_updated_earlier_in_the_epoch(monkeypatch):
    run = LipiRun(TrainConfig(epochs=1, **TINY))
    initial0 = run.encoders.params[0].copy()
    seen = spy_neighbourhoods(monkeypatch)
    after0 = []
    orig = run.finish_cell

    def finish(ctx):  # a generator: it yields the replacement's evaluation
        rec = yield from orig(ctx)
        after0.append(run.encoders.params[0].copy())
        return rec

    run.finish_cell = finish
    run.run_epoch()  # first epoch: cells 0, 1, 2, 3 in order
    np.testing.assert_array_equal(seen[0][0], initial0)
    # cell 1's neighbourhood is [1, 0, 2]: it sees cell 0's centre as replaced by cell 0's visit
    assert not np.array_equal(after0[0], initial0)
    np.testing.assert_array_equal(seen[1][1], after0[0])


def test_selected_pair_trains_and_replaces_centre(monkeypatch):
    run = LipiRun(TrainConfig(epochs=1, **TINY))
    before = run.encoders.params.copy()
    rec = run.step_cell(2)
    assert not np.array_equal(run.encoders.params[2], before[2])
    for k in (0, 1, 3):
        np.testing.assert_array_equal(run.encoders.params[k], before[k])
    assert rec["selection_loss"] > 0 and rec["replacement_loss"] > 0
    assert run.encoders.step[2] == 6  # 18 samples / batch 3; Adam state travels with the pair


def test_heterogeneous_operators_round_robin():
    cfg = TrainConfig(epochs=1, operator="random,conjunctive", **{**TINY, "population": 5})
    assert cfg.cell_operators() == ["random", "conjunctive", "random", "conjunctive", "random"]
    cfg = TrainConfig(epochs=1, operator=["variance", "none", "magnitude"], **TINY)
    assert cfg.validate().cell_operators() == ["variance", "none", "magnitude", "variance"]
    with pytest.raises(ConfigError, match="operator"):
        TrainConfig(operator="random,foo", **TINY).validate()
    with pytest.raises(ConfigError, match="lipi"):
        TrainConfig(paradigm="canonical", operator="random,conjunctive").validate()


def test_heterogeneous_run_reports_per_operator_and_prunes():
    cfg = TrainConfig(epochs=3, operator="random,none", schedule="fixed", prune_probability=1.0,
                      **TINY)
    run = LipiRun(cfg)
    s = run.run()
    assert set(s["per_operator"]) == {"random", "none"}
    assert s["per_operator"]["random"]["cells"] == [0, 2]
    pruned = np.array(run.history["pruned"])
    assert pruned[:, [0, 2]].min() > 0 and pruned[:, [1, 3]].max() == 0
    for half in (run.encoders, run.decoders):
        dead = half.mask == 0
        assert dead.any() and not half.params[dead].any()


def test_population_history_and_diversity():
    run = LipiRun(TrainConfig(epochs=2, **TINY))
    run.run()
    h = run.history
    assert len(h["selection_loss"]) == 2 and h["selection_loss"][0].shape == (4,)
    assert all(d > 0 for d in h["diversity_encoder"] + h["diversity_decoder"])
    assert h["jaccard_encoder"] == [1.0, 1.0] and h["preserved_decoder"] == [1.0, 1.0]


def test_short_run_beats_initial_l1():
    run = LipiRun(TrainConfig(epochs=8, seed=0, **TINY))
    initial = min(run.centre(k).l1(run.data.test) for k in range(run.n_cells))
    s = run.run()
    assert s["test_l1"] < initial - 0.1
    assert s["test_l1"] == min(s["centres_test_l1"])
    assert len(s["centres_test_l1"]) == 4


@pytest.mark.parametrize("operator", ["none", "random", "variance", "conjunctive"])
def test_resume_equals_uninterrupted(tmp_path, operator):
    cfg = TrainConfig(epochs=5, operator=operator, schedule="fixed", prune_probability=0.7, **TINY)
    full = LipiRun(cfg)
    full.run()
    part = LipiRun(cfg)
    part.run_epoch()
    part.run_epoch()
    part.save(tmp_path / "p.h5")
    resumed = LipiRun.from_checkpoint(tmp_path / "p.h5")
    assert resumed.epoch == 2
    resumed.run()
    for x, y in zip(_state(full), _state(resumed)):
        np.testing.assert_array_equal(x, y)
    for k in full.history:
        np.testing.assert_array_equal(np.asarray(full.history[k]), np.asarray(resumed.history[k]))
    assert full.rng.bit_generator.state == resumed.rng.bit_generator.state


def test_one_epoch_works_with_every_schedule():
    from sparseae.schedules import SCHEDULES

    for schedule in SCHEDULES:
        run = LipiRun(TrainConfig(epochs=1, operator="random", schedule=schedule, **TINY))
        s = run.run()
        assert s["epochs"] == 1


def test_cli_toml_config_assigns_one_operator_per_cell(tmp_path):
    import json

    from click.testing import CliRunner

    from sparseae.cli.main import main

    path = tmp_path / "cells.toml"
    path.write_text('paradigm = "lipi"\npopulation = 4\nepochs = 2\nclusters = 3\ndim = 40\n'
                    'per_cluster = 6\nbatch_size = 3\nheldout = 10\n'
                    'operator = ["random", "conjunctive", "none", "variance"]\n')
    r = CliRunner().invoke(main, ["train", "--config", str(path), "--json", "--seed", "3"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["per_operator"]["conjunctive"]["cells"] == [1]
    assert s["per_operator"]["variance"]["cells"] == [3] and s["epochs"] == 2
    path.write_text("epochs = 0\n")
    r = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert r.exit_code == 2 and "epochs" in r.output
    path.write_text("epoch = [\n")
    r = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert r.exit_code == 2 and "TOML" in r.output


def test_cpu_train_epoch_many_equals_one_pair_at_a_time():
    from sparseae.kernels import cpu
    from sparseae.kernels.contract import AdamConfig, Half
    from sparseae.model import Arena, Architecture

    arch = Architecture((9, 5, 3))
    rng = np.random.default_rng(4)
    P = 3
    E, D = Arena(arch.encoder_shapes(), P), Arena(arch.decoder_shapes(), P)
    E.init(rng), D.init(rng)
    E.mask[1, ::3] = 0
    E.params[E.mask == 0] = 0
    X = rng.random((11, 9)).astype(np.float32)
    orders = np.stack([rng.permutation(11) for _ in range(P)])
    lrs = np.array([1e-3, 3e-3, 1e-2])
    copies = [(E.params.copy(), E.m.copy(), E.v.copy(), E.step.copy(), D.params.copy(),
               D.m.copy(), D.v.copy(), D.step.copy())]
    se, sd = np.zeros((P, E.n_units, 3)), np.zeros((P, D.n_units, 3))
    adam = AdamConfig(0.5, 0.999, 1e-8, False)
    losses = cpu.train_epoch_many(E.half(slice(0, P)), D.half(slice(0, P)), X, orders, 4, lrs,
                                  adam, (se, sd), True)
    pe, me, ve, ste, pd, md, vd, std = copies[0]
    for p in range(P):
        s1, s2 = np.zeros((E.n_units, 3)), np.zeros((D.n_units, 3))
        enc = Half(pe[p], E.mask[p], me[p], ve[p], ste[p:p + 1], E.table)
        dec = Half(pd[p], D.mask[p], md[p], vd[p], std[p:p + 1], D.table)
        loss = cpu.train_epoch(enc, dec, X, orders[p], 4, lrs[p], adam, (s1, s2), True)
        assert loss == losses[p]
        np.testing.assert_array_equal(pe[p], E.params[p])
        np.testing.assert_array_equal(vd[p], D.v[p])
        np.testing.assert_array_equal(s1, se[p])


def test_sync_cells_reads_previous_epoch_centres_and_is_deterministic(monkeypatch):
    cfg = TrainConfig(epochs=2, sync_cells=True, **TINY)
    run = LipiRun(cfg)
    initial = run.encoders.params.copy()
    seen = spy_neighbourhoods(monkeypatch)
    run.run_epoch()
    # every cell of the first epoch selected among the centres as they were before it
    for j, cell in enumerate(range(4)):
        idx = [cell, (cell - 1) % 4, (cell + 1) % 4]
        np.testing.assert_array_equal(seen[j], initial[idx])
    assert not np.array_equal(run.encoders.params, initial)
    monkeypatch.undo()
    run.run_epoch()
    again = LipiRun(cfg)
    again.run()
    np.testing.assert_array_equal(again.encoders.params, run.encoders.params)
    np.testing.assert_array_equal(again.decoders.v, run.decoders.v)
    asynchronous = LipiRun(cfg.replace(sync_cells=False))
    asynchronous.run()
    assert not np.array_equal(asynchronous.encoders.params, run.encoders.params)


def test_cuda_without_gpu_is_one_clear_error():
    from click.testing import CliRunner

    from sparseae.cli.main import main
    from sparseae.kernels import cuda

    if cuda.available()[0]:
        pytest.skip("a usable GPU is present")
    with pytest.raises(ConfigError, match="device: cuda is not usable"):
        LipiRun(TrainConfig(epochs=1, device="cuda", **TINY))
    r = CliRunner().invoke(main, ["train", "--device", "cuda", "--epochs", "1"])
    assert r.exit_code == 2 and "cuda is not usable" in r.output
    assert "Traceback" not in r.output


def test_diversity_and_jaccard_match_pairwise_float64():
    from sparseae.metrics import mean_jaccard as _mean_jaccard
    from sparseae.metrics import mean_pairwise_l2 as _mean_pairwise_l2

    rng = np.random.default_rng(3)
    n, width = 7, 61_673
    rows = rng.uniform(-0.1, 0.1, (n, width)).astype(np.float32)
    rows[3] = rows[2]
    rows[4] = rows[2]
    rows[4, 17] += 1e-3  # near-identical rows: a 1e-3 distance next to norms of ~14
    masks = (rng.random((n, width)) < 0.6).astype(np.uint8)
    masks[5] = 0
    masks[6] = 0  # two empty masks overlap fully
    l2, jac = [], []
    for i in range(n):
        for j in range(i + 1, n):
            d = rows[i].astype(np.float64) - rows[j].astype(np.float64)
            l2.append(np.sqrt(d @ d))
            a, b = masks[i].astype(bool), masks[j].astype(bool)
            union = (a | b).sum()
            jac.append((a & b).sum() / union if union else 1.0)
    assert _mean_jaccard(masks) == pytest.approx(np.mean(jac), rel=1e-12)
    # float64 differences: exact to float64 rounding on every CPU (a float32
    # Gram matrix was off by 3.7e-5 relative on an Intel Xeon)
    assert _mean_pairwise_l2(rows) == pytest.approx(np.mean(l2), rel=1e-12)
    # the near-identical pair alone: its small distance is exact as well
    d = rows[4].astype(np.float64) - rows[2].astype(np.float64)
    assert _mean_pairwise_l2(rows[[2, 4]]) == pytest.approx(np.sqrt(d @ d), rel=1e-12)
    assert _mean_pairwise_l2(rows[[2, 3]]) == 0.0
    assert _mean_pairwise_l2(rows[:1]) == 0.0 and _mean_jaccard(masks[:1]) == 1.0


def test_fresh_adam_moments_stay_zero_in_every_row():
    """The row copies of a fresh-Adam run skip the moments: they must be 0 everywhere."""
    cfg = TrainConfig(epochs=3, adam="fresh", operator="random", prune_probability=0.9,
                      schedule="fixed", **TINY)
    run = LipiRun(cfg)
    run.run()
    for a in (run.encoders, run.decoders) + run.work()[:2]:
        assert not a.m.any() and not a.v.any()
    assert run.encoders.step.tolist() == [1] * run.n_cells
