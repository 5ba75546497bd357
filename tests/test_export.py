"""Export (issue 14, item 3): the latent map of ``compact``, ``CompactNetwork.save``/``load``
as a plain validated .npz, ONNX, and ``sparseae export``."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from sparseae import Autoencoder, CanonicalRun, CheckpointError, LipiRun, TrainConfig
from sparseae.data import binary_clustering
from sparseae.data import load as load_data
from sparseae.data import save as save_data
from sparseae import export as ex
from sparseae.cli.main import main
from sparseae.metrics import CompactNetwork, compact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = "23,11,7"
DEAD_OUT = [1, 4]   # latent units with no live outgoing weight
DEAD_IN = [5]       # no live incoming weight and a pruned bias (outputs ReLU(0) = 0)
KEPT = [0, 2, 3, 6]
TINY = dict(clusters=3, dim=23, per_cluster=6, batch_size=5, arch=ARCH)


def kill_latent_units(encoders, decoders, rows):
    """Cut latent units DEAD_OUT and DEAD_IN in arena ``rows``, as pruning would."""
    n = encoders.n_layers
    for i in rows:
        decoders.weight(i, 0, "mask")[:, DEAD_OUT] = 0
        encoders.weight(i, n - 1, "mask")[DEAD_IN] = 0
        encoders.bias(i, n - 1, "mask")[DEAD_IN] = 0
        encoders.weight(i, 0, "mask")[3, ::2] = 0  # and some scattered hidden weights
        for h in (encoders, decoders):
            for key in ("params", "m", "v"):
                getattr(h, key)[i][h.mask[i] == 0] = 0


def dead_latent_model(seed=0):
    ae = Autoencoder(ARCH, seed=seed)
    kill_latent_units(ae.encoder, ae.decoder, [0])
    return ae


def inputs(n=13, dim=23, seed=None):
    return np.random.default_rng(seed).random((n, dim)).astype(np.float32)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = [x for x in r.output.strip().splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and r.output.strip() == lines[0], r.output
    for needle in needles:
        assert str(needle).lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------ the latent map


def test_latent_map_names_the_original_units():
    ae = dead_latent_model()
    small = compact(ae)
    assert small.widths == [23, 11, 4, 11, 23]
    assert small.latent_units.tolist() == KEPT and small.latent_units.dtype == np.int64
    assert small.latent_dim == 7 and small.full_widths == (23, 11, 7, 11, 23)
    assert small.units[0].tolist() == list(range(23)) == small.units[-1].tolist()
    x = inputs()
    np.testing.assert_allclose(small.reconstruct(x), ae.reconstruct(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(small.encode(x), ae.encode(x)[:, KEPT], rtol=1e-5, atol=1e-5)
    full = small.encode(x, full=True)
    assert full.shape == (13, 7)
    np.testing.assert_array_equal(full[:, KEPT], small.encode(x))
    assert not full[:, DEAD_OUT + DEAD_IN].any()
    assert not ae.encode(x)[:, DEAD_IN].any()  # no input, no bias: 0 in the original too
    # original-width codes decode through the map; the removed columns are ignored
    np.testing.assert_allclose(small.decode(ae.encode(x), full=True), ae.reconstruct(x),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(small.expand_latent(small.encode(x), fill=-1)[:, DEAD_OUT],
                                  -1)
    with pytest.raises(ValueError):
        small.decode(small.encode(x), full=True)


def test_nothing_removed_is_the_identity_map():
    ae = Autoencoder("9,5,3", seed=2)
    small = compact(ae)
    assert small.latent_units.tolist() == [0, 1, 2]
    assert tuple(small.widths) == small.full_widths == (9, 5, 3, 5, 9)
    bare = CompactNetwork(small.encoder, small.decoder)  # maps default to the identity
    assert bare.latent_units.tolist() == [0, 1, 2] and bare.full_widths == (9, 5, 3, 5, 9)


# ------------------------------------------------------------------ .npz


def _arrays(net):
    return [net.n_encoder, net.activations, net.full_widths, *(u.tolist() for u in net.units)]


def test_save_load_round_trip_is_identical(tmp_path):
    small = compact(dead_latent_model(1))
    path = tmp_path / "m.npz"
    small.save(path)
    back = CompactNetwork.load(path)
    assert _arrays(back) == _arrays(small)
    for (W, b, act), (W2, b2, act2) in zip(small.encoder + small.decoder,
                                           back.encoder + back.decoder):
        assert W2.dtype == b2.dtype == np.float32 and act2 == act
        np.testing.assert_array_equal(W2, W)
        np.testing.assert_array_equal(b2, b)
    x = inputs(seed=None)
    np.testing.assert_array_equal(back.reconstruct(x), small.reconstruct(x))
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temporary file left


def readme_snippet():
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    section = readme.split("## Export", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "np.load" in b]
    assert len(blocks) == 1, "the Export section shows one numpy snippet"
    return blocks[0]


def test_readme_numpy_snippet_reproduces_the_model(tmp_path):
    """The .npz is usable with numpy alone: the README's snippet runs the forward pass."""
    ae = dead_latent_model(2)
    compact(ae).save(tmp_path / "model.npz")
    x = inputs(seed=None)
    scope = {"x": x}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(readme_snippet(), scope)  # noqa: S102 - the README's own code
    finally:
        os.chdir(cwd)
    np.testing.assert_allclose(scope["reconstruction"], ae.reconstruct(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scope["code"], ae.encode(x)[:, KEPT], rtol=1e-5, atol=1e-5)
    assert scope["latent_units"].tolist() == KEPT


def _write(path, **changes):
    content = ex.arrays(compact(dead_latent_model()))
    for key, value in changes.items():
        if value is None:
            del content[key]
        else:
            content[key] = value
    with open(path, "wb") as fh:
        np.savez(fh, **content)


@pytest.mark.parametrize("changes, needle", [
    (dict(W1=None), "no 'W1' array"),
    (dict(latent_units=None), "no 'latent_units' array"),
    (dict(format=None), "has format None"),
    (dict(format=np.array("sparseae-data")), "has format 'sparseae-data'"),
    (dict(W0=np.zeros((11, 23))), "'W0' must be float32, got float64"),
    (dict(b2=np.full(11, np.nan, np.float32)), "not finite"),
    (dict(W3=np.full((23, 11), np.inf, np.float32)), "not finite"),
    (dict(format_version=np.int64(2)), "newer than the 1"),
    (dict(format_version=np.int64(0)), "no valid format_version"),
    (dict(format_version=np.float32(1)), "must be int64"),
    (dict(W1=np.zeros((4, 10), np.float32)), "'W1' has 10 inputs"),
    (dict(b0=np.zeros(3, np.float32)), "'b0' has shape"),
    (dict(activations=np.array(["relu", "relu", "tanh", "sigmoid"])), "'tanh'"),
    (dict(n_encoder=np.int64(4)), "'n_encoder' must be between 1 and 3"),
    (dict(units2=np.array([0, 2, 3, 9])), "increasing indices below 7"),
    (dict(units2=np.array([0, 3, 2, 6])), "increasing"),
    (dict(latent_units=np.array([0, 1, 2, 3])), "differs from 'units2'"),
    (dict(extra=np.zeros(2)), "unexpected array 'extra'"),
    (dict(W0=np.array([object()] * 3)), "pickled"),
])
def test_bad_npz_files_are_refused_in_one_line(tmp_path, changes, needle):
    path = tmp_path / "bad.npz"
    if "W0" in changes and changes["W0"].dtype == object:
        content = ex.arrays(compact(dead_latent_model()))
        content["W0"] = changes["W0"]
        with open(path, "wb") as fh:
            np.savez(fh, **content)  # an object array: stored as a pickle
    else:
        _write(path, **changes)
    with pytest.raises(CheckpointError) as info:
        CompactNetwork.load(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("model: ") and str(path) in msg
    assert needle.lower() in msg.lower(), msg


def no_unclosed_file(fn):
    """Call ``fn`` (which raises a SparseaeError) and collect: no ResourceWarning."""
    import gc
    import warnings

    from sparseae.errors import SparseaeError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except SparseaeError:
            pass
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], \
        [str(w.message) for w in caught]


@pytest.mark.parametrize("content, needle", [
    (b"", "not an npz file"),
    (b"garbage" * 10, "not an npz file"),
    (b"PK\x03\x04 truncated", "not a readable npz file"),
])
def test_files_that_are_not_npz_are_refused(tmp_path, content, needle):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle):
        CompactNetwork.load(path)
    # nothing is left open: a leaked file warns at some later collection, which a CLI
    # running then prints as an extra line
    no_unclosed_file(lambda: CompactNetwork.load(path))
    no_unclosed_file(lambda: load_data(path))  # the data loader reads npz files alike
    with pytest.raises(CheckpointError, match="file not found"):
        CompactNetwork.load(tmp_path / "none.npz")


# ------------------------------------------------------------------ onnx


def test_onnx_reproduces_reconstruct_and_the_mapped_code(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (sparseae[onnx])")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    ae = dead_latent_model(3)
    small = compact(ae)
    ex.save(small, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["latent_units"] == "0,2,3,6" and props["latent_dim"] == "7"
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [o.name for o in sess.get_outputs()] == ["reconstruction", "code"]
    for n in (1, 17):  # the batch dimension is dynamic
        x = inputs(n, seed=None)
        rec, code = sess.run(None, {"x": x})
        assert rec.dtype == code.dtype == np.float32 and code.shape == (n, 4)
        np.testing.assert_allclose(rec, ae.reconstruct(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(code, ae.encode(x)[:, KEPT], rtol=1e-5, atol=1e-5)


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="expected .npz or .onnx"):
        ex.save(compact(dead_latent_model()), tmp_path / "m.pt")


# ------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A canonical and a Lipi-AE-S checkpoint whose models lack latent units 1, 4 and 5."""
    folder = tmp_path_factory.mktemp("runs")
    run = CanonicalRun(TrainConfig(paradigm="canonical", epochs=1, seed=4, **TINY))
    run.run()
    kill_latent_units(run.model.encoder, run.model.decoder, [0])
    run.save(folder / "c.h5")
    ring = LipiRun(TrainConfig(paradigm="lipi", population=3, epochs=1, seed=5, **TINY))
    ring.run()
    kill_latent_units(ring.encoders, ring.decoders, range(3))
    ring.save(folder / "p.h5")
    # a population whose data file is gone: the best centre cannot be picked
    save_data(folder / "d.npz", binary_clustering(3, 23, 6, seed=1))
    lost = LipiRun(TrainConfig(paradigm="lipi", population=3, epochs=1, seed=6, batch_size=5,
                               arch=ARCH, data=str(folder / "d.npz")))
    lost.run()
    lost.save(folder / "lost.h5")
    os.unlink(folder / "d.npz")
    return folder, run, ring


def test_export_canonical_npz_and_onnx(runs, tmp_path):
    folder, run, _ = runs
    x = inputs(seed=None)
    r = invoke("export", folder / "c.h5", "-o", tmp_path / "m.npz")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"wrote {tmp_path / 'm.npz'}: 23-11-4-11-23, latent units "
                               "0,2,3,6 of 7"), r.output
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:  # plain numpy
        assert z["latent_units"].tolist() == KEPT
    net = CompactNetwork.load(tmp_path / "m.npz")
    np.testing.assert_allclose(net.reconstruct(x), run.model.reconstruct(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.encode(x), run.model.encode(x)[:, KEPT], rtol=1e-5, atol=1e-5)
    pytest.importorskip("onnx", reason="onnx is not installed (sparseae[onnx])")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    r = invoke("export", folder / "c.h5", "-o", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    rec, code = sess.run(["reconstruction", "code"], {"x": x})
    np.testing.assert_allclose(rec, run.model.reconstruct(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(code, run.model.encode(x)[:, KEPT], rtol=1e-5, atol=1e-5)


def test_export_population_picks_the_centre_of_lowest_validation_l1(runs, tmp_path):
    import json

    from sparseae.evaluation import model_l1

    folder, _, ring = runs
    val = [model_l1(ring.centre(k), ring.data.validation) for k in range(3)]
    test = [model_l1(ring.centre(k), ring.data.test) for k in range(3)]
    best = int(np.argmin(val))
    r = invoke("export", folder / "p.h5", "-o", tmp_path / "b.npz", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["cell"] == best and doc["paradigm"] == "lipi"
    assert doc["validation_l1"] == pytest.approx(val[best], rel=1e-12)
    assert doc["test_l1"] == pytest.approx(test[best], rel=1e-12)
    r = invoke("export", folder / "p.h5", "-o", tmp_path / "t.npz")
    assert f"of centre {best} (best by validation L1" in r.output
    # a validation split that another centre reconstructs exactly (its own output), the
    # same test split: the pick follows the validation split
    d = ring.data
    k = (int(np.argmin(test)) + 1) % 3
    own = ring.centre(k).reconstruct(d.train).astype(np.float32)
    save_data(tmp_path / "v.npz", type(d)(train=d.train, validation=own, test=d.test))
    r = invoke("export", folder / "p.h5", "-o", tmp_path / "s.npz", "--json", "--data",
               tmp_path / "v.npz")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["cell"] == k
    assert doc["latent_units"] == KEPT and doc["latent_dim"] == 7
    x = inputs(seed=None)
    net = CompactNetwork.load(tmp_path / "b.npz")
    np.testing.assert_allclose(net.reconstruct(x), ring.centre(best).reconstruct(x), rtol=1e-5,
                               atol=1e-5)
    other = (best + 1) % 3
    r = invoke("export", folder / "p.h5", "-o", tmp_path / "o.npz", "--cell", other)
    assert r.exit_code == 0, r.output
    assert f"of centre {other}," in r.output
    net = CompactNetwork.load(tmp_path / "o.npz")
    np.testing.assert_allclose(net.reconstruct(x), ring.centre(other).reconstruct(x), rtol=1e-5,
                               atol=1e-5)


def test_export_refuses_bad_requests_in_one_line(runs, tmp_path, monkeypatch):
    folder = runs[0]
    out = tmp_path / "m.npz"
    one_error_line(invoke("export", folder / "c.h5", "-o", tmp_path / "m.pt"),
                   "'.pt'", "expected .npz or .onnx")
    one_error_line(invoke("export", folder / "p.h5", "-o", out, "--cell", 3),
                   "--cell", "3 centres")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    one_error_line(invoke("export", tmp_path / "junk.h5", "-o", out), "checkpoint:",
                   "not a readable HDF5 file")
    one_error_line(invoke("export", tmp_path / "none.h5", "-o", out), "file not found")
    one_error_line(invoke("export", folder / "c.h5", "-o", tmp_path / "no" / "m.npz"),
                   "folder", "does not exist")
    one_error_line(invoke("export", folder / "lost.h5", "-o", out), "d.npz", "--data", "--cell")
    assert invoke("export", folder / "lost.h5", "-o", out, "--cell", 1).exit_code == 0
    out.unlink()
    out.write_bytes(b"keep me")
    one_error_line(invoke("export", folder / "c.h5", "-o", out), "exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    r = invoke("export", folder / "c.h5", "-o", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert CompactNetwork.load(out).latent_units.tolist() == KEPT
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    one_error_line(invoke("export", folder / "c.h5", "-o", tmp_path / "m.onnx"),
                   "pip install 'sparseae[onnx]'")
    assert sorted(os.listdir(tmp_path)) == ["junk.h5", "m.npz"]
