"""The settings of a Dask cluster for ``sparseae sweep --cluster``: the ``[cluster]``
table (checked against :data:`CLUSTER_KEYS`), ``--cluster-config`` files, ``--cluster``
targets, and the dask-jobqueue clusters (SLURM, PBS) and job scripts they make.

Nothing here imports dask at module level.
"""

from __future__ import annotations

import os
import re

from sparseae.errors import ConfigError

_STR, _INT, _INT0, _STRS, _ENV = "str", "int", "int0", "strs", "env"
#: Keys of the ``[cluster]`` table and their types.  ``threads`` (numba threads per run,
#: default 1) and ``env`` (variables set on the workers) apply to every cluster sparseae
#: starts; the others to ``slurm`` / ``pbs`` (dask-jobqueue's parameters of the same name;
#: ``cores`` and ``memory`` are per job, ``jobs`` the most jobs ``adapt`` may hold).
CLUSTER_KEYS = {
    "threads": _INT, "env": _ENV,
    "queue": _STR, "account": _STR, "walltime": _STR, "cores": _INT, "memory": _STR,
    "jobs": _INT, "minimum_jobs": _INT0, "job_extra_directives": _STRS,
    "job_script_prologue": _STRS, "job_directives_skip": _STRS, "job_name": _STR,
    "local_directory": _STR, "log_directory": _STR, "interface": _STR, "python": _STR,
    "resource_spec": _STR,
}
_KINDS = ("slurm", "pbs")
#: Environment variables that make a worker single-threaded (numba and the BLAS).
_THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_table(table, where: str = "[cluster]") -> dict:
    """Validate a ``[cluster]`` table (no dask needed); return a copy."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table [cluster]")
    for key, value in table.items():
        kind = CLUSTER_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key {key!r} (expected "
                              f"{', '.join(CLUSTER_KEYS)})")
        bad = {
            _STR: lambda v: not isinstance(v, str) or not v.strip(),
            _INT: lambda v: isinstance(v, bool) or not isinstance(v, int) or v < 1,
            _INT0: lambda v: isinstance(v, bool) or not isinstance(v, int) or v < 0,
            _STRS: lambda v: not isinstance(v, list) or not all(isinstance(x, str) for x in v),
            _ENV: lambda v: not isinstance(v, dict) or not all(
                isinstance(k, str) and _ENV_NAME.match(k) and isinstance(x, (str, int, float))
                and not isinstance(x, bool) for k, x in v.items()),
        }[kind](value)
        if bad:
            expected = {_STR: "a non-empty string", _INT: "an integer >= 1",
                        _INT0: "an integer >= 0", _STRS: "a list of strings",
                        _ENV: "a table NAME = \"value\""}[kind]
            raise ConfigError(f"{where} {key}: expected {expected}, got {value!r}")
    if "jobs" in table and table.get("minimum_jobs", 0) > table["jobs"]:
        raise ConfigError(f"{where} minimum_jobs: {table['minimum_jobs']} is more than jobs "
                          f"({table['jobs']})")
    threads = table.get("threads", 1)
    if "cores" in table and table["cores"] % threads:
        raise ConfigError(f"{where} cores: {table['cores']} is not a multiple of threads "
                          f"({threads})")
    return dict(table)


def load_cluster_config(path) -> dict:
    """The ``[cluster]`` table of a TOML file (or its top level when it has no such table)."""
    from sparseae.schema import read_toml

    path = os.fspath(path)
    data = read_toml(path)
    if isinstance(data.get("cluster"), dict):
        extra = sorted(set(data) - {"cluster"})
        if extra:
            raise ConfigError(f"{path}: unknown key {extra[0]!r} beside [cluster]")
        data = data["cluster"]
    return check_table(data, f"{path}: [cluster]" if data else path)


def parse_target(text: str) -> tuple:
    """``("local", N)``, ``("address", "tcp://...")``, ``("slurm", None)`` or ``("pbs", None)``."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--cluster: expected local:N, tcp://HOST:PORT, slurm or pbs, "
                          f"got {text!r}")
    t = text.strip()
    m = re.fullmatch(r"local:(\d+)", t)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise ConfigError(f"--cluster {t}: expected at least 1 worker")
        return "local", n
    if t in _KINDS:
        return t, None
    if re.fullmatch(r"(tcp|tls|ws|wss|ucx)://\S+", t) or re.fullmatch(r"[\w.\-\[\]:]+:\d+", t):
        return "address", t
    raise ConfigError(f"--cluster: expected local:N, tcp://HOST:PORT, slurm or pbs, got {t!r}")


def worker_env(table: dict) -> dict:
    """Variables for the worker processes: single-threaded numba and BLAS (``threads``),
    then the table's ``env`` (values expanded as a shell would expand ``$VAR``)."""
    threads = str(table.get("threads", 1))
    env = {name: threads for name in _THREAD_VARS}
    env.update({k: str(v) for k, v in table.get("env", {}).items()})
    return env


def jobqueue_kwargs(kind: str, table: dict) -> dict:
    """dask-jobqueue keyword arguments for ``SLURMCluster`` / ``PBSCluster`` from a table.

    One single-threaded worker process per ``threads`` cores of a job (``processes =
    cores // threads``, each running one run at a time); the job books all ``cores``.
    The workers' environment (:func:`worker_env`) is exported first in the job script.
    """
    threads = table.get("threads", 1)
    kw = {k: table[k] for k in ("queue", "account", "walltime", "memory", "job_extra_directives",
                                "job_directives_skip", "local_directory", "log_directory",
                                "interface", "python") if k in table}
    kw["job_name"] = table.get("job_name", "sparseae")
    exports = [f"export {k}={_shell_value(v)}" for k, v in worker_env(table).items()]
    kw["job_script_prologue"] = exports + list(table.get("job_script_prologue", []))
    if "cores" in table:
        workers = table["cores"] // threads
        kw["cores"] = kw["processes"] = workers  # dask threads per worker: 1
        if kind == "slurm":
            kw["job_cpu"] = table["cores"]
        elif "resource_spec" not in table and "memory" in table:
            kw["resource_spec"] = f"select=1:ncpus={table['cores']}:mem={table['memory']}"
    if kind == "pbs" and "resource_spec" in table:
        kw["resource_spec"] = table["resource_spec"]
    return kw


def _shell_value(v: str) -> str:
    """``"v"`` for a POSIX shell: ``$VAR`` expands, nothing else is special."""
    return '"' + re.sub(r'(["\\`])', r"\\\1", v) + '"'


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError("--cluster needs Dask: pip install 'sparseae[distributed]'") from None
    return distributed


def jobqueue_cluster(kind: str, table: dict):
    """A (not yet scaled) dask-jobqueue cluster for ``kind`` from ``table``."""
    import_distributed()
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(f"--cluster {kind} needs dask-jobqueue: "
                          "pip install 'sparseae[distributed]'") from None
    import dask

    missing = [k for k in ("cores", "memory")
               if k not in table and dask.config.get(f"jobqueue.{kind}.{k}", None) is None]
    if missing:
        raise ConfigError(f"[cluster] {' and '.join(missing)}: required for --cluster {kind} "
                          "(per job), e.g. cores = 32, memory = \"64GB\"")
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    try:
        return cls(**jobqueue_kwargs(kind, table))
    except (ValueError, TypeError) as exc:
        msg = " ".join(str(exc).split())
        raise ConfigError(f"[cluster] ({kind}): {msg}") from None


def job_script(kind: str, table: dict) -> str:
    """The job script dask-jobqueue would submit for ``table`` (nothing is submitted)."""
    cluster = jobqueue_cluster(kind, table)
    try:
        return cluster.job_script()
    finally:
        cluster.close()
