"""``sparseae train`` / ``eval`` for users (issue 11): progress in logs, nothing lost on
Ctrl-C or by --checkpoint, runs that describe themselves, checkpoints that find their data,
--resume --epochs, and every bad input a one-line exit 2."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import sparseae
from sparseae import checkpoint as ckpt_io
from sparseae.cli.main import main
from sparseae.config import TrainConfig
from sparseae.data import binary_clustering, save
from sparseae.errors import ConfigError, SparseaeError, SparseaeWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = ["--clusters", "3", "--dim", "20", "--per-cluster", "6"]
TINY = ["--paradigm", "canonical", "--arch", "20,6,3", *DATA]
LIPI = ["--arch", "20,6,3", "--population", "3", *DATA]
PRUNE = ["--operator", "random", "--schedule", "fixed", "--prune-probability", "1"]


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def one_error_line(r, *needles):
    """Exit 2 and one ``Error:`` line naming every needle (click adds its usage lines to
    errors found while parsing; errors found later are the whole output)."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = [x for x in r.output.strip().splitlines() if x.startswith("Error:")]
    assert len(lines) == 1, r.output
    if not r.output.startswith("Usage:"):
        assert r.output.strip() == lines[0], r.output
    for needle in needles:
        assert str(needle).lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def cli(*args, cwd=None, env=None, **kw):
    """``python -m sparseae ARGS`` as a process (stdout, stderr apart)."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "sparseae", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ------------------------------------------------------------------------------ progress


def test_progress_lines_in_a_log(tmp_path):
    """30 epochs with stderr redirected: lines with epoch, elapsed, ETA, the best L1 and
    preserved, at every quarter (and every SPARSEAE_PROGRESS_SECONDS seconds)."""
    p = cli("train", *LIPI, "--epochs", 30, cwd=tmp_path)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    lines = err.strip().splitlines()
    assert len(lines) >= 2, err
    pattern = (r"epoch (\d+)/30  elapsed \d+:\d\d:\d\d  eta \d+:\d\d:\d\d  best cell: batch L1 "
               r"0\.\d{4} \(one training batch, not test_l1\), preserved [01]\.\d{3}")
    assert [int(re.fullmatch(pattern, x).group(1)) for x in lines] == [7, 15, 22, 30], err
    assert "test_l1" in out and "\r" not in err
    r = CliRunner(env={"SPARSEAE_PROGRESS_SECONDS": "0"}).invoke(
        main, ["train", *TINY, "--epochs", "5"])
    assert r.exit_code == 0, r.output
    progress = [x for x in r.output.splitlines() if x.startswith("epoch ")]
    assert [x.split()[1] for x in progress] == [f"{e}/5" for e in range(1, 6)]
    assert all("train L1 0." in x and "(epoch mean)" in x for x in progress)
    assert invoke("train", *TINY, "--epochs", 5, "--quiet").output.startswith("summary:")


# ----------------------------------------------------------------------- nothing is lost


def test_checkpoint_of_another_run_is_not_overwritten(tmp_path):
    path = tmp_path / "c.h5"
    assert invoke("train", *TINY, "--epochs", 4, "--checkpoint", path).exit_code == 0
    before = path.read_bytes()
    line = one_error_line(invoke("train", *TINY, "--epochs", 2, "--checkpoint", path),
                          "c.h5", "exists", "epoch 4 of 4", f"--resume {path}", "--overwrite")
    assert path.read_bytes() == before, line
    r = invoke("train", "--resume", path, "--epochs", 5)  # its own file: continued in place
    assert r.exit_code == 0 and ckpt_io.load(path).state["epoch"] == 5
    r = invoke("train", *TINY, "--epochs", 2, "--checkpoint", path, "--overwrite")
    assert r.exit_code == 0 and ckpt_io.load(path).state["epoch"] == 2
    notes = tmp_path / "notes.h5"
    notes.write_text("my notes")
    one_error_line(invoke("train", *TINY, "--epochs", 1, "--checkpoint", notes, "--overwrite"),
                   "not a sparseae checkpoint")
    assert notes.read_text() == "my notes"
    one_error_line(invoke("train", *TINY, "--overwrite"), "--overwrite needs")
    one_error_line(invoke("train", *TINY, "--checkpoint-every", 2), "--checkpoint-every needs")


def _wait_for_line(stream, prefix, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if line.startswith(prefix):
            return line
        if not line:
            break
    pytest.fail(f"no line starting with {prefix!r}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_without_checkpoint_prints_the_state_reached(tmp_path, sig):
    p = cli("train", *TINY, "--epochs", 10 ** 6, cwd=tmp_path,
            env={"SPARSEAE_PROGRESS_SECONDS": "0.2"})
    try:
        _wait_for_line(p.stderr, "epoch ")
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, (out, err)
    epoch = int(re.match(r"summary at epoch (\d+) \(interrupted\):\n", out).group(1))
    assert epoch >= 1 and re.search(r"\n  test_l1 +0\.\d+\n", out), out
    assert re.search(rf"(^|\n)interrupted after epoch {epoch}; the state is not saved "
                     r"\(add --checkpoint FILE", err), err
    assert "Traceback" not in err and os.listdir(tmp_path) == []


def test_sigterm_writes_the_checkpoint_and_history(tmp_path):
    p = cli("train", *TINY, "--epochs", 10 ** 6, "--checkpoint", "c.h5", "--history", "h.csv",
            cwd=tmp_path, env={"SPARSEAE_PROGRESS_SECONDS": "0.2"})
    try:
        _wait_for_line(p.stderr, "epoch ")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, err
    epoch = int(re.search(r"interrupted after epoch (\d+); checkpoint c\.h5 \(continue with: "
                          r"sparseae train --resume c\.h5\)", err).group(1))
    assert ckpt_io.load(tmp_path / "c.h5").state["epoch"] == epoch
    with open(tmp_path / "h.csv") as f:
        assert len(list(csv.reader(f))) == epoch + 1
    assert sorted(os.listdir(tmp_path)) == ["c.h5", "h.csv"]  # no lock or temp files left


@pytest.mark.parametrize("delay", [0.2, 0.5, 1.0])
def test_ctrl_c_in_the_first_second_exits_130(tmp_path, delay):
    p = cli("train", *TINY, "--epochs", 10 ** 6, "--checkpoint", "c.h5", cwd=tmp_path)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, (p.returncode, out, err)
    assert "Traceback" not in err and "Aborted" not in err and "interrupted" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".tmp", ".lock"))]


# --------------------------------------------------------------- checkpoints find their data


def test_checkpoints_find_their_data_from_anywhere_and_check_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    save(a / "d.h5", binary_clustering(3, 20, 6, 0.05, 0))
    p = cli("train", *TINY, "--data", "d.h5", "--epochs", 3, "--checkpoint", "run.h5", "--json",
            cwd=a)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    trained = json.loads(out)
    assert trained["data"] == str(a / "d.h5") and len(trained["data_sha256"]) == 64
    # from another folder, holding another d.h5: the recorded absolute path wins
    save(b / "d.h5", binary_clustering(3, 20, 6, 0.05, 9))
    p = cli("eval", a / "run.h5", "--json", cwd=b)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and err == "", err
    assert json.loads(out)["test_l1"] == trained["test_l1"]
    # moved with its data: found next to the checkpoint, and said so
    moved = tmp_path / "moved"
    a.rename(moved)
    r = invoke("eval", moved / "run.h5", "--json")
    assert r.exit_code == 0, r.output
    warning, result = r.output.strip().split("\n", 1)
    assert warning == (f"Warning: data: {a / 'd.h5'} is missing or changed; using "
                       f"{moved / 'd.h5'} (next to the checkpoint)")
    assert json.loads(result)["test_l1"] == trained["test_l1"]
    r = invoke("train", "--resume", moved / "run.h5", "--epochs", 4, "--json")
    assert r.exit_code == 0 and "next to the checkpoint" in r.output
    assert ckpt_io.load(moved / "run.h5").state["data_path"] == str(moved / "d.h5")
    # data changed since: refused, not evaluated on the wrong data
    save(moved / "d.h5", binary_clustering(3, 20, 6, 0.05, 9))
    one_error_line(invoke("eval", moved / "run.h5"), "d.h5", "sha-256 differs", "--data")
    one_error_line(invoke("train", "--resume", moved / "run.h5"), "sha-256 differs")
    os.unlink(moved / "d.h5")
    one_error_line(invoke("eval", moved / "run.h5"), "file not found", "--data")
    r = invoke("eval", moved / "run.h5", "--data", b / "d.h5", "--json")  # explicitly other data
    assert r.exit_code == 0 and json.loads(r.output)["data"] == str(b / "d.h5")


def test_eval_checks_generated_data_too(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    assert invoke("train", *TINY, "--epochs", 2, "--checkpoint", path).exit_code == 0
    with h5py.File(path, "r+") as f:  # as if the generator had changed since
        state = json.loads(f.attrs["state"])
        state["data_sha256"] = "0" * 64
        f.attrs["state"] = json.dumps(state)
    one_error_line(invoke("eval", path), "generated data", "do not hash")


# ---------------------------------------------------------------------- --resume --epochs


def test_resume_epochs_is_the_new_total_and_keep_schedule(tmp_path):
    path = tmp_path / "c.h5"
    assert invoke("train", *TINY, "--epochs", 8, "--checkpoint", path).exit_code == 0
    one_error_line(invoke("train", "--resume", path, "--epochs", 5), "--epochs", ">= 8",
                   "cannot be shortened")
    r = invoke("train", "--resume", path, "--epochs", 8, "--json")
    assert r.exit_code == 0
    assert r.output.startswith("Warning: --epochs 8: ") and "nothing to train" in r.output
    one_error_line(invoke("train", "--resume", path, "--keep-schedule"), "--keep-schedule needs")
    copy = tmp_path / "k.h5"
    copy.write_bytes(path.read_bytes())
    assert invoke("train", "--resume", path, "--epochs", 16).exit_code == 0
    assert invoke("train", "--resume", copy, "--epochs", 16, "--keep-schedule").exit_code == 0
    stretched, kept = ckpt_io.load(path), ckpt_io.load(copy)
    lr0 = 1e-3
    np.testing.assert_allclose(stretched.history["lr"][8:], [lr0 * 0.1 ** (e // 4)
                                                            for e in range(8, 16)])
    np.testing.assert_allclose(kept.history["lr"][8:], [lr0 * 0.1 ** (e // 2)
                                                       for e in range(8, 16)])
    assert kept.config["schedule_epochs"] == 8 and stretched.config["schedule_epochs"] is None
    help_text = invoke("train", "--help").output
    assert "new total" in help_text and "--keep-schedule" in help_text


# ----------------------------------------------------------------- runs describe themselves


def test_summary_and_history_describe_the_run(tmp_path):
    hist = tmp_path / "h.csv"
    r = invoke("train", *LIPI, *PRUNE, "--epochs", 3, "--seed", 4, "--json", "--history", hist)
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert (s["profile"], s["seed"], s["lr"], s["sparseae"]) == ("default", 4, 3e-3,
                                                                 sparseae.__version__)
    assert s["data"] == ("generated binary-clustering (clusters 3, dim 20, per_cluster 6, "
                         "noise 0.05, seed 4)")
    with open(hist) as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header[0] == "epoch" and header[-1] == "mean_l1" and len(rows) == 4
    assert {"best_replacement_loss", "lr[0]", "lr[2]", "preserved[1]", "pruned[2]"} <= set(header)
    assert [row[0] for row in rows[1:]] == ["0", "1", "2"]
    assert rows[1][-1] != "" and rows[2][-1] == ""  # the figure metric at epoch 0 only
    one_error_line(invoke("train", *TINY, "--epochs", 1, "--history", hist), "h.csv", "exists")
    assert invoke("train", *TINY, "--epochs", 2, "--history", hist, "--overwrite").exit_code == 0
    with open(hist) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "train_loss", "lr", "pruned", "preserved", "mean_l1"]
    assert len(rows) == 3


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, needles", [
    # a value the user never passed is not reported as a bad flag value
    ([*TINY, "--per-cluster", "1"], ["batch_size (not given as a flag; set it with "
                                     "--batch-size)", "[1, 3]"]),
    ([*TINY, "--prune-amount", "abc"], ["'--prune-amount'", "'abc'"]),
    ([*TINY, "--prune-amount", "1000000000"], ["'--prune-amount'", "<= 120", "count"]),
    (["--radius", "5", "--population", "3", *DATA], ["'--radius'", "<= 1 for population 3"]),
    (["--population", "1", *DATA], ["radius (not given as a flag", "--radius", "<= 0"]),
    # sizes that cannot fit in memory are refused with the estimate, before allocating
    (["--population", "1000000000"], ["'--population'", "memory", "available"]),
    (["--arch", "1000,100000000,4"], ["'--arch'", "memory", "one autoencoder"]),
    (["--dim", "100000000"], ["'--dim'", "memory"]),
    (["--per-cluster", "1000000000"], ["'--per-cluster'", "memory"]),
    ([*TINY, "--operator", "conjunctive", "--heldout", "1000000000"], ["'--heldout'", "memory"]),
])
def test_bad_values_are_refused_naming_the_flag(args, needles):
    line = one_error_line(invoke("train", *args, "--epochs", 1), *needles)
    assert "Traceback" not in line


def test_heldout_beyond_the_validation_split_warns():
    r = invoke("train", *TINY, "--operator", "conjunctive", "--heldout", 50, "--epochs", 1)
    assert r.exit_code == 0
    assert r.output.startswith("Warning: --heldout 50 is more than the 18 samples of the "
                               "validation split")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TrainConfig(population=2, radius=1).validate()
    assert [str(w.message) for w in caught if w.category is SparseaeWarning] == [
        "radius 1 with population 2: the neighbourhood of 3 cells holds one cell twice"]


def test_data_command_sizes_are_estimated():
    one_error_line(invoke("data", "binary-clustering", "--dim", 1000000000, "-o", "x.h5"),
                   "'--dim'", "memory")


@pytest.mark.parametrize("text, needles", [
    (b'operator = ["random", 7]\n', ["operator", "list of names"]),
    (b"arch = 5\n", ["arch", "preset"]),
    (b'arch = [20, "x"]\n', ["arch"]),
    (b"profile = 3\n", ["profile"]),
    (b"epochs = 2\nlr = \xff\n", ["--config", "not utf-8"]),
    (b"data = 5\n", ["data", "file path"]),
    (b"population = [1]\n", ["population", "integer"]),
])
def test_config_files_are_validated_like_sweep_specs(tmp_path, text, needles):
    path = tmp_path / "c.toml"
    path.write_bytes(text)
    one_error_line(invoke("train", "--config", path), *needles)
    spec = tmp_path / "s.toml"
    spec.write_bytes(b"[base]\n" + text)
    one_error_line(invoke("sweep", spec), *[n for n in needles if n != "--config"])


BAD_VALUES = [None, [], {}, "x", 1.5, -1, True, 10 ** 30, [1, "a"], ["x", 2], float("nan")]


def test_every_config_field_refuses_bad_types_with_a_config_error():
    for field in TrainConfig.__dataclass_fields__:
        for value in BAD_VALUES:
            try:
                TrainConfig.from_dict({field: value})
            except ConfigError:
                pass
            except SparseaeError as exc:  # e.g. memory estimates
                raise AssertionError((field, value, exc)) from None
            except Exception as exc:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"{field}={value!r}: {type(exc).__name__}: {exc}") from None


def test_data_in_a_config_file_is_relative_to_the_file(tmp_path):
    folder, elsewhere = tmp_path / "exp", tmp_path / "cwd"
    folder.mkdir(), elsewhere.mkdir()
    save(folder / "d.h5", binary_clustering(3, 20, 6, 0.05, 0))
    (folder / "c.toml").write_text('paradigm = "canonical"\narch = "20,6,3"\ndata = "d.h5"\n'
                                   "epochs = 2\n")
    p = cli("train", "--config", folder / "c.toml", "--json", cwd=elsewhere)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert json.loads(out)["data"] == str(folder / "d.h5")
    one_error_line(invoke("train", "--resume", tmp_path / "no" / "c.h5"), "file not found")
