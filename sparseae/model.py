"""Architectures, flat parameter arenas and the user-facing autoencoder.

An *arena* holds ``P`` individuals of one network half (encoder or decoder) as
2-D float32 arrays, one row per individual: ``params``, Adam ``m`` and ``v``,
and a uint8 ``mask`` (1 = live, 0 = pruned), plus the Adam ``step`` per row.
Layers are fixed slices of a row described by an int64 layer table (columns in
``sparseae._options``).  Cloning an individual is a row copy.

A layer's weight is stored with its longer axis contiguous (see
``kernels/cpu.py``); :meth:`Arena.weight` always returns the ``(out, in)``
view PyTorch users expect, whatever the storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseae._options import (
    COL_ACT,
    COL_B,
    COL_IN,
    COL_OUT,
    COL_T,
    COL_UNIT,
    COL_W,
    LAYER_COLUMNS,
    RELU,
    SIGMOID,
)
from sparseae.errors import ConfigError

#: Encoder widths (input, hidden..., latent) of the named architectures.
PRESETS = {
    "default": (1000, 30, 10),
    "small": (1000, 30, 2),
    "large": (1000, 60, 30, 10),
}


@dataclass(frozen=True)
class Architecture:
    """A dense autoencoder: encoder widths ``sizes``, decoder the mirror image.

    Every layer is ReLU except the decoder's last, which is a sigmoid
    (ALGORITHM.md section 2).
    """

    sizes: tuple

    def __post_init__(self):
        try:
            sizes = tuple(int(s) for s in self.sizes)
            whole = all(not isinstance(s, bool) and int(s) == s for s in self.sizes)
        except (TypeError, ValueError, OverflowError):
            sizes, whole = (), False
        if not whole or len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ConfigError(
                f"arch: need at least two positive widths (input,...,latent), got {self.sizes!r}"
            )
        object.__setattr__(self, "sizes", sizes)

    @classmethod
    def parse(cls, spec) -> "Architecture":
        """A preset name (``default``, ``small``, ``large``), ``"784,64,8"`` or a sequence."""
        if isinstance(spec, Architecture):
            return spec
        if isinstance(spec, str):
            if spec in PRESETS:
                return cls(PRESETS[spec])
            try:
                return cls(tuple(int(s) for s in spec.split(",")))
            except ValueError:
                raise ConfigError(
                    f"arch: expected one of {', '.join(PRESETS)} or comma-separated "
                    f"widths like 784,64,8, got {spec!r}"
                ) from None
        try:
            return cls(tuple(spec))
        except TypeError:
            raise ConfigError(f"arch: expected one of {', '.join(PRESETS)} or comma-separated "
                              f"widths like 784,64,8, got {spec!r}") from None

    @property
    def input_dim(self) -> int:
        return self.sizes[0]

    @property
    def latent_dim(self) -> int:
        return self.sizes[-1]

    def encoder_shapes(self):
        s = self.sizes
        return [(s[i], s[i + 1], RELU) for i in range(len(s) - 1)]

    def decoder_shapes(self):
        s = self.sizes[::-1]
        n = len(s) - 1
        return [(s[i], s[i + 1], SIGMOID if i == n - 1 else RELU) for i in range(n)]

    def with_input_dim(self, dim: int) -> "Architecture":
        """This architecture for ``dim`` inputs (how a preset follows the data).

        The hidden and latent widths stay as they are while each is at most 3/4 of
        the width before it; a wider one is cut to that (at least 1), so the encoder
        always narrows.  The presets therefore keep their widths for 784 or 1000
        inputs and become, for 64 inputs, default 64-30-10, small 64-30-2, large
        64-48-30-10; for 40 inputs 40-30-10, 40-30-2 and 40-30-22-10.
        """
        dim = int(dim)
        sizes = [dim]
        for width in self.sizes[1:]:
            sizes.append(max(1, min(width, sizes[-1] * 3 // 4)))
        return Architecture(tuple(sizes))

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o, _ in self.encoder_shapes() + self.decoder_shapes())

    def __str__(self) -> str:
        enc = "-".join(map(str, self.sizes))
        dec = "-".join(map(str, self.sizes[::-1]))
        return f"{enc} / {dec}"


def layer_table(shapes) -> tuple[np.ndarray, int]:
    """Layer table for ``[(n_in, n_out, act), ...]`` and the row length."""
    table = np.zeros((len(shapes), LAYER_COLUMNS), np.int64)
    off = 0
    units = 0
    for l, (n_in, n_out, act) in enumerate(shapes):
        table[l, COL_IN] = n_in
        table[l, COL_OUT] = n_out
        table[l, COL_W] = off
        table[l, COL_B] = off + n_in * n_out
        table[l, COL_ACT] = act
        table[l, COL_T] = 1 if n_out > n_in else 0
        table[l, COL_UNIT] = units
        off += n_in * n_out + n_out
        units += n_out
    return table, off


class Arena:
    """``P`` individuals of one network half, as flat float32 rows.

    Attributes
    ----------
    table : int64 ``(L, 7)`` layer table.
    params, m, v : float32 ``(P, n)``; mask : uint8 ``(P, n)``; step : int64 ``(P,)``.
    """

    def __init__(self, shapes, population: int = 1):
        self.shapes = [tuple(s) for s in shapes]
        self.table, self.n = layer_table(self.shapes)
        P = int(population)
        self.params = np.zeros((P, self.n), np.float32)
        self.mask = np.ones((P, self.n), np.uint8)
        self.m = np.zeros((P, self.n), np.float32)
        self.v = np.zeros((P, self.n), np.float32)
        self.step = np.zeros(P, np.int64)
        #: exactly-zero parameters at the lineage's last pruning event (-1: never);
        #: the reference's accounting, used when pruned weights may regrow
        self.zeros = np.full(P, -1, np.int64)

    def rows(self, lo: int, hi: int) -> "Arena":
        """An arena of rows ``lo:hi`` of this one that shares their memory
        (writes through either are seen by both)."""
        view = object.__new__(Arena)
        view.shapes, view.table, view.n = self.shapes, self.table, self.n
        for key, arr in self.arrays().items():
            setattr(view, key, arr[lo:hi])
        return view

    def take(self, rows) -> "Arena":
        """A new arena holding copies of ``rows`` (any index array, repeats allowed)."""
        out = object.__new__(Arena)
        out.shapes, out.table, out.n = self.shapes, self.table, self.n
        for key, arr in self.arrays().items():
            setattr(out, key, np.ascontiguousarray(arr[np.asarray(rows, np.int64)]))
        return out

    def copy(self) -> "Arena":
        """A copy of every row."""
        return self.take(np.arange(self.population))

    def half(self, rows):
        """The kernels' bundle (``kernels.contract.Half``) of individual ``rows``
        (an int) or of the rows of a slice, as views of this arena."""
        from sparseae.kernels.contract import Half

        if isinstance(rows, slice):
            return Half(self.params[rows], self.mask[rows], self.m[rows], self.v[rows],
                        self.step[rows], self.table)
        i = int(rows)
        return Half(self.params[i], self.mask[i], self.m[i], self.v[i], self.step[i:i + 1],
                    self.table)

    @property
    def population(self) -> int:
        return self.params.shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.shapes)

    @property
    def n_units(self) -> int:
        return int(sum(o for _, o, _ in self.shapes))

    def _view(self, arr: np.ndarray, l: int) -> np.ndarray:
        n_in, n_out = int(self.table[l, COL_IN]), int(self.table[l, COL_OUT])
        w0 = int(self.table[l, COL_W])
        flat = arr[..., w0:w0 + n_in * n_out]
        if self.table[l, COL_T]:
            return flat.reshape(arr.shape[:-1] + (n_in, n_out)).swapaxes(-1, -2)
        return flat.reshape(arr.shape[:-1] + (n_out, n_in))

    def weight(self, i: int, l: int, which: str = "params") -> np.ndarray:
        """``(out, in)`` view of layer ``l``'s weight of individual ``i``
        (``which`` = ``params``, ``mask``, ``m`` or ``v``)."""
        return self._view(getattr(self, which)[i], l)

    def bias(self, i: int, l: int, which: str = "params") -> np.ndarray:
        b0 = int(self.table[l, COL_B])
        return getattr(self, which)[i, b0:b0 + int(self.table[l, COL_OUT])]

    def init(self, rng: np.random.Generator, rows=None) -> None:
        """PyTorch's ``nn.Linear`` default: W and b uniform in +-1/sqrt(fan_in).

        Draws, per layer in order, W in ``(out, in)`` order then b.
        """
        rows = range(self.population) if rows is None else rows
        for i in rows:
            for l, (n_in, n_out, _) in enumerate(self.shapes):
                bound = 1.0 / np.sqrt(n_in)
                self.weight(i, l)[...] = rng.uniform(-bound, bound, (n_out, n_in))
                self.bias(i, l)[...] = rng.uniform(-bound, bound, n_out)
            self.mask[i] = 1
            self.m[i] = 0
            self.v[i] = 0
            self.step[i] = 0
            self.zeros[i] = -1

    def copy_row(self, dst: int, src: int, source: "Arena | None" = None, adam: bool = True,
                 moments: bool = True):
        """Copy individual ``src`` (of ``source``, default this arena) into row ``dst``.

        ``adam=False`` resets the copy's Adam state instead; ``moments=False``
        leaves ``m`` and ``v`` of row ``dst`` as they are (for a fresh Adam,
        whose moments are 0 in every row)."""
        a = self if source is None else source
        self.params[dst] = a.params[src]
        self.mask[dst] = a.mask[src]
        self.zeros[dst] = a.zeros[src]
        if not moments:
            self.step[dst] = a.step[src] if adam else 0
        elif adam:
            self.m[dst] = a.m[src]
            self.v[dst] = a.v[src]
            self.step[dst] = a.step[src]
        else:
            self.m[dst] = 0
            self.v[dst] = 0
            self.step[dst] = 0

    def arrays(self) -> dict:
        return {"params": self.params, "mask": self.mask, "m": self.m, "v": self.v,
                "step": self.step, "zeros": self.zeros}


class Autoencoder:
    """One encoder and one decoder: what users train, run and save.

    Parameters
    ----------
    arch : Architecture, preset name or widths.
    seed : int or numpy Generator used for PyTorch-style initialisation; None
        leaves every parameter 0.
    """

    def __init__(self, arch="default", seed=None):
        self.arch = Architecture.parse(arch)
        self.encoder = Arena(self.arch.encoder_shapes(), 1)
        self.decoder = Arena(self.arch.decoder_shapes(), 1)
        if seed is not None:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            self.encoder.init(rng)
            self.decoder.init(rng)

    @property
    def n_params(self) -> int:
        return self.encoder.n + self.decoder.n

    def _check(self, X, dim, what):
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != dim:
            raise ValueError(f"{what}: expected shape (N, {dim}), got {np.shape(X)}")
        return np.ascontiguousarray(X, dtype=np.float32)

    def encode(self, X, chunk: int = 256) -> np.ndarray:
        """Latent codes ``(N, latent)`` of the rows of ``X``."""
        from sparseae.kernels import cpu

        X = self._check(X, self.arch.input_dim, "encode")
        return cpu.forward_half(self.encoder.params[0], self.encoder.table, X, chunk)

    def decode(self, Z, chunk: int = 256) -> np.ndarray:
        """Reconstructions ``(N, input)`` of latent codes ``Z``."""
        from sparseae.kernels import cpu

        Z = self._check(Z, self.arch.latent_dim, "decode")
        return cpu.forward_half(self.decoder.params[0], self.decoder.table, Z, chunk)

    def reconstruct(self, X, chunk: int = 256) -> np.ndarray:
        """``decode(encode(X))``."""
        return self.decode(self.encode(X, chunk), chunk)

    def l1(self, X, chunk: int = 256) -> float:
        """Mean absolute reconstruction error over the rows of ``X``."""
        from sparseae.kernels import cpu

        X = self._check(X, self.arch.input_dim, "l1")
        return float(cpu.evaluate_l1(self.encoder.params[0], self.encoder.table,
                                     self.decoder.params[0], self.decoder.table, X, chunk))
