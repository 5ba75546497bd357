"""numba.cuda kernels for masked dense autoencoders, batched over networks.

Same contract as ``kernels/cpu.py`` (``kernels/contract.py``: flat float32
arena rows, int64 layer tables, storage orientation, masked Adam, fused
VARIANCE statistics, CONJUNCTIVE rule, argument bundles), but every entry
point works on ``P`` networks at once -- the trials of a sweep, the cells of a
ring -- with one kernel launch.  This module is the host side (availability,
arguments, launches); the kernels are ``kernels/cuda_train.py`` and
``kernels/cuda_eval.py``, their device functions ``kernels/cuda_device.py``,
specialised per configuration by ``kernels/cuda_build.py``:

* :func:`train_epoch_many` -- one epoch of ``P`` encoder/decoder pairs;
* :func:`all_pairs_l1` -- every encoder with every decoder on one batch;
* :func:`evaluate_l1_many` -- mean L1 of pair ``p`` over all rows of ``X``;
* :func:`conjunctive_marks_many` -- CONJUNCTIVE marks of every pair;
* :func:`pairs_l1_many`, :func:`population_stats_many` -- the evaluations of
  many runs' steps at once (lockstep groups).

The training kernel's design and measured speed are in ``kernels/cuda_train.py``.

Knobs are module constants (patch them in tests, as stumpy does):
``TPB_TRAIN`` (a multiple of 32) / ``TPB_EVAL`` (a power of two) threads per
block, ``EVAL_CHUNK`` samples per forward chunk in evaluation, ``UNROLL``,
``ROW_UNROLL``, ``PIPELINE``, ``TRAIN_MAX_REGISTERS``, ``TRAIN_FASTMATH``,
and ``SHARED_BYTES``, the dynamic shared memory a block may use before the
kernels fall back to a per-block global scratch row (e.g. batch >= 6 with
1000 inputs: correct, slower).

Importing this module never touches CUDA: ``numba.cuda`` is imported on first
use only (:func:`available`, :func:`require` and the entry points).
"""

from __future__ import annotations

import numpy as np

from sparseae._options import COL_IN, COL_OUT
from sparseae.kernels.cuda_args import (
    Args,
    check_tables,
    check_tpb,
    host,
    layout,
    n_units,
    row_len,
)

#: Threads per block of the training kernel (one block = one network pair);
#: a multiple of 32.
TPB_TRAIN = 256
#: Threads per block of the evaluation and CONJUNCTIVE kernels.
TPB_EVAL = 128
#: Samples forwarded together by :func:`evaluate_l1_many` / :func:`all_pairs_l1`.
EVAL_CHUNK = 4
#: Columns a lane handles per memory round trip (row-wise passes).
UNROLL = 4
#: Weight rows a thread reads per memory round trip (column-wise passes).
ROW_UNROLL = 8
#: Software-pipeline the update loop: issue the next round trip's loads of
#: ``w, m, v, mask`` before computing the current one (more registers).
PIPELINE = False
#: Dynamic shared memory per block the kernels may ask for (bytes).  Above it
#: the per-block buffers live in a global scratch row instead (slower).
SHARED_BYTES = 48 * 1024 - 2048
#: Register cap of the training kernel (None: the compiler's choice).  The
#: fused kernel is register hungry; a cap trades spills for resident blocks.
TRAIN_MAX_REGISTERS = 80
#: Shared-memory carveout hint of the training kernel (None: the driver's
#: choice; a percentage or "MaxL1"/"MaxShared").  What shared memory leaves
#: of the L1 holds the register spills.
TRAIN_CARVEOUT = None
#: fastmath for the evaluation and CONJUNCTIVE kernels (False: IEEE division
#: and square root, as close to the CPU kernels as float32 allows; a
#: CONJUNCTIVE mark compares a quotient with the threshold).
CUDA_FASTMATH = False
#: fastmath for the training kernel: approximate division and square root in
#: Adam and the sigmoid (a few ulp; the CPU kernels' own fastmath also allows
#: reciprocal approximations), denormals flushed to zero; far fewer
#: instructions per parameter than IEEE division and square root.
TRAIN_FASTMATH = True

#: ``numba.cuda``, bound on first use so that importing this module stays free
#: of CUDA.  It must be a module global: numba's simulator swaps it.
cuda = None



# ------------------------------------------------------------------ availability


def _numba_cuda():
    global cuda
    if cuda is None:
        from numba import cuda as _c

        cuda = _c
    return cuda


def _simulating() -> bool:
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def available():
    """``(True, note)`` when a CUDA GPU (or numba's simulator) can run the
    kernels, else ``(False, reason)``; never raises."""
    try:
        c = _numba_cuda()
    except Exception as exc:  # broken numba-cuda install, missing bindings, ...
        return False, f"cuda: numba.cuda cannot be imported ({type(exc).__name__}: {exc})"
    try:
        ok = bool(c.is_available())
    except Exception as exc:
        return False, f"cuda: CUDA driver check failed ({type(exc).__name__}: {exc})"
    if not ok:
        return False, "cuda: no CUDA GPU found (numba.cuda.is_available() is False)"
    return True, "cuda: numba CUDA simulator" if _simulating() else "cuda: GPU available"


def require() -> None:
    """Raise ``RuntimeError`` (one line) unless :func:`available`."""
    ok, reason = available()
    if not ok:
        raise RuntimeError(reason)


def to_device(a):
    """A device copy of host array ``a`` (C-contiguous, dtype kept), to pass
    the same input -- e.g. a sweep's training data -- to many launches."""
    require()
    return cuda.to_device(np.ascontiguousarray(a))


# ------------------------------------------------------------------ kernels


_BUILT = {}


def _kernels(BM, glob, fresh=False):
    """The kernels for ``BM`` samples per batch under the current knobs (built
    once per configuration, ``kernels/cuda_build.py``)."""
    from sparseae.kernels import cuda_build

    _numba_cuda()
    sim = _simulating()
    maxreg = int(TRAIN_MAX_REGISTERS) if TRAIN_MAX_REGISTERS else None
    key = (int(BM), bool(glob), int(UNROLL), int(ROW_UNROLL), sim, bool(CUDA_FASTMATH), maxreg,
           bool(TRAIN_FASTMATH), bool(fresh), bool(PIPELINE), TRAIN_CARVEOUT)
    if key not in _BUILT:
        train_options = dict(fastmath=bool(TRAIN_FASTMATH))
        if maxreg and not sim:
            train_options["max_registers"] = maxreg
        if TRAIN_CARVEOUT is not None and not sim:
            train_options["shared_memory_carveout"] = TRAIN_CARVEOUT
        _BUILT[key] = cuda_build.build(
            cuda, BM=int(BM), U=int(UNROLL), RU=int(ROW_UNROLL), SIM=sim, GLOB=bool(glob),
            FRESH=bool(fresh), PIPE=bool(PIPELINE), train_options=train_options,
            eval_fastmath=bool(CUDA_FASTMATH))
    return _BUILT[key]


# ------------------------------------------------------------------ host side


def _smem_mode(nfloats):
    """(dynamic shared bytes, use global scratch)."""
    nbytes = 4 * nfloats
    if nbytes <= SHARED_BYTES:
        return nbytes, False
    return 0, True


def _scratch(c, rows, nfloats, glob):
    if glob:
        return c.device_array((rows, nfloats), np.float32)
    return c.device_array((1, 1), np.float32)


class _TrainPlan:
    """Everything one :func:`train_epoch_many` launch needs (the benchmark
    re-launches a plan to time the kernel alone)."""

    def __init__(self, enc, dec, X, orders, batch_size, lrs, adam, stats, with_stats):
        require()
        PE, ME, mE, vE, stepE, le = enc
        PD, MD, mD, vD, stepD, ld = dec
        beta1, beta2, eps, fresh = adam
        stats_e, stats_d = stats
        c = cuda
        le, ld = check_tables(le, ld)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"cuda: batch_size must be >= 1, got {batch_size}")
        A = Args(cuda)
        ne, nd = row_len(le), row_len(ld)
        P = int(PE.shape[0])
        D = int(le[0, COL_IN])
        if int(ld[-1, COL_OUT]) != D:
            raise ValueError("cuda: decoder output width differs from the encoder input width")
        self.PE = A.put(PE, np.float32, "PE", (P, ne), True)
        self.ME = A.put(ME, np.uint8, "ME", (P, ne))
        self.mE = A.moments(mE, "mE", (P, ne), fresh)
        self.vE = A.moments(vE, "vE", (P, ne), fresh)
        self.stepE = A.put(stepE, np.int64, "stepE", (P,), True)
        self.PD = A.put(PD, np.float32, "PD", (P, nd), True)
        self.MD = A.put(MD, np.uint8, "MD", (P, nd))
        self.mD = A.moments(mD, "mD", (P, nd), fresh)
        self.vD = A.moments(vD, "vD", (P, nd), fresh)
        self.stepD = A.put(stepD, np.int64, "stepD", (P,), True)
        self.X = A.put(X, np.float32, "X")
        if self.X.ndim != 2 or self.X.shape[1] != D:
            raise ValueError(f"cuda: X must be (N, {D}), got {tuple(self.X.shape)}")
        self.orders = A.put(orders, np.int64, "orders")
        if self.orders.ndim != 2 or self.orders.shape[0] != P:
            raise ValueError(f"cuda: orders must be (P={P}, n), got {tuple(self.orders.shape)}")
        n = int(self.orders.shape[1])
        if n < 1:
            raise ValueError("cuda: an epoch needs at least one sample")
        lrs = host(lrs, np.float64)
        if lrs.ndim == 0:
            lrs = np.full(P, float(lrs))
        if lrs.shape != (P,):
            raise ValueError(f"cuda: lrs has shape {lrs.shape}, expected ({P},)")
        self.lrs = lrs
        self.with_stats = bool(with_stats)
        if self.with_stats:
            self.stats_e = A.put(stats_e, np.float64, "stats_e", (P, n_units(le), 3), True)
            self.stats_d = A.put(stats_d, np.float64, "stats_d", (P, n_units(ld), 3), True)
        else:
            self.stats_e = c.device_array((1, 1, 3), np.float64)
            self.stats_d = c.device_array((1, 1, 3), np.float64)
        self.args = A
        self.P, self.n, self.batch_size = P, n, batch_size
        self.nsteps = -(-n // batch_size)
        BM = min(batch_size, n)
        self.tpb = check_tpb(TPB_TRAIN, pow2=False)
        so, nfloats = layout(le, ld, BM, D, self.tpb, "train", _simulating())
        self.smem, glob = _smem_mode(nfloats)
        self.kernel = _kernels(BM, glob, bool(fresh))["train"]
        self.so = c.to_device(so)
        self.le, self.ld = c.to_device(le), c.to_device(ld)
        self.part = c.device_array((P, self.tpb), np.float64)
        self.losses = c.device_array(P, np.float64)
        self.scratch = _scratch(c, P, nfloats, glob)
        self.scalars = (float(beta1), float(beta2), float(eps), bool(fresh))
        self.set_coefficients()

    def set_coefficients(self):
        """Adam's per-step constants of every pair and half, ``(P, steps, 4)``
        float32: step size ``lr / (1 - beta1**t)`` and ``1 / sqrt(1 - beta2**t)``
        for the encoder then the decoder, in float64 and rounded once, as
        cpu.adam_update does; ``t`` continues each half's step count.  With
        ``fresh`` the step size is the lr itself (contract.fresh_step).  Reads
        the step counts, so call it again before re-launching a plan whose
        counts moved on the device."""
        b1, b2, _, fresh = self.scalars
        k = np.arange(1, self.nsteps + 1, dtype=np.float64)[None, :]
        coef = np.empty((self.P, self.nsteps, 4), np.float32)
        for j, st in enumerate((self.stepE, self.stepD)):
            if fresh:
                coef[:, :, 2 * j] = self.lrs[:, None]
                coef[:, :, 2 * j + 1] = 1.0
                continue
            t = host(st, np.int64).astype(np.float64)[:, None] + k
            coef[:, :, 2 * j] = self.lrs[:, None] / (1.0 - b1 ** t)
            coef[:, :, 2 * j + 1] = 1.0 / np.sqrt(1.0 - b2 ** t)
        self.coef = cuda.to_device(coef)

    def launch(self, stream=0):
        b1, b2, e, fresh = self.scalars
        self.kernel[self.P, self.tpb, stream, self.smem](
            self.PE, self.ME, self.mE, self.vE, self.stepE, self.le,
            self.PD, self.MD, self.mD, self.vD, self.stepD, self.ld,
            self.X, self.orders, self.batch_size, self.coef, b1, b2, e, fresh,
            self.stats_e, self.stats_d, self.with_stats, self.so, self.part, self.losses,
            self.scratch)

    def finish(self):
        losses = self.losses.copy_to_host()
        self.args.copy_back()
        return losses


def train_epoch_many(enc, dec, X, orders, batch_size, lrs, adam, stats, with_stats):
    """Train ``P`` encoder/decoder pairs for one epoch each, in one launch.

    ``enc``/``dec``: :class:`~sparseae.kernels.contract.Half` bundles of ``P``
    rows (params, mask, moments ``(P, n)``, step ``(P,)``, layer table); row
    ``p`` of each is pair ``p``.  ``X`` ``(N, D)`` is shared, ``orders`` ``(P,
    n)`` holds each pair's batch order, ``lrs`` ``(P,)`` each pair's learning
    rate (a scalar is broadcast), ``adam`` an
    :class:`~sparseae.kernels.contract.AdamConfig`.  Per pair this is exactly
    :func:`sparseae.kernels.cpu.train_epoch` (float32, masked Adam, fused
    VARIANCE statistics into ``stats = (stats_e, stats_d)`` ``(P, units, 3)``
    float64 when ``with_stats``).

    Arrays may be numpy (copied to the GPU, and the ones updated in place --
    parameters, moments, steps, statistics -- copied back; these must be
    C-contiguous with exactly the dtypes above) or numba device arrays
    (updated in place on the GPU: keep the arenas, ``X`` and ``orders`` on the
    device across epochs, which saves the copies -- about half the time of an
    epoch at P = 300).  The step counts and ``lrs`` are read on the host
    (``P`` numbers) for Adam's per-step constants.  Returns the ``(P,)``
    float64 mean batch L1 of every pair.
    """
    require()
    if int(np.shape(enc[0])[0]) == 0:
        return np.zeros(0)
    plan = _TrainPlan(enc, dec, X, orders, batch_size, lrs, adam, stats, with_stats)
    plan.launch()
    return plan.finish()


def _eval_pairs(PE, le, PD, ld, X, pe_idx, pd_idx, rows=None, ri=None):
    """L1 of pair ``q`` (encoder row ``pe_idx[q]``, decoder row ``pd_idx[q]``) over
    the rows ``rows[ri[q]]`` of ``X`` (default: every row)."""
    require()
    c = cuda
    le, ld = check_tables(le, ld)
    A = Args(cuda)
    PE = A.put(PE, np.float32, "PE")
    PD = A.put(PD, np.float32, "PD")
    D = int(le[0, COL_IN])
    if PE.ndim != 2 or PE.shape[1] != row_len(le):
        raise ValueError(f"cuda: PE must be (E, {row_len(le)}), got {tuple(PE.shape)}")
    if PD.ndim != 2 or PD.shape[1] != row_len(ld):
        raise ValueError(f"cuda: PD must be (P, {row_len(ld)}), got {tuple(PD.shape)}")
    X = A.put(X, np.float32, "X")
    if X.ndim != 2 or X.shape[1] != D or X.shape[0] < 1:
        raise ValueError(f"cuda: X must be (N >= 1, {D}), got {tuple(X.shape)}")
    Q = len(pe_idx)
    out = c.device_array(Q, np.float64)
    if Q == 0:
        return out.copy_to_host()
    if rows is None:
        rows, ri = np.arange(X.shape[0], dtype=np.int64)[None], np.zeros(Q, np.int64)
    rows = np.ascontiguousarray(rows, np.int64)
    if rows.ndim != 2 or rows.shape[1] < 1 or rows.min() < 0 or rows.max() >= X.shape[0]:
        raise ValueError(f"cuda: rows must index the {X.shape[0]} rows of X")
    tpb = check_tpb(TPB_EVAL)
    BM = max(1, min(int(EVAL_CHUNK), int(rows.shape[1])))
    so, nfloats = layout(le, ld, BM, D, tpb, "eval", _simulating())
    smem, glob = _smem_mode(nfloats)
    k = _kernels(BM, glob)["evaluate"]
    part = c.device_array((Q, tpb), np.float64)
    k[Q, tpb, 0, smem](PE, c.to_device(le), PD, c.to_device(ld), X, c.to_device(rows),
                       c.to_device(np.asarray(ri, np.int64)),
                       c.to_device(np.asarray(pe_idx, np.int64)),
                       c.to_device(np.asarray(pd_idx, np.int64)), c.to_device(so),
                       c.device_array((1, 1, 3), np.float64), part, out,
                       _scratch(c, Q, nfloats, glob))
    return out.copy_to_host()


def all_pairs_l1(PE, le, PD, ld, Xb):
    """``(E, D)`` float64 matrix of the mean L1 of every encoder row of ``PE``
    with every decoder row of ``PD`` on the batch ``Xb`` (cpu.all_pairs_l1)."""
    E, Dn = int(np.shape(PE)[0]), int(np.shape(PD)[0])
    pe_idx = np.repeat(np.arange(E, dtype=np.int64), Dn)
    pd_idx = np.tile(np.arange(Dn, dtype=np.int64), E)
    return _eval_pairs(PE, le, PD, ld, Xb, pe_idx, pd_idx).reshape(E, Dn)


def evaluate_l1_many(PE, le, PD, ld, X):
    """``(P,)`` mean L1 of encoder ``p`` with decoder ``p`` over all rows of
    ``X`` (cpu.evaluate_l1 per pair)."""
    P = int(np.shape(PE)[0])
    if int(np.shape(PD)[0]) != P:
        raise ValueError("cuda: PE and PD must hold the same number of networks")
    idx = np.arange(P, dtype=np.int64)
    return _eval_pairs(PE, le, PD, ld, X, idx, idx)


def pairs_l1_many(PE, le, PD, ld, X, enc, dec, rows, chunk=None):
    """``(Q, E, D)``: for every ``q`` the mean L1 of encoder rows ``enc[q]`` with
    decoder rows ``dec[q]`` on the rows ``rows[q]`` of ``X``, all ``Q * E * D``
    pairs in one launch (cpu.pairs_l1_many; ``chunk`` is the CPU's forward chunk,
    here ``EVAL_CHUNK`` rows go together)."""
    enc, dec = np.asarray(enc, np.int64), np.asarray(dec, np.int64)
    Q, E, Dn = enc.shape[0], enc.shape[1], dec.shape[1]
    pe_idx = np.repeat(enc.reshape(Q, E, 1), Dn, axis=2).ravel()
    pd_idx = np.repeat(dec.reshape(Q, 1, Dn), E, axis=1).ravel()
    ri = np.repeat(np.arange(Q, dtype=np.int64), E * Dn)
    return _eval_pairs(PE, le, PD, ld, X, pe_idx, pd_idx, rows, ri).reshape(Q, E, Dn)


def population_stats_many(params, masks, n):
    """``(d2, overlaps)``, each ``(R, n, n)``, of ``R`` populations of ``n``
    consecutive rows (cpu.population_stats_many): one block per pair of rows,
    float64 sums."""
    require()
    c = cuda
    A = Args(cuda)
    params = A.put(params, np.float32, "params")
    masks = A.put(masks, np.uint8, "masks", tuple(params.shape))
    n = int(n)
    R = int(params.shape[0]) // n
    d2 = c.to_device(np.zeros((R, n, n), np.float64))
    ov = c.to_device(np.zeros((R, n, n), np.int64))
    pairs = np.array([(i, j) for i in range(n) for j in range(i, n)], np.int64).reshape(-1, 2)
    if R and len(pairs):
        from sparseae.kernels.cuda_eval import POP_THREADS

        k = _kernels(1, False)["population"]
        k[R * len(pairs), POP_THREADS](params, masks, n, c.to_device(pairs), d2, ov)
    return d2.copy_to_host(), ov.copy_to_host()


def conjunctive_marks_many(PE, le, PD, ld, X, threshold):
    """CONJUNCTIVE marks of pair ``p`` (encoder ``p``, decoder ``p``) over the
    rows of ``X`` in order (cpu.conjunctive_marks per pair).  Returns
    ``(marks_e (P, units_e), marks_d (P, units_d))`` uint8."""
    require()
    c = cuda
    le, ld = check_tables(le, ld)
    A = Args(cuda)
    PE = A.put(PE, np.float32, "PE")
    P = int(PE.shape[0])
    PD = A.put(PD, np.float32, "PD", (P, row_len(ld)))
    if PE.shape[1] != row_len(le):
        raise ValueError(f"cuda: PE must be (P, {row_len(le)}), got {tuple(PE.shape)}")
    D = int(le[0, COL_IN])
    X = A.put(X, np.float32, "X")
    if X.ndim != 2 or X.shape[1] != D:
        raise ValueError(f"cuda: X must be (N, {D}), got {tuple(X.shape)}")
    marks_e = c.to_device(np.zeros((P, n_units(le)), np.uint8))
    marks_d = c.to_device(np.zeros((P, n_units(ld)), np.uint8))
    if P and X.shape[0]:
        tpb = check_tpb(TPB_EVAL)
        so, nfloats = layout(le, ld, 1, D, tpb, "conj", _simulating())
        smem, glob = _smem_mode(nfloats)
        k = _kernels(1, glob)["conjunctive"]
        k[P, tpb, 0, smem](PE, c.to_device(le), PD, c.to_device(ld), X, float(threshold),
                           c.to_device(so), c.device_array((1, 1, 3), np.float64),
                           marks_e, marks_d, _scratch(c, P, nfloats, glob))
    return marks_e.copy_to_host(), marks_d.copy_to_host()
