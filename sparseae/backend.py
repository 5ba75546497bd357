"""Pick the kernels for a device: ``cpu`` (numba.njit) or ``cuda`` (numba.cuda).

``import sparseae`` never imports numba.cuda; asking for ``cuda`` where no
usable GPU exists is one :class:`~sparseae.errors.ConfigError` line.
"""

from sparseae.errors import ConfigError

DEVICES = ("cpu", "cuda")


def kernels(device: str = "cpu"):
    """The kernel module for ``device`` (``sparseae.kernels.cpu`` or ``.cuda``)."""
    if device == "cpu":
        from sparseae.kernels import cpu

        return cpu
    if device == "cuda":
        from sparseae.kernels import cuda

        ok, why = cuda.available()
        if not ok:
            raise ConfigError(f"device: cuda is not usable here ({why}); use --device cpu")
        return cuda
    raise ConfigError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")


def train_pairs(device, enc, dec, rows, X, orders, batch_size, lrs, config, stats_e, stats_d,
                with_stats):
    """Train the pairs in ``rows`` of arenas ``enc``/``dec`` for one epoch each.

    On the CPU with one row this is one ``train_epoch`` call; otherwise the
    device's ``train_epoch_many`` (the rows must be a contiguous range).
    Returns the ``(len(rows),)`` mean batch L1 of every pair.
    """
    import numpy as np

    k = kernels(device)
    lo, hi = rows.start, rows.stop
    fresh = config.adam == "fresh"
    c = config
    if device == "cpu" and hi - lo == 1:
        return np.array([k.train_epoch(
            enc.params[lo], enc.mask[lo], enc.m[lo], enc.v[lo], enc.step[lo:hi], enc.table,
            dec.params[lo], dec.mask[lo], dec.m[lo], dec.v[lo], dec.step[lo:hi], dec.table,
            X, orders[0], batch_size, float(lrs[0]), c.beta1, c.beta2, c.eps, fresh,
            stats_e[0], stats_d[0], with_stats)])
    return np.asarray(k.train_epoch_many(
        enc.params[lo:hi], enc.mask[lo:hi], enc.m[lo:hi], enc.v[lo:hi], enc.step[lo:hi],
        enc.table, dec.params[lo:hi], dec.mask[lo:hi], dec.m[lo:hi], dec.v[lo:hi],
        dec.step[lo:hi], dec.table, X, np.ascontiguousarray(orders), batch_size,
        np.asarray(lrs, np.float64), c.beta1, c.beta2, c.eps, fresh, stats_e, stats_d,
        with_stats), np.float64)
