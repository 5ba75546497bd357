"""Sparsity and cost metrics, and compaction to a smaller dense network.

FLOPs per sample count 2 per weight (multiply-add) plus 1 per bias; the
activation functions are not counted.  *Dense* counts every entry, *masked*
the live ones, *compacted* every entry of :func:`compact`'s network (units
that cannot affect the output removed).

Notes
-----
ALGORITHM.md section 6 (default profile: preserved = live mask entries / total).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseae._options import RELU


def useless_units(layer_masks) -> list:
    """Hidden units that cannot affect the output, to a fixed point.

    ``layer_masks`` is the chain's ``(weight mask (out, in), bias mask
    (out,))`` per layer, encoder then decoder.  A hidden unit is useless when
    none of its outgoing weights is live, or when none of its incoming weights
    and not its bias is live (it outputs ReLU(0) = 0); removing it can make
    its neighbours useless in turn.  Returns one bool array per boundary
    between consecutive layers (the outputs of layer ``k``, ``k < L - 1``).
    Inputs and outputs are never useless.
    """
    w = [np.asarray(m, bool).copy() for m, _ in layer_masks]
    b = [np.asarray(m, bool).copy() for _, m in layer_masks]
    useless = [np.zeros(len(x), bool) for x in b[:-1]]
    changed = True
    while changed:
        changed = False
        for k in range(len(useless)):
            dead = (~w[k + 1].any(axis=0)) | ((~w[k].any(axis=1)) & ~b[k])
            new = dead & ~useless[k]
            if new.any():
                useless[k] |= new
                w[k][new, :] = False
                b[k][new] = False
                w[k + 1][:, new] = False
                changed = True
    return useless


def _halves(model, row_e=0, row_d=0):
    return ((model.encoder, row_e, "encoder"), (model.decoder, row_d, "decoder"))


def preserved(model, row_e: int = 0, row_d: int = 0, zeros: bool = False) -> dict:
    """Preserved fractions: ``total``, ``encoder``, ``decoder`` and ``layers``
    (a list of ``(name, fraction)`` per dense layer, W and b together).

    Default: live mask entries / total, exact at any time.  With ``zeros``
    (gecco25, pruned weights regrow) the reference's accounting: 1 - the count
    of exactly-zero parameters at the lineage's last pruning event / total
    (1 when never pruned); ``layers`` then counts the exactly-zero parameters
    now.
    """
    out = {"layers": []}
    live_all = total_all = 0
    for arena, i, name in _halves(model, row_e, row_d):
        if zeros:
            live = arena.n - max(0, int(arena.zeros[i]))
        else:
            live = int(arena.mask[i].sum())
        out[name] = live / arena.n
        live_all += live
        total_all += arena.n
        which = "params" if zeros else "mask"
        for l, (n_in, n_out, _) in enumerate(arena.shapes):
            n = n_in * n_out + n_out
            w, b = arena.weight(i, l, which), arena.bias(i, l, which)
            lv = int(np.count_nonzero(w)) + int(np.count_nonzero(b))
            out["layers"].append((f"{name}.{l} {n_in}->{n_out}", lv / n))
    out["total"] = live_all / total_all
    return out


def preserved_total(enc, dec, ie: int = 0, id_: int = 0, zeros: bool = False) -> float:
    """Total preserved fraction of one pair of arena rows (see :func:`preserved`)."""
    if zeros:
        dead = max(0, int(enc.zeros[ie])) + max(0, int(dec.zeros[id_]))
        return 1.0 - dead / (enc.n + dec.n)
    return (int(enc.mask[ie].sum()) + int(dec.mask[id_].sum())) / (enc.n + dec.n)


#: Epoch interval of the figures' metric (mean training-set L1 of the centres).
FIGURE_INTERVAL = 100


def figure_epoch(epoch: int) -> bool:
    """Whether the figures' metric is recorded in the history after 0-based
    ``epoch`` (the value at the end is the summary's ``mean_l1``)."""
    return epoch % FIGURE_INTERVAL == 0


def _dense_flops(shapes) -> int:
    return int(sum(2 * i * o + o for i, o in shapes))


def flops(model, row_e: int = 0, row_d: int = 0) -> dict:
    """FLOPs per sample: ``dense``, ``masked`` (live entries) and ``compacted``."""
    dense = masked = 0
    for arena, i, _ in _halves(model, row_e, row_d):
        dense += _dense_flops([(a, b) for a, b, _ in arena.shapes])
        for l in range(arena.n_layers):
            masked += 2 * int(arena.weight(i, l, "mask").sum()) + int(arena.bias(i, l, "mask").sum())
    comp = compact(model, row_e, row_d)
    return {"dense": dense, "masked": masked, "compacted": comp.flops}


@dataclass
class CompactNetwork:
    """A plain dense autoencoder without masks: lists of ``(W (out, in), b, act)``.

    Run it with :meth:`encode`, :meth:`decode`, :meth:`reconstruct` (NumPy,
    float32); write it with :meth:`save` (a plain ``.npz``, see
    :mod:`sparseae.export`) and read it back with :meth:`load`.

    :func:`compact` removes units that cannot affect the output, the latent
    layer's included, so ``encode`` may return fewer columns than the original
    model's.  ``units`` says which: one int64 array per layer boundary (the
    input, each hidden layer, the latent layer, ..., the output; the same
    order as :attr:`widths`) holding the original index of every kept unit,
    increasing; ``full_widths`` are the original widths.  Inputs and outputs
    are never removed (their maps are ``arange``), so ``reconstruct`` has the
    original width.  :attr:`latent_units` is the latent map:
    ``small.encode(x)[:, j]`` is ``model.encode(x)[:, small.latent_units[j]]``,
    and ``small.encode(x, full=True)`` scatters the codes back to the original
    latent width (removed units read 0; in the original they may be nonzero,
    but nothing downstream uses them).  Left ``None``, the maps are the
    identity (nothing removed).
    """

    encoder: list
    decoder: list
    units: list | None = None
    full_widths: tuple | None = None

    def __post_init__(self):
        widths = self.widths
        if self.units is None:
            self.units = [np.arange(w, dtype=np.int64) for w in widths]
        self.units = [np.asarray(u, np.int64) for u in self.units]
        if self.full_widths is None:
            self.full_widths = tuple(widths)
        self.full_widths = tuple(int(w) for w in self.full_widths)
        if len(self.units) != len(widths) or len(self.full_widths) != len(widths) or any(
                u.shape != (w,) for u, w in zip(self.units, widths)):
            raise ValueError("CompactNetwork: need one unit map per layer boundary, as long "
                             f"as its width {widths}")

    @staticmethod
    def _run(layers, X):
        h = np.asarray(X, np.float32)
        for W, b, act in layers:
            z = h @ W.T + b
            h = np.maximum(z, np.float32(0)) if act == RELU else (1 / (1 + np.exp(-z))).astype(np.float32)
        return h

    def encode(self, X, full: bool = False):
        """Latent codes ``(N, len(latent_units))``; with ``full``, ``(N, latent_dim)``
        in the original model's columns (removed units 0, see :meth:`expand_latent`)."""
        Z = self._run(self.encoder, X)
        return self.expand_latent(Z) if full else Z

    def decode(self, Z, full: bool = False):
        """Reconstructions of codes ``Z``: ``(N, len(latent_units))`` compact codes, or
        with ``full`` codes of the original latent width (the removed columns are ignored)."""
        if full:
            Z = np.asarray(Z, np.float32)
            if Z.ndim != 2 or Z.shape[1] != self.latent_dim:
                raise ValueError(f"decode: expected shape (N, {self.latent_dim}), got {Z.shape}")
            Z = Z[:, self.latent_units]
        return self._run(self.decoder, Z)

    def reconstruct(self, X):
        return self.decode(self.encode(X))

    def expand_latent(self, Z, fill: float = 0.0):
        """Compact codes ``(N, len(latent_units))`` scattered into ``(N, latent_dim)``:
        column ``latent_units[j]`` gets ``Z[:, j]``, removed units get ``fill``."""
        Z = np.asarray(Z, np.float32)
        if Z.ndim != 2 or Z.shape[1] != len(self.latent_units):
            raise ValueError(f"expand_latent: expected shape (N, {len(self.latent_units)}), "
                             f"got {Z.shape}")
        out = np.full((Z.shape[0], self.latent_dim), fill, np.float32)
        out[:, self.latent_units] = Z
        return out

    @property
    def n_encoder(self) -> int:
        """Number of encoder layers (the latent layer is boundary ``n_encoder``)."""
        return len(self.encoder)

    @property
    def latent_units(self) -> np.ndarray:
        """Original index of each latent unit kept (int64, increasing)."""
        return self.units[self.n_encoder]

    @property
    def latent_dim(self) -> int:
        """The original model's latent width."""
        return self.full_widths[self.n_encoder]

    @property
    def activations(self) -> list:
        """``"relu"`` or ``"sigmoid"`` per layer, encoder then decoder."""
        return ["relu" if act == RELU else "sigmoid" for _, _, act in self.encoder + self.decoder]

    @property
    def widths(self):
        layers = self.encoder + self.decoder
        return [layers[0][0].shape[1]] + [W.shape[0] for W, _, _ in layers]

    @property
    def n_params(self) -> int:
        return int(sum(W.size + b.size for W, b, _ in self.encoder + self.decoder))

    @property
    def flops(self) -> int:
        return _dense_flops([(W.shape[1], W.shape[0]) for W, _, _ in self.encoder + self.decoder])

    def save(self, path) -> None:
        """Write this network to ``path`` as a plain ``.npz``, atomically (keys in
        :mod:`sparseae.export`); raises :class:`~sparseae.errors.CheckpointError`
        when it cannot be written."""
        from sparseae.export import save_npz

        save_npz(self, path)

    @classmethod
    def load(cls, path) -> "CompactNetwork":
        """Read a network written by :meth:`save`, validating every array; raises
        :class:`~sparseae.errors.CheckpointError` (one line) for a bad file."""
        from sparseae.export import load_npz

        return load_npz(path)


def compact(model, row_e: int = 0, row_d: int = 0) -> CompactNetwork:
    """The smaller dense network that computes what the masked one computes.

    Removes hidden units (the latent layer included) that cannot affect the
    output: those with no live outgoing weight, and those with no live
    incoming weight and a pruned bias (they output ReLU(0) = 0), repeated to a
    fixed point.  Inputs and outputs are never removed.  Pruned entries of the
    remaining units are 0 in the result.  The result's ``units`` map every kept
    unit to its original index (``latent_units`` for the latent layer).
    """
    layers = []
    masks = []
    for arena, i, _ in _halves(model, row_e, row_d):
        for l in range(arena.n_layers):
            mW, mb = arena.weight(i, l, "mask"), arena.bias(i, l, "mask")
            masks.append((mW, mb))
            layers.append([np.array(arena.weight(i, l) * mW, np.float32),
                           np.array(arena.bias(i, l) * mb, np.float32), int(arena.shapes[l][2])])
    n_enc = model.encoder.n_layers
    full = [layers[0][0].shape[1]] + [W.shape[0] for W, _, _ in layers]
    units = [np.arange(w, dtype=np.int64) for w in full]
    for k, useless in enumerate(useless_units(masks)):
        keep = ~useless
        layers[k][0], layers[k][1] = layers[k][0][keep], layers[k][1][keep]
        layers[k + 1][0] = np.ascontiguousarray(layers[k + 1][0][:, keep])
        units[k + 1] = units[k + 1][keep]
    out = [(W, b, act) for W, b, act in layers]
    return CompactNetwork(out[:n_enc], out[n_enc:], units, tuple(full))


# ------------------------------------------------------------------ population


def mean_distance(d2: np.ndarray) -> float:
    """Mean L2 distance over the pairs of a population, from its ``(n, n)`` squared
    distances (:func:`sparseae.kernels.cpu.pairwise_sq_l2`)."""
    n = d2.shape[0]
    if n < 2:
        return 0.0
    iu = np.triu_indices(n, 1)
    return float(np.sqrt(d2[iu]).mean())


def mean_overlap(overlaps: np.ndarray) -> float:
    """Mean Jaccard overlap of the live entries over the pairs of a population's
    masks (1 when both are empty), from the ``(n, n)`` counts of entries live in
    both (the diagonal: each mask's live count)."""
    n = overlaps.shape[0]
    if n < 2:
        return 1.0
    inter = overlaps.astype(np.float64)
    live = np.diag(inter)
    union = live[:, None] + live[None, :] - inter
    iu = np.triu_indices(n, 1)
    u = union[iu]
    return float(np.where(u > 0, inter[iu] / np.where(u > 0, u, 1.0), 1.0).mean())


def mean_pairwise_l2(rows: np.ndarray) -> float:
    """Mean L2 distance over all pairs of rows (a population's diversity); the
    differences are taken in float64, so centres that differ in a few weights
    still get an accurate distance."""
    from sparseae.kernels import cpu

    return mean_distance(cpu.pairwise_sq_l2(np.ascontiguousarray(rows, np.float32)))


def mean_jaccard(masks: np.ndarray) -> float:
    """Mean Jaccard overlap of the live entries over all pairs of masks (1 when
    both are empty), from exact counts (single-threaded, no BLAS)."""
    from sparseae.kernels import cpu

    return mean_overlap(cpu.mask_overlaps(np.ascontiguousarray(masks, np.uint8)))
