"""Cold-compile and warm-start timing of the kernels ``sparseae train`` needs,
each in a fresh interpreter (``bench.kernels``)."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


_STARTUP_CHILD = r"""
import time
t0 = time.perf_counter()
import json
import numpy as np
from sparseae.model import Autoencoder
from sparseae.kernels import cpu
t1 = time.perf_counter()
ae = Autoencoder("default", seed=0)
e, d = ae.encoder, ae.decoder
X = (np.random.default_rng(0).random((20, e.shapes[0][0])) < 0.5).astype(np.float32)
order = np.arange(20, dtype=np.int64)
se = np.zeros((e.n_units, 3))
sd = np.zeros((d.n_units, 3))
t2 = time.perf_counter()
cpu.train_epoch(e.half(0), d.half(0), X, order, 5, 1e-3,
                cpu.AdamConfig(0.5, 0.999, 1e-8, False), (se, sd), False)
t3 = time.perf_counter()
cpu.evaluate_l1(e.params[0], e.table, d.params[0], d.table, X, 256)
t4 = time.perf_counter()
cpu.forward_half(e.params[0], e.table, X, 256)
t5 = time.perf_counter()
print(json.dumps({"total_s": (t5 - t0) - (t2 - t1), "import_s": t1 - t0,
                  "train_epoch_s": t3 - t2, "evaluate_l1_s": t4 - t3,
                  "forward_half_s": t5 - t4}))
"""


def _startup_run(cache_dir):
    """Run the startup script in a fresh interpreter with ``NUMBA_CACHE_DIR=cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _STARTUP_CHILD], cwd=REPO, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"startup subprocess failed:\n{r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def measure_startup(compile_repeat, warm_repeat=3):
    cold, warm = [], []
    for k in range(compile_repeat):
        cache = Path(tempfile.mkdtemp(prefix="sparseae-bench-numba-"))
        try:
            cold.append(_startup_run(cache))
            if k == compile_repeat - 1:
                for _ in range(warm_repeat):
                    warm.append(_startup_run(cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return {
        "compile_s": statistics.median(r["total_s"] for r in cold),
        "warm_start_s": statistics.median(r["total_s"] for r in warm),
        "compile_runs": cold,
        "warm_runs": warm,
    }


# Small compiled loops around the kernels (not cached on purpose: numba's cache
# does not notice when a callee in kernels/cpu.py changes).
