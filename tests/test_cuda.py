"""The numba.cuda kernels (``sparseae.kernels.cuda``) against the CPU kernels.

The CPU kernels are checked against the float64 oracle in ``test_kernels.py``;
here every CUDA entry point must agree with them, per network, on fresh random
inputs of odd sizes, under numba's CUDA simulator (no GPU needed).

The simulator has to be switched on (``NUMBA_ENABLE_CUDASIM=1``) before
``numba.cuda`` is first imported, and this pytest process also runs the CPU
suite with real numba.  So the simulator cases run in a child pytest process
(this file again, with ``SPARSEAE_CUDASIM_SUITE=1`` in its environment), and
the parent only runs that child plus two checks of the no-GPU behaviour, each
in its own fresh interpreter.  To run the simulator cases directly::

    SPARSEAE_CUDASIM_SUITE=1 python -m pytest -q tests/test_cuda.py

Shapes are tiny (the simulator runs every GPU thread as a Python thread) and
the threads per block are patched small so that every kernel runs several
blocks of several warps, with idle warps and partial batches.
"""

import os
import subprocess
import sys
from pathlib import Path

_SUITE = os.environ.get("SPARSEAE_CUDASIM_SUITE") == "1"
if _SUITE:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    # the simulator's barrier busy-polls its threads; a short switch interval
    # makes a syncthreads about 10x cheaper
    sys.setswitchinterval(1e-4)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _child_env(**extra):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.pop("SPARSEAE_CUDASIM_SUITE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in
                                                      env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra)
    return env


if not _SUITE:

    def _run_python(code, **env):
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_child_env(**env),
                              capture_output=True, text=True, timeout=300)

    def test_import_does_not_initialise_cuda():
        r = _run_python(
            "import sys\n"
            "import sparseae.kernels.cuda as k\n"
            "assert k.cuda is None, 'numba.cuda bound at import'\n"
            "bad = [m for m in sys.modules if m == 'numba.cuda' or m.startswith('numba.cuda.')]\n"
            "assert not bad, bad\n"
            "print('ok', k.TPB_TRAIN)\n")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("ok")

    def test_require_without_gpu_is_one_clear_error():
        r = _run_python(
            "import numpy as np\n"
            "from sparseae.kernels import cuda as k\n"
            "ok, why = k.available()\n"
            "if ok:\n"
            "    print('GPU', why)\n"
            "    raise SystemExit(0)\n"
            "for f in (k.require, lambda: k.evaluate_l1_many(np.zeros((1, 1)), np.zeros((1, 7), np.int64),"
            " np.zeros((1, 1)), np.zeros((1, 7), np.int64), np.zeros((1, 1)))):\n"
            "    try:\n"
            "        f()\n"
            "    except RuntimeError as e:\n"
            "        assert str(e) == why, (str(e), why)\n"
            "    else:\n"
            "        raise AssertionError('no error')\n"
            "print('NOGPU', why)\n")
        assert r.returncode == 0, r.stdout + r.stderr
        if r.stdout.startswith("GPU"):
            pytest.skip("a CUDA GPU is present: " + r.stdout.strip())
        line = r.stdout.strip()
        assert line.startswith("NOGPU cuda: ") and "\n" not in line
        assert "no CUDA GPU found" in line or "cannot be imported" in line, line

    def test_simulator_suite():
        """Every case below ``if _SUITE`` in a child process under the simulator."""
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
             str(Path(__file__).resolve())],
            cwd=ROOT, env=_child_env(SPARSEAE_CUDASIM_SUITE="1"), capture_output=True,
            text=True, timeout=900)
        out = r.stdout + r.stderr
        assert r.returncode == 0, "simulator suite failed:\n" + out[-8000:]
        assert " passed" in out and "skipped" not in out.splitlines()[-1], out[-2000:]


else:
    from numba.core import config as _nb_config

    if not _nb_config.ENABLE_CUDASIM:
        pytest.skip("numba was imported before NUMBA_ENABLE_CUDASIM=1 could take effect",
                    allow_module_level=True)

    import oracle
    from sparseae._options import ADAM_BETAS, ADAM_EPS
    from sparseae.kernels import cpu
    from sparseae.kernels import cuda as ck
    from sparseae.kernels.contract import AdamConfig, Half
    from sparseae.model import Architecture, Arena

    F32 = np.float32
    B1, B2 = ADAM_BETAS
    EPS = ADAM_EPS
    P = 3
    # both storage orientations in both halves; a first encoder layer stored
    # (in, out) (no fused next-batch forward); three layers per half
    SIZES = [(7, 5, 3), (4, 6, 3), (6, 4, 5, 2)]

    @pytest.fixture(autouse=True)
    def small_blocks(monkeypatch):
        """Two warps per block, so rows spread over warps with idle warps."""
        monkeypatch.setattr(ck, "TPB_TRAIN", 64)
        monkeypatch.setattr(ck, "TPB_EVAL", 64)
        monkeypatch.setattr(ck, "EVAL_CHUNK", 4)

    # ------------------------------------------------------------- helpers

    def population(sizes, seed, prune=0.25, adam_state=False):
        arch = Architecture(sizes)
        E = Arena(arch.encoder_shapes(), P)
        D = Arena(arch.decoder_shapes(), P)
        rng = np.random.default_rng(seed)
        E.init(rng)
        D.init(rng)
        for a in (E, D):
            dead = rng.random(a.params.shape) < prune
            a.mask[dead] = 0
            a.params[dead] = 0.0
        # no hidden layer may go entirely dead: then every sample of a batch has
        # the same output, weight gradients cancel to a rounding residue (with
        # or without FMA) and Adam, which normalises the gradient, amplifies it
        # into a visible difference.  Live positive biases keep units on.
        hidden = [(E, l) for l in range(E.n_layers)] + [(D, l) for l in range(D.n_layers - 1)]
        for a, l in hidden:
            b0, n_out = int(a.table[l, 3]), int(a.table[l, 1])
            a.mask[:, b0] = 1
            a.params[:, b0:b0 + n_out] = (np.abs(a.params[:, b0:b0 + n_out]) + 0.2) * \
                a.mask[:, b0:b0 + n_out]
        for a in (E, D):
            if adam_state:  # a run in progress: moments and different step counts
                a.m[...] = (rng.normal(size=a.m.shape) * 1e-3).astype(F32) * a.mask
                a.v[...] = (rng.random(a.v.shape) * 1e-5).astype(F32) * a.mask
                a.step[...] = rng.integers(0, 9, P)
        return E, D

    def data(rng, N, D):
        return rng.uniform(0.0, 1.0, (N, D)).astype(F32)

    def cpu_epoch(E, D, X, orders, bs, lrs, fresh, se, sd, with_stats):
        return np.array([
            cpu.train_epoch(E.half(p), D.half(p), X, orders[p], bs, lrs[p],
                            AdamConfig(B1, B2, EPS, fresh), (se[p], sd[p]), with_stats)
            for p in range(E.population)])

    def gpu_epoch(E, D, X, orders, bs, lrs, fresh, se, sd, with_stats):
        every = slice(0, E.population)
        return ck.train_epoch_many(E.half(every), D.half(every), X, orders, bs, lrs,
                                   AdamConfig(B1, B2, EPS, fresh), (se, sd), with_stats)

    def assert_same_state(ga, ca, fresh):
        """Same Adam state as the CPU kernels.  The tolerance on the weights is
        the CPU suite's against the oracle: Adam divides the gradient by its
        own size, so a gradient near ``eps`` turns float32 rounding of the sums
        (different order, with or without FMA) into ~1e-5 differences."""
        for g, c in ((ga, ca),):
            np.testing.assert_allclose(g.params, c.params, rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(g.step, c.step)
            if fresh:
                assert not g.m.any() and not g.v.any()
            else:
                np.testing.assert_allclose(g.m, c.m, rtol=1e-4, atol=1e-7)
                np.testing.assert_allclose(g.v, c.v, rtol=1e-4, atol=1e-10)
            dead = g.mask == 0
            assert np.all(g.params[dead] == 0.0)
            assert np.all(g.m[dead] == 0.0) and np.all(g.v[dead] == 0.0)

    # ------------------------------------------------------------- training

    @pytest.mark.parametrize("fresh", [False, True])
    @pytest.mark.parametrize("sizes", SIZES)
    def test_train_epoch_many_matches_cpu(sizes, fresh):
        seed = 40 + 7 * sizes[0] + fresh
        # fresh: the moments start nonzero and must come back 0 (host arrays are
        # zeroed on the host, the kernel gets (P, 1) stand-ins)
        E, D = population(sizes, seed, adam_state=True)
        if fresh:
            assert E.m.any() and D.v.any()
        cE, cD = Arena.copy(E), Arena.copy(D)
        rng = np.random.default_rng(seed + 1)
        N, bs = 8, 3  # batches 3, 3, 2
        X = data(rng, N, sizes[0])
        # moderate rates: a large one kills every code unit of a tiny pruned
        # network, and then identical outputs make some weight gradients cancel
        # to a rounding residue that fresh Adam (about lr * sign(g)) amplifies
        lrs = np.array([3e-3, 1e-3, 5e-3])
        ue, ud = E.n_units, D.n_units
        se, sd = rng.normal(size=(P, ue, 3)), rng.normal(size=(P, ud, 3))  # accumulate onto these
        cse, csd = se.copy(), sd.copy()
        p0 = E.params.copy()
        for epoch, with_stats in enumerate([True, False]):
            orders = np.stack([rng.permutation(N) for _ in range(P)])
            if epoch == 1:
                orders = orders[:, :7]  # n = 7 < N: batches 3, 3, 1
            loss = gpu_epoch(E, D, X, orders, bs, lrs, fresh, se, sd, with_stats)
            ref = cpu_epoch(cE, cD, X, orders, bs, lrs, fresh, cse, csd, with_stats)
            assert loss.shape == (P,) and loss.dtype == np.float64
            np.testing.assert_allclose(loss, ref, rtol=1e-5)
            assert_same_state(E, cE, fresh)
            assert_same_state(D, cD, fresh)
            np.testing.assert_allclose(se, cse, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(sd, csd, rtol=1e-5, atol=1e-6)
        assert np.abs(E.params - p0).max() > 1e-3  # it trained
        codes = [cpu.forward_half(E.params[p], E.table, X, 8) for p in range(P)]
        assert all(c.any() for c in codes)  # no dead code (see the rates)
        if fresh:
            assert E.step.tolist() == [1] * P and D.step.tolist() == [1] * P

    def test_train_epoch_many_device_arrays_in_place():
        """numba device arrays are updated in place, with the same numbers."""
        c = ck._numba_cuda()
        sizes = (7, 5, 3)
        E, D = population(sizes, 5, adam_state=True)
        hE, hD = Arena.copy(E), Arena.copy(D)
        rng = np.random.default_rng(6)
        X = data(rng, 9, 7)
        orders = np.stack([rng.permutation(9) for _ in range(P)])
        lrs = np.full(P, 1e-2)
        se, sd = np.zeros((P, E.n_units, 3)), np.zeros((P, D.n_units, 3))
        hse, hsd = se.copy(), sd.copy()
        dev = {k: c.to_device(v) for k, v in
               dict(PE=E.params, mE=E.m, vE=E.v, sE=E.step, PD=D.params, mD=D.m, vD=D.v,
                    sD=D.step, se=se, sd=sd).items()}
        loss = ck.train_epoch_many(
            Half(dev["PE"], E.mask, dev["mE"], dev["vE"], dev["sE"], E.table),
            Half(dev["PD"], D.mask, dev["mD"], dev["vD"], dev["sD"], D.table),
            c.to_device(X), c.to_device(orders), 4, lrs, AdamConfig(B1, B2, EPS, False),
            (dev["se"], dev["sd"]), True)
        ref = gpu_epoch(hE, hD, X, orders, 4, lrs, False, hse, hsd, True)
        np.testing.assert_array_equal(loss, ref)
        assert np.array_equal(E.params, Arena.copy(E).params)  # host copy untouched
        for name, want in dict(PE=hE.params, mE=hE.m, vE=hE.v, sE=hE.step, PD=hD.params,
                               mD=hD.m, vD=hD.v, sD=hD.step, se=hse, sd=hsd).items():
            np.testing.assert_array_equal(dev[name].copy_to_host(), want, err_msg=name)

    @pytest.mark.parametrize("tpb,unroll,row_unroll,pipeline", [(32, 1, 3, False),
                                                                 (96, 2, 8, True)])
    def test_train_epoch_many_other_knobs(monkeypatch, tpb, unroll, row_unroll, pipeline):
        """One warp per block and no unrolling (every row runs on one warp and
        every loop takes its tail path); three warps with the software-pipelined
        update loop."""
        monkeypatch.setattr(ck, "TPB_TRAIN", tpb)
        monkeypatch.setattr(ck, "UNROLL", unroll)
        monkeypatch.setattr(ck, "ROW_UNROLL", row_unroll)
        monkeypatch.setattr(ck, "PIPELINE", pipeline)
        sizes = (6, 4, 5, 2)
        E, D = population(sizes, 11)
        cE, cD = Arena.copy(E), Arena.copy(D)
        rng = np.random.default_rng(12)
        X = data(rng, 7, 6)
        orders = np.stack([rng.permutation(7) for _ in range(P)])
        lrs = np.array([1e-2, 2e-2, 5e-3])
        se, sd = np.zeros((P, E.n_units, 3)), np.zeros((P, D.n_units, 3))
        cse, csd = se.copy(), sd.copy()
        loss = gpu_epoch(E, D, X, orders, 2, lrs, False, se, sd, True)
        ref = cpu_epoch(cE, cD, X, orders, 2, lrs, False, cse, csd, True)
        np.testing.assert_allclose(loss, ref, rtol=1e-5)
        assert_same_state(E, cE, False)
        assert_same_state(D, cD, False)
        np.testing.assert_allclose(se, cse, rtol=1e-5, atol=1e-6)

    def test_global_scratch_fallback(monkeypatch):
        """Buffers that do not fit the shared-memory budget live in a global
        scratch row per block: same results."""
        monkeypatch.setattr(ck, "SHARED_BYTES", 0)
        sizes = (4, 6, 3)
        E, D = population(sizes, 21)
        cE, cD = Arena.copy(E), Arena.copy(D)
        rng = np.random.default_rng(22)
        X = data(rng, 8, 4)
        orders = np.stack([rng.permutation(8) for _ in range(P)])
        lrs = np.full(P, 1e-2)
        se, sd = np.zeros((P, E.n_units, 3)), np.zeros((P, D.n_units, 3))
        cse, csd = se.copy(), sd.copy()
        loss = gpu_epoch(E, D, X, orders, 3, lrs, True, se, sd, True)
        ref = cpu_epoch(cE, cD, X, orders, 3, lrs, True, cse, csd, True)
        np.testing.assert_allclose(loss, ref, rtol=1e-5)
        assert_same_state(E, cE, True)
        assert_same_state(D, cD, True)
        np.testing.assert_allclose(se, cse, rtol=1e-5, atol=1e-6)
        got = ck.evaluate_l1_many(E.params, E.table, D.params, D.table, X)
        want = [cpu.evaluate_l1(E.params[p], E.table, D.params[p], D.table, X, 8)
                for p in range(P)]
        np.testing.assert_allclose(got, want, rtol=1e-5)
        me, md = ck.conjunctive_marks_many(E.params, E.table, D.params, D.table, X, 0.6)
        for p in range(P):
            ce, cd = cpu.conjunctive_marks(E.params[p], E.table, D.params[p], D.table, X, 0.6)
            np.testing.assert_array_equal(me[p], ce)
            np.testing.assert_array_equal(md[p], cd)

    def test_train_epoch_many_bad_inputs():
        E, D = population((7, 5, 3), 1)
        X = data(np.random.default_rng(2), 6, 7)
        orders = np.tile(np.arange(6), (P, 1))
        se, sd = np.zeros((P, E.n_units, 3)), np.zeros((P, D.n_units, 3))
        every = slice(0, P)
        args = [E.half(every), D.half(every), X, orders, 3, np.full(P, 1e-3),
                AdamConfig(B1, B2, EPS, False), (se, sd), True]
        bad = list(args)
        # updated in place: the dtype must match
        bad[0] = E.half(every)._replace(params=E.params.astype(np.float64))
        with pytest.raises(TypeError, match="PE must be float32"):
            ck.train_epoch_many(*bad)
        bad = list(args)
        bad[3] = orders[:2]
        with pytest.raises(ValueError, match="orders"):
            ck.train_epoch_many(*bad)
        bad = list(args)
        bad[2] = X[:, :5]
        with pytest.raises(ValueError, match="X must be"):
            ck.train_epoch_many(*bad)

    # ------------------------------------------------------------- evaluation

    @pytest.mark.parametrize("sizes", SIZES)
    def test_all_pairs_l1_matches_cpu(sizes):
        E, Dn, N = 3, 2, 5
        arch = Architecture(sizes)
        PE = Arena(arch.encoder_shapes(), E)
        PD = Arena(arch.decoder_shapes(), Dn)
        rng = np.random.default_rng(70 + sizes[0])
        PE.init(rng)
        PD.init(rng)
        Xb = data(rng, N, sizes[0])
        got = ck.all_pairs_l1(PE.params, PE.table, PD.params, PD.table, Xb)
        want = cpu.all_pairs_l1(PE.params, PE.table, PD.params, PD.table, Xb)
        assert got.shape == (E, Dn) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert len(np.unique(np.round(want, 8))) == E * Dn

    @pytest.mark.parametrize("N", [1, 10])
    def test_evaluate_l1_many_matches_cpu(N):
        E, D = population((4, 6, 3), 80 + N)
        X = data(np.random.default_rng(81 + N), N, 4)  # N = 10: chunks 4, 4, 2
        got = ck.evaluate_l1_many(E.params, E.table, D.params, D.table, X)
        want = [cpu.evaluate_l1(E.params[p], E.table, D.params[p], D.table, X, 3)
                for p in range(P)]
        assert got.shape == (P,) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-6)

    # ------------------------------------------------------------- CONJUNCTIVE

    def safe_threshold(values, lo, hi):
        """The threshold in [lo, hi] farthest from every normalised value."""
        v = np.concatenate([x.ravel() for x in values])
        v = v[np.isfinite(v)]
        cands = np.linspace(lo, hi, 201)
        dist = np.array([np.min(np.abs(v - c)) if v.size else 1.0 for c in cands])
        k = int(np.argmax(dist))
        assert dist[k] > 1e-4, "no threshold with a safe margin; change the seed"
        return float(cands[k])

    def pair_zs(E, D, X):
        """Per pair, the oracle's pre-activations of every layer, in table order."""
        out = []
        for p in range(E.population):
            ze, he = oracle.half_forward(E.shapes, E.params[p], X)
            zd, _ = oracle.half_forward(D.shapes, D.params[p], he[-1])
            out.append(ze + zd)
        return out

    def check_conj(E, D, X, C):
        me, md = ck.conjunctive_marks_many(E.params, E.table, D.params, D.table, X, C)
        assert me.shape == (P, E.n_units) and md.shape == (P, D.n_units)
        assert me.dtype == np.uint8 and md.dtype == np.uint8
        for p in range(P):
            ce, cd = cpu.conjunctive_marks(E.params[p], E.table, D.params[p], D.table, X, C)
            np.testing.assert_array_equal(me[p], ce, err_msg=f"encoder of pair {p}")
            np.testing.assert_array_equal(md[p], cd, err_msg=f"decoder of pair {p}")
        return me, md

    @pytest.mark.parametrize("sizes,N,lo,hi", [((7, 5, 3), 6, 0.15, 0.45),
                                               ((6, 4, 5, 2), 5, 0.5, 0.9)])
    def test_conjunctive_marks_many_random(sizes, N, lo, hi):
        E, D = population(sizes, 90 + N, prune=0.0)
        X = data(np.random.default_rng(91 + N), N, sizes[0])
        zs = pair_zs(E, D, X)
        C = safe_threshold([oracle.normalised(z) for pz in zs for z in pz], lo, hi)
        check_conj(E, D, X, C)
        # the cases exercise the rule: some layer stopped early, some kept marks
        runs = [oracle.conjunctive(z, C) for pz in zs for z in pz]
        assert any(stopped for _, _, stopped in runs)
        assert any(m.any() for m, _, _ in runs)

    def test_conjunctive_marks_many_constructed():
        sizes = (7, 5, 3)
        E, D = population(sizes, 95, prune=0.0)
        X = data(np.random.default_rng(96), 4, 7)
        me, md = check_conj(E, D, X, 1.5)  # every normalised value is < 1.5
        assert me.all() and md.all()
        me, md = check_conj(E, D, X, 0.0)  # nothing is < 0
        assert not me.any() and not md.any()
        # pair 1: the encoder's second layer is constant (all-zero weights and
        # bias): it marks nothing, and the layers after it still run
        w0, b0 = int(E.table[1, 2]), int(E.table[1, 3])
        E.params[1, w0:b0 + 3] = 0.0
        me, md = check_conj(E, D, X, 0.7)
        assert not me[1, 5:].any()
        # no samples: nothing marked
        me, md = ck.conjunctive_marks_many(E.params, E.table, D.params, D.table, X[:0], 0.5)
        assert not me.any() and not md.any()

    # ------------------------------------------------------- lockstep sweeps

    def test_lockstep_sweep_on_cuda_matches_cpu(tmp_path):
        """``sweep --device cuda``: every run of a group advances in one launch
        per step; each run ends as the same run on the CPU, to float32
        rounding (same seeds, same decisions on these tiny runs)."""
        from sparseae import sweep as sw
        from sparseae.report import load_results

        base = dict(clusters=2, dim=7, per_cluster=5, batch_size=3, arch="7,5,3", epochs=2,
                    population=2, schedule="fixed", prune_probability=0.7, lr=3e-3)
        spec = {"trials": 4, "base": base,
                "variant": [{"name": "lipi", "operator": "random"},
                            {"name": "canonical", "paradigm": "canonical",
                             "operator": "variance"}]}
        launches = []
        real = ck.train_epoch_many

        def counting(enc, *args):
            launches.append(enc.params.shape[0])
            return real(enc, *args)

        ck.train_epoch_many = counting
        try:
            gpu = sw.run_sweep(dict(spec, base=dict(base, device="cuda")), tmp_path / "g.h5")
        finally:
            ck.train_epoch_many = real
        assert gpu["lockstep"] and gpu["done"] == 8
        # overlap (the default on cuda): each variant's 4 runs in two groups of 2, one
        # training thread; Lipi: 2 epochs x 2 cells launches per group, canonical: 2
        assert launches == [2] * (2 * 4 + 2 * 2)
        assert gpu["lockstep_timing"]["groups"] == 4
        sw.run_sweep(spec, tmp_path / "c.h5", lockstep=True)
        g = sorted(load_results(tmp_path / "g.h5"), key=lambda r: (r["variant"], r["trial"]))
        c = sorted(load_results(tmp_path / "c.h5"), key=lambda r: (r["variant"], r["trial"]))
        for x, y in zip(g, c):
            assert (x["variant"], x["trial"]) == (y["variant"], y["trial"])
            assert x["summary"]["preserved"] == y["summary"]["preserved"]
            np.testing.assert_allclose(x["summary"]["test_l1"], y["summary"]["test_l1"],
                                       rtol=1e-5)
            for key in ("train_loss", "replacement_loss", "mean_l1"):
                if key in x["history"]:
                    np.testing.assert_allclose(x["history"][key], y["history"][key], rtol=1e-5)

    # ------------------------------------------------------------- backend

    def test_device_cuda_runs_every_kernel_family_on_the_gpu(monkeypatch):
        """A run on ``device="cuda"`` trains, evaluates, forms the all-pairs L1 and
        the CONJUNCTIVE marks with the CUDA kernels (the CPU ones may not be
        called), and ends close to the same run on the CPU."""
        from sparseae import CanonicalRun, LipiRun, TrainConfig, backend

        base = dict(clusters=2, dim=7, per_cluster=5, batch_size=3, arch="7,5,3", epochs=2,
                    schedule="fixed", prune_probability=1.0, lr=3e-3, seed=3,
                    operator="conjunctive", heldout=4)
        calls = []
        for name in ("train_epoch_many", "pairs_l1_many", "evaluate_l1_many",
                     "conjunctive_marks_many", "population_stats_many"):
            real = getattr(ck, name)
            monkeypatch.setattr(ck, name, lambda *a, _f=real, _n=name: (calls.append(_n),
                                                                        _f(*a))[1])
        results = {}
        for device in ("cuda", "cpu"):
            if device == "cuda":
                for name in ("train_epoch", "train_epoch_many", "all_pairs_l1", "evaluate_l1",
                             "conjunctive_marks", "pairs_l1_many", "population_stats_many"):
                    monkeypatch.setattr(
                        cpu, name, lambda *a, _n=name: pytest.fail(f"cpu.{_n} called"))
            else:
                monkeypatch.undo()
            for cls, extra in ((LipiRun, dict(paradigm="lipi", population=2)),
                               (CanonicalRun, dict(paradigm="canonical"))):
                run = cls(TrainConfig(device=device, **base, **extra))
                for _ in range(run.config.epochs):
                    run.run_epoch()
                m = run.centre(0) if cls is LipiRun else run.model
                results[(device, cls.__name__)] = (m.encoder.params.copy(), run.history)
                if device == "cuda":
                    assert run.backend is backend.get("cuda")
        assert set(calls) == {"train_epoch_many", "pairs_l1_many", "evaluate_l1_many",
                              "conjunctive_marks_many", "population_stats_many"}
        for name in ("LipiRun", "CanonicalRun"):
            g, c = results[("cuda", name)], results[("cpu", name)]
            np.testing.assert_allclose(g[0], c[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(np.asarray(g[1]["pruned"]), np.asarray(c[1]["pruned"]))
            assert np.asarray(c[1]["pruned"]).sum() > 0  # CONJUNCTIVE did prune

    def test_eval_on_cuda_computes_each_l1_once_on_the_gpu(monkeypatch, tmp_path):
        """``sparseae eval --device cuda``: every L1 on the GPU, none on the CPU."""
        from sparseae import CanonicalRun, TrainConfig
        from sparseae.runs import evaluate

        cfg = TrainConfig(paradigm="canonical", clusters=2, dim=7, per_cluster=5, batch_size=3,
                          arch="7,5,3", epochs=1, seed=2)
        run = CanonicalRun(cfg)
        run.run_epoch()
        run.save(tmp_path / "c.h5")
        want = evaluate(tmp_path / "c.h5")
        gpu_calls = []
        real = ck.evaluate_l1_many
        monkeypatch.setattr(ck, "evaluate_l1_many",
                            lambda *a: (gpu_calls.append(1), real(*a))[1])
        monkeypatch.setattr(cpu, "evaluate_l1", lambda *a: pytest.fail("cpu.evaluate_l1 called"))
        got = evaluate(tmp_path / "c.h5", device="cuda")
        assert len(gpu_calls) == 3  # test, train, validation
        for key in ("test_l1", "train_l1", "validation_l1"):
            assert got[key] == pytest.approx(want[key], rel=1e-6)


    # ------------------------------------------------------- batched evaluations

    def test_pairs_l1_many_matches_cpu():
        """Many runs' all-pairs evaluations on their own batches in one launch."""
        E, D = population((6, 4, 5, 2), 120)  # P = 3 rows each
        rng = np.random.default_rng(121)
        X = data(rng, 11, 6)
        enc = np.array([[0, 2], [1, 1], [2, 0]])
        dec = np.array([[1, 2, 0], [0, 0, 2], [2, 1, 1]])
        rows = np.stack([rng.choice(11, 5, replace=False) for _ in range(3)])
        got = ck.pairs_l1_many(E.params, E.table, D.params, D.table, X, enc, dec, rows, 5)
        want = cpu.pairs_l1_many(E.params, E.table, D.params, D.table, X, enc, dec, rows, 5)
        assert got.shape == (3, 2, 3) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-6)
        # each entry is that pair's all-pairs L1 on its batch
        for q in range(3):
            ref = cpu.all_pairs_l1(E.params[enc[q]], E.table, D.params[dec[q]], D.table,
                                   X[rows[q]])
            np.testing.assert_array_equal(want[q], ref)

    def test_population_stats_many_matches_cpu():
        E, _ = population((7, 5, 3), 130, prune=0.4)  # P = 3
        params = np.concatenate([E.params, E.params[::-1]])  # 2 populations of 3
        masks = np.concatenate([E.mask, E.mask[::-1]])
        d2, ov = ck.population_stats_many(params, masks, 3)
        cd2, cov = cpu.population_stats_many(params, masks, 3)
        assert d2.shape == ov.shape == (2, 3, 3)
        np.testing.assert_allclose(d2, cd2, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(ov, cov)
        assert np.all(np.diag(ov[0]) == E.mask.sum(axis=1))
