"""Export a compacted network for use without sparseae: a plain ``.npz`` or ONNX.

The ``.npz`` (:func:`save_npz`, :meth:`CompactNetwork.save
<sparseae.metrics.CompactNetwork.save>`) needs only numpy to read
(``np.load(path)``, no pickles).  Keys, with ``L`` layers (encoder then decoder)
and ``k = 0..L-1``:

* ``W{k}``: float32 ``(out, in)`` weight of layer ``k`` (PyTorch's orientation:
  ``h = act(h @ W{k}.T + b{k})``); ``b{k}``: float32 ``(out,)`` bias;
* ``activations``: string ``(L,)``, ``"relu"`` or ``"sigmoid"`` per layer;
* ``n_encoder``: int64 scalar, the number of encoder layers (the output of layer
  ``n_encoder - 1`` is the latent code);
* ``latent_units``: int64, the original index of each latent unit kept
  (``units{n_encoder}``);
* ``units{j}``, ``j = 0..L``: int64, the original index of each unit kept at
  layer boundary ``j`` (input, hidden..., latent, ..., output; inputs and outputs
  are never removed);
* ``full_widths``: int64 ``(L + 1,)``, the original widths;
* ``format`` (``"sparseae-compact"``), ``format_version`` (int64 scalar),
  ``generated_by`` (string).

The ONNX model (:func:`save_onnx`, extra ``onnx``) computes the same network:
input ``x`` float32 ``(batch, in)``, outputs ``reconstruction`` ``(batch, in)``
and ``code`` ``(batch, len(latent_units))``; one ``Gemm`` (``transB = 1``) and one
``Relu``/``Sigmoid`` per layer, opset 13; the latent map is in the model's
metadata (``latent_units``, comma-separated, and ``latent_dim``).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from sparseae._atomic import atomic_target
from sparseae._options import RELU, SIGMOID
from sparseae.errors import CheckpointError, SparseaeError

FORMAT = "sparseae-compact"
FORMAT_VERSION = 1
ONNX_OPSET = 13
ONNX_IR_VERSION = 7  # the oldest IR that carries opset 13: readable by old runtimes too
SUFFIXES = (".npz", ".onnx")
_ACTS = {"relu": RELU, "sigmoid": SIGMOID}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class ExportUnavailable(SparseaeError):
    """The onnx package (the optional ``onnx`` extra) is not installed."""


class _ModelError(CheckpointError):
    def __init__(self, msg):
        super().__init__(f"model: {msg}")


# ------------------------------------------------------------------ npz


def arrays(net) -> dict:
    """The ``.npz`` contents of a :class:`~sparseae.metrics.CompactNetwork` (keys above)."""
    from sparseae import _h5

    out = {"format": np.array(FORMAT), "format_version": np.int64(FORMAT_VERSION),
           "generated_by": np.array(_h5.generated_by()),
           "n_encoder": np.int64(net.n_encoder),
           "activations": np.array(net.activations),
           "latent_units": np.asarray(net.latent_units, np.int64),
           "full_widths": np.asarray(net.full_widths, np.int64)}
    for k, (W, b, _) in enumerate(net.encoder + net.decoder):
        out[f"W{k}"] = np.ascontiguousarray(W, np.float32)
        out[f"b{k}"] = np.ascontiguousarray(b, np.float32)
    for j, u in enumerate(net.units):
        out[f"units{j}"] = np.asarray(u, np.int64)
    return out


def save_npz(net, path) -> None:
    """Write ``net`` to ``path`` (any name; ``.npz`` by convention) atomically."""
    content = arrays(net)
    with atomic_target(path, _ModelError) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, **content)


def _read(path) -> dict:
    path = os.fspath(path)
    if not path.strip():
        raise _ModelError("the file name is empty")
    if not os.path.exists(path):
        raise _ModelError(f"file not found: {path}")
    if os.path.isdir(path):
        raise _ModelError(f"{path} is a folder, expected an .npz file")
    try:
        # np.load gets our file object: on a corrupt archive it would leave a file
        # it opened itself unclosed (a ResourceWarning at some later collection)
        with open(path, "rb") as fh:
            if fh.read(4) not in _ZIP_MAGIC:
                raise _ModelError(f"{path} is not an npz file (not a zip archive)")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except _ModelError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        from sparseae._h5 import first_line

        if isinstance(exc, ValueError) and "allow_pickle" in str(exc):
            raise _ModelError(f"{path} holds a pickled object array; sparseae reads only "
                              "plain numeric and string arrays") from None

        raise _ModelError(f"{path} is not a readable npz file ({type(exc).__name__}: "
                          f"{first_line(exc) if str(exc) else 'corrupt'})") from None


def load_npz(path):
    """Read and validate a network written by :func:`save_npz`.

    Raises :class:`~sparseae.errors.CheckpointError` (one line, ``model: ...``)
    for a missing, corrupt or pickled file, another format, a newer
    ``format_version``, a missing or unexpected key, a wrong dtype or shape, or a
    value that is not finite.
    """
    from sparseae.metrics import CompactNetwork

    path = os.fspath(path)
    z = _read(path)

    def bad(msg):
        return _ModelError(f"{path} {msg}")

    def get(key, kind, ndim):
        if key not in z:
            raise bad(f"has no '{key}' array")
        a = z[key]
        ok = {"str": a.dtype.kind == "U", "int": a.dtype == np.int64,
              "float": a.dtype == np.float32}[kind]
        if not ok:
            want = {"str": "a string", "int": "int64", "float": "float32"}[kind]
            raise bad(f"'{key}' must be {want}, got {a.dtype}")
        if a.ndim != ndim:
            raise bad(f"'{key}' must have {ndim} dimension(s), got shape {a.shape}")
        return a

    fmt = get("format", "str", 0) if "format" in z else None
    if fmt is None or str(fmt) != FORMAT:
        raise bad(f"has format {None if fmt is None else str(fmt)!r}, expected {FORMAT!r}")
    version = int(get("format_version", "int", 0))
    if version > FORMAT_VERSION:
        raise bad(f"has format_version {version}, newer than the {FORMAT_VERSION} this "
                  "sparseae reads; upgrade sparseae")
    if version < 1:
        raise bad(f"has no valid format_version ({version})")
    acts = get("activations", "str", 1)
    L = len(acts)
    if L < 2:
        raise bad(f"needs at least 2 layers, has {L}")
    unknown = sorted(set(str(a) for a in acts) - set(_ACTS))
    if unknown:
        raise bad(f"'activations' must be relu or sigmoid, got {unknown[0]!r}")
    n_enc = int(get("n_encoder", "int", 0))
    if not 1 <= n_enc < L:
        raise bad(f"'n_encoder' must be between 1 and {L - 1}, got {n_enc}")
    full = get("full_widths", "int", 1)
    if full.shape != (L + 1,) or (full < 1).any():
        raise bad(f"'full_widths' must be {L + 1} positive widths, got {full.tolist()}")
    expected = {"format", "format_version", "generated_by", "n_encoder", "activations",
                "latent_units", "full_widths"}
    layers = []
    for k in range(L):
        W, b = get(f"W{k}", "float", 2), get(f"b{k}", "float", 1)
        if b.shape != (W.shape[0],):
            raise bad(f"'b{k}' has shape {b.shape}, expected ({W.shape[0]},) for W{k} "
                      f"{W.shape}")
        if k and W.shape[1] != layers[-1][0].shape[0]:
            raise bad(f"'W{k}' has {W.shape[1]} inputs, but layer {k - 1} has "
                      f"{layers[-1][0].shape[0]} outputs")
        for name, a in ((f"W{k}", W), (f"b{k}", b)):
            if not np.isfinite(a).all():
                raise bad(f"'{name}' holds {np.count_nonzero(~np.isfinite(a))} values that are "
                          "not finite (NaN or infinity)")
        layers.append((np.ascontiguousarray(W), np.ascontiguousarray(b), _ACTS[str(acts[k])]))
        expected |= {f"W{k}", f"b{k}"}
    widths = [layers[0][0].shape[1]] + [W.shape[0] for W, _, _ in layers]
    units = []
    for j in range(L + 1):
        u = get(f"units{j}", "int", 1)
        expected.add(f"units{j}")
        if u.shape != (widths[j],):
            raise bad(f"'units{j}' has {u.size} entries, but layer boundary {j} has "
                      f"{widths[j]} units")
        if u.size and (u[0] < 0 or u[-1] >= full[j] or (np.diff(u) <= 0).any()):
            raise bad(f"'units{j}' must be increasing indices below {int(full[j])}")
        if j in (0, L) and u.size != full[j]:
            raise bad(f"'units{j}' must keep every {'input' if j == 0 else 'output'} "
                      f"({int(full[j])}), has {u.size}")
        units.append(u)
    latent = get("latent_units", "int", 1)
    if not np.array_equal(latent, units[n_enc]):
        raise bad(f"'latent_units' differs from 'units{n_enc}'")
    if full[0] != full[L]:
        raise bad(f"has {int(full[0])} inputs but {int(full[L])} outputs")
    extra = sorted(set(z) - expected)
    if extra:
        raise bad(f"has an unexpected array '{extra[0]}'")
    return CompactNetwork(layers[:n_enc], layers[n_enc:], units, tuple(int(w) for w in full))


# ------------------------------------------------------------------ onnx


def require_onnx():
    """Import onnx or raise :class:`ExportUnavailable` (one line naming the extra)."""
    try:
        import onnx
    except ImportError:
        raise ExportUnavailable("onnx: the onnx package is not installed; "
                                "pip install 'sparseae[onnx]'") from None
    return onnx


def onnx_model(net):
    """The ONNX ``ModelProto`` of ``net`` (checked with ``onnx.checker``)."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    h = "x"
    layers = net.encoder + net.decoder
    for k, (W, b, act) in enumerate(layers):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(W, np.float32), f"W{k}"))
        inits.append(numpy_helper.from_array(np.ascontiguousarray(b, np.float32), f"b{k}"))
        z = f"z{k}"
        nodes.append(helper.make_node("Gemm", [h, f"W{k}", f"b{k}"], [z], name=f"gemm{k}",
                                      transB=1))
        if k == net.n_encoder - 1:
            h = "code"
        elif k == len(layers) - 1:
            h = "reconstruction"
        else:
            h = f"h{k}"
        nodes.append(helper.make_node("Relu" if act == RELU else "Sigmoid", [z], [h],
                                      name=f"act{k}"))
    widths = net.widths
    graph = helper.make_graph(
        nodes, "sparseae_compact",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT,
                                       ["batch", widths[-1]]),
         helper.make_tensor_value_info("code", TensorProto.FLOAT,
                                       ["batch", widths[net.n_encoder]])],
        initializer=inits)
    from sparseae import __version__

    model = helper.make_model(graph, producer_name="sparseae", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              doc_string="Compacted sparseae autoencoder: x -> code -> "
                                         "reconstruction")
    model.ir_version = ONNX_IR_VERSION
    helper.set_model_props(model, {
        "latent_units": ",".join(str(int(u)) for u in net.latent_units),
        "latent_dim": str(net.latent_dim),
        "full_widths": ",".join(str(w) for w in net.full_widths)})
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(net, path) -> None:
    """Write ``net`` as an ONNX model to ``path``, atomically (needs the ``onnx`` extra)."""
    data = onnx_model(net).SerializeToString()
    with atomic_target(path, _ModelError) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def save(net, path) -> None:
    """:func:`save_npz` or :func:`save_onnx` by ``path``'s suffix."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in SUFFIXES:
        raise _ModelError(f"{path} has the extension {ext or '(none)'!r}; expected "
                          f"{' or '.join(SUFFIXES)}")
    (save_onnx if ext == ".onnx" else save_npz)(net, path)


# ------------------------------------------------------------------ checkpoints


def from_checkpoint(path, data=None, cell: int | None = None, device: str = "cpu") -> tuple:
    """The compacted network of a checkpoint and what was picked: ``(net, info)``.

    A canonical run has one model.  For a population (Lipi-AE-S) ``cell`` picks a
    centre; None picks the one of lowest validation L1, as ``compress`` and the
    final phase do, so the test split never chooses what is shipped (on ``data``,
    default the run's own data found from the checkpoint; evaluated on
    ``device``).  ``info``: ``paradigm``, ``arch``, ``cell`` and, when they were
    computed, the picked centre's ``validation_l1`` and ``test_l1``.
    """
    from sparseae import backend
    from sparseae.errors import ConfigError, DataError
    from sparseae.evaluation import best_cell, centre, check_width, load_trained, model_l1
    from sparseae.metrics import compact

    ck, config, arch, enc, dec = load_trained(path)
    N = enc.population
    if cell is not None and not 0 <= cell < N:
        raise ConfigError(f"cell: {path} has {N} centre{'s' * (N > 1)} (0 to {N - 1}), "
                          f"got {cell}")
    info = {"paradigm": "lipi" if ck.kind == "population" else "canonical", "arch": str(arch)}
    if cell is None and N > 1:
        if data is None:
            from sparseae.provenance import locate

            try:
                data, _ = locate(ck, path, config)
            except DataError as exc:  # say how to do without them
                raise DataError(f"{str(exc).rstrip('.')}; or export a chosen centre with "
                                "--cell") from None
        check_width(arch, data)
        be = backend.get(device)
        cell, l1 = best_cell(enc, dec, arch, data.validation, be)
        info["validation_l1"] = l1[cell]
    cell = 0 if cell is None else int(cell)
    info["cell"] = cell
    model = centre(enc, dec, cell, arch)
    if "validation_l1" in info:
        info["test_l1"] = model_l1(model, data.test, be)
    return compact(model), info
