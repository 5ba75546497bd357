"""Checkpoints: resume equality, file format, bad input, crash safety, Ctrl-C.

Everything runs on tiny generated data (3 clusters x 40 bits, 6 per cluster:
18 samples per split) so that the whole module takes seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import sparseae
from sparseae import checkpoint as ckpt_io
from sparseae.canonical import CanonicalRun
from sparseae.evaluation import evaluate as evaluate_checkpoint
from sparseae.cli.main import main
from sparseae.config import TrainConfig
from sparseae.data import Dataset, binary_clustering
from sparseae.data import load as load_data
from sparseae.data import save as save_data
from sparseae.errors import CheckpointError, ConfigError, DataError

OPERATORS = ["none", "random", "variance", "conjunctive", "magnitude"]
TINY = dict(paradigm="canonical", clusters=3, dim=40, per_cluster=6)  # 18 rows per split
DATA_ARGS = ["--clusters", "3", "--dim", "40", "--per-cluster", "6"]
TINY_ARGS = ["--paradigm", "canonical", *DATA_ARGS]
PRUNE_ARGS = ["--schedule", "fixed", "--prune-probability", "1.0"]
ARENA_KEYS = ("params", "mask", "m", "v", "step")
SHARED_KEYS = ("test_l1", "train_l1", "parameters", "preserved", "preserved_encoder",
               "preserved_decoder", "flops", "flops_dense", "epochs")


def tiny_config(**over) -> TrainConfig:
    base = dict(TINY, epochs=6, seed=1, schedule="fixed", prune_probability=1.0,
                heldout=10, threshold=0.3)
    base.update(over)
    return TrainConfig(**base)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def stray_tmp(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp"))


def assert_cli_error(r, *needles):
    """Exit code 2, one ``Error:`` line naming the problem, no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]


def assert_input_error(r, *needles):
    """Errors found after parsing (InputError): the whole output is that one line."""
    line = assert_cli_error(r, *needles)
    assert r.output.strip() == line, r.output
    return line


def assert_runs_equal(a: CanonicalRun, b: CanonicalRun):
    for half in ("encoder", "decoder"):
        ha, hb = getattr(a.model, half), getattr(b.model, half)
        for key in ARENA_KEYS:
            x, y = getattr(ha, key), getattr(hb, key)
            assert x.dtype == y.dtype, (half, key)
            np.testing.assert_array_equal(x, y, err_msg=f"{half}/{key}")
    assert a.epoch == b.epoch
    assert a.steps == b.steps
    assert a.history == b.history
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


def write_h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


def good_splits():
    ds = binary_clustering(3, 40, 6, 0.05, 0)
    return dict(train=ds.train, test=ds.test, validation=ds.validation)


def make_checkpoint(path, epochs_done=2, **over) -> CanonicalRun:
    run = CanonicalRun(tiny_config(**over))
    for _ in range(epochs_done):
        run.run_epoch()
    run.save(path)
    return run


# ---------------------------------------------------------------- 1. resume equality (library)


@pytest.mark.parametrize("operator", OPERATORS)
def test_resume_is_bit_identical_to_uninterrupted_run(tmp_path, operator):
    cfg = tiny_config(operator=operator)
    full = CanonicalRun(cfg)
    full.run()

    part = CanonicalRun(cfg)
    for _ in range(3):
        part.run_epoch()
    path = tmp_path / "k3.h5"
    part.save(path)
    assert not stray_tmp(tmp_path)

    resumed = CanonicalRun.from_checkpoint(path)
    assert resumed.config == cfg.validate()
    assert_runs_equal(resumed, part)  # the loaded state is exactly the saved one
    resumed.run()
    assert resumed.epoch == 6
    assert_runs_equal(resumed, full)
    if operator != "none":  # pruning events really happened, also after the resume
        assert all(p > 0 for p in full.history["pruned"]), full.history["pruned"]
        assert full.model.encoder.mask.sum() < full.model.encoder.mask.size
    else:
        assert full.history["pruned"] == [0] * 6
    assert resumed.summary()["test_l1"] == full.summary()["test_l1"]


def test_resume_rejects_other_data(tmp_path):
    path = tmp_path / "c.h5"
    make_checkpoint(path)
    other = binary_clustering(3, 40, 6, 0.05, 99)
    with pytest.raises(CheckpointError, match="other data"):
        CanonicalRun.from_checkpoint(path, data=other)
    wider = binary_clustering(3, 41, 6, 0.05, 0)
    with pytest.raises(CheckpointError, match="architecture"):
        CanonicalRun.from_checkpoint(path, data=wider)


def test_checkpoint_at_epoch_zero_resumes(tmp_path):
    cfg = tiny_config(operator="random", epochs=3)
    full = CanonicalRun(cfg)
    full.run()
    fresh = CanonicalRun(cfg)
    fresh.save(tmp_path / "e0.h5")
    resumed = CanonicalRun.from_checkpoint(tmp_path / "e0.h5")
    assert resumed.epoch == 0 and resumed.history == {k: [] for k in full.history}
    resumed.run()
    assert_runs_equal(resumed, full)


# ---------------------------------------------------------------- 2. resume equality (CLI)


@pytest.mark.parametrize("operator", ["random", "conjunctive"])
def test_cli_resume_matches_uninterrupted(tmp_path, operator):
    common = [*TINY_ARGS, *PRUNE_ARGS, "--operator", operator, "--seed", "4",
              "--heldout", "10"]
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    ra = invoke("train", *common, "--epochs", 6, "--checkpoint", a, "--json")
    assert ra.exit_code == 0, ra.output
    rb = invoke("train", *common, "--epochs", 3, "--checkpoint", b, "--json")
    assert rb.exit_code == 0, rb.output
    assert ckpt_io.load(b).state["epoch"] == 3
    rc = invoke("train", "--resume", b, "--epochs", 6, "--json")
    assert rc.exit_code == 0, rc.output
    sa, sc = json.loads(ra.output), json.loads(rc.output)
    assert sc["epochs"] == sa["epochs"] == 6
    assert sc["test_l1"] == sa["test_l1"]
    assert sc["preserved"] == sa["preserved"] < 1.0
    assert sc["test_l1"] != json.loads(rb.output)["test_l1"]

    ca, cb = ckpt_io.load(a), ckpt_io.load(b)  # --resume writes back to b.h5 by default
    assert cb.state["epoch"] == ca.state["epoch"] == 6
    for half in ("encoder", "decoder"):
        for key in ARENA_KEYS:
            np.testing.assert_array_equal(ca.arenas[half][key], cb.arenas[half][key],
                                          err_msg=f"{half}/{key}")
    assert cb.state["rng"] == ca.state["rng"]
    assert cb.config == ca.config
    assert ca.history.keys() == cb.history.keys()
    for key in ca.history:
        np.testing.assert_array_equal(ca.history[key], cb.history[key])
    assert not stray_tmp(tmp_path)


# ---------------------------------------------------------------- 3. file format


def test_checkpoint_file_format(tmp_path):
    path = tmp_path / "fmt.h5"
    run = make_checkpoint(path, epochs_done=2, operator="magnitude")
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        assert attrs["format"] == "sparseae-checkpoint"
        version = attrs["format-version"]
        assert isinstance(version, (int, np.integer)) and not isinstance(version, bool)
        assert int(version) == ckpt_io.FORMAT_VERSION == 1
        assert attrs["generated-by"] == f"sparseae {sparseae.__version__}"
        created = dt.datetime.fromisoformat(attrs["created"])
        assert created.tzinfo is not None
        assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
        assert attrs["kind"] == "canonical"
        config = TrainConfig.from_dict(json.loads(attrs["config"]))
        assert config == run.config
        state = json.loads(attrs["state"])
        assert state["epoch"] == 2 and state["arch"] == [40, 30, 10]
        assert state["rng"] == run.rng.bit_generator.state
        expected = {"params": np.float32, "mask": np.uint8, "m": np.float32,
                    "v": np.float32, "step": np.int64}
        for half in ("encoder", "decoder"):
            assert isinstance(f[half], h5py.Group)
            arena = getattr(run.model, half)
            for key, dtype in expected.items():
                ds = f[half][key]
                assert ds.dtype == np.dtype(dtype), (half, key, ds.dtype)
                np.testing.assert_array_equal(ds[()], getattr(arena, key))
        assert set(f["history"]) == {"train_loss", "lr", "pruned", "preserved", "figure_epoch",
                                     "mean_l1"}
        for key in f["history"]:
            assert f["history"][key].dtype == np.float64
            assert f["history"][key].shape == ((1,) if key in ("figure_epoch", "mean_l1") else (2,))


# ---------------------------------------------------------------- 4. bad input


def _bad_bytes(path, n=4096):
    path.write_bytes(np.random.default_rng(0).bytes(n))
    return path


@pytest.mark.parametrize("name", ["junk.h5", "junk.npz"])
def test_non_data_file(tmp_path, name):
    path = _bad_bytes(tmp_path / name)
    with pytest.raises(DataError, match="not a readable"):
        load_data(path)
    assert_input_error(invoke("train", "--data", path, "--epochs", 1), "not a readable", name)


def test_missing_data_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(DataError, match="not found"):
        load_data(path)
    assert_input_error(invoke("train", "--data", path, "--epochs", 1), "not found", "nope.h5")


def test_unreadable_data_file(tmp_path, monkeypatch):
    # chmod 000 does not stop root (CI runs as root), so deny read access via os.access
    path = write_h5(tmp_path / "locked.h5", **good_splits())
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.fspath(p) == os.fspath(path)
                        else real_access(p, mode, *a, **k))
    with pytest.raises(DataError, match="not readable"):
        load_data(path)
    assert_cli_error(invoke("train", "--data", path, "--epochs", 1), "--data", "not readable")


def test_data_path_is_a_folder(tmp_path):
    folder = tmp_path / "dir.h5"
    folder.mkdir()
    with pytest.raises(DataError, match="folder"):
        load_data(folder)
    assert_cli_error(invoke("train", "--data", folder, "--epochs", 1), "--data", "directory")


def _bad_data_cases():
    g = good_splits()
    nan, inf = g["train"].copy(), g["test"].copy()
    nan[0, 0] = np.nan
    inf[1, 1] = np.inf
    big = g["train"] * 2.0
    neg = g["validation"] - 0.5
    return {
        "nan": (dict(g, train=nan), "nan or inf"),
        "inf": (dict(g, test=inf), "nan or inf"),
        "1d": (dict(g, train=g["train"].ravel()), "2-d"),
        "3d": (dict(g, test=g["test"][None]), "2-d"),
        "empty-rows": (dict(g, train=np.zeros((0, 40), np.float32)), "empty"),
        "empty-cols": (dict(g, validation=np.zeros((18, 0), np.float32)), "empty"),
        "above-1": (dict(g, train=big), "[0, 1]"),
        "below-0": (dict(g, validation=neg), "[0, 1]"),
        "widths": (dict(g, test=g["test"][:, :39]), "different widths"),
        "no-test": ({"train": g["train"]}, "no 'test'"),
    }


@pytest.mark.parametrize("case", list(_bad_data_cases()))
@pytest.mark.parametrize("ext", [".h5", ".npz"])
def test_bad_data_values(tmp_path, case, ext):
    arrays, needle = _bad_data_cases()[case]
    path = tmp_path / f"bad{ext}"
    if ext == ".npz":
        np.savez(path, **arrays)
    else:
        write_h5(path, **arrays)
    with pytest.raises(DataError) as info:
        load_data(path)
    assert needle in str(info.value).lower()
    assert "\n" not in str(info.value)
    assert_input_error(invoke("train", "--data", path, "--epochs", 1), needle)


def test_dataset_rejects_bad_arrays_directly():
    g = good_splits()
    bad = g["train"].copy()
    bad[3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        Dataset(bad, g["test"], g["validation"])
    with pytest.raises(DataError, match="2-D"):
        Dataset(g["train"][0], g["test"], g["validation"])


def test_width_does_not_match_explicit_arch(tmp_path):
    path = write_h5(tmp_path / "d.h5", **good_splits())
    with pytest.raises(DataError, match="width 40"):
        CanonicalRun(TrainConfig(arch="41,5", epochs=1), load_data(path))
    assert_input_error(invoke("train", "--data", path, "--arch", "41,5", "--epochs", 1),
                       "width 40", "41")
    assert_input_error(invoke("train", *TINY_ARGS, "--arch", "41,5", "--epochs", 1), "width 40")


@pytest.mark.parametrize("args, flag", [
    (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--prune-probability", "1.5"], "--prune-probability"),
    (["--threshold", "-0.1"], "--threshold"),
])
def test_out_of_range_options(args, flag):
    r = invoke("train", *TINY_ARGS, "--epochs", 2, *args)
    assert_cli_error(r, flag)


def test_batch_larger_than_training_split():
    r = invoke("train", *TINY_ARGS, "--epochs", 1, "--batch-size", 19)
    assert_input_error(r, "--batch-size", "18")
    assert invoke("train", *TINY_ARGS, "--epochs", 1, "--batch-size", 18).exit_code == 0
    with pytest.raises(ConfigError, match="batch_size"):
        CanonicalRun(tiny_config(batch_size=19))


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("epochs", 0), ("prune_probability", 1.5), ("threshold", -0.1),
])
def test_config_errors_in_library(field, value):
    with pytest.raises(ConfigError, match=field):
        tiny_config(**{field: value}).validate()
    with pytest.raises(ConfigError, match=field):
        CanonicalRun(tiny_config(**{field: value}))


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_non_hdf5_checkpoint(tmp_path, command):
    path = _bad_bytes(tmp_path / "junk.h5")
    with pytest.raises(CheckpointError, match="not a readable HDF5"):
        ckpt_io.load(path)
    with pytest.raises(CheckpointError):
        CanonicalRun.from_checkpoint(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path, "--epochs", 2]
    assert_input_error(invoke(*args), "not a readable hdf5", "junk.h5")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_missing_checkpoint(tmp_path, command):
    path = tmp_path / "gone.h5"
    with pytest.raises(CheckpointError, match="not found"):
        ckpt_io.load(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path]
    assert_input_error(invoke(*args), "not found", "gone.h5")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_truncated_checkpoint(tmp_path, command):
    path = tmp_path / "cut.h5"
    make_checkpoint(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointError, match="cut.h5"):
        ckpt_io.load(path)
    with pytest.raises(CheckpointError):
        evaluate_checkpoint(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path]
    assert_input_error(invoke(*args), "checkpoint", "cut.h5")


def _edit_attr(path, key, value):
    with h5py.File(path, "r+") as f:
        f.attrs[key] = value


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_checkpoint_with_wrong_format(tmp_path, command):
    path = tmp_path / "other.h5"
    make_checkpoint(path)
    _edit_attr(path, "format", "someone-elses-format")
    with pytest.raises(CheckpointError, match="someone-elses-format"):
        ckpt_io.load(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path]
    assert_input_error(invoke(*args), "format", "sparseae-checkpoint")


def test_hdf5_without_format_attr_is_rejected(tmp_path):
    path = write_h5(tmp_path / "data.h5", **good_splits())  # a data file, not a checkpoint
    with pytest.raises(CheckpointError, match="format"):
        ckpt_io.load(path)
    assert_input_error(invoke("eval", path), "format")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_checkpoint_from_newer_version(tmp_path, command):
    path = tmp_path / "new.h5"
    make_checkpoint(path)
    _edit_attr(path, "format-version", np.int64(ckpt_io.FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="upgrade"):
        ckpt_io.load(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path]
    assert_input_error(invoke(*args), "format-version 2", "upgrade")


def test_checkpoint_missing_arena_is_rejected(tmp_path):
    path = tmp_path / "partial.h5"
    make_checkpoint(path)
    with h5py.File(path, "r+") as f:
        del f["decoder"]
    with pytest.raises(CheckpointError, match="decoder"):
        ckpt_io.load(path)


def _edit_json_attr(path, key, edit):
    with h5py.File(path, "r+") as f:
        value = json.loads(f.attrs[key])
        value = edit(value)
        f.attrs[key] = json.dumps(value)


@pytest.mark.parametrize("command", ["eval", "resume"])
@pytest.mark.parametrize("edit", ["unknown-field", "invalid-value"])
def test_checkpoint_with_bad_stored_config(tmp_path, command, edit):
    """BUG: a checkpoint whose stored config does not validate raises ConfigError from
    TrainConfig.from_dict (canonical.py from_checkpoint / evaluate_checkpoint), which
    the CLI's fail() turns into "Invalid value for '--config'" / "'--epochs'": a flag
    that does not exist, or one the user did not give; the checkpoint is not named."""
    path = tmp_path / "cfg.h5"
    make_checkpoint(path)
    if edit == "unknown-field":
        _edit_json_attr(path, "config", lambda c: {**c, "future_option": 1})
    else:
        _edit_json_attr(path, "config", lambda c: {**c, "epochs": 0})
    with pytest.raises(CheckpointError, match="cfg.h5"):
        CanonicalRun.from_checkpoint(path)
    with pytest.raises(CheckpointError, match="cfg.h5"):
        evaluate_checkpoint(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path, "--epochs", 5]
    line = assert_input_error(invoke(*args), "cfg.h5")
    assert "Invalid value for" not in line


@pytest.mark.parametrize("command", ["eval", "resume"])
@pytest.mark.parametrize("edit", ["missing-arch", "missing-rng", "not-a-dict"])
def test_checkpoint_with_bad_state(tmp_path, command, edit):
    """BUG: checkpoint.load validates the arenas but not the ``state`` JSON, so a
    checkpoint with missing state keys (or a non-object state) crashes from_checkpoint /
    evaluate_checkpoint with a KeyError/TypeError traceback (CLI exit 1) instead of the
    documented one-line CheckpointError for "missing parts"."""
    path = tmp_path / "state.h5"
    make_checkpoint(path)
    if edit == "missing-arch":
        _edit_json_attr(path, "state", lambda s: {k: v for k, v in s.items() if k != "arch"})
    elif edit == "missing-rng":
        _edit_json_attr(path, "state", lambda s: {k: v for k, v in s.items() if k != "rng"})
    else:
        _edit_json_attr(path, "state", lambda s: [1, 2])
    if command == "eval" and edit == "missing-rng":  # eval does not need the RNG state
        r = invoke("eval", path, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["epochs"] == 2
        return
    with pytest.raises(CheckpointError, match="state.h5"):
        if command == "resume":
            CanonicalRun.from_checkpoint(path)
        else:
            evaluate_checkpoint(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path]
    assert_input_error(invoke(*args), "state.h5")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_checkpoint_with_wrong_arena_shape(tmp_path, command):
    """BUG: from_checkpoint checks arena shapes, evaluate_checkpoint does not: ``sparseae
    eval`` on such a file dies with a numpy broadcast ValueError traceback (exit 1)."""
    path = tmp_path / "shape.h5"
    make_checkpoint(path)
    with h5py.File(path, "r+") as f:
        params = f["encoder"]["params"][()]
        del f["encoder"]["params"]
        f["encoder"].create_dataset("params", data=params[:, :10])
    with pytest.raises(CheckpointError, match="encoder/params"):
        if command == "resume":
            CanonicalRun.from_checkpoint(path)
        else:
            evaluate_checkpoint(path)
    args = ["eval", path] if command == "eval" else ["train", "--resume", path]
    assert_input_error(invoke(*args), "shape.h5", "encoder/params")


def test_resume_with_other_arch_is_refused(tmp_path):
    path = tmp_path / "r.h5"
    r = invoke("train", *TINY_ARGS, "--epochs", 2, "--checkpoint", path)
    assert r.exit_code == 0, r.output
    before = path.read_bytes()
    r = invoke("train", "--resume", path, "--arch", "40,20,5", "--epochs", 4)
    assert_input_error(r, "--arch", "resum")
    assert path.read_bytes() == before  # refused before touching the checkpoint


@pytest.mark.parametrize("where", ["missing-folder", "parent-is-file"])
def test_unwritable_checkpoint_path(tmp_path, where):
    if where == "missing-folder":
        folder, target = tmp_path, tmp_path / "no" / "such" / "c.h5"
    else:
        (tmp_path / "plain").write_text("x")
        folder, target = tmp_path, tmp_path / "plain" / "c.h5"
    run = CanonicalRun(tiny_config(epochs=1))
    with pytest.raises(CheckpointError):
        run.save(target)
    r = invoke("train", *TINY_ARGS, "--epochs", 1, "--checkpoint", target)
    assert_input_error(r, "checkpoint", "folder")
    assert "summary" not in r.output  # failed before training
    assert not stray_tmp(folder)
    assert sorted(os.listdir(folder)) == (["plain"] if where == "parent-is-file" else [])


@pytest.mark.parametrize("where", ["missing-folder", "parent-is-file"])
@pytest.mark.parametrize("ext", [".h5", ".npz"])
def test_unwritable_data_output(tmp_path, where, ext):
    if where == "missing-folder":
        target = tmp_path / "no" / f"d{ext}"
    else:
        (tmp_path / "plain").write_text("x")
        target = tmp_path / "plain" / f"d{ext}"
    with pytest.raises(DataError):
        save_data(target, binary_clustering(3, 40, 6, 0.05, 0))
    r = invoke("data", "binary-clustering", *DATA_ARGS, "-o", target)
    assert_input_error(r, "folder")
    assert not stray_tmp(tmp_path)
    assert not target.exists()


def test_failed_write_onto_a_folder_leaves_no_temp_file(tmp_path):
    # the temporary file is created and fully written, then the rename fails
    (tmp_path / "c.h5").mkdir()
    (tmp_path / "d.h5").mkdir()
    run = CanonicalRun(tiny_config(epochs=1))
    with pytest.raises(CheckpointError, match="cannot write"):
        run.save(tmp_path / "c.h5")
    with pytest.raises(DataError, match="cannot write"):
        save_data(tmp_path / "d.h5", run.data)
    assert not stray_tmp(tmp_path)
    assert_cli_error(invoke("train", *TINY_ARGS, "--epochs", 1, "--checkpoint", tmp_path / "c.h5"),
                     "directory")
    assert not stray_tmp(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["c.h5", "d.h5"]


def test_error_inside_write_leaves_old_checkpoint_and_no_temp_file(tmp_path):
    path = tmp_path / "c.h5"
    run = make_checkpoint(path)
    before = path.read_bytes()
    broken = run.to_checkpoint()
    broken.arenas["decoder"] = {"params": broken.arenas["decoder"]["params"]}  # no mask etc.
    with pytest.raises(KeyError):
        ckpt_io.save(path, broken)
    assert path.read_bytes() == before
    assert not stray_tmp(tmp_path)
    assert os.listdir(tmp_path) == ["c.h5"]


# ---------------------------------------------------------------- 5. crash safety (SIGKILL)

_WRITER = textwrap.dedent("""
    import sys
    from sparseae import CanonicalRun, TrainConfig
    cfg = TrainConfig(clusters=3, dim=40, per_cluster=6, epochs=int(sys.argv[2]), seed=7,
                      operator="random", schedule="fixed", prune_probability=1.0)
    run = CanonicalRun(cfg)
    while True:
        if run.epoch < cfg.epochs:
            run.run_epoch()
        run.save(sys.argv[1])
""")


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_sigkill_during_checkpoint_loop_leaves_a_loadable_checkpoint(tmp_path):
    epochs = 1000
    reference = CanonicalRun(TrainConfig(**TINY, epochs=epochs, seed=7, operator="random",
                                         schedule="fixed", prune_probability=1.0))
    reference.run()
    path = tmp_path / "loop.h5"
    seen = set()
    for delay in (0.5, 1.0, 1.6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(epochs)],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda: path.exists() or proc.poll() is not None, 60, "first checkpoint")
            assert proc.poll() is None, proc.communicate()
            time.sleep(delay)
            assert proc.poll() is None, proc.communicate()
        finally:
            proc.kill()
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        # only a complete checkpoint is ever at `path`; temporaries have other names
        # (and the writer's sidecar lock file, whose lock the kernel released at the kill)
        others = [n for n in os.listdir(tmp_path) if n not in (path.name, ".loop.h5.lock")]
        assert all(n.startswith(".loop.h5.") and n.endswith(".tmp") for n in others), others
        ck = ckpt_io.load(path)
        epoch = ck.state["epoch"]
        assert 1 <= epoch <= epochs
        per_epoch = ("train_loss", "lr", "pruned", "preserved")
        assert all(len(ck.history[k]) == epoch for k in per_epoch)
        assert list(ck.history["figure_epoch"]) == list(range(0, epoch, 100))
        seen.add(epoch)
        run = CanonicalRun.from_checkpoint(path)
        assert run.epoch == epoch
        run.run()
        assert_runs_equal(run, reference)
        run.save(path)  # the next successful write removes what the killed writer left
        assert os.listdir(tmp_path) == [path.name]
        path.unlink()
    assert len(seen) >= 2, seen  # the kills landed at different points of the run


# ---------------------------------------------------------------- 6. Ctrl-C


def test_ctrl_c_checkpoints_and_exits_130(tmp_path):
    path = tmp_path / "c.h5"
    cmd = [sys.executable, "-m", "sparseae", "train", *TINY_ARGS, "--epochs", "100000",
           "--checkpoint", "c.h5", "--checkpoint-every", "20", "--quiet", "--operator",
           "magnitude", "--prune-amount", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

    def trained_some_epochs():
        # the first checkpoint is written before training starts; wait for a periodic one
        return proc.poll() is not None or (path.exists() and ckpt_io.load(path).state["epoch"] > 0)

    try:
        _wait_for(trained_some_epochs, 120, "a checkpoint after some epochs")
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "Traceback" not in err
    m = re.search(r"interrupted after epoch (\d+); checkpoint c\.h5", err)
    assert m, err
    assert out == ""

    ck = ckpt_io.load(path)
    epoch = ck.state["epoch"]
    assert epoch == int(m.group(1))
    assert 1 <= epoch < 100000
    assert ck.config["epochs"] == 100000
    for key in ("train_loss", "lr", "pruned", "preserved"):
        assert len(ck.history[key]) == epoch, key
    assert ck.arenas["encoder"]["step"][0] == epoch * 4  # 18 samples, batch 5: 4 steps/epoch
    assert not stray_tmp(tmp_path)

    r = invoke("eval", path, "--json")  # eval works on the intermediate checkpoint
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["epochs"] == epoch

    r = invoke("train", "--resume", path, "--epochs", epoch + 2, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["epochs"] == epoch + 2
    ck2 = ckpt_io.load(path)
    assert ck2.state["epoch"] == epoch + 2
    assert all(len(ck2.history[k]) == epoch + 2 for k in ("train_loss", "lr", "pruned", "preserved"))
    for key in ck.history:  # the old history is a prefix of the new one
        np.testing.assert_array_equal(ck2.history[key][:len(ck.history[key])], ck.history[key])


# ---------------------------------------------------------------- 7. eval


def test_eval_json_keys_and_values_match_train(tmp_path):
    path = tmp_path / "e.h5"
    r = invoke("train", *TINY_ARGS, *PRUNE_ARGS, "--operator", "magnitude", "--epochs", 4,
               "--checkpoint", path, "--checkpoint-every", 1, "--json")
    assert r.exit_code == 0, r.output
    trained = json.loads(r.output)
    r = invoke("eval", path, "--json")
    assert r.exit_code == 0, r.output
    evaluated = json.loads(r.output)
    for key in SHARED_KEYS:
        assert key in trained and key in evaluated, key
        assert evaluated[key] == trained[key], key
    assert evaluated["epochs"] == 4
    assert evaluated["preserved"] < 1.0
    assert evaluated["flops"] < evaluated["flops_dense"]


def test_eval_on_intermediate_epoch(tmp_path):
    path = tmp_path / "mid.h5"
    run = CanonicalRun(tiny_config(operator="variance", epochs=6))
    run.run_epoch()
    run.run_epoch()
    run.save(path)
    r = invoke("eval", path, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["epochs"] == 2
    assert s["test_l1"] == run.model.l1(run.data.test)
    assert s["train_l1"] == run.model.l1(run.data.train)
    lib = evaluate_checkpoint(path)
    for key in SHARED_KEYS:
        assert s[key] == lib[key], key
    r = invoke("eval", path)  # human-readable form
    assert r.exit_code == 0 and "test_l1" in r.output and "mid.h5" in r.output


# ---------------------------------------------------------------- 8. sparseae data


@pytest.mark.parametrize("ext", [".h5", ".npz"])
def test_generated_data_file_trains_like_generated_data(tmp_path, ext):
    out = tmp_path / f"data{ext}"
    r = invoke("data", "binary-clustering", *DATA_ARGS, "--seed", 5, "-o", out)
    assert r.exit_code == 0, r.output
    assert out.exists() and not stray_tmp(tmp_path)
    if ext == ".h5":
        with h5py.File(out, "r") as f:
            assert {"train", "test", "validation"} <= set(f)
            shapes = {k: f[k].shape for k in ("train", "test", "validation")}
    else:
        with np.load(out) as z:
            assert {"train", "test", "validation"} <= set(z.files)
            shapes = {k: z[k].shape for k in ("train", "test", "validation")}
    assert shapes == {k: (18, 40) for k in shapes}
    ds = load_data(out)
    ref = binary_clustering(3, 40, 6, 0.05, 5)
    for name in ("train", "test", "validation"):
        np.testing.assert_array_equal(getattr(ds, name), getattr(ref, name))

    from_file = invoke("train", "--paradigm", "canonical", "--data", out, "--epochs", 3, "--seed", 5,
                       "--json")
    assert from_file.exit_code == 0, from_file.output
    generated = invoke("train", *TINY_ARGS, "--epochs", 3, "--seed", 5, "--json")
    assert generated.exit_code == 0, generated.output
    a, b = json.loads(from_file.output), json.loads(generated.output)
    assert a["test_l1"] == b["test_l1"] and a["epochs"] == 3


def test_resume_of_a_run_on_a_data_file(tmp_path):
    out = tmp_path / "d.npz"
    assert invoke("data", "binary-clustering", *DATA_ARGS, "-o", out).exit_code == 0
    full = invoke("train", "--data", out, "--epochs", 4, "--json", *PRUNE_ARGS,
                  "--operator", "random")
    part = invoke("train", "--data", out, "--epochs", 2, "--checkpoint", tmp_path / "p.h5",
                  *PRUNE_ARGS, "--operator", "random")
    assert full.exit_code == 0 and part.exit_code == 0, (full.output, part.output)
    rest = invoke("train", "--resume", tmp_path / "p.h5", "--epochs", 4, "--json")
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.output)["test_l1"] == json.loads(full.output)["test_l1"]


@pytest.mark.parametrize("key", ["params", "m", "v"])
def test_checkpoint_with_nonzero_pruned_entries_is_refused(tmp_path, key):
    """A pruned entry (mask 0) must be exactly 0 in the parameters and both moments:
    the kernels rely on it, so such an entry would keep computing.  Refused on resume
    and eval, one line naming the file and the array."""
    path = tmp_path / "dead.h5"
    make_checkpoint(path)
    with h5py.File(path, "r+") as f:
        g = f["encoder"]
        mask = g["mask"][()]
        mask[0, :5] = 0
        g["mask"][...] = mask
        for name in ("params", "m", "v"):  # a consistent pruning of 5 entries ...
            arr = g[name][()]
            arr[0, :5] = 0.25 if name == key else 0.0  # ... but for one array
            g[name][...] = arr
    with pytest.raises(CheckpointError, match=f"encoder/{key} is nonzero at 5 pruned"):
        CanonicalRun.from_checkpoint(path)
    for args in (["eval", path], ["train", "--resume", path]):
        assert_input_error(invoke(*args), "dead.h5", f"encoder/{key}")
