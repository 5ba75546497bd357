"""The gecco25 profile: each switch pinned on a small constructed case."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sparseae import Autoencoder, CanonicalRun, Dataset, LipiRun, TrainConfig, binary_clustering
from sparseae import operators as ops
from sparseae.cli.main import main
from sparseae.config import GECCO25
from sparseae.metrics import preserved

TINY = dict(clusters=3, dim=30, per_cluster=6, batch_size=3, epochs=3)


def test_gecco25_profile_settings():
    c = TrainConfig.from_profile("gecco25", paradigm="lipi")
    assert (c.epochs, c.lr, c.batch_size, c.population, c.radius) == (400, 1e-5, 5, 10, 1)
    assert (c.threshold, c.prune_probability, c.prune_amount, c.seed) == (0.1, 0.5, 0.1, 1)
    assert c.adam == "fresh" and c.regrowth and c.data_quirks and not c.structural
    assert c.random_scope == "all" and c.variance_direction == "high"
    assert c.variance_draws == "per_entry" and c.heldout_source == "test_reference"
    assert c.schedule_t == "reference" and c.prune_output_bias
    assert TrainConfig.from_profile("gecco25", paradigm="canonical").adam == "persistent"
    assert TrainConfig.from_profile("gecco25", operator="variance").prune_probability == 0.1
    # one switch flipped at a time; explicit fields win over the profile
    c = TrainConfig.from_profile("gecco25", regrowth=False, prune_probability=0.3)
    assert not c.regrowth and c.prune_probability == 0.3 and c.data_quirks
    d = TrainConfig.from_profile("default")
    assert not d.regrowth and d.structural and d.adam == "persistent"
    assert set(GECCO25) <= {f for f in TrainConfig.__dataclass_fields__}


def test_schedule_final_epoch_conventions():
    assert TrainConfig(paradigm="canonical", epochs=10).final_epoch() == 9
    assert TrainConfig(paradigm="lipi", epochs=10).final_epoch() == 9
    ref = dict(epochs=10, schedule_t="reference")
    assert TrainConfig(paradigm="canonical", **ref).final_epoch() == 10
    assert TrainConfig(paradigm="lipi", **ref).final_epoch() == 9


# --------------------------------------------------------------------- data


def test_data_quirks():
    d = binary_clustering(n_clusters=4, dim=3000, per_cluster=8, noise=0.05, seed=3, quirks=True)
    centroids = d.train.reshape(8, 4, 3000).mean(axis=0) > 0.5
    assert 0.72 < centroids.mean() < 0.78  # Binomial(2, .5) read as a boolean
    for split in (d.test, d.validation):
        blocks = split.reshape(4, 8, 3000)  # n_clusters blocks of per_cluster rows
        assert all(np.array_equal(blocks[0], blocks[k]) for k in range(1, 4))
    tb = d.train.reshape(4, 8, 3000)
    assert not np.array_equal(tb[0], tb[1])  # training noise is fresh everywhere
    plain = binary_clustering(4, 3000, 8, 0.05, seed=3)
    assert 0.47 < (plain.train.reshape(8, 4, 3000).mean(0) > 0.5).mean() < 0.53
    assert not np.array_equal(plain.test[:8], plain.test[8:16])


def test_quirky_data_is_what_the_profile_trains_on():
    run = CanonicalRun(TrainConfig.from_profile("gecco25", paradigm="canonical", **TINY))
    blocks = run.data.test.reshape(3, 6, 30)
    assert np.array_equal(blocks[0], blocks[2])


# -------------------------------------------------------------- operators


def test_variance_direction_default_low_gecco25_high():
    spread = np.array([0.0, 1.0])  # unit 0 low spread, unit 1 high
    mask = np.ones((2, 200), np.uint8)
    t = np.zeros((2, 200))
    rng = np.random.default_rng(0)
    low = ops.variance_mask(t, mask, 0.2, spread, rng)
    assert (low[0] == 0).sum() > 5 * (low[1] == 0).sum()  # default: low-spread unit loses more
    high = ops.variance_mask(t, mask, 0.2, spread, rng, direction="high", draws="per_entry")
    assert (high[1] == 0).sum() == 200 and (high[0] == 0).sum() == 0  # reference: p = norm(s)


def test_variance_per_entry_draws_ignore_amount():
    spread = np.array([0.0, 0.5, 1.0])
    mask = np.ones((3, 4000), np.uint8)
    rng = np.random.default_rng(1)
    for amount in (0.0, 0.9):
        new = ops.variance_mask(np.zeros((3, 4000)), mask, amount, spread, rng,
                                direction="high", draws="per_entry")
        frac = 1 - new.mean(axis=1)
        np.testing.assert_allclose(frac, [0.0, 0.5, 1.0], atol=0.03)


def test_random_scope_all_counts_already_zero_entries():
    mask = np.ones(100, np.uint8)
    mask[:50] = 0
    rng = np.random.default_rng(2)
    assert ops.random_mask(np.zeros(100), mask, 0.1, rng).sum() == 50 - 5  # 10% of the live 50
    hits = np.zeros(100)
    for _ in range(500):
        hits += 1 - ops.random_mask(np.zeros(100), np.ones(100, np.uint8), 0.1, rng, scope="all")
    assert np.all(hits > 0)  # every entry can be drawn
    new = ops.random_mask(np.zeros(100), mask, 0.1, rng, scope="all")
    assert new.sum() <= 50 and new.sum() >= 40  # 10 of all 100 drawn, some already pruned


def test_random_scope_matters_under_regrowth():
    """With regrowth the masks stay full, so the live entries are the nonzero
    ones: ``live`` zeroes exactly ``round(0.1 * nonzero)`` entries of every
    tensor, ``all`` draws ``round(0.1 * size)`` of every entry, already-zero
    ones included, so it zeroes a random number of new ones."""
    def tensors(ae):
        return [get(0, l) for h in (ae.encoder, ae.decoder) for l in range(h.n_layers)
                for get in (h.weight, h.bias)]

    got = {"live": [], "all": []}
    for seed in range(12):
        for scope in got:
            ae = Autoencoder("40,12,4", seed=seed)
            rng = np.random.default_rng(seed)
            for h in (ae.encoder, ae.decoder):
                h.params[0][rng.random(h.n) < 0.5] = 0.0  # half of every row already zero
            nonzero = [int((t != 0).sum()) for t in tensors(ae)]
            ops.prune_pair("random", ae.encoder, ae.decoder, 0, 0, 0.1, rng, regrowth=True,
                           random_scope=scope, structural=False, output_bias=True)
            assert ae.encoder.mask.all() and ae.decoder.mask.all()
            newly = [n - int((t != 0).sum()) for n, t in zip(nonzero, tensors(ae))]
            want = [int(round(0.1 * n)) for n in nonzero]
            got[scope].append(newly == want)
    assert all(got["live"])
    assert not any(got["all"])


def test_regrowth_zeroes_without_masking_and_counts_zeros():
    ae = Autoencoder("9,7,4", seed=0)
    for h in (ae.encoder, ae.decoder):
        h.m[0] = 0.5
    n = ops.prune_pair("random", ae.encoder, ae.decoder, 0, 0, 0.2, np.random.default_rng(0),
                       regrowth=True, random_scope="all", structural=False, output_bias=True)
    for h in (ae.encoder, ae.decoder):
        assert h.mask.all()  # nothing is masked: pruned weights may regrow
        assert h.m[0].min() == 0.5  # Adam state untouched
        assert h.zeros[0] == np.count_nonzero(h.params[0] == 0) > 0
    assert n == ae.encoder.zeros[0] + ae.decoder.zeros[0]
    p = preserved(ae, zeros=True)
    assert p["total"] == pytest.approx(1 - n / ae.n_params)
    assert preserved(ae)["total"] == 1.0  # the masks say nothing was pruned


def test_regrowth_lets_pruned_weights_train_again():
    cfg = TrainConfig(paradigm="canonical", operator="random", schedule="fixed",
                      prune_probability=1.0, regrowth=True, random_scope="all", **TINY)
    run = CanonicalRun(cfg)
    run.run_epoch()
    zeroed = run.model.encoder.params[0] == 0
    assert zeroed.sum() >= 0.09 * run.model.encoder.n
    run.run_epoch()
    regrown = zeroed & (run.model.encoder.params[0] != 0)
    assert regrown.sum() > 0.5 * zeroed.sum()
    assert run.history["preserved"][-1] < 1.0 and run.model.encoder.mask.all()


def test_heldout_source_test_reference_draws_test_rows_1_to_n_minus_1(monkeypatch):
    from sparseae.kernels import cpu

    rng = np.random.default_rng(0)
    rows = np.linspace(0, 1, 12 * 30, dtype=np.float32).reshape(12, 30)
    data = Dataset(rng.random((12, 30)), rows, rng.random((12, 30)))
    captured = []
    real = cpu.conjunctive_marks

    def spy(pe, le, pd, ld, X, thr):
        captured.append(X.copy())
        return real(pe, le, pd, ld, X, thr)

    monkeypatch.setattr(cpu, "conjunctive_marks", spy)
    cfg = TrainConfig(paradigm="canonical", operator="conjunctive", schedule="fixed",
                      prune_probability=1.0, heldout=200, heldout_source="test_reference",
                      epochs=1, batch_size=3)
    CanonicalRun(cfg, data).run()
    X = captured[-1]  # (earlier calls: the kernels' warm-up)
    assert X.shape == (200, 30)
    matches = [[np.array_equal(x, r) for r in rows] for x in X]
    which = np.array([m.index(True) for m in matches])
    assert which.min() >= 1 and which.max() <= 11  # never row 0
    # 200 draws with replacement from rows 1..11: every row drawn, about equally
    counts = np.bincount(which, minlength=12)[1:]
    assert counts.min() >= 5 and counts.max() <= 40
    captured.clear()
    cfg = cfg.replace(heldout_source="validation", heldout=12)
    CanonicalRun(cfg, data).run()
    assert sorted(map(tuple, captured[-1])) == sorted(map(tuple, data.validation))


def test_structural_switch():
    marks_e = np.zeros(11, np.uint8)
    marks_e[0] = 1
    for structural, dead_cols in ((True, 4), (False, 0)):
        ae = Autoencoder("9,7,4", seed=1)
        ops.prune_pair("conjunctive", ae.encoder, ae.decoder, 0, 0, 0.1, None, marks_e=marks_e,
                       marks_d=np.zeros(ae.decoder.n_units, np.uint8), structural=structural)
        assert (ae.encoder.weight(0, 1, "mask")[:, 0] == 0).sum() == dead_cols


# --------------------------------------------------------------- runs, CLI


def test_gecco25_lipi_run_uses_fresh_adam_and_zero_accounting():
    cfg = TrainConfig.from_profile("gecco25", paradigm="lipi", population=3, lr=1e-3,
                                   operator="random", schedule="fixed", prune_probability=1.0,
                                   **TINY)
    run = LipiRun(cfg)
    s = run.run()
    assert not run.encoders.m.any() and not run.encoders.v.any()  # fresh Adam every step
    assert (run.encoders.step == 1).all()
    assert run.encoders.mask.all()
    assert s["preserved"] < 1.0  # zeros at the lineage's last event
    assert s["mean_l1"] == pytest.approx(np.mean([run.centre(k).l1(run.data.train)
                                                  for k in range(3)]))
    assert run.history["figure_epoch"] == [0] and len(run.history["mean_l1"]) == 1


def test_cli_profile_flag():
    r = CliRunner().invoke(main, ["train", "--profile", "gecco25", "--paradigm", "canonical",
                                  "--clusters", "3", "--dim", "30", "--per-cluster", "6",
                                  "--epochs", "2", "--batch-size", "3", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["epochs"] == 2 and "mean_l1" in s
    r = CliRunner().invoke(main, ["train", "--profile", "paper"])
    assert r.exit_code == 2 and "--profile" in r.output


def test_gecco25_variance_cells_use_p0_0_1_in_mixed_rings(monkeypatch):
    """The reference's VARIANCE P0 is 0.1, the other operators' 0.5 -- also in a ring
    that mixes them, whichever operator comes first (it was 0.1 for every cell when
    VARIANCE came first, 0.5 for every cell otherwise)."""
    from sparseae import coevolution

    for names in ("random,variance", "variance,random"):
        c = TrainConfig.from_profile("gecco25", paradigm="lipi", operator=names)
        assert (c.p0("variance"), c.p0("random"), c.prune_probability) == (0.1, 0.5, 0.5)
    pure = TrainConfig.from_profile("gecco25", operator="variance")
    assert pure.p0("variance") == 0.1 and pure.variance_probability is None
    seen, current = {}, {}
    real = coevolution.probability

    def spy(schedule, p0, *a):
        seen.setdefault(current["operator"], p0)
        return real(schedule, p0, *a)

    monkeypatch.setattr(coevolution, "probability", spy)
    run = LipiRun(TrainConfig.from_profile(
        "gecco25", paradigm="lipi", operator="variance,random", population=4, epochs=1,
        clusters=2, dim=20, per_cluster=5, arch="20,6,3"))
    real_finish = run.finish_cell

    def finish(ctx):
        current["operator"] = ctx["operator"]
        return real_finish(ctx)

    run.finish_cell = finish
    run.run_epoch()
    assert seen == {"variance": 0.1, "random": 0.5}


def test_validate_returns_a_copy_and_leaves_the_config_alone():
    c = TrainConfig(arch=[9, 5, 3], operator=["random", "variance"], lr=None, dim=9)
    v = c.validate()
    assert (c.arch, c.operator, c.lr, c.prune_probability) == ([9, 5, 3],
                                                                ["random", "variance"], None, None)
    assert (v.arch, v.operator, v.lr, v.prune_probability) == ("9,5,3", "random,variance",
                                                                3e-3, 0.05)
    assert v.validate() is v  # already valid: nothing to change
