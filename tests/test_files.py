"""Files sparseae reads and writes: one writer per file, stale temporaries, HDF5 files
that point elsewhere, and hand-edited checkpoints and results (issue 11).

Every bad file is refused with exit code 2 and one line naming the file; nothing is
written over a file another process is writing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from sparseae import _lock
from sparseae import checkpoint as ckpt_io
from sparseae.canonical import CanonicalRun
from sparseae.cli.main import main
from sparseae.coevolution import LipiRun
from sparseae.config import TrainConfig
from sparseae.data import binary_clustering, load, save
from sparseae.errors import CheckpointError, DataError, ResultsError
from sparseae import sweep as sw

DATA = ["--clusters", "3", "--dim", "20", "--per-cluster", "6"]
TINY = ["--paradigm", "canonical", "--arch", "20,6,3", *DATA]
CONFIG = dict(paradigm="canonical", arch="20,6,3", clusters=3, dim=20, per_cluster=6, seed=1,
              epochs=4, operator="random", schedule="fixed", prune_probability=1.0)
SPEC = {"trials": 2, "base": dict(CONFIG, epochs=2)}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(r, *needles):
    """Exit 2 and exactly one line of output, the error, naming every needle."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert "Traceback" not in r.output
    for needle in needles:
        assert str(needle).lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def checkpoint(path, **over):
    run = CanonicalRun(TrainConfig(**{**CONFIG, **over}))
    run.run_epoch()
    run.run_epoch()
    run.save(path)
    return run


# ------------------------------------------------------------------ one writer per file

_HOLDER = textwrap.dedent("""
    import sys, time
    from sparseae import _lock
    from sparseae.errors import SparseaeError
    _lock.acquire(sys.argv[1], SparseaeError)
    print("holding", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def holder():
    """Start a process that holds the lock of a path; yields a function path -> pid."""
    procs = []

    def hold(path):
        p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "holding"
        return p

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def test_a_second_writer_exits_2_naming_the_file_and_the_holder(tmp_path, holder):
    ck, out = tmp_path / "run.h5", tmp_path / "results.h5"
    spec = tmp_path / "s.toml"
    spec.write_text("trials = 1\n[base]\n" + "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in CONFIG.items()))
    for target, args in ((ck, ["train", *TINY, "--epochs", 1, "--checkpoint", ck]),
                         (out, ["sweep", spec, "--out", out, "--workers", 1])):
        p = holder(target)
        one_error_line(invoke(*args), target.name, "in use", f"pid {p.pid}")
        assert not target.exists()
        p.kill()
        p.wait()  # the kernel releases the lock of a killed process
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        assert not (tmp_path / f".{target.name}.lock").exists()  # removed on release
    p = holder(ck)
    with pytest.raises(CheckpointError, match=f"pid {p.pid}"):
        CanonicalRun(TrainConfig(**CONFIG)).save(ck)  # the library's writes take it too
    with pytest.raises(ResultsError, match=f"pid {p.pid}"):
        sw.run_sweep(SPEC, ck, workers=1)


def test_locks_are_reentrant_and_released(tmp_path):
    target = tmp_path / "x.h5"
    with _lock.locked(target, CheckpointError):
        assert _lock.holder(target) == os.getpid()
        with _lock.locked(target, CheckpointError):
            assert _lock.is_held(target)
        assert _lock.is_held(target)
    assert not _lock.is_held(target)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------- stale temporaries


def test_a_write_removes_stale_temporaries_of_its_file_only(tmp_path):
    path = tmp_path / "c.h5"
    old = time.time() - 3600
    stale = [tmp_path / ".c.h5.ab12cd_9.tmp", tmp_path / ".c.h5.zzzzzzzz.tmp"]
    keep = [tmp_path / ".c.h5.bak.abcdefgh.tmp",  # another file's temporary
            tmp_path / ".d.h5.abcdefgh.tmp", tmp_path / "c.h5.abcdefgh.tmp",
            tmp_path / ".c.h5.short.tmp"]
    for p in stale + keep:
        p.write_bytes(b"partial")
        os.utime(p, (old, old))
    newer = tmp_path / ".c.h5.newer123.tmp"  # a writer that started after this one
    newer.write_bytes(b"x")
    os.utime(newer, (time.time() + 60, time.time() + 60))
    checkpoint(path)
    assert all(not p.exists() for p in stale)
    assert all(p.exists() for p in keep) and newer.exists()
    assert ckpt_io.load(path).state["epoch"] == 2


# --------------------------------------------------------------------- HDF5 that points elsewhere


def _offend(f, where, kind, tmp_path):
    """Replace dataset ``where`` of open file ``f`` by ``kind`` pointing at another file."""
    shape, dtype = f[where].shape, f[where].dtype
    data = f[where][()]
    del f[where]
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g.create_dataset("x", data=data)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ascontiguousarray(data).tobytes())
    if kind == "external-link":
        f[where] = h5py.ExternalLink(str(other), "/x")
    elif kind == "soft-link":
        f.create_dataset(where + "_real", data=data)
        f[where] = h5py.SoftLink(where + "_real")
    elif kind == "external-storage":
        f.create_dataset(where, shape=shape, dtype=dtype, external=[(str(raw), 0, raw.stat().st_size)])
    else:
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(other), "x", shape=shape)
        f.create_virtual_dataset(where, layout)


KINDS = ["external-link", "soft-link", "external-storage", "virtual"]


@pytest.mark.parametrize("kind", KINDS)
def test_files_pointing_elsewhere_are_refused(tmp_path, kind):
    # a checkpoint whose parameters live in another file (read byte for byte before)
    ck = tmp_path / "run.h5"
    checkpoint(ck)
    with h5py.File(ck, "r+") as f:
        _offend(f, "encoder/params", kind, tmp_path)
    with pytest.raises(CheckpointError, match="plain HDF5"):
        ckpt_io.load(ck)
    one_error_line(invoke("eval", ck), "run.h5", "/encoder/params")
    one_error_line(invoke("train", "--resume", ck, "--checkpoint", tmp_path / "out.h5"),
                   "/encoder/params")
    assert not (tmp_path / "out.h5").exists()
    # user data
    data = tmp_path / "data.h5"
    save(data, binary_clustering(3, 20, 6, 0.05, 0))
    with h5py.File(data, "r+") as f:
        _offend(f, "train", kind, tmp_path)
    with pytest.raises(DataError, match="plain HDF5"):
        load(data)
    one_error_line(invoke("train", *TINY, "--data", data, "--epochs", 1), "data.h5", "/train")
    # a results file
    out = tmp_path / "r.h5"
    sw.run_sweep(SPEC, out, workers=1)
    with h5py.File(out, "r+") as f:
        _offend(f, "runs/base/0/train_loss", kind, tmp_path)
    one_error_line(invoke("report", out), "r.h5", "/runs/base/0/train_loss")
    with pytest.raises(ResultsError, match="plain HDF5"):
        sw.run_sweep(SPEC, out, workers=1)


# ------------------------------------------------------------------ hand-edited checkpoints


def _set_state(key, value):
    def edit(f):
        state = json.loads(f.attrs["state"])
        state[key] = value
        f.attrs["state"] = json.dumps(state)
    return edit


def _replace(where, make):
    def edit(f):
        data = f[where][()]
        del f[where]
        f.create_dataset(where, data=make(data))
    return edit


def _history_as_dataset(f):
    del f["history"]
    f.create_dataset("history", data=np.zeros((2, 3)))


CHECKPOINT_EDITS = {
    "history as a dataset": (_history_as_dataset, "history"),
    "history series of the wrong shape": (_replace("history/train_loss", lambda d: d[:1]),
                                          "history/train_loss"),
    "garbage rng state": (_set_state("rng", {"bit_generator": "PCG64", "state": "x"}), "rng"),
    "rng of another generator": (_set_state("rng", [1, 2, 3]), "rng"),
    "mask value 7": (_replace("encoder/mask", lambda d: np.where(d == 1, 7, d)), "encoder/mask"),
    "NaN parameters": (_replace("decoder/params", lambda d: d * np.nan), "decoder/params"),
    "negative epoch": (_set_state("epoch", -5), "epoch"),
    "epoch beyond the run": (_set_state("epoch", 10 ** 6), "epoch"),
    "epoch as text": (_set_state("epoch", "2"), "epoch"),
    "arch of another size": (_set_state("arch", [20, 100000000, 3]), "encoder/params"),
    "history as text": (_replace("history/lr", lambda d: np.array([b"a", b"b"])), "history/lr"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_EDITS))
def test_hand_edited_checkpoints_are_refused(tmp_path, case):
    edit, needle = CHECKPOINT_EDITS[case]
    path = tmp_path / "ck.h5"
    checkpoint(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    before = path.read_bytes()
    eval_needs = case not in ("history as a dataset", "history series of the wrong shape",
                              "garbage rng state", "rng of another generator", "history as text")
    if eval_needs:  # eval reads the state and arenas; resume also the history and rng
        one_error_line(invoke("eval", path), "ck.h5", needle)
    one_error_line(invoke("train", "--resume", path, "--epochs", 6), "ck.h5", needle)
    assert path.read_bytes() == before


def test_hand_edited_population_checkpoints_are_refused(tmp_path):
    cfg = TrainConfig(**{**CONFIG, "paradigm": "lipi", "population": 3})
    run = LipiRun(cfg)
    run.run_epoch()
    path = tmp_path / "pop.h5"
    run.save(path)
    edits = {
        "extra/order": _replace("extra/order", lambda d: np.zeros_like(d)),
        "extra/cell_lr": _replace("extra/cell_lr", lambda d: d * -1),
        "encoder/params": _replace("encoder/params",  # eval used to pick the NaN cell as best
                                   lambda d: np.where(np.arange(len(d))[:, None] == 1, np.nan, d)),
        "history/replacement_loss": _replace("history/replacement_loss", lambda d: d[:, :2]),
    }
    for needle, edit in edits.items():
        bad = tmp_path / "bad.h5"
        bad.write_bytes(path.read_bytes())
        with h5py.File(bad, "r+") as f:
            edit(f)
        one_error_line(invoke("train", "--resume", bad, "--epochs", 3), "bad.h5", needle)
        if needle in ("encoder/params", "extra/order", "extra/cell_lr"):
            one_error_line(invoke("eval", bad), "bad.h5", needle)


# --------------------------------------------------------------------- hand-edited results


def _run_attr(key, value):
    def edit(f):
        f["runs/base/0"].attrs[key] = value
    return edit


def _summary(edit_summary):
    def edit(f):
        a = f["runs/base/0"].attrs
        a["summary"] = json.dumps(edit_summary(json.loads(a["summary"])))
    return edit


RESULTS_EDITS = {
    "test_l1 not a number": (_summary(lambda s: {**s, "test_l1": "low"}), "test_l1"),
    "summary as a list": (_summary(lambda s: [1, 2]), "summary"),
    "summary not JSON": (_run_attr("summary", "{nope"), "summary"),
    "trial as text": (_run_attr("trial", "x"), "trial"),
    "seconds negative": (_run_attr("seconds", -1.0), "seconds"),
    "dataset inside /runs": (lambda f: f["runs"].create_dataset("junk", data=[1]), "/runs/junk"),
    "dataset as a run": (lambda f: f["runs/base"].create_dataset("7", data=[1]), "/runs/base/7"),
    "/runs a dataset": (lambda f: (f.__delitem__("runs"), f.create_dataset("runs", data=[1])),
                        "/runs"),
    "history series as text": (lambda f: f["runs/base/0"].create_dataset("x", data=[b"a"]),
                               "/runs/base/0/x"),
}


@pytest.mark.parametrize("case", list(RESULTS_EDITS))
def test_hand_edited_results_are_refused(tmp_path, case):
    edit, needle = RESULTS_EDITS[case]
    out = tmp_path / "r.h5"
    sw.run_sweep(SPEC, out, workers=1)
    with h5py.File(out, "r+") as f:
        edit(f)
    before = out.read_bytes()
    one_error_line(invoke("report", out), "r.h5", needle)
    with pytest.raises(ResultsError, match=needle.replace("/", ".")):
        sw.run_sweep(SPEC, out, workers=1)
    assert out.read_bytes() == before


# ------------------------------------------------------------------------------- data files


def test_data_files_record_their_generator_and_are_not_overwritten(tmp_path):
    h5, npz = tmp_path / "d.h5", tmp_path / "d.npz"
    for out in (h5, npz):
        r = invoke("data", "binary-clustering", *DATA, "--seed", 4, "--noise", 0.1, "-o", out)
        assert r.exit_code == 0, r.output
    with h5py.File(h5, "r") as f:
        a = dict(f.attrs)
    assert a["format"] == "sparseae-data" and a["generated-by"].startswith("sparseae ")
    assert (a["generator"], a["clusters"], a["dim"], a["per_cluster"], a["noise"], a["seed"],
            bool(a["quirks"])) == ("binary-clustering", 3, 20, 6, 0.1, 4, False)
    with np.load(npz) as z:
        meta = json.loads(str(z["meta"]))
    assert (meta["generator"], meta["seed"], meta["noise"]) == ("binary-clustering", 4, 0.1)
    assert load(npz).train.shape == (18, 20)
    before = h5.read_bytes()
    one_error_line(invoke("data", "binary-clustering", *DATA, "-o", h5), "d.h5", "--overwrite")
    assert h5.read_bytes() == before
    assert invoke("data", "binary-clustering", *DATA, "-o", h5, "--overwrite").exit_code == 0
    one_error_line(invoke("data", "binary-clustering", *DATA, "-o", tmp_path / "d.txt"),
                   "--output", ".txt")
    assert not (tmp_path / "d.txt").exists()


def test_data_without_validation_complex_or_not_a_zip_is_refused(tmp_path):
    ds = binary_clustering(3, 20, 6, 0.05, 0)
    cases = {}
    p = tmp_path / "noval.h5"
    with h5py.File(p, "w") as f:
        f["train"], f["test"] = ds.train, ds.test
    cases[p] = "'validation'"
    p = tmp_path / "complex.npz"
    np.savez(p, train=ds.train + 0j, test=ds.test, validation=ds.validation)
    cases[p] = "complex"
    p = tmp_path / "text.npz"
    p.write_text("train,test\n1,2\n")
    cases[p] = "not a zip"
    for path, needle in cases.items():
        with pytest.raises(DataError, match=needle):
            load(path)
        one_error_line(invoke("train", *TINY, "--data", path, "--epochs", 1), path.name, needle)


# ------------------------------------------------------------------------------- messages


def test_write_errors_are_one_line(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "Can't synchronously write data (file write failed: time = x,\n"
                          "filename = 'c.h5', errno = 28, error message = 'No space left')")

    monkeypatch.setattr(h5py, "File", full)
    line = one_error_line(invoke("train", *TINY, "--epochs", 1, "--checkpoint", tmp_path / "c.h5"),
                          "c.h5", "No space left")
    assert "\n" not in line
    assert [n for n in os.listdir(tmp_path)] == []


@pytest.mark.parametrize("flag", ["--checkpoint", "--resume", "--data", "--history", "--config"])
def test_empty_file_names_are_refused_before_anything_is_written(tmp_path, flag):
    r = CliRunner().invoke(main, ["train", *TINY, "--epochs", "1", flag, ""],
                           catch_exceptions=False)
    assert r.exit_code == 2 and flag in r.output and "empty" in r.output, r.output
    assert "Traceback" not in r.output
