"""Host-side helpers of the CUDA kernels: argument checks and marshalling, and
the per-block memory layout (``kernels/cuda.py`` uses them)."""

import numpy as np

from sparseae._options import COL_B, COL_IN, COL_OUT, COL_UNIT
from sparseae.kernels.cuda_device import MAX_LAYERS


def check_tpb(tpb, pow2=True):
    """Threads per block: a multiple of 32 (whole warps), and a power of two
    where a block-wide tree reduction needs it (evaluation, CONJUNCTIVE)."""
    tpb = int(tpb)
    if tpb < 32 or tpb % 32 or (pow2 and tpb & (tpb - 1)):
        need = "a power of two >= 32" if pow2 else "a multiple of 32"
        raise ValueError(f"cuda: threads per block must be {need}, got {tpb}")
    return tpb


def widths(le, ld):
    return [int(w) for w in le[:, COL_OUT]] + [int(w) for w in ld[:, COL_OUT]]


def layout(le, ld, BM, D, NT, kind, sim):
    """Offsets (float32 units) of the per-block buffers and their total size.

    ``so[0]``, ``so[1]``: two ``BM x D`` batch buffers (training rotates the
    batch, dLoss/dy and the prefetched next batch through them); ``so[2]``: a
    ``2 NT`` reduction area (``BM NT`` in the simulator); ``so[3 + 2k]``, ``so[4 + 2k]``: layer ``k``'s
    activations and dLoss/dz (``BM x width``; chain order encoder then
    decoder)."""
    ws = widths(le, ld)
    Lt = len(ws)
    so = np.zeros(3 + 2 * Lt, np.int64)
    pos = 0
    so[0] = pos
    pos += BM * D
    if kind == "train":
        so[1] = pos
        pos += BM * D
    so[2] = pos
    pos += max(2, BM if sim else 1) * NT
    for k, w in enumerate(ws):
        if kind == "train" and k == Lt - 1:
            continue  # the output layer works in the second batch buffer
        so[3 + 2 * k] = pos
        pos += BM * w
        if kind == "train":
            so[4 + 2 * k] = pos
            pos += BM * w
    return so, int(pos)


def check_tables(le, ld):
    le = np.ascontiguousarray(le, np.int64)
    ld = np.ascontiguousarray(ld, np.int64)
    if le.ndim != 2 or ld.ndim != 2 or le.shape[0] < 1 or ld.shape[0] < 1:
        raise ValueError("cuda: layer tables must be non-empty (L, 7) int64 arrays")
    if le.shape[0] > MAX_LAYERS or ld.shape[0] > MAX_LAYERS:
        raise ValueError(f"cuda: at most {MAX_LAYERS} layers per half")
    if int(ld[0, COL_IN]) != int(le[-1, COL_OUT]):
        raise ValueError("cuda: decoder input width differs from the encoder's latent width")
    return le, ld


def row_len(lay):
    return int(lay[-1, COL_B] + lay[-1, COL_OUT])


def n_units(lay):
    return int(lay[-1, COL_UNIT] + lay[-1, COL_OUT])


def host(a, dtype):
    """A numpy copy (or view) of a small array that may live on the device."""
    if hasattr(a, "copy_to_host"):
        a = a.copy_to_host()
    return np.asarray(a, dtype)


class Args:
    """Host/device argument marshalling: numpy arrays are copied to the device
    (and back, for the ones updated in place); numba device arrays are used
    as they are."""

    def __init__(self, cuda):
        self.cuda = cuda
        self.back = []

    def put(self, a, dtype, name, shape=None, inplace=False):
        c = self.cuda
        if hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__"):
            d = a if hasattr(a, "copy_to_host") else c.as_cuda_array(a)
            if d.dtype != np.dtype(dtype):
                raise TypeError(f"cuda: {name} must be {np.dtype(dtype)}, got {d.dtype}")
        else:
            h = np.asarray(a)
            if inplace:
                if h.dtype != np.dtype(dtype):
                    raise TypeError(f"cuda: {name} must be {np.dtype(dtype)}, got {h.dtype}")
                if not h.flags.c_contiguous:
                    raise ValueError(f"cuda: {name} must be C-contiguous (it is updated in place)")
            else:
                h = np.ascontiguousarray(h, dtype)
            d = c.to_device(h)
            if inplace:
                self.back.append((d, h))
        if shape is not None and tuple(d.shape) != tuple(shape):
            raise ValueError(f"cuda: {name} has shape {tuple(d.shape)}, expected {tuple(shape)}")
        return d

    def moments(self, a, name, shape, fresh):
        """Adam moments: with ``fresh`` a host array is zeroed here (what the
        kernel would leave in it) and the kernel gets a ``(P, 1)`` stand-in,
        so the moments cross the bus neither way (25 -> 9 bytes per parameter
        and launch); device arrays and persistent Adam go as :meth:`put`."""
        if not fresh or hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__"):
            return self.put(a, np.float32, name, shape, True)
        h = np.asarray(a)
        if h.dtype != np.float32 or h.shape != tuple(shape):
            raise TypeError(f"cuda: {name} must be float32 of shape {tuple(shape)}, "
                            f"got {h.dtype} {h.shape}")
        h[...] = 0.0
        return self.cuda.device_array((shape[0], 1), np.float32)

    def copy_back(self):
        for d, h in self.back:
            d.copy_to_host(h)
