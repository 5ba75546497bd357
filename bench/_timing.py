"""What every benchmark reports besides its own numbers: the machine, its load,
a roofline measured in the same run, and samples with CPU time beside wall time.

These machines are shared and noisy: a wall-clock sample also counts the time
another process held the core, a thread's CPU time does not.  A benchmark that
prints both, with the load average before and after, says how far to trust it.
"""

import gc
import os
import platform
import statistics
import time

import numpy as np
from numba import njit


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine() -> dict:
    """The machine and the software a figure was measured with."""
    import numba
    from llvmlite import binding

    from sparseae.kernels import fpenv

    flags = _cpu_flags()
    return {
        "cpu": cpu_model(),
        "llvm_cpu": os.environ.get("NUMBA_CPU_NAME") or binding.get_host_cpu_name(),
        "simd": [f for f in ("avx2", "fma", "avx512f") if f in flags],
        "ftz_daz": bool(fpenv.X86),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
    }


def loadavg() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------- roofline


@njit(fastmath=True, cache=False)
def _sum_passes(a, passes):
    s = np.float32(0.0)
    for _ in range(passes):
        for i in range(a.shape[0]):
            s += a[i]
    return s


#: Entries of the array :func:`sqrt_div_loop` works on (8 KiB each: in L1), and
#: the passes over it per call: ``SQRT_DIV_ENTRIES`` entries per call.
SQRT_DIV_N = 2048
SQRT_DIV_PASSES = 50
SQRT_DIV_ENTRIES = SQRT_DIV_N * SQRT_DIV_PASSES


@njit(fastmath={"reassoc", "contract", "nsz", "arcp"}, error_model="numpy", cache=False)
def _sqrt_div(m, v, out, passes, c, e):
    for _ in range(passes):
        for k in range(m.shape[0]):
            out[k] += m[k] / (np.sqrt(v[k]) * c + e)


def sqrt_div_loop():
    """``fn``: ``fn()`` evaluates Adam's ``m / (sqrt(v) c + eps)`` (one float32
    square root and one divide, vectorised as in the kernels, which use the
    same fastmath flags) for :data:`SQRT_DIV_ENTRIES` entries kept in L1: the
    rate of the divide/square-root unit that bounds Adam."""
    rng = np.random.default_rng(2)
    m = rng.random(SQRT_DIV_N, dtype=np.float32)
    v = rng.random(SQRT_DIV_N, dtype=np.float32) + np.float32(0.1)
    out = np.zeros(SQRT_DIV_N, np.float32)
    c, e = np.float32(1.3), np.float32(1e-8)
    _sqrt_div(m, v, out, 1, c, e)
    return lambda: _sqrt_div(m, v, out, SQRT_DIV_PASSES, c, e)


def _best_rate(fn, work, seconds=0.25):
    """Best rate ``work / t`` over repeats of ``fn`` within about ``seconds``."""
    fn()
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        best = max(best, work / (time.perf_counter() - t0))
    return best


def roofline() -> dict:
    """This core's attainable rates, measured now.

    ``sgemm_gflops``: one-thread float32 matrix product (256 x 256 x 256, in L2)
    through numpy's BLAS -- the FMA rate that well-blocked code reaches;
    ``l1_gbs`` / ``l2_gbs``: a vectorised float32 sum over 16 KiB / 512 KiB;
    ``sqrt_div_ns``: one float32 divide and square root (:func:`sqrt_div_loop`).
    The benchmark's module sets the BLAS thread count to 1 before numpy loads.
    """
    rng = np.random.default_rng(0)
    a = rng.random((256, 256), dtype=np.float32)
    b = rng.random((256, 256), dtype=np.float32)
    c = np.empty_like(a)
    out = {"sgemm_gflops": _best_rate(lambda: np.matmul(a, b, out=c), 2 * 256 ** 3) / 1e9}
    for key, nbytes, passes in (("l1_gbs", 16 << 10, 2000), ("l2_gbs", 512 << 10, 60)):
        v = np.ones(nbytes // 4, np.float32)
        out[key] = _best_rate(lambda: _sum_passes(v, passes), nbytes * passes) / 1e9
    out["sqrt_div_ns"] = 1e9 / _best_rate(sqrt_div_loop(), SQRT_DIV_ENTRIES)
    return out


# ---------------------------------------------------------------- sampling


class Suite:
    """Timed measurements sampled round-robin, wall and thread CPU time.

    :meth:`add` warms a measurement up and picks ``n`` (calls per sample) so a
    sample lasts about ``target`` seconds; :meth:`sample` then takes ``repeat``
    rounds, one sample of every measurement per round, so that a burst of load
    from another process spoils a few samples of many rows rather than every
    sample of one row.  ``run(n)`` makes ``n`` calls; ``setup()`` runs, untimed,
    before each sample.
    """

    def __init__(self, target=0.02):
        self.target = target
        self.items = {}

    def add(self, key, run, setup=None, fixed_n=None):
        for _ in range(2):
            if setup:
                setup()
            run(1)
        n = fixed_n
        if n is None:
            n = 1
            while True:
                if setup:
                    setup()
                t0 = time.perf_counter()
                run(n)
                t = time.perf_counter() - t0
                if t >= 0.2 * self.target or n >= 1 << 22:
                    break
                n *= max(2, min(64, int(0.25 * self.target / max(t, 1e-9)) + 1))
            n = max(1, round(n * self.target / t))
        self.items[key] = dict(run=run, setup=setup, n=n, samples=[], cpu=[])

    def sample(self, repeat):
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(repeat):
                for it in self.items.values():
                    if it["setup"]:
                        it["setup"]()
                    c0 = time.thread_time()
                    t0 = time.perf_counter()
                    it["run"](it["n"])
                    t1 = time.perf_counter()
                    c1 = time.thread_time()
                    it["samples"].append((t1 - t0) / it["n"])
                    it["cpu"].append((c1 - c0) / it["n"])
        finally:
            if gc_was:
                gc.enable()

    def median(self, key):
        return statistics.median(self.items[key]["samples"])

    def cpu_median(self, key):
        return statistics.median(self.items[key]["cpu"])

    def samples(self, key):
        return self.items[key]["samples"]

    def n(self, key):
        return self.items[key]["n"]


def pyloop(fn):
    """``run(n)`` for :meth:`Suite.add` that calls ``fn()`` ``n`` times."""
    def run(n):
        for _ in range(n):
            fn()
    return run
