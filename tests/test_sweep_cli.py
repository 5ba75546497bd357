"""``sparseae sweep`` for users (issue 11): --set overrides, --dry-run, paths relative to
the spec, progress in logs, SIGTERM, and no process left behind when a sweep is killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from cli_util import error_line, invoke
from sparseae.data import binary_clustering, save
from sparseae.report import load_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ('[base]\nparadigm = "canonical"\narch = "20,6,3"\nclusters = 3\ndim = 20\n'
        "per_cluster = 6\nepochs = 2\n")


def spec(tmp_path, text=BASE, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_set_overrides_and_dry_run(tmp_path):
    path = spec(tmp_path)
    out = tmp_path / "s.h5"
    args = ["sweep", path, "--set", "base.epochs=3", "--set", "trials=2",
            "--set", "grid.operator=[none,random]", "--set", "base.lr=0.01", "--workers", 1]
    r = invoke(*args, "--dry-run")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split() == ["variant", "trial", "seed", "status"]
    assert [x.split() for x in lines[1:5]] == [["operator=none", "0", "0", "to", "run"],
                                              ["operator=random", "0", "0", "to", "run"],
                                              ["operator=none", "1", "1", "to", "run"],
                                              ["operator=random", "1", "1", "to", "run"]]
    assert lines[-1] == f"4 runs (2 variants), 4 to run -> {out}"
    assert sorted(os.listdir(tmp_path)) == ["s.toml"]  # a dry run writes nothing
    r = invoke(*args[:-2], "--trials", 1, "--workers", 1)
    assert r.exit_code == 0, r.output
    runs = load_results(out)
    assert sorted((x["variant"], x["config"]["epochs"], x["config"]["lr"]) for x in runs) == \
        [("operator=none", 3, 0.01), ("operator=random", 3, 0.01)]
    r = invoke(*args, "--dry-run", "--json")
    plan = json.loads(r.output)
    assert [(x["variant"], x["trial"], x["done"]) for x in plan["runs"]] == [
        ("operator=none", 0, True), ("operator=random", 0, True),
        ("operator=none", 1, False), ("operator=random", 1, False)] and plan["to_run"] == 2
    error_line(invoke("sweep", path, "--set", "epochs"), "--set", "KEY=VALUE")
    error_line(invoke("sweep", path, "--set", "base.epochs=zero"), "(with --set)", "epochs")
    error_line(invoke("sweep", path, "--set", "bogus=1"), "unknown key 'bogus'")


def test_data_in_a_spec_is_relative_to_the_spec(tmp_path):
    folder, elsewhere = tmp_path / "exp", tmp_path / "cwd"
    folder.mkdir(), elsewhere.mkdir()
    save(folder / "d.h5", binary_clustering(3, 20, 6, 0.05, 0))
    path = spec(folder, BASE.replace("clusters = 3\ndim = 20\nper_cluster = 6\n",
                                     'data = "d.h5"\n'))
    p = subprocess.run([sys.executable, "-m", "sparseae", "sweep", str(path), "--workers", "1",
                        "--quiet"], cwd=elsewhere, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    assert os.listdir(elsewhere) == []  # results next to the spec, data found next to it
    (run,) = load_results(folder / "s.h5")
    assert run["config"]["data"] == str(folder / "d.h5")
    r = invoke("sweep", path, "--workers", 1)  # resumed from another folder: nothing to do
    assert r.exit_code == 0 and "0 runs done, 1 skipped" in r.output


@pytest.mark.parametrize("text, needle", [
    ("", "defines no runs"),
    ("trials = 3\n", "defines no runs"),
    (BASE + "[grid]\n", "[grid] is empty"),
    ("trials = 100000000000\n" + BASE, "memory"),
])
def test_empty_or_huge_specs_are_refused(tmp_path, text, needle):
    r = invoke("sweep", spec(tmp_path, text))
    error_line(r, needle)
    assert not (tmp_path / "s.h5").exists()


def test_sweep_progress_lines_in_a_log(tmp_path):
    r = invoke("sweep", spec(tmp_path, "trials = 4\n" + BASE), "--workers", 1)
    assert r.exit_code == 0, r.output
    progress = [x for x in r.output.splitlines() if x.startswith("runs ")]
    assert [x.split()[1] for x in progress] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(re.fullmatch(r"runs \d/4  elapsed \d+:\d\d:\d\d  eta \d+:\d\d:\d\d  best test_l1 "
                            r"so far 0\.\d{4} \(base trial \d\), preserved 1\.000", x)
               for x in progress), progress
    assert "parallel ratio (sum / wall)" in r.output


def _descendants(pid):
    """Pids of every process below ``pid`` (via /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_sweep_leaves_no_process_behind(tmp_path, sig):
    path = spec(tmp_path, "trials = 20\n" + BASE.replace("epochs = 2", "epochs = 100000"))
    p = subprocess.Popen([sys.executable, "-m", "sparseae", "sweep", str(path), "--workers", "2"],
                         cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 4:  # tracker, server, 2 workers
            time.sleep(0.2)
            workers = _descendants(p.pid)
        assert len(workers) >= 4, workers
        time.sleep(1.0)
        p.send_signal(sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_alive, workers)):
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)]
        out, err = p.communicate(timeout=30)
    finally:  # on failure, leave nothing behind either
        p.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        p.communicate()
    if sig == signal.SIGTERM:
        assert p.returncode == 130, err
        assert "terminated: abandoning the runs in flight" in err
        assert "interrupted: rerun the same command to resume" in err
        assert re.search(r"sweep: 0 runs done, 0 skipped \(20 in the sweep, \d+ abandoned\)",
                         out), out
        assert sorted(os.listdir(tmp_path)) == ["s.toml"]  # no lock or temporary file left


def test_sigterm_keeps_the_finished_runs(tmp_path):
    path = spec(tmp_path, "trials = 200\n" + BASE.replace("epochs = 2", "epochs = 2000"))
    p = subprocess.Popen([sys.executable, "-m", "sparseae", "sweep", str(path), "--workers", "1"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT, SPARSEAE_PROGRESS_SECONDS="0"))
    try:
        for line in p.stderr:
            if line.startswith("runs 3/200"):
                break
        else:
            pytest.fail("no progress line 'runs 3/200'")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, err
    done = int(re.search(r"sweep: (\d+) runs done", out).group(1))
    assert done >= 3
    assert len(load_results(tmp_path / "s.h5")) == done
    r = invoke("sweep", path, "--dry-run", "--json")
    assert json.loads(r.output)["to_run"] == 200 - done
