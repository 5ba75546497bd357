"""Data sets by name and MNIST-style IDX files (issue 15): what each name loads, the
provenance written with it, runs on it that resume and evaluate, and one clear error for
every kind of bad input."""

from __future__ import annotations

import gzip
import json
import socket
import struct

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from sparseae import datasets, idx
from sparseae.cli.main import main
from sparseae.config import TrainConfig
from sparseae.data import load
from sparseae.errors import ConfigError, DataError
from sparseae.model import PRESETS, Architecture


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def error_line(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = [x for x in r.output.strip().splitlines() if x.startswith("Error:")]
    assert len(lines) == 1, r.output
    for needle in needles:
        assert str(needle).lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------ IDX files


def idx_bytes(arr, code=0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    arr = np.asarray(arr)
    return (bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            + arr.astype(dtype).tobytes())


def write(path, payload: bytes, gz=False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def mnist_dir(tmp_path, n_train=24, n_test=5, rows=3, cols=4, gz=False, seed=0,
              names=("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")):
    rng = np.random.default_rng(seed)
    tr = rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8)
    te = rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8)
    folder = tmp_path / "idx"
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    write(folder / (names[0] + suffix), idx_bytes(tr), gz)
    write(folder / (names[1] + suffix), idx_bytes(te), gz)
    # labels lie next to the images in real folders; they are not read
    write(folder / "train-labels-idx1-ubyte", idx_bytes(np.arange(n_train) % 10))
    return folder, tr, te


@pytest.mark.parametrize("code, values", [
    (0x08, np.array([[0, 1, 255], [7, 128, 3]], np.uint8)),
    (0x0B, np.array([[258, -2], [1, 300]], np.int16)),
    (0x0D, np.array([[[0.5, -1.25]], [[3.0, 1e-3]]], np.float32)),
])
def test_read_idx_is_big_endian_with_its_declared_shape(tmp_path, code, values):
    for gz in (False, True):
        path = write(tmp_path / f"a{code}{'.gz' if gz else ''}", idx_bytes(values, code), gz)
        got = idx.read_idx(path)
        assert got.shape == values.shape and got.dtype == values.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, values)
    # big-endian on disk: 258 is 01 02
    if code == 0x0B:
        raw = (tmp_path / f"a{code}").read_bytes()
        assert raw[4 + 8:4 + 8 + 2] == b"\x01\x02"


def test_mnist_folder_scales_flattens_and_carves_validation(tmp_path):
    folder, tr, te = mnist_dir(tmp_path)
    d = load(f"mnist:{folder}")
    assert d.train.shape == (22, 12) and d.validation.shape == (2, 12) and d.test.shape == (5, 12)
    assert d.train.dtype == np.float32
    # computed here from the raw images: row-major flattening, / 255
    flat_tr = tr.reshape(24, 12).astype(np.float64) / 255.0
    np.testing.assert_allclose(d.test, te.reshape(5, 12) / 255.0, rtol=0, atol=1e-7)
    # train + validation are the 24 training images, each once, in their order
    both = np.concatenate([d.train, d.validation]).astype(np.float64)
    rows = {tuple(np.round(r * 255).astype(int)) for r in both}
    assert rows == {tuple(r) for r in tr.reshape(24, 12).astype(int)} and len(both) == 24
    idx = [int(np.flatnonzero((np.abs(flat_tr - r) < 1e-6).all(1))[0]) for r in d.train]
    assert idx == sorted(idx)
    # a fixed split: the same again, another seed another one
    again = load(f"mnist:{folder}")
    np.testing.assert_array_equal(again.validation, d.validation)
    other, meta = datasets.build(f"mnist:{folder}", split_seed=5)
    assert not np.array_equal(other.validation, d.validation)
    assert meta["split_seed"] == 5 and "255" in meta["preprocessing"]


@pytest.mark.parametrize("names, gz", [
    (("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"), True),
    (("train-images.idx3-ubyte", "t10k-images.idx3-ubyte"), False),
    (("train-images.idx", "test-images.idx"), True),
])
def test_mnist_file_names(tmp_path, names, gz):
    folder, tr, te = mnist_dir(tmp_path, names=names, gz=gz)
    d, meta = datasets.build(f"fashion-mnist:{folder}")
    np.testing.assert_allclose(d.test, te.reshape(5, 12) / 255.0, rtol=0, atol=1e-7)
    assert names[0] in meta["source"] and meta["source"].startswith("Fashion-MNIST")


def _bad(tmp_path, case):
    """A folder (or file) with one thing wrong; returns (path, words of the error)."""
    folder, tr, te = mnist_dir(tmp_path)
    train = folder / "train-images-idx3-ubyte"
    good = train.read_bytes()
    if case == "no folder":
        return tmp_path / "nowhere", ["folder not found"]
    if case == "a file":
        return train, ["is not a folder"]
    if case == "no train":
        train.unlink()
        return folder, ["no mnist training images", "train-images-idx3-ubyte"]
    if case == "no test":
        (folder / "t10k-images-idx3-ubyte").unlink()
        return folder, ["no mnist test images", "t10k-images-idx3-ubyte"]
    if case == "magic":
        train.write_bytes(b"\x89PNG\r\n\x1a\n" + good[8:])
        return folder, ["not an idx file", "magic number 0x89504e47"]
    if case == "short":
        train.write_bytes(b"\x00\x00")
        return folder, ["not an idx file", "2 bytes"]
    if case == "truncated header":
        train.write_bytes(good[:9])
        return folder, ["truncated", "3 dimensions", "after 9 bytes"]
    if case == "truncated data":
        train.write_bytes(good[:-7])
        return folder, ["truncated", "24x3x4", "288 bytes", "281"]
    if case == "extra bytes":
        train.write_bytes(good + b"\x00" * 5)
        return folder, ["5 bytes after", "24x3x4"]
    if case == "labels":
        train.write_bytes(idx_bytes(np.arange(24) % 10))
        return folder, ["1-d array", "labels", "expected images"]
    if case == "not bytes":
        train.write_bytes(idx_bytes(tr.astype(np.float32), 0x0D))
        return folder, ["float32 values", "unsigned bytes"]
    if case == "bad gzip":
        train.unlink()
        (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:-20])
        return folder, ["not a readable gzip file"]
    if case == "gz not gzip":
        train.unlink()
        (folder / "train-images-idx3-ubyte.gz").write_bytes(good)
        return folder, ["not a gzip file"]
    if case == "widths":
        train.write_bytes(idx_bytes(tr.reshape(24, 2, 6)[:, :, :5]))
        return folder, ["10 pixels", "test images 12"]
    if case == "one image":
        train.write_bytes(idx_bytes(tr[:1]))
        return folder, ["1 image", "at least 2"]
    raise AssertionError(case)


BAD = ["no folder", "a file", "no train", "no test", "magic", "short", "truncated header",
       "truncated data", "extra bytes", "labels", "not bytes", "bad gzip", "gz not gzip",
       "widths", "one image"]


@pytest.mark.parametrize("case", BAD)
def test_bad_idx_input_is_one_clear_error(tmp_path, case):
    path, words = _bad(tmp_path, case)
    with pytest.raises(DataError) as exc:
        load(f"mnist:{path}")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("data: ")
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    # the command line: exit 2, one line, from `data mnist --from` and `train --data mnist:`
    out = tmp_path / "out.h5"
    error_line(invoke("data", "mnist", "--from", path, "-o", out), *words)
    assert not out.exists()
    error_line(invoke("train", "--data", f"mnist:{path}", "--epochs", 1), *words)


def test_names_resolve_and_refuse_what_they_cannot_be(tmp_path):
    assert TrainConfig(data="binary-clustering").validate().data is None
    assert TrainConfig(data="digits").validate().data == "digits"
    # names joined onto a sweep spec's folder come back
    assert datasets.canonical(str(tmp_path / "digits")) == "digits"
    assert datasets.canonical(str(tmp_path / "mnist:raw/idx")) == f"mnist:{tmp_path}/raw/idx"
    assert datasets.canonical(str(tmp_path) + "/mnist:/abs/idx") == "mnist:/abs/idx"
    # a file of that name wins
    (tmp_path / "digits").write_bytes(b"x")
    assert datasets.canonical(str(tmp_path / "digits")) == str(tmp_path / "digits")
    with pytest.raises(ConfigError, match="^data: mnist: needs a folder"):
        TrainConfig(data="mnist:").validate()
    with pytest.raises(DataError, match=r"file not found: digit \(nor a data set name; "
                                        r"built-in data sets: digits, digits-binary"):
        load("digit")
    error_line(invoke("train", "--data", "digit"), "data: file not found: digit",
               "digits, digits-binary, mnist1d")
    error_line(invoke("train", "--data", "mnist:"), "'--data'", "needs a folder")


def test_config_files_and_sweep_specs_take_names(tmp_path):
    from sparseae.sweep import load_spec

    folder, _, _ = mnist_dir(tmp_path)
    (tmp_path / "c.toml").write_text('data = "mnist:idx"\nparadigm = "canonical"\n')
    assert TrainConfig.from_toml(tmp_path / "c.toml").data == f"mnist:{folder}"
    (tmp_path / "s.toml").write_text('[base]\nparadigm = "canonical"\nepochs = 1\n'
                                     '[grid]\ndata = ["digits", "mnist:idx", '
                                     '"binary-clustering"]\n')
    spec = load_spec(tmp_path / "s.toml")
    assert [v.config.data for v in spec.variants] == ["digits", f"mnist:{folder}", None]


# ------------------------------------------------------------------ built-in data sets


def test_digits_are_sklearns_digits_scaled_and_split():
    sk = pytest.importorskip("sklearn.datasets")
    X = sk.load_digits().data  # 1797 x 64, 0..16
    d, meta = datasets.build("digits")
    assert d.train.shape == (1079, 64) and d.validation.shape == (359, 64)
    assert d.test.shape == (359, 64) and d.train.dtype == np.float32
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(d.test, (X[np.sort(perm[:359])] / 16).astype(np.float32))
    np.testing.assert_array_equal(d.validation,
                                  (X[np.sort(perm[359:718])] / 16).astype(np.float32))
    both = np.concatenate([d.train, d.validation, d.test]) * 16
    assert sorted(map(tuple, both.astype(int))) == sorted(map(tuple, X.astype(int)))
    assert d.train.min() == 0.0 and d.train.max() == 1.0
    b = load("digits-binary")
    np.testing.assert_array_equal(b.train, (d.train >= 0.5).astype(np.float32))
    assert 0.2 < b.train.mean() < 0.6
    assert meta["split_seed"] == 0 and meta["version"].startswith("scikit-learn ")
    assert "divided by 16" in meta["preprocessing"]
    # each load is a fresh copy
    a = load("digits")
    a.train[:] = 0
    assert load("digits").train.max() == 1.0


def test_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    import importlib
    import importlib.util

    real_find, real_import = importlib.util.find_spec, importlib.import_module
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n.startswith("sklearn") else real_find(n, *a))

    def no_extra(name, *a):
        if name.split(".")[0] in ("sklearn", "mnist1d"):
            raise ImportError(name)
        return real_import(name, *a)

    monkeypatch.setattr(importlib, "import_module", no_extra)
    monkeypatch.setattr(datasets, "_MEMO", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for name, package in (("digits", "scikit-learn"), ("mnist1d", "mnist1d")):
        with pytest.raises(DataError, match=f"'{name}' needs {package}.*sparseae\\[datasets\\]"):
            load(name)
    error_line(invoke("train", "--data", "digits-binary"), "needs scikit-learn",
               "sparseae[datasets]")


def test_mnist1d_is_generated_offline_and_cached(monkeypatch, tmp_path):
    m = pytest.importorskip("mnist1d.data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "_MEMO", {})

    def no_network(*a, **k):
        raise AssertionError("mnist1d tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    d, meta = datasets.build("mnist1d")
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched
    assert d.train.shape == (3500, 40) and d.validation.shape == (500, 40)
    assert d.test.shape == (1000, 40) and d.test.dtype == np.float32
    # computed here from the package's generator: one min-max map onto [0, 1]
    raw = m.make_dataset(m.get_dataset_args())
    lo = min(raw["x"].min(), raw["x_test"].min())
    hi = max(raw["x"].max(), raw["x_test"].max())
    np.testing.assert_allclose(d.test, (raw["x_test"] - lo) / (hi - lo), rtol=0, atol=1e-7)
    perm = np.random.default_rng(0).permutation(4000)
    np.testing.assert_allclose(d.validation, (raw["x"][np.sort(perm[:500])] - lo) / (hi - lo),
                               rtol=0, atol=1e-7)
    allx = np.concatenate([d.train, d.validation, d.test])
    assert allx.min() == 0.0 and allx.max() == 1.0
    assert meta["version"].startswith("mnist1d ") and meta["scale_min"] == lo
    # later loads read the cache; a damaged cache is generated again
    cache = tmp_path / "sparseae" / "datasets"
    (f,) = cache.iterdir()
    monkeypatch.setattr(datasets, "_MEMO", {})
    monkeypatch.setattr(m, "make_dataset", lambda *a: pytest.fail("not from the cache"))
    np.testing.assert_array_equal(load("mnist1d").test, d.test)
    f.write_bytes(b"PK\x03\x04garbage")
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "_MEMO", {})
    np.testing.assert_array_equal(load("mnist1d").train, d.train)
    assert f.stat().st_size > 1000


# ------------------------------------------------------------------ files, runs, resume


def test_data_command_writes_provenance_and_the_same_data(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits.h5"
    r = invoke("data", "digits", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"wrote {out}: train/validation/test 1079/359/359 x 64")
    with h5py.File(out, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    assert attrs["dataset"] == "digits" and attrs["split_seed"] == 0
    assert attrs["version"].startswith("scikit-learn ") and "digits.csv.gz" in attrs["source"]
    assert attrs["preprocessing"] == "pixel values 0-16 divided by 16"
    assert attrs["format"] == "sparseae-data"
    a, b = load(out), load("digits")
    for s in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(a, s), getattr(b, s))
    error_line(invoke("data", "digits", "-o", out), "exists", "--overwrite")
    r = invoke("data", "digits-binary", "--split-seed", 3, "-o", tmp_path / "b.npz")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "b.npz") as z:
        meta = json.loads(str(z["meta"]))
        assert z["train"].dtype == np.uint8  # binary data are stored as bytes
    assert meta["split_seed"] == 3 and meta["dataset"] == "digits-binary"
    error_line(invoke("data", "digits", "-o", tmp_path / "x.csv"), "'.csv'")


def test_data_mnist_command(tmp_path):
    folder, tr, te = mnist_dir(tmp_path, gz=True)
    out = tmp_path / "m.h5"
    r = invoke("data", "mnist", "--from", folder, "--split-seed", 2, "-o", out)
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        assert f.attrs["split_seed"] == 2 and f.attrs["dataset"] == "mnist"
        assert "train-images-idx3-ubyte.gz" in f.attrs["source"]
        assert "sha256" in f.attrs["version"]
    got, want = load(out), datasets.build(f"mnist:{folder}", 2)[0]
    np.testing.assert_array_equal(got.validation, want.validation)


def test_a_run_on_a_name_resumes_and_evaluates(tmp_path):
    pytest.importorskip("sklearn")
    ck = tmp_path / "run.h5"
    args = ["--paradigm", "canonical", "--arch", "small", "--operator", "conjunctive",
            "--schedule", "fixed", "--prune-probability", "1", "--json", "--quiet"]
    r = invoke("train", "--data", "digits", *args, "--epochs", 1, "--checkpoint", ck)
    assert r.exit_code == 0, r.output
    first = json.loads(r.output.strip().splitlines()[-1])
    assert first["arch"] == "64-30-2 / 2-30-64"
    assert first["data"].startswith("built-in digits")
    from sparseae import checkpoint as ckpt_io

    state = ckpt_io.load(ck).state
    assert "data_path" not in state and state["data_sha256"] == first["data_sha256"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = invoke("train", "--resume", ck, "--epochs", 2, "--json", "--quiet",
               catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["epochs"] == 2
    r = invoke("eval", ck, "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    assert ev["data_sha256"] == first["data_sha256"] and ev["epochs"] == 2
    # the name no longer giving the same data is refused
    ckpt = ckpt_io.load(ck)
    ckpt.state["data_sha256"] = "0" * 64
    ckpt_io.save(ck, ckpt)
    error_line(invoke("eval", ck), "digits no longer gives the data", "sha-256")


def test_split_sizes_are_checked_naming_the_flag(tmp_path):
    folder, _, _ = mnist_dir(tmp_path)  # train 22, validation 2, test 5
    data = f"mnist:{folder}"
    error_line(invoke("train", "--data", data, "--paradigm", "canonical", "--batch-size", 23),
               "'--batch-size'", "[1, 22]", "training split")
    error_line(invoke("train", "--data", data, "--population", 3, "--batch-size", 30),
               "'--batch-size'", "[1, 22]")
    r = invoke("train", "--data", data, "--paradigm", "canonical", "--operator", "conjunctive",
               "--epochs", 1, "--quiet")
    assert r.exit_code == 0, r.output
    assert "Warning: heldout 100 (not given as a flag; set it with --heldout) is more than the 2 " \
           "samples of the validation split" in r.output


# ------------------------------------------------------------------ every operator, paradigm


def _every():
    out = [("digits", "sklearn"), ("digits-binary", "sklearn"), ("mnist1d", "mnist1d"),
           ("mnist", None)]
    return [pytest.param(n, p, id=n) for n, p in out]


@pytest.mark.parametrize("name, needs", _every())
def test_every_dataset_trains_with_every_operator_and_paradigm(tmp_path, name, needs):
    from sparseae.runs import make_run

    if needs:
        pytest.importorskip(needs)
    if name == "mnist":
        folder, _, _ = mnist_dir(tmp_path, n_train=60, n_test=10, rows=5, cols=5)
        name = f"mnist:{folder}"
    data = load(name)
    for profile in ("default", "gecco25"):
        for paradigm in ("canonical", "lipi"):
            for op in ("random", "variance", "conjunctive", "magnitude"):
                config = TrainConfig.from_profile(
                    profile, data=name, paradigm=paradigm, operator=op, epochs=2,
                    population=3, schedule="fixed", prune_probability=1.0, heldout=3,
                    prune_amount=0.2)
                s = make_run(config, data).run()
                assert np.isfinite(s["test_l1"]) and 0 < s["test_l1"] < 1, (profile, op, s)
                if profile == "default":
                    assert s["preserved"] < 1.0, (paradigm, op, s["preserved"])


# ------------------------------------------------------------------ presets


def test_presets_follow_the_input_width():
    table = {p: {d: "-".join(map(str, Architecture(PRESETS[p]).with_input_dim(d).sizes))
                 for d in (1000, 784, 64, 40)} for p in PRESETS}
    assert table == {
        "default": {1000: "1000-30-10", 784: "784-30-10", 64: "64-30-10", 40: "40-30-10"},
        "small": {1000: "1000-30-2", 784: "784-30-2", 64: "64-30-2", 40: "40-30-2"},
        "large": {1000: "1000-60-30-10", 784: "784-60-30-10", 64: "64-48-30-10",
                  40: "40-30-22-10"},
    }
    for p in PRESETS:
        for d in range(1, 120):
            sizes = Architecture(PRESETS[p]).with_input_dim(d).sizes
            assert sizes[0] == d and len(sizes) == len(PRESETS[p])
            assert all(b <= max(1, a * 3 // 4) for a, b in zip(sizes, sizes[1:])), sizes
            assert all(b <= w for b, w in zip(sizes[1:], PRESETS[p][1:]))


# ------------------------------------------------------------------ the study


def test_study_spec_and_findings():
    from bench import realdata
    from sparseae.sweep import load_spec

    for name, want in (("digits", "digits"), ("mnist1d", "mnist1d"),
                       ("binary-clustering", None)):
        spec = load_spec(realdata.SPEC, sets=[f"base.data={name}"])
        assert [v.name for v in spec.variants] == list(realdata.CANONICAL + realdata.LIPI)
        assert spec.trials == 5 and {v.config.data for v in spec.variants} == {want}
        assert {v.config.profile for v in spec.variants} == {"gecco25"}
    rows = {"canonical none": [0.3] * 5,
            "canonical conjunctive-exponential": [0.20, 0.21, 0.22, 0.23, 0.24],
            "canonical random-exponential": [0.30, 0.31, 0.32, 0.33, 0.34],
            "canonical variance-exponential": [0.205, 0.215, 0.225, 0.25, 0.26],
            "lipi none": [0.10, 0.11, 0.12, 0.13, 0.14],
            "lipi random-exponential": [0.15, 0.16, 0.17, 0.18, 0.19],
            "lipi conjunctive-final_n": [0.2] * 5, "lipi variance-population": [0.2] * 5}
    got = {text: (ok, detail) for text, ok, detail in realdata.findings(rows)}
    ok, detail = got["CONJUNCTIVE is the best operator in canonical training"]
    assert ok == "holds (n.s.)" and "vs random p=0.00794" in detail  # variance overlaps
    ok, detail = got["RANDOM-exponential is the best in Lipi-AE-S"]
    assert ok == "FAILS" and "lowest median: lipi none 0.1200" in detail
    assert got["Lipi-AE-S beats canonical training (none vs none)"][0] == "holds"
