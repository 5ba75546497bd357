"""Sweeps (sparseae.sweep, ``sparseae sweep``) and reports (sparseae.report, ``sparseae report``)."""

import csv
import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from sparseae.cli.main import main
from sparseae.config import TrainConfig
from sparseae.errors import ConfigError
from sparseae.report import load_results, summarize
from sparseae.runs import make_run
from sparseae import sweep as sw

SMALL = dict(clusters=3, dim=30, per_cluster=6, batch_size=3, epochs=2, population=3)
BASE_TOML = "\n".join(f"{k} = {v}" for k, v in SMALL.items())


def write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def strip_timing(summary):
    return {k: v for k, v in summary.items() if k not in sw.TIMING_KEYS}


def mixed_spec(trials=2, **extra):
    """Canonical and Lipi-AE-S variants from a grid, plus an explicit one."""
    spec = {"trials": trials, "base": dict(SMALL, operator="random"),
            "grid": {"paradigm": ["canonical", "lipi"]},
            "variant": [{"name": "lipi-none", "paradigm": "lipi", "operator": "none", "epochs": 3}]}
    spec.update(extra)
    return spec


# ------------------------------------------------------------------------------- spec


def test_grid_expansion_and_names():
    spec = sw.parse_spec({"base": SMALL, "grid": {"operator": ["random", "variance"],
                                                  "schedule": ["fixed", "exponential"],
                                                  "lr": [0.001], "lr_decay": [False]}})
    names = [v.name for v in spec.variants]
    assert names == [f"operator={o},schedule={s},lr=0.001,lr_decay=false"
                     for o in ("random", "variance") for s in ("fixed", "exponential")]
    v = spec.variant("operator=variance,schedule=fixed,lr=0.001,lr_decay=false")
    assert (v.config.operator, v.config.schedule, v.config.lr, v.config.lr_decay) == \
        ("variance", "fixed", 0.001, False)
    assert v.config.epochs == 2 and v.config.dim == 30  # [base] applies to every variant
    assert spec.trials == 1


def test_explicit_variants_alone_or_with_the_grid():
    only = sw.parse_spec({"base": SMALL, "variant": [
        {"name": "a", "operator": "random"}, {"operator": "magnitude", "prune_amount": 0.2}]})
    assert [v.name for v in only.variants] == ["a", "operator=magnitude,prune_amount=0.2"]
    assert only.variants[1].config.prune_amount == 0.2
    both = sw.parse_spec({"base": SMALL, "grid": {"operator": ["random"]},
                          "variant": [{"name": "none", "operator": "none"}]})
    assert [v.name for v in both.variants] == ["operator=random", "none"]
    assert [v.config.operator for v in both.variants] == ["random", "none"]
    assert [v.name for v in sw.parse_spec({"base": SMALL}).variants] == ["base"]
    # a [[variant]] starts from [base] (not from a grid point) and may switch profile
    g = sw.parse_spec({"base": SMALL, "variant": [{"name": "g", "profile": "gecco25", "epochs": 2}]})
    assert g.variants[0].config.profile == "gecco25" and g.variants[0].config.regrowth


def test_seeds_are_base_plus_trial():
    spec = sw.parse_spec({"base": dict(SMALL, profile="gecco25")})
    assert [v.trial_config(t).seed for v, t in spec.runs(30)] == list(range(1, 31))
    spec = sw.parse_spec({"seed": 7, "trials": 3, "base": SMALL})
    assert [v.trial_config(t).seed for v, t in spec.runs()] == [7, 8, 9]
    assert sw.parse_spec({"base": SMALL}).variants[0].config.seed == TrainConfig().seed
    with pytest.raises(ConfigError, match="seed"):
        sw.parse_spec({"seed": 3, "base": dict(SMALL, seed=4)})


BAD_SPECS = [
    ("[base]\nepochz = 3\n", ["[base]", "unknown field 'epochz'"]),
    (f"[base]\n{BASE_TOML}\n[grid]\nfoo = [1, 2]\n", ["[grid]", "unknown field 'foo'"]),
    (f"[base]\n{BASE_TOML}\n[[variant]]\nname = \"x\"\nbar = 1\n", ["variant 'x'", "'bar'"]),
    (f"[base]\n{BASE_TOML}\n[grid]\noperator = [\"random\", \"bogus\"]\n",
     ["variant 'operator=bogus'", "operator: expected one of"]),
    (f"[base]\n{BASE_TOML}\nlr = -1.0\n", ["variant 'base'", "lr: must be in"]),
    (f"[base]\n{BASE_TOML}\n[grid]\nepochs = 3\n", ["[grid] epochs", "non-empty list"]),
    (f"trials = 0\n[base]\n{BASE_TOML}\n", ["trials"]),
    (f"traisl = 2\n[base]\n{BASE_TOML}\n", ["unknown key 'traisl'"]),
    (f"[base]\n{BASE_TOML}\n[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n",
     ["variant 'a'", "duplicate"]),
    ("[base]\nepochs = 3\nepochs = 4\n", ["invalid TOML", "line 3"]),
    # found before anything runs by building each variant's first run
    ("[base]\n" + BASE_TOML.replace("batch_size = 3", "batch_size = 100") + "\n",
     ["variant 'base'", "batch_size"]),
]


@pytest.mark.parametrize("text, expected", BAD_SPECS)
def test_bad_specs_exit_2_with_one_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    r = invoke("sweep", path, "--workers", "1")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    for part in expected:
        assert part in r.output, r.output
    assert str(path) in r.output  # names the file
    assert not (tmp_path / "sweep.h5").exists()


def test_missing_spec_file_exits_2(tmp_path):
    r = invoke("sweep", tmp_path / "nope.toml")
    assert r.exit_code == 2 and "file not found" in r.output
    assert len(r.output.strip().splitlines()) == 1


# -------------------------------------------------------------------------- results file


def test_results_file_format(tmp_path):
    spec = sw.parse_spec(mixed_spec(trials=2))
    out = tmp_path / "r.h5"
    stats = sw.run_sweep(spec, out, workers=1)
    assert (stats["done"], stats["skipped"], stats["runs"], stats["interrupted"]) == (6, 0, 6, False)
    assert stats["wall_seconds"] > 0 and stats["run_seconds"] > 0
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert a["format"] == "sparseae-results"
        assert isinstance(a["format-version"], np.integer) and a["format-version"] == 1
        assert a["generated-by"].startswith("sparseae ") and a["created"][:2] == "20"
        assert json.loads(a["spec"]) == json.loads(json.dumps(mixed_spec(trials=2)))
        assert [n for n, _ in json.loads(a["variants"])] == \
            ["paradigm=canonical", "paradigm=lipi", "lipi-none"]
        assert a["run_seconds"] == pytest.approx(stats["run_seconds"])
        sessions = json.loads(a["sessions"])
        assert len(sessions) == 1 and sessions[0]["done"] == 6
        for v in spec.variants:
            for t in range(2):
                g = f[f"runs/{v.name}/{t}"]
                config = v.trial_config(t)
                assert g.attrs["config"] == config.to_json()
                assert g.attrs["seed"] == config.seed == t and g.attrs["trial"] == t
                assert g.attrs["seconds"] > 0
                summary = json.loads(g.attrs["summary"])
                # the stored run is the run: rerun it directly and compare
                run = make_run(TrainConfig.from_dict(json.loads(g.attrs["config"])))
                direct = run.run()
                assert strip_timing(summary) == strip_timing(json.loads(json.dumps(direct)))
                assert set(g) == set(run.history)
                for key, values in run.history.items():
                    assert g[key].dtype == np.float64
                    np.testing.assert_array_equal(g[key][()], np.asarray(values, np.float64))
        lipi = f["runs/lipi-none/1"]
        assert lipi["replacement_loss"].shape == (3, 3)  # (epochs, N) per-cell series
        assert lipi["best_replacement_loss"].shape == (3,)
        assert f["runs/paradigm=canonical/0/train_loss"].shape == (2,)
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]  # no temporary files left


def test_resume_runs_only_the_missing_runs(tmp_path):
    spec_path = write(tmp_path, json_to_toml(mixed_spec(trials=1)))
    out = tmp_path / "r.h5"
    first = sw.run_sweep(spec_path, out, workers=1)
    assert (first["done"], first["skipped"]) == (3, 0)
    before = {(r["variant"], r["trial"]): r for r in load_results(out)}
    more = sw.run_sweep(spec_path, out, workers=1, trials=3)  # an interrupted sweep, extended
    assert (more["done"], more["skipped"], more["runs"]) == (6, 3, 9)
    with h5py.File(out, "a") as f:
        del f["runs/paradigm=lipi/2"]
    again = sw.run_sweep(spec_path, out, workers=1, trials=3)
    assert (again["done"], again["skipped"]) == (1, 8)
    results = load_results(out)
    assert sorted((r["variant"], r["trial"]) for r in results) == \
        sorted((v, t) for v in ("paradigm=canonical", "paradigm=lipi", "lipi-none") for t in range(3))
    for key, r in before.items():  # the first session's runs are untouched
        now = next(x for x in results if (x["variant"], x["trial"]) == key)
        assert now["summary"] == r["summary"]
    nothing = sw.run_sweep(spec_path, out, workers=1, trials=3)
    assert (nothing["done"], nothing["skipped"]) == (0, 9)
    assert len(json.loads(h5py.File(out, "r").attrs["sessions"])) == 3  # no-op not logged


def test_refuses_a_different_sweep_or_a_foreign_file(tmp_path):
    out = tmp_path / "r.h5"
    sw.run_sweep(mixed_spec(trials=1), out, workers=1)
    data = out.read_bytes()
    changed = mixed_spec(trials=1)
    changed["base"]["epochs"] = 3
    with pytest.raises(ConfigError, match="different sweep.*epochs=2 there, 3 here"):
        sw.run_sweep(changed, out, workers=1)
    path = write(tmp_path, json_to_toml(changed))
    r = invoke("sweep", path, "--out", out, "--workers", "1")
    assert r.exit_code == 2 and "different sweep" in r.output
    assert len(r.output.strip().splitlines()) == 1
    renamed = mixed_spec(trials=1)
    renamed["variant"][0]["name"] = "other"
    with pytest.raises(ConfigError, match="variants differ"):
        sw.run_sweep(renamed, out, workers=1)
    assert out.read_bytes() == data
    foreign = tmp_path / "notes.h5"
    foreign.write_bytes(b"not hdf5 at all")
    with pytest.raises(sw.ResultsError, match="refusing to overwrite"):
        sw.run_sweep(mixed_spec(trials=1), foreign, workers=1)
    assert foreign.read_bytes() == b"not hdf5 at all"


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "r.h5"
    sw.run_sweep(mixed_spec(trials=1), out, workers=1)
    data = out.read_bytes()
    from sparseae.sweep import results

    real = results.write_run

    def crash(f, rec):  # half a run group, then the "crash"
        real(f, rec)
        f["runs"].create_group("half-written")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(results, "write_run", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        sw.run_sweep(mixed_spec(trials=2), out, workers=1)
    assert out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    monkeypatch.setattr(results, "write_run", real)
    assert sw.run_sweep(mixed_spec(trials=2), out, workers=1)["done"] == 3


def test_stop_event_ends_the_sweep_after_the_runs_in_flight(tmp_path):
    import threading

    out = tmp_path / "r.h5"
    stop = threading.Event()
    calls = []

    def progress(done, total, eta):
        calls.append((done, total, eta))
        if done == 2:
            stop.set()

    stats = sw.run_sweep(mixed_spec(trials=2), out, workers=1, progress=progress, stop=stop)
    assert stats["interrupted"] and stats["done"] == 2
    assert [c[:2] for c in calls] == [(0, 6), (1, 6), (2, 6)]
    assert calls[0][2] is None and calls[2][2] >= 0
    assert len(load_results(out)) == 2
    rest = sw.run_sweep(mixed_spec(trials=2), out, workers=1)
    assert (rest["done"], rest["skipped"], rest["interrupted"]) == (4, 2, False)


def test_ctrl_c_exits_130_and_keeps_the_file_valid(tmp_path, monkeypatch):
    from sparseae.sweep import executors

    real = executors.execute

    def execute_then_ctrl_c(config, abort=None):
        rec = real(config, abort)
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C during the first run
        return rec

    monkeypatch.setattr(executors, "execute", execute_then_ctrl_c)
    path = write(tmp_path, json_to_toml(mixed_spec(trials=2)))
    handler = signal.getsignal(signal.SIGINT)
    r = invoke("sweep", path, "--workers", "1")
    assert r.exit_code == 130, r.output
    assert "interrupted" in r.output
    assert len(load_results(tmp_path / "sweep.h5")) == 1
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def test_two_workers_give_the_same_results_as_one(tmp_path):
    spec = mixed_spec(trials=2)
    one = sw.run_sweep(spec, tmp_path / "one.h5", workers=1)
    two = sw.run_sweep(spec, tmp_path / "two.h5", workers=2)
    assert one["workers"] == 1 and two["workers"] == 2
    a, b = load_results(tmp_path / "one.h5"), load_results(tmp_path / "two.h5")
    assert [(r["variant"], r["trial"]) for r in a] == [(r["variant"], r["trial"]) for r in b]
    assert {pid for pid in pids(tmp_path / "one.h5")} == {os.getpid()}
    assert os.getpid() not in pids(tmp_path / "two.h5")  # ran in worker processes
    for x, y in zip(a, b):
        assert x["config"] == y["config"]
        assert strip_timing(x["summary"]) == strip_timing(y["summary"])
        assert x["summary"]["test_l1"] == y["summary"]["test_l1"]  # bit-identical floats
        for key in x["history"]:
            np.testing.assert_array_equal(x["history"][key], y["history"][key])


def test_cli_sweep_default_output_and_summary(tmp_path):
    path = write(tmp_path, json_to_toml(mixed_spec(trials=1)), name="exp.toml")
    r = invoke("sweep", path, "--workers", "1", "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert stats["out"] == str(tmp_path / "exp.h5") and (tmp_path / "exp.h5").exists()
    assert (stats["done"], stats["skipped"]) == (3, 0)
    r = invoke("sweep", path, "--workers", "1", "--trials", "2", "--quiet")
    assert r.exit_code == 0, r.output
    assert "3 runs done, 3 skipped" in r.output and "ratio" in r.output


def test_import_sparseae_loads_no_click_scipy_matplotlib():
    code = ("import sys, sparseae, sparseae.sweep, sparseae.report; "
            "print([m for m in ('click', 'scipy', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r.h5"
    spec = {"trials": 5, "base": dict(SMALL, paradigm="lipi", epochs=3),
            "grid": {"operator": ["none", "random", "variance"]},
            "variant": [{"name": "canonical", "paradigm": "canonical", "operator": "random"}]}
    sw.run_sweep(spec, out, workers=1)
    return out


def raw_summaries(path):
    """variant -> (summaries, seconds), read with h5py only."""
    out = {}
    with h5py.File(path, "r") as f:
        for g in f["runs"].values():
            for r in g.values():
                s, secs = out.setdefault(r.attrs["variant"], ([], []))
                s.append(json.loads(r.attrs["summary"]))
                secs.append(r.attrs["seconds"])
    return out


def test_report_numbers_match_numpy_and_scipy(results_file):
    from scipy.stats import mannwhitneyu

    raw = raw_summaries(results_file)
    results = load_results(results_file)
    assert len(results) == 20
    assert {k for k in results[0]} >= {"variant", "trial", "config", "summary", "history"}
    rows = summarize(results)
    assert [r["variant"] for r in rows] == ["operator=none", "operator=random",
                                           "operator=variance", "canonical"]
    assert rows[0]["baseline"] and rows[0]["p_test_l1"] is None
    base = np.array([s["test_l1"] for s in raw["operator=none"][0]])
    base_mean = np.array([s["mean_l1"] for s in raw["operator=none"][0]])
    for row in rows:
        s, secs = raw[row["variant"]]
        test = np.array([x["test_l1"] for x in s])
        assert row["n"] == 5
        assert row["test_l1_median"] == np.median(test)
        assert row["test_l1_iqr"] == np.percentile(test, 75) - np.percentile(test, 25)
        assert row["mean_l1_median"] == np.median([x["mean_l1"] for x in s])
        for key in ("preserved", "preserved_encoder", "preserved_decoder", "flops"):
            assert row[f"{key}_median"] == np.median([x[key] for x in s])
        assert row["seconds_median"] == np.median(secs)
        if not row["baseline"]:
            assert row["p_test_l1"] == mannwhitneyu(test, base, alternative="two-sided").pvalue
            mean = np.array([x["mean_l1"] for x in s])
            assert row["p_mean_l1"] == mannwhitneyu(mean, base_mean,
                                                    alternative="two-sided").pvalue
    # canonical training of this size barely learns: clearly worse than Lipi-AE-S
    assert rows[3]["p_test_l1"] < 0.05 and rows[3]["test_l1_median"] > rows[0]["test_l1_median"]
    other = summarize(results, baseline="canonical")
    assert other[3]["p_test_l1"] is None and other[0]["p_test_l1"] == rows[3]["p_test_l1"]


def test_report_cli_table_csv_and_json(results_file, tmp_path):
    rows = summarize(load_results(results_file), "operator=random")
    r = invoke("report", results_file, "--baseline", "operator=random", "--csv", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    assert "operator=random *" in r.output and "p(test_l1)" in r.output
    assert f"{rows[0]['test_l1_median']:.4f}" in r.output
    with open(tmp_path / "t.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["variant"] for t in table] == [row["variant"] for row in rows]
    for t, row in zip(table, rows):
        assert float(t["test_l1_median"]) == row["test_l1_median"]
        assert int(t["n"]) == 5
        assert (t["p_test_l1"] == "") == (row["p_test_l1"] is None)
        if row["p_test_l1"] is not None:
            assert float(t["p_test_l1"]) == row["p_test_l1"]
    r = invoke("report", results_file, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["baseline"] == "operator=none" and len(doc["rows"]) == 4
    r = invoke("report", results_file, "--baseline", "nope")
    assert r.exit_code == 2 and "no variant named 'nope'" in r.output


def test_report_plot_png(results_file, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (sparseae[plot])")
    r = invoke("report", results_file, "--plot", tmp_path / "p.png")
    assert r.exit_code == 0, r.output
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_plot_without_matplotlib(results_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r = invoke("report", results_file, "--plot", tmp_path / "p.png")
    assert r.exit_code == 2, r.output
    assert "pip install 'sparseae[plot]'" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("attrs, message", [
    ({"format": "sparseae-checkpoint", "format-version": 1}, "has format 'sparseae-checkpoint'"),
    ({"format": "sparseae-results", "format-version": 2}, "newer than the 1"),
    ({"format": "sparseae-results"}, "no valid format-version"),
])
def test_report_refuses_other_formats(tmp_path, attrs, message):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
    r = invoke("report", path)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1
    r = invoke("report", tmp_path / "missing.h5")
    assert r.exit_code == 2 and "file not found" in r.output


# ------------------------------------------------------------------------------ helpers


def pids(path):
    with h5py.File(path, "r") as f:
        return {int(r.attrs["pid"]) for g in f["runs"].values() for r in g.values()}


def json_to_toml(spec: dict) -> str:
    """A minimal TOML writer for the specs used here."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {val(v)}" for k, v in spec.items() if not isinstance(v, (dict, list))]
    for table in ("base", "grid"):
        if table in spec:
            lines.append(f"[{table}]")
            lines += [f"{k} = {val(v)}" for k, v in spec[table].items()]
    for v in spec.get("variant", []):
        lines.append("[[variant]]")
        lines += [f"{k} = {val(x)}" for k, x in v.items()]
    return "\n".join(lines) + "\n"


def test_results_written_before_a_field_existed_still_resume():
    from sparseae.config import TrainConfig

    new = TrainConfig(epochs=3).to_dict()
    old = {k: v for k, v in new.items() if k not in ("device", "sync_cells")}
    assert sw.same_config(old, new)  # missing fields had their defaults' behaviour
    assert not sw.same_config(old, {**new, "device": "cuda"})
    assert sw.config_difference({**old, "epochs": 4}, new) == "epochs"


def test_local_workers_share_the_cores_out(monkeypatch):
    from sparseae.sweep import executors

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [executors.worker_threads(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert executors.worker_threads(2) == 1


def test_a_pool_worker_runs_with_its_share_of_numba_threads():
    # in a child: set_num_threads would leak into this process's other tests
    code = ("import numba\n"
            "from sparseae.sweep import executors\n"
            "import multiprocessing as mp\n"
            "import os\n"
            "executors.init_worker(mp.Event(), os.getppid(), 1)\n"
            "print(numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, NUMBA_NUM_THREADS="2"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2"]
