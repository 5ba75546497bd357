"""Compile-time specialised CUDA kernels.

The device functions (``kernels/cuda_device.py``) and kernels
(``kernels/cuda_train.py``, ``kernels/cuda_eval.py``) are written as plain
module-level Python functions that read their configuration -- samples per
batch, unrolls, fresh Adam, simulator or GPU -- from module constants.  For
each configuration :func:`build` makes a copy of every one of them whose
globals are one shared namespace holding that configuration's constants and
the other copies, and compiles it with ``numba.cuda.jit``: numba treats the
constants as compile-time values (register array sizes, pruned branches), and
the copies call each other.
"""

import types

from sparseae.kernels import cuda_device, cuda_eval, cuda_train

#: Device functions, compiled once per configuration.
DEVICE = (cuda_device.adam, cuda_device.emit, cuda_device.fwd_row, cuda_device.fwd_col,
          cuda_device.fwd_layer, cuda_device.post, cuda_device.dx_col, cuda_device.bias_cols,
          cuda_device.load_batch, cuda_device.load_rows, cuda_eval.block_minmax,
          cuda_eval.block_count, cuda_eval.conj_update, cuda_train.forward_layer,
          cuda_train.backward_layer)


def _copy(fn, namespace):
    """``fn`` with ``namespace`` as its globals."""
    return types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__,
                              fn.__closure__)


def build(cuda, *, BM, U, RU, SIM, GLOB, FRESH, PIPE, train_options, eval_fastmath):
    """The ``train``, ``evaluate`` and ``conjunctive`` kernels of one configuration.

    ``cuda``: ``numba.cuda`` (or its simulator); ``BM`` samples per batch,
    ``U``/``RU`` unrolls, ``SIM`` simulator (no warp shuffles), ``GLOB``
    per-block buffers in global scratch, ``FRESH`` a new Adam every step,
    ``PIPE`` software-pipelined update loop; ``train_options`` the training
    kernel's ``cuda.jit`` options (fastmath, register cap, carveout) and
    ``eval_fastmath`` the other kernels' and the device functions' fastmath.
    """
    import numpy as np

    ns = {}
    for module in (cuda_device, cuda_train, cuda_eval):
        ns.update(vars(module))
    ns.update(cuda=cuda, BM=BM, U=U, RU=RU, SIM=SIM, GLOB=GLOB, FRESH=FRESH, PIPE=PIPE)
    if SIM:  # the simulator's local and shared arrays need dtype instances
        ns.update(_f32=np.dtype(np.float32), _f64=np.dtype(np.float64), _u8=np.dtype(np.uint8),
                  _i64=np.dtype(np.int64))

    def device(fn):
        return cuda.jit(device=True, fastmath=eval_fastmath)(_copy(fn, ns))

    ns["warp_allsum"] = device(cuda_device.warp_allsum_sim if SIM
                               else cuda_device.warp_allsum_shfl)
    for fn in DEVICE:
        ns[fn.__name__] = device(fn)
    # the update variants differ in their closure (compile-time flags), not globals:
    # the simulator swaps ``cuda`` in one shared namespace for the whole launch
    for name in ("upd_t0", "upd_t0_fused", "upd_t1", "upd_t1_dx"):
        ns[name] = device(getattr(cuda_device, name))
    return {
        "train": cuda.jit(**train_options)(_copy(cuda_train.train, ns)),
        "evaluate": cuda.jit(fastmath=eval_fastmath)(_copy(cuda_eval.evaluate, ns)),
        "conjunctive": cuda.jit(fastmath=eval_fastmath)(_copy(cuda_eval.conjunctive, ns)),
        "population": cuda.jit(fastmath=False)(_copy(cuda_eval.population, ns)),
    }
