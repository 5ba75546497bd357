"""Sweeps on Dask (issue 13): ``run_sweep(..., client=...)`` and ``sparseae sweep --cluster``.

One real LocalCluster of 2 single-threaded worker processes serves the module.  Skipped
when the ``distributed`` extra is not installed (CI installs it: ``.[test]``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from cli_util import error_line, invoke  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from sparseae import sweep as sw  # noqa: E402
from sparseae.cli.main import main  # noqa: E402
from sparseae.errors import ClusterError, ConfigError, ResultsError  # noqa: E402
from sparseae.report import load_results  # noqa: E402
from sparseae.sweep import cluster as dc  # noqa: E402
from sparseae.sweep import cluster_settings as cs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(arch="20,6,3", clusters=3, dim=20, per_cluster=5, batch_size=3, population=3,
            epochs=2, operator="random")
#: 9 runs: 6 tiny ones (a few ms) and 3 "slow" Lipi-AE-S runs (about 0.7 s each).
SPEC = {"trials": 3, "base": TINY, "grid": {"paradigm": ["canonical", "lipi"]},
        "variant": [{"name": "slow", "paradigm": "lipi", "epochs": 400}]}
N_RUNS = 9


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture
def cl(client):
    """The module's client with both workers up (a test may have killed one) and the
    task's module imported in them (a restarted worker imports it on its first task)."""
    import importlib

    client.wait_for_workers(2, timeout=60)
    client.run(importlib.import_module, "sparseae.sweep.cluster")
    return client


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same sweep in local worker processes (the pool)."""
    out = tmp_path_factory.mktemp("ref") / "pool.h5"
    stats = sw.run_sweep(SPEC, out, workers=2)
    assert stats["done"] == N_RUNS
    return load_results(out)


def assert_same_runs(path, reference):
    runs = load_results(path)
    assert [(r["variant"], r["trial"]) for r in runs] == \
        [(r["variant"], r["trial"]) for r in reference]
    for x, y in zip(runs, reference):
        assert x["config"] == y["config"]
        assert x["summary"]["test_l1"] == y["summary"]["test_l1"]  # bit for bit
        for key in ("test_l1", "mean_l1", "preserved", "validation_l1"):
            assert x["summary"].get(key) == y["summary"].get(key), key
        assert sorted(x["history"]) == sorted(y["history"])
        for key in x["history"]:
            np.testing.assert_array_equal(x["history"][key], y["history"][key])
    return runs


def sessions(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["sessions"])


def run_count(path):
    """Run groups in the file, counted group by group (a run twice would show)."""
    with h5py.File(path, "r") as f:
        return sum(len(g) for g in f["runs"].values())


def test_dask_sweep_equals_the_local_pool_bit_for_bit(cl, reference, tmp_path):
    events = []
    out = tmp_path / "dask.h5"
    stats = sw.run_sweep(SPEC, out, client=cl, on_event=lambda k, i: events.append((k, i)))
    assert (stats["done"], stats["skipped"], stats["failed"], stats["retried"]) == \
        (N_RUNS, 0, [], 0)
    assert stats["workers"] == 2 and not stats["interrupted"]
    assert stats["cpu_seconds"] > 0 and 0 < stats["efficiency"] <= 1.01
    assert_same_runs(out, reference)
    with h5py.File(out, "r") as f:
        pids = {int(g.attrs["pid"]) for v in f["runs"].values() for g in v.values()}
    assert os.getpid() not in pids and len(pids) <= 2  # ran in the two worker processes
    (session,) = sessions(out)
    assert session["cluster"] == "client" and session["retried"] == 0 and session["failed"] == []
    kinds = [k for k, _ in events]
    assert kinds[0] == "cluster" and kinds.count("started") == N_RUNS
    assert events[0][1]["workers"] == 2 and events[0][1]["dashboard"].startswith("http")
    again = sw.run_sweep(SPEC, out, client=cl)  # a rerun skips every finished run
    assert (again["done"], again["skipped"]) == (0, N_RUNS)


def test_a_worker_killed_mid_run_costs_only_that_run(cl, reference, tmp_path):
    killed = []

    def on_event(kind, info):
        if kind == "started" and (info["variant"], info["trial"]) == ("slow", 0) and not killed:
            killed.append(info["worker"])
            try:  # the worker process ends at once, mid-run: no reply comes
                cl.run(os._exit, 1, workers=[info["worker"]])
            except Exception as exc:  # CommClosedError, or the broadcast's error
                killed.append(type(exc).__name__)

    out = tmp_path / "kill.h5"
    stats = sw.run_sweep(SPEC, out, client=cl, on_event=on_event)
    assert killed and stats["retried"] >= 1
    assert (stats["done"], stats["failed"], stats["interrupted"]) == (N_RUNS, [], False)
    assert run_count(out) == N_RUNS  # every run exactly once
    assert_same_runs(out, reference)
    assert sessions(out)[0]["retried"] == stats["retried"]


def test_an_interrupted_dask_sweep_resumes(cl, reference, tmp_path):
    out = tmp_path / "stop.h5"
    stop = threading.Event()

    def on_event(kind, info):
        if kind == "started" and info["variant"] == "slow":
            stop.set()  # what the CLI's Ctrl-C does; a third slow run cannot have started

    first = sw.run_sweep(SPEC, out, client=cl, stop=stop, on_event=on_event)
    assert first["interrupted"] and 1 <= first["done"] < N_RUNS
    assert run_count(out) == first["done"]
    pending = [r for r in sw.plan(SPEC, out) if not r["done"]]
    assert len(pending) == N_RUNS - first["done"]
    rest = sw.run_sweep(SPEC, out, client=cl)
    assert (rest["done"], rest["skipped"], rest["interrupted"]) == \
        (N_RUNS - first["done"], first["done"], False)
    assert_same_runs(out, reference)


def test_abort_cancels_the_runs_in_flight_and_keeps_the_finished(cl, reference, tmp_path):
    out = tmp_path / "abort.h5"
    abort = threading.Event()

    def on_event(kind, info):
        if kind == "started" and info["variant"] == "slow":
            abort.set()  # a second Ctrl-C, or SIGTERM

    stats = sw.run_sweep(SPEC, out, client=cl, abort=abort, on_event=on_event)
    assert stats["interrupted"] and stats["abandoned"] >= 1 and stats["done"] < N_RUNS
    assert not os.path.exists(out) or run_count(out) == stats["done"]
    sw.run_sweep(SPEC, out, client=cl)
    assert_same_runs(out, reference)


def test_a_run_that_raises_is_recorded_and_the_sweep_goes_on(cl, reference, tmp_path):
    def patch():  # nested: pickled by value to the workers
        import sparseae.sweep.cluster as c

        real = c.__dict__.setdefault("_real_execute", c.execute)

        def failing(config, abort=None):
            if config["seed"] == 1:
                raise RuntimeError("boom in trial 1")
            return real(config, abort)

        c.execute = failing

    def unpatch():
        import sparseae.sweep.cluster as c

        c.execute = c.__dict__.pop("_real_execute", c.execute)

    out = tmp_path / "failed.h5"
    cl.run(patch)
    try:
        with pytest.raises(ResultsError, match=r"^3 runs failed \(recorded in .*first: run "
                                               r"'paradigm=canonical' trial 1 failed: "
                                               r"RuntimeError: boom in trial 1"):
            sw.run_sweep(SPEC, out, client=cl)
    finally:
        cl.run(unpatch)
    assert sorted((r["variant"], r["trial"]) for r in load_results(out)) == sorted(
        (r["variant"], r["trial"]) for r in reference if r["trial"] != 1)
    (session,) = sessions(out)
    assert sorted((f["variant"], f["trial"]) for f in session["failed"]) == \
        [("paradigm=canonical", 1), ("paradigm=lipi", 1), ("slow", 1)]
    assert all(f["error"] == "RuntimeError: boom in trial 1" for f in session["failed"])
    assert not session["interrupted"]
    rest = sw.run_sweep(SPEC, out, client=cl)  # a rerun retries the failed runs
    assert (rest["done"], rest["skipped"]) == (3, 6)
    assert_same_runs(out, reference)


def test_losing_the_scheduler_keeps_a_valid_file_and_resuming_finishes(cl, reference,
                                                                        tmp_path):
    out = tmp_path / "lost.h5"
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    c = distributed.Client(cluster)

    def progress(done, total, eta):
        if done == 1:
            cluster.sync(cluster.scheduler.close)

    try:
        with pytest.raises(ClusterError, match=r"^lost the Dask scheduler .*; the \d runs "
                                               r"finished in this session are in .*lost\.h5: "
                                               r"rerun the same command to resume$"):
            sw.run_sweep(SPEC, out, client=c, progress=progress)
    finally:
        c.close(timeout=2)
        try:
            cluster.close(timeout=2)
        except Exception:  # its scheduler is gone already
            pass
    done = len(load_results(out))  # a valid file with the finished runs
    assert 1 <= done < N_RUNS and run_count(out) == done
    assert sessions(out)[0]["interrupted"]
    rest = sw.run_sweep(SPEC, out, client=cl)
    assert (rest["done"], rest["skipped"]) == (N_RUNS - done, done)
    assert_same_runs(out, reference)


# ------------------------------------------------------------------------------ the CLI

BASE_TOML = ('[base]\narch = "20,6,3"\nclusters = 3\ndim = 20\nper_cluster = 5\nbatch_size = 3\n'
             'population = 3\nepochs = 2\noperator = "random"\n')
CLUSTER_TOML = ('[cluster]\nqueue = "short"\naccount = "proj1"\ncores = 8\nmemory = "16GB"\n'
                'walltime = "01:00:00"\njobs = 4\njob_extra_directives = ["--exclusive"]\n'
                'env = { NUMBA_CACHE_DIR = "/scratch/$USER/numba" }\n')


def test_cli_sweep_on_a_scheduler_address(cl, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("trials = 2\n" + BASE_TOML + CLUSTER_TOML)
    address = cl.scheduler.address
    r = invoke("sweep", path, "--cluster", address)
    assert r.exit_code == 0, r.output
    assert f"cluster: scheduler {address}, 2 workers now, dashboard http" in r.output
    assert "sweep: 2 runs done, 0 skipped (2 in the sweep) -> " in r.output
    assert re.search(r"wall \d+\.\d\d s on 2 Dask workers \(cluster start \d+\.\d s\), runs "
                     r"\d+\.\d\d s \(CPU \d+\.\d\d s\), efficiency \d\.\d\d \(run seconds / "
                     r"\(wall x workers\)\), 0 retried, 0 failed", r.output), r.output
    progress = [x for x in r.output.splitlines() if x.startswith("runs ")]
    assert [x.split()[1] for x in progress] == ["1/2", "2/2"]
    assert all("failed 0" in x for x in progress)
    r = invoke("sweep", path, "--cluster", address, "--json")
    stats = json.loads(r.output)
    assert (stats["done"], stats["skipped"], stats["cluster"]) == (0, 2, address)


@pytest.mark.parametrize("args, needles", [
    (["--cluster", "bogus"], ["--cluster", "local:N, tcp://HOST:PORT, slurm or pbs"]),
    (["--cluster", "local:0"], ["at least 1 worker"]),
    (["--cluster", "local:2", "--workers", "2"], ["--workers", "--cluster local:N"]),
    (["--cluster", "local:2", "--lockstep"], ["--lockstep: not with --cluster"]),
    (["--cluster", "local:2", "--device", "cuda"], ["--device cuda: not with --cluster"]),
    (["--cluster-config", "{cfg}"], ["--cluster-config", "give --cluster too"]),
    (["--cluster", "slurm", "--cluster-config", "{bad}"], ["bad.toml", "unknown key 'cpus'"]),
    (["--cluster", "tcp://127.0.0.1:9", "--set", "cluster.jobs=0"], ["[cluster] jobs",
                                                                    "integer >= 1"]),
])
def test_cli_cluster_errors_are_one_line_exit_2(tmp_path, args, needles):
    path = tmp_path / "s.toml"
    path.write_text(BASE_TOML)
    (tmp_path / "c.toml").write_text(CLUSTER_TOML)
    (tmp_path / "bad.toml").write_text("[cluster]\ncpus = 4\n")
    args = [a.format(cfg=tmp_path / "c.toml", bad=tmp_path / "bad.toml") for a in args]
    error_line(invoke("sweep", path, *args), *needles)
    assert not (tmp_path / "s.h5").exists()


def test_cluster_config_is_checked_together_with_the_specs_table(tmp_path):
    # cores in the spec, threads in --cluster-config: each table alone is valid
    path = tmp_path / "s.toml"
    path.write_text(BASE_TOML + CLUSTER_TOML)
    (tmp_path / "c.toml").write_text("[cluster]\nthreads = 3\n")
    r = invoke("sweep", path, "--cluster", "slurm", "--cluster-config", tmp_path / "c.toml",
               "--dry-run")
    error_line(r, "cores: 8 is not a multiple of threads (3)")
    with pytest.raises(ConfigError, match=r"cores: 8 is not a multiple of threads \(3\)"):
        sw.run_sweep(str(path), tmp_path / "s.h5", cluster="slurm",
                     cluster_config={"threads": 3})
    assert not (tmp_path / "s.h5").exists()


def test_cli_unreachable_scheduler_is_one_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(BASE_TOML)
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        r = CliRunner().invoke(main, ["sweep", str(path), "--cluster", "tcp://127.0.0.1:9"])
    error_line(r, "--cluster tcp://127.0.0.1:9: cannot reach the Dask scheduler")


def test_slurm_and_pbs_job_scripts_from_a_cluster_table(tmp_path):
    pytest.importorskip("dask_jobqueue")
    path = tmp_path / "s.toml"
    path.write_text(BASE_TOML + CLUSTER_TOML)
    spec = sw.load_spec(path)
    script = cs.job_script("slurm", spec.cluster)
    lines = script.splitlines()
    for line in ("#SBATCH -J sparseae", "#SBATCH -p short", "#SBATCH -A proj1", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=15G", "#SBATCH -t 01:00:00",
                 "#SBATCH --exclusive", 'export NUMBA_NUM_THREADS="1"', 'export OMP_NUM_THREADS="1"',
                 'export NUMBA_CACHE_DIR="/scratch/$USER/numba"'):
        assert line in lines, (line, script)
    (command,) = [x for x in lines if "distributed.cli.dask_worker" in x]
    assert " --nthreads 1 " in command and " --nworkers 8 " in command, command
    # two numba threads per run: 4 single-task workers in the same 8-core job
    script = cs.job_script("slurm", dict(spec.cluster, threads=2))
    assert "#SBATCH --cpus-per-task=8" in script and 'export NUMBA_NUM_THREADS="2"' in script
    assert " --nthreads 1 " in script and " --nworkers 4 " in script, script
    script = cs.job_script("pbs", spec.cluster)
    for line in ("#PBS -N sparseae", "#PBS -q short", "#PBS -A proj1",
                 "#PBS -l select=1:ncpus=8:mem=16GB", "#PBS -l walltime=01:00:00"):
        assert line in script.splitlines(), (line, script)
    # --cluster-config overrides the spec's table; --dry-run shows the script
    (tmp_path / "c.toml").write_text('[cluster]\nqueue = "long"\n')
    r = invoke("sweep", path, "--cluster", "slurm", "--cluster-config", tmp_path / "c.toml",
               "--dry-run")
    assert r.exit_code == 0, r.output
    assert "job script (slurm, one per job):" in r.output and "#SBATCH -p long" in r.output
    assert not (tmp_path / "s.h5").exists()
    with pytest.raises(ConfigError, match=r"^\[cluster\] cores and memory: required for "
                                          r"--cluster pbs \(per job\)"):
        cs.job_script("pbs", {"queue": "short"})
    with pytest.raises(ConfigError, match=r"^\[cluster\] cores: 8 is not a multiple of "
                                          r"threads \(3\)$"):
        cs.check_table(dict(spec.cluster, threads=3))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Ctrl-C of a process group (POSIX)")
def test_cli_local_cluster_ctrl_c_exits_130_and_resumes(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group, the workers too: they ignore
    it, the sweep keeps the finished runs and exits 130, and a rerun finishes."""
    path = tmp_path / "s.toml"
    path.write_text("trials = 6\n" + BASE_TOML.replace("epochs = 2", "epochs = 300")
                    + 'paradigm = "lipi"\n')
    cmd = [sys.executable, "-m", "sparseae", "sweep", str(path), "--cluster", "local:2"]
    env = dict(os.environ, PYTHONPATH=ROOT, SPARSEAE_PROGRESS_SECONDS="0")
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        for line in p.stderr:
            lines.append(line)
            if line.startswith("runs 1/6"):
                break
        else:
            pytest.fail("no progress line: " + "".join(lines))
        assert lines[0].startswith("cluster: LocalCluster of 2 worker processes, 2 workers now")
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == 130, (out, err)
    assert "interrupted: finishing the runs in flight" in err
    assert "interrupted: rerun the same command to resume" in err
    done = int(re.search(r"sweep: (\d) runs done", out).group(1))
    assert 1 <= done <= 4 and len(load_results(tmp_path / "s.h5")) == done
    p = subprocess.run(cmd + ["--quiet"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"sweep: {6 - done} runs done, {done} skipped (6 in the sweep)" in p.stdout
    assert len(load_results(tmp_path / "s.h5")) == 6


def test_the_core_never_imports_dask():
    code = ("import sys, sparseae, sparseae.sweep, sparseae.sweep.cluster, sparseae.cli.sweep\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed', 'dask_jobqueue'))\n"
            "assert not bad, bad\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert p.returncode == 0, p.stderr


def test_task_keys_are_stable_and_targets_parse():
    config = {"seed": 3, "epochs": 2}
    assert dc.task_key("v", 3, config) == dc.task_key("v", 3, dict(config))
    assert dc.task_key("v", 3, config) != dc.task_key("v", 3, dict(config, epochs=3))
    assert dc.task_key("v", 3, config)[:3] == ("sparseae-run", "v", 3)
    assert cs.parse_target("local:4") == ("local", 4)
    assert cs.parse_target("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    assert cs.parse_target("node7:8786") == ("address", "node7:8786")
    assert cs.parse_target("slurm") == ("slurm", None)
    with pytest.raises(ConfigError):
        cs.parse_target("local")
