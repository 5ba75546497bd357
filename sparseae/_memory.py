"""Memory estimates, checked before anything large is allocated.

A size that cannot fit (``--population 1000000000``, ``--dim 100000000``) is
refused with a :class:`~sparseae.errors.ConfigError` naming the field and the
estimate, instead of a ``MemoryError`` traceback halfway through.
"""

from __future__ import annotations

import os

from sparseae.errors import ConfigError

#: Bytes per parameter of an arena row: float32 params, m, v and a uint8 mask.
ARENA_BYTES = 13


def _cgroup_left() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        return None


def available() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable, or what a cgroup
    limit leaves when smaller), None if unknown."""
    found = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            pass
    left = _cgroup_left()
    if left is not None:
        found = left if found is None else min(found, left)
    return found


def fmt(n: float) -> str:
    """``n`` bytes as a short human-readable size."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError


def check(field: str, nbytes: int, what: str) -> None:
    """Raise when ``nbytes`` (the estimate for ``what``) exceeds the available memory."""
    limit = available()
    if limit is not None and nbytes > limit:
        raise ConfigError(f"{field}: {what} needs about {fmt(nbytes)} of memory, more than the "
                          f"{fmt(limit)} available")


def data_bytes(clusters: int, dim: int, per_cluster: int) -> int:
    """Peak bytes of generating the three splits (float32 results, float64 draws)."""
    return 3 * clusters * per_cluster * dim * 4 + clusters * per_cluster * dim * 10


def check_data(clusters: int, dim: int, per_cluster: int) -> None:
    sizes = {"clusters": clusters, "dim": dim, "per_cluster": per_cluster}
    field = max(sizes, key=sizes.get)
    check(field, data_bytes(clusters, dim, per_cluster),
          f"generating 3 splits of {clusters * per_cluster} x {dim} values")


def run_bytes(arch, rows: int, heldout: int, data_dim: int) -> int:
    """Bytes of ``rows`` arena rows of each half plus ``heldout`` held-out activations."""
    enc = sum(i * o + o for i, o, _ in arch.encoder_shapes())
    dec = sum(i * o + o for i, o, _ in arch.decoder_shapes())
    units = sum(arch.sizes[1:]) + sum(arch.sizes[:-1])
    return rows * (enc + dec) * ARENA_BYTES + heldout * (data_dim + units) * 8


def config_bytes(config, arch, data_dim: int) -> int:
    """Estimate of what a run of ``config`` allocates besides its data."""
    rows = 1
    if config.paradigm == "lipi":
        rows = 2 * config.population  # the centres and a work row per cell (waves)
    heldout = config.heldout if "conjunctive" in str(config.operator) else 0
    return run_bytes(arch, rows, heldout, data_dim)


def check_run(config, arch, data_dim: int) -> None:
    """Refuse a run that cannot fit, naming the field that makes it large."""
    total = config_bytes(config, arch, data_dim)
    limit = available()
    if limit is None or total <= limit:
        return
    check("arch", run_bytes(arch, 1, 0, data_dim),
          f"one autoencoder of widths {','.join(map(str, arch.sizes))}")
    heldout = config.heldout if "conjunctive" in str(config.operator) else 0
    check("heldout", run_bytes(arch, 0, heldout, data_dim), f"{heldout} held-out samples")
    check("population", total, f"a population of {config.population}")
