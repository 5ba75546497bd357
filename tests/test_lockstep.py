"""Lockstep groups (sparseae.lockstep) and ``sparseae sweep --lockstep``.

On the CPU a run trained in a lockstep group must end bit-identical to the
same run trained alone: the group only batches the training calls.
"""

import os
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from sparseae import lockstep
from sparseae import sweep as sw
from sparseae.cli.main import main
from sparseae.config import TrainConfig
from sparseae.data import binary_clustering
from sparseae.kernels import cpu
from sparseae.report import load_results
from sparseae.runs import make_run

TINY = dict(clusters=3, dim=23, per_cluster=7, batch_size=3, arch="23,9,3", epochs=3,
            population=3, schedule="fixed", prune_probability=0.7)


def configs():
    """Canonical and Lipi-AE-S runs of both profiles, every operator, sync and async
    cells, two seeds each: four groups."""
    out = []
    for profile, paradigm, operator, sync in [
            ("default", "lipi", "random", False), ("default", "lipi", "variance", False),
            ("gecco25", "lipi", "conjunctive", False), ("default", "lipi", "conjunctive", True),
            ("default", "canonical", "variance", False),
            ("gecco25", "canonical", "conjunctive", False), ("default", "canonical", "none", False)]:
        for seed in (4, 9):
            fields = dict(TINY, paradigm=paradigm, operator=operator, sync_cells=sync, seed=seed)
            if profile == "gecco25":
                fields.update(lr=3e-3, epochs=3)
            out.append(TrainConfig.from_profile(profile, **fields))
    return out


def results(run):
    return {k: v for k, v in run.summary().items() if k not in sw.TIMING_KEYS}, run.history


def assert_same(a, b):
    (sa, ha), (sb, hb) = a, b
    assert sa == sb
    assert ha.keys() == hb.keys()
    for k in ha:
        np.testing.assert_array_equal(np.asarray(ha[k]), np.asarray(hb[k]), err_msg=k)


@pytest.fixture(scope="module")
def alone():
    out = []
    for c in configs():
        run = make_run(c)
        run.run()
        out.append((results(run), run))
    return out


def test_groups_batch_one_call_per_step_and_match_runs_alone(alone, monkeypatch):
    calls = []
    real = cpu.train_epoch_many

    def counting(enc, dec, X, orders, *args):
        calls.append((enc.params.shape[0], orders.shape))  # pairs, orders
        return real(enc, dec, X, orders, *args)

    monkeypatch.setattr(cpu, "train_epoch_many", counting)
    runs = [make_run(c) for c in configs()]
    groups = lockstep.make_groups(runs)
    # Lipi async (persistent Adam), Lipi async (gecco25: fresh Adam), Lipi sync, canonical
    assert [len(g.runs) for g in groups] == [4, 2, 2, 6]
    assert [g.P for g in groups] == [4, 2, 2 * 3, 6]
    n = runs[0].data.train.shape[0]
    for g in groups:  # each distinct dataset once in the group's X (data follow the seed)
        distinct = {(r.config.seed, r.config.data_quirks) for r in g.runs}
        assert g.X.shape[0] == len(distinct) * n
        for j, run in enumerate(g.runs):
            assert np.shares_memory(run.data.train, g.X)
            np.testing.assert_array_equal(run.data.train, g.X[g.offset[j]:g.offset[j] + n])
    assert groups[0].X.shape[0] == 2 * n  # 4 runs, 2 seeds
    done = []
    for g in groups:
        while not g.advance():
            pass
        done += g.runs
    assert len(done) == len(runs)
    # one call per step per group, each training every row of the group
    expected = [(4, (4, n))] * (3 * 3) + [(2, (2, n))] * (3 * 3) + [(6, (6, n))] * 3 * 2
    assert calls == expected
    for run, (want, _) in zip(runs, alone):
        assert_same(results(run), want)


def test_run_lockstep_interleaves_groups_and_reports_each_run(alone):
    runs = [make_run(c) for c in configs()]
    seen = []
    done = lockstep.run_lockstep(runs, on_finish=seen.append, threads=3)  # host work on 3 threads
    assert sorted(map(id, done)) == sorted(map(id, runs)) and seen == done
    # groups take turns: the canonical and sync groups (3 steps) finish first
    assert [r.config.paradigm == "canonical" or r.config.sync_cells for r in done] == \
        [True] * 8 + [False] * 6
    for run, (want, _) in zip(runs, alone):
        assert run.epoch == run.config.epochs
        assert_same(results(run), want)


def test_overlapped_training_thread_changes_nothing(alone, monkeypatch):
    """overlap: each shape split into two groups, training calls on a background
    thread while the other group does its host work.  On the CPU that thread
    trains with the serial kernel: numba's parallel loop beside the host work's
    threads would oversubscribe the cores (and two parallel regions at once
    crash numba's workqueue threading layer)."""
    monkeypatch.setattr(cpu, "train_epoch_many",
                        lambda *a: pytest.fail("parallel kernel beside the host threads"))
    runs = [make_run(c) for c in configs()]
    timing = {}
    done = lockstep.run_lockstep(runs, overlap=True, timing=timing)
    assert len(done) == len(runs)
    # Lipi persistent (4 runs), Lipi fresh (2), Lipi sync (2), canonical (6): two groups each
    assert timing["groups"] == 8
    assert timing["train_calls"] == 2 * (9 + 9 + 3 + 3)
    for run, (want, _) in zip(runs, alone):
        assert_same(results(run), want)


def test_a_failing_training_call_propagates(monkeypatch):
    runs = [make_run(c) for c in configs()[:4]]

    def boom(*a):
        raise RuntimeError("device lost")

    monkeypatch.setattr(cpu, "train_epoch", boom)
    with pytest.raises(RuntimeError, match="device lost"):
        lockstep.run_lockstep(runs, overlap=True)


def test_runs_sharing_a_dataset_share_one_block():
    data = binary_clustering(3, 23, 7, 0.05, 0)
    runs = [make_run(TrainConfig.from_profile("default", **dict(TINY, seed=s)), data)
            for s in range(3)]
    (g,) = lockstep.make_groups(runs)
    assert g.X.shape[0] == data.train.shape[0]
    assert np.all(g.offset == 0)
    # equal data loaded separately (same data seed, other run seeds): one block too
    runs = [make_run(TrainConfig.from_profile("default", **dict(TINY, seed=s, data_seed=5)))
            for s in range(3)]
    (g,) = lockstep.make_groups(runs)
    assert g.X.shape[0] == runs[0].data.train.shape[0]
    assert all(np.shares_memory(r.data.train, g.X) for r in runs)


def test_group_size_cap_splits_groups(alone):
    runs = [make_run(c) for c in configs()[:4]]  # two lipi variants x two seeds
    groups = lockstep.make_groups(runs, max_runs=3)
    assert [len(g.runs) for g in groups] == [2, 2]  # near-equal parts
    assert [len(g.runs) for g in lockstep.make_groups(runs, split=3)] == [1, 2, 1]
    assert [len(g.runs) for g in lockstep.make_groups(runs[:1], split=2)] == [1]
    lockstep.run_lockstep(runs, max_runs=3, threads=1)
    for run, (want, _) in zip(runs, alone[:4]):
        assert_same(results(run), want)


def test_abort_returns_at_the_next_step():
    runs = [make_run(c) for c in configs()[:2]]
    abort = threading.Event()
    abort.set()
    assert lockstep.run_lockstep(runs, abort=abort) == []
    assert all(r.epoch == 0 for r in runs)


def test_lockstep_sweep_equals_workers_sweep(tmp_path):
    spec = {"trials": 2, "base": dict(TINY, operator="random"),
            "grid": {"paradigm": ["canonical", "lipi"]},
            "variant": [{"name": "var", "operator": "variance", "epochs": 2},
                        {"name": "sync", "paradigm": "lipi", "sync_cells": True}]}
    a = sw.run_sweep(spec, tmp_path / "a.h5", workers=1)
    b = sw.run_sweep(spec, tmp_path / "b.h5", lockstep=True)
    assert not a["lockstep"] and b["lockstep"] and b["workers"] == 1
    assert (b["done"], b["abandoned"], b["interrupted"]) == (8, 0, False)
    # groups: canonical (3 epochs), Lipi async (3 x 3 cells), Lipi sync (3), the
    # VARIANCE variant of 2 epochs (2 x 3 cells)
    t = b["lockstep_timing"]
    assert (t["groups"], t["train_calls"]) == (4, 3 + 9 + 3 + 6)
    assert t["train_seconds"] > 0 and t["host_seconds"] > 0
    ra = sorted(load_results(tmp_path / "a.h5"), key=lambda r: (r["variant"], r["trial"]))
    rb = sorted(load_results(tmp_path / "b.h5"), key=lambda r: (r["variant"], r["trial"]))
    assert [(r["variant"], r["trial"]) for r in ra] == [(r["variant"], r["trial"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x["config"] == y["config"]
        assert {k: v for k, v in x["summary"].items() if k not in sw.TIMING_KEYS} == \
            {k: v for k, v in y["summary"].items() if k not in sw.TIMING_KEYS}
        for key in x["history"]:
            np.testing.assert_array_equal(x["history"][key], y["history"][key])
    # a lockstep run's seconds: its own host work (on one of the pool's threads) plus its
    # share of the training calls, so they add up to at most threads x wall, not runs x wall
    threads = os.cpu_count() or 1
    assert 0 < sum(r["seconds"] for r in rb) <= min(threads, 4) * b["wall_seconds"]
    # resuming a finished lockstep sweep runs nothing
    again = sw.run_sweep(spec, tmp_path / "b.h5", lockstep=True)
    assert (again["done"], again["skipped"]) == (0, 8)


def test_lockstep_sweep_abort_and_stop(tmp_path):
    spec = {"trials": 2, "base": dict(TINY, operator="random"),
            "grid": {"paradigm": ["canonical", "lipi"]}}
    abort = threading.Event()
    abort.set()
    stats = sw.run_sweep(spec, tmp_path / "r.h5", lockstep=True, abort=abort)
    assert (stats["done"], stats["abandoned"], stats["interrupted"]) == (0, 0, True)
    assert not (tmp_path / "r.h5").exists()

    # abort once the first run finished: the canonical group (3 training calls)
    # finishes, the Lipi-AE-S group (9) is abandoned
    abort.clear()

    def on_progress(done, total, eta):
        if done:
            abort.set()

    stats = sw.run_sweep(spec, tmp_path / "r.h5", lockstep=True, abort=abort,
                         progress=on_progress)
    assert (stats["done"], stats["abandoned"], stats["interrupted"]) == (2, 2, True)
    assert sorted(r["variant"] for r in load_results(tmp_path / "r.h5")) == \
        ["paradigm=canonical"] * 2

    # stop: the wave in flight finishes, no further wave starts
    stop = threading.Event()
    stats = sw.run_sweep(spec, tmp_path / "s.h5", lockstep=True, lockstep_runs=3, stop=stop,
                         progress=lambda done, total, eta: done and stop.set())
    assert (stats["done"], stats["abandoned"], stats["interrupted"]) == (3, 0, True)
    rest = sw.run_sweep(spec, tmp_path / "s.h5", lockstep=True, lockstep_runs=3)
    assert (rest["done"], rest["skipped"], rest["interrupted"]) == (1, 3, False)
    with pytest.raises(sw.ConfigError, match="lockstep_runs"):
        sw.run_sweep(spec, tmp_path / "t.h5", lockstep=True, lockstep_runs=0)


def test_cli_lockstep_flag(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("trials = 2\n[base]\n" + "\n".join(
        f"{k} = {v!r}".replace("'", '"') for k, v in TINY.items()) + "\n")
    r = CliRunner().invoke(main, ["sweep", str(path), "--lockstep"])
    assert r.exit_code == 0, r.output
    assert "2 runs done" in r.output
    # one group of the two trials: 3 epochs x 3 cells of training calls
    assert "in lockstep: 1 group, 9 training calls" in r.output
    assert len(load_results(tmp_path / "s.h5")) == 2


def test_a_groups_evaluations_are_one_call_per_kind_and_step(alone, monkeypatch):
    """Lipi-AE-S runs ask for their all-pairs L1, replacement L1, population
    statistics and figure metric as requests: a group carries out every run's
    request of a step in one call, and the runs still end as they do alone."""
    calls = []
    real_pairs, real_pop = cpu.pairs_l1_many, cpu.population_stats_many

    def pairs(PE, le, PD, ld, X, enc, dec, rows, chunk):
        calls.append(("pairs", enc.shape, rows.shape[1]))
        return real_pairs(PE, le, PD, ld, X, enc, dec, rows, chunk)

    def pop(params, masks, n):
        calls.append(("population", params.shape[0] // n, n))
        return real_pop(params, masks, n)

    monkeypatch.setattr(cpu, "pairs_l1_many", pairs)
    monkeypatch.setattr(cpu, "population_stats_many", pop)
    lipi = [c for c in configs() if c.paradigm == "lipi" and not c.sync_cells][:2]
    runs = [make_run(c) for c in lipi]  # one group of 2 runs, 3 cells, radius 1
    (g,) = lockstep.make_groups(runs)
    assert g.centres_e.population == 6
    assert np.shares_memory(runs[1].encoders.params, g.centres_e.params)
    lockstep.run_lockstep(runs, threads=1)
    E = runs[0].config.epochs
    # per cell: one all-pairs call for both runs' 3x3 neighbourhoods on 3-sample
    # batches, one replacement call; per epoch: one population call per half; the
    # figure metric after epoch 0: the 2 x 3 centres on the training split
    n_train = runs[0].data.train.shape[0]
    want = []
    for epoch in range(E):
        want += [("pairs", (2, 3), 3), ("pairs", (2, 1), 3)] * 3
        want += [("population", 2, 3)] * 2
        if epoch == 0:
            want.append(("pairs", (6, 1), n_train))
    assert calls == want
    for run, c in zip(runs, lipi):
        ref = next(r for r, cfg in zip(alone, configs()) if cfg == c)
        assert_same(results(run), ref[0])
