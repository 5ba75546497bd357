"""Sweeps: many independent runs (variants x trials) into one results file.

A sweep spec is a TOML file::

    trials = 30                 # runs per variant (default 1)
    seed = 1                    # trial t uses seed + t (default: the variants' config seed)

    [base]                      # any TrainConfig fields, plus profile (default "default")
    profile = "gecco25"
    paradigm = "lipi"

    [grid]                      # field -> list of values; the cartesian product gives variants
    operator = ["random", "variance", "conjunctive"]

    [[variant]]                 # explicit variants (besides the grid, or instead of it)
    name = "no-pruning"
    operator = "none"

Each variant has a stable name: its ``name``, else ``field=value,...`` of
its grid values (or of its table's fields), else ``base``.  Everything is
validated before anything runs (:class:`~sparseae.errors.ConfigError`, one
line naming the file, the variant and the field).

:func:`run_sweep` runs every (variant, trial) as an independent run in local
worker processes, or, with ``lockstep`` (the default on cuda), all of them in
this process as batched groups that share one training call per step
(:mod:`sparseae.lockstep`; the same results).  The parent process is the only
writer of one HDF5 results file, laid out as follows.

Results file
------------
Root attributes: ``format = "sparseae-results"``, integer ``format-version``
(1), ``generated-by``, ``created``, ``updated`` (ISO 8601), ``spec`` (the
sweep spec as JSON), ``variants`` (JSON list of ``[name, config]``, the
variants' resolved configs with their base seed: the sweep's identity),
``wall_seconds`` and ``run_seconds`` of the latest session and ``sessions``
(JSON list, one entry per invocation).  Per run a group
``runs/<variant>/<trial>`` (``/`` and ``%`` in names are %-escaped; the
``variant`` attribute holds the name) with attributes ``variant``, ``trial``,
``seed``, ``config`` (JSON), ``summary`` (JSON), ``seconds`` (the run's wall
time in its worker; in lockstep its own host work plus its share of its
group's training calls), ``finished``, ``pid``, and one float64 dataset per
history series (per-cell series of Lipi-AE-S are 2-D ``(epochs, N)``).

Crash safety
------------
Every write copies the current file to a temporary file in the same folder,
adds the finished runs there, flushes and closes it, fsyncs it and renames it
over the results file with :func:`os.replace` (then fsyncs the folder).  A
crash or kill at any moment leaves the previous complete file or the new
complete file, never a partial one (at worst a stray ``.NAME.*.tmp`` next to
it).  Finished runs are written as they complete; when the file has grown so
large that copying it costs more than about 10% of the time between runs,
runs that finish close together are written in one copy (a crash then loses
at most those few runs, which a rerun executes again).

Resume: rerunning the same spec with the same output skips the runs already
in the file (same variant name, trial and config JSON) and runs the rest;
``--trials`` may grow or shrink between sessions.  A file holding another
sweep (different variants or configs) is refused.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from sparseae import _h5, _lock
from sparseae._atomic import atomic_target
from sparseae.config import TrainConfig
from sparseae.schema import read_result_run, run_groups
from sparseae.errors import ConfigError, ResultsError, SparseaeError

FORMAT = "sparseae-results"
FORMAT_VERSION = 1
#: Top-level keys of a sweep spec.
SPEC_KEYS = ("base", "grid", "variant", "trials", "seed", "description")
FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
#: Summary keys that measure time rather than results (they differ between identical runs).
TIMING_KEYS = ("seconds", "seconds_per_epoch", "train_seconds", "prune_seconds", "us_per_step",
               "compile_seconds")
#: At most this fraction of the sweep's time goes to copying the results file.
_WRITE_BUDGET = 0.1


# ------------------------------------------------------------------------------ spec


@dataclass
class Variant:
    """One point of a sweep: a name, the fields the spec set, and the validated config
    (whose ``seed`` is the variant's base seed: trial ``t`` runs with ``seed + t``)."""

    name: str
    fields: dict
    config: TrainConfig

    def trial_config(self, trial: int) -> TrainConfig:
        return dataclasses.replace(self.config, seed=self.config.seed + int(trial))


@dataclass
class SweepSpec:
    """A parsed and validated sweep: variants in order, trials per variant, the source."""

    variants: list
    trials: int = 1
    source: dict = field(default_factory=dict)
    path: str | None = None

    def runs(self, trials: int | None = None) -> list:
        """``(variant, trial)`` pairs, trial-major (every variant's trial 0 first), so an
        interrupted sweep has about as many trials of every variant."""
        n = self.trials if trials is None else trials
        return [(v, t) for t in range(n) for v in self.variants]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def identity(self) -> list:
        """What a results file must match to be resumed: names and resolved configs."""
        return [[v.name, v.config.to_dict()] for v in self.variants]

    def to_json(self) -> str:
        return json.dumps(self.source, sort_keys=True, default=str)


def load_spec(path, base_overrides: dict | None = None, sets=()) -> SweepSpec:
    """Read and validate a sweep spec from a TOML file (:class:`ConfigError` on any problem).

    ``sets`` are ``KEY=VALUE`` overrides (:mod:`sparseae.overrides`), ``base_overrides``
    are set in the spec's ``[base]`` table (e.g. ``device``).  Relative ``data`` paths
    are resolved against the spec's folder (as the default results file is)."""
    from sparseae import overrides
    from sparseae.schema import read_toml

    path = os.fspath(path)
    data = read_toml(path)
    where = path
    if sets:
        data = overrides.apply(data, sets)
        where = f"{path} (with --set)"
    if base_overrides:
        base = data.setdefault("base", {})
        if isinstance(base, dict):
            base.update(base_overrides)
    spec = parse_spec(data, where=where)
    spec.path = path
    folder = os.path.dirname(os.path.abspath(path))
    for v in spec.variants:
        if v.config.data is not None and not os.path.isabs(v.config.data):
            v.config = v.config.replace(data=os.path.normpath(os.path.join(folder, v.config.data)))
    return spec


def parse_spec(data: dict, where: str = "sweep") -> SweepSpec:
    """Validate a sweep spec given as a dict (the TOML's tables) and expand its variants."""

    def err(msg):
        raise ConfigError(f"{where}: {msg}")

    if not isinstance(data, dict):
        err("a sweep spec must be a table")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        err(f"unknown key {unknown[0]!r} (expected {', '.join(SPEC_KEYS)})")
    if not any(data.get(k) for k in ("base", "grid", "variant")):
        err("the spec defines no runs: give a [base] table, a [grid] or [[variant]] tables")
    if "grid" in data and data["grid"] == {}:
        err("[grid] is empty: give field = [values, ...] or remove the table")
    base = data.get("base", {})
    grid = data.get("grid", {})
    explicit = data.get("variant", [])
    if not isinstance(base, dict):
        err("base: expected a table [base]")
    if not isinstance(grid, dict):
        err("grid: expected a table [grid]")
    if isinstance(explicit, dict):
        explicit = [explicit]
    if not isinstance(explicit, list) or not all(isinstance(t, dict) for t in explicit):
        err("variant: expected an array of tables [[variant]]")
    trials = data.get("trials", 1)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        err(f"trials: expected an integer >= 1, got {trials!r}")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        err(f"seed: expected an integer >= 0, got {seed!r}")

    _check_names("[base]", base, err)
    base = dict(base)
    if seed is not None:
        if "seed" in base and base["seed"] != seed:
            err(f"seed: given at the top level ({seed}) and in [base] ({base['seed']})")
        base["seed"] = seed
    _check_names("[grid]", grid, err)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            err(f"[grid] {key}: expected a non-empty list of values, got {values!r}")

    named = []  # (name, fields)
    if grid or not explicit:
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            named.append((variant_name(values), {**base, **values}))
    for i, table in enumerate(explicit, 1):
        table = dict(table)
        name = table.pop("name", None)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            err(f"[[variant]] {i}: name must be a non-empty string, got {name!r}")
        _check_names(f"variant {name or i!r}" if name else f"[[variant]] {i}", table, err)
        named.append((name or variant_name(table), {**base, **table}))

    seen = set()
    variants = []
    for name, fields in named:
        if name in seen:
            err(f"variant {name!r}: duplicate variant name (give the [[variant]] a distinct name)")
        seen.add(name)
        fields = dict(fields)
        if isinstance(fields.get("arch"), list):  # widths as a TOML array
            fields["arch"] = ",".join(str(w) for w in fields["arch"])
        profile = fields.pop("profile", "default")
        try:
            if "arch" in fields and not isinstance(fields["arch"], str):
                raise ConfigError(f"arch: expected a preset name or widths like 784,64,8, "
                                  f"got {fields['arch']!r}")
            config = TrainConfig.from_profile(profile, **fields)
        except ConfigError as exc:
            err(f"variant {name!r}: {exc}")
        except (TypeError, ValueError) as exc:
            err(f"variant {name!r}: invalid value ({exc})")
        variants.append(Variant(name, {"profile": profile, **fields}, config))
    spec = SweepSpec(variants=variants, trials=trials, source=data)
    check_size(spec, trials, "trials")
    return spec


#: Bytes of bookkeeping per run of a sweep (its config, its place in the queue).
_RUN_BYTES = 4096


def check_size(spec: SweepSpec, trials: int, field: str = "trials") -> None:
    """Refuse a sweep whose list of runs alone cannot fit in memory."""
    from sparseae._memory import check

    n = len(spec.variants) * trials
    check(field, n * _RUN_BYTES, f"a sweep of {n} runs ({len(spec.variants)} variants x "
          f"{trials} trials)")


def _check_names(where, table, err):
    for key in table:
        if key not in FIELDS:
            err(f"{where}: unknown field {key!r}")


def variant_name(values: dict) -> str:
    """``field=value,field=value`` of ``values`` (``base`` when empty)."""
    return ",".join(f"{k}={_fmt(v)}" for k, v in values.items()) or "base"


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt(x) for x in v)
    return str(v)


def check_runs(spec: SweepSpec) -> None:
    """Build each variant's first run (data, model) without training, so data and batch
    errors surface before the sweep starts; :class:`ConfigError` names the variant."""
    from sparseae.runs import make_run

    for v in spec.variants:
        try:
            make_run(v.trial_config(0))
        except SparseaeError as exc:
            where = spec.path or "sweep"
            raise ConfigError(f"{where}: variant {v.name!r}: {exc}") from None


# ------------------------------------------------------------------------- results file


def group_key(name: str) -> str:
    """The HDF5 group name of a variant name (``%`` and ``/`` escaped, no leading dot)."""
    key = name.replace("%", "%25").replace("/", "%2F")
    return "%2E" + key[1:] if key.startswith(".") else key


_text = _h5.text


def check_header(f, path) -> dict:
    """Validate an open results file's root attributes; return them (decoded)."""
    return _h5.check_header(f, path, FORMAT, FORMAT_VERSION, ResultsError, "results")


def open_results(path):
    """Open a results file read-only after checking it exists and its format (h5py.File)."""
    return _h5.open_checked(path, FORMAT, FORMAT_VERSION, ResultsError, "results")[0]


def _existing_runs(out: str, spec: SweepSpec) -> dict:
    """``(variant, trial) -> config JSON`` of the runs in ``out`` (empty when it does not
    exist); refuse a file of another format or another sweep."""
    if not os.path.exists(out):
        return {}
    if os.path.isdir(out):
        raise ResultsError(f"results: {out} is a folder")
    try:
        f = open_results(out)
    except ResultsError as exc:
        raise ResultsError(f"{exc}; refusing to overwrite it") from None
    runs = {}
    try:
        with f:
            try:
                old = json.loads(f.attrs["variants"])
            except (KeyError, ValueError, TypeError):
                raise ResultsError(f"results: {out} has no valid 'variants' attribute") from None
            diff = _identity_diff(old, spec.identity())
            if diff:
                raise ConfigError(f"{out}: holds the results of a different sweep ({diff}); "
                                  "choose another output file or delete it")
            for r in run_groups(f, out):
                rec = read_result_run(r, out, history=False)
                runs[(rec["variant"], rec["trial"])] = json.dumps(rec["config"])
    except (OSError, KeyError) as exc:
        raise ResultsError(f"results: {out} is corrupt ({type(exc).__name__}: {exc})") from None
    return runs


def _identity_diff(old: list, new: list) -> str:
    old_names, new_names = [n for n, _ in old], [n for n, _ in new]
    if old_names != new_names:
        gone = [n for n in old_names if n not in new_names]
        added = [n for n in new_names if n not in old_names]
        if gone or added:
            parts = ([f"there only: {', '.join(map(repr, gone[:3]))}"] if gone else []) + \
                    ([f"here only: {', '.join(map(repr, added[:3]))}"] if added else [])
            return "variants differ; " + "; ".join(parts)
        return "variants are in another order"
    for (name, a), (_, b) in zip(old, new):
        key = _config_difference(a, b)
        if key is not None:
            return f"variant {name!r} has {key}={a.get(key)!r} there, {b.get(key)!r} here"
    return ""


def _config_difference(old: dict, new: dict):
    """The first field whose value differs, or None.  A field missing from ``old``
    (a results file written before the field existed) matches the field's default,
    the behaviour those runs had."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key in sorted(set(old) | set(new)):
        a = old[key] if key in old else defaults.get(key, dataclasses.MISSING)
        b = new[key] if key in new else defaults.get(key, dataclasses.MISSING)
        if key == "data" and _same_file(a, b):
            continue
        if a != b and not (key not in old and new.get(key) == defaults.get(key)):
            return key
    return None


def _same_file(a, b) -> bool:
    """Data paths naming one file: results written before spec-relative paths hold the
    path as written (resolved against the current folder then)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def _same_config(old: dict, new: dict) -> bool:
    return _config_difference(old, new) is None


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


_now = _h5.now


class _WriteError(ResultsError):
    def __init__(self, msg):
        super().__init__(f"results: {msg}")


def _write_run(f, rec: dict) -> None:
    g = f.require_group("runs").require_group(group_key(rec["variant"]))
    g.attrs["variant"] = rec["variant"]
    key = str(rec["trial"])
    if key in g:
        del g[key]
    r = g.create_group(key)
    r.attrs["variant"] = rec["variant"]
    r.attrs["trial"] = np.int64(rec["trial"])
    r.attrs["seed"] = np.int64(rec["seed"])
    r.attrs["config"] = rec["config"]
    r.attrs["summary"] = json.dumps(rec["summary"], default=_jsonable)
    r.attrs["seconds"] = float(rec["seconds"])
    r.attrs["finished"] = rec["finished"]
    r.attrs["pid"] = np.int64(rec["pid"])
    for name, values in rec["history"].items():
        r.create_dataset(name, data=np.asarray(values, dtype=np.float64))


class _Writer:
    """The single writer of the results file: copy, add, fsync, ``os.replace``."""

    def __init__(self, out: str, spec: SweepSpec):
        self.out = out
        self.spec = spec
        self.pending = []
        self.cost = 0.0  # seconds the last write took
        self.last = -math.inf  # when it ended (perf_counter)
        self.written = 0

    def add(self, rec: dict) -> None:
        self.pending.append(rec)

    def _gap(self) -> float:
        return self.cost * (1 - _WRITE_BUDGET) / _WRITE_BUDGET

    def due(self) -> bool:
        return bool(self.pending) and time.perf_counter() - self.last >= self._gap()

    def wait_hint(self, default: float) -> float:
        if not self.pending:
            return default
        return min(default, max(0.01, self.last + self._gap() - time.perf_counter()))

    def maybe_write(self) -> None:
        if self.due():
            self.write()

    def write(self, session: dict | None = None) -> None:
        import h5py

        if not self.pending and session is None:
            return
        t0 = time.perf_counter()
        exists = os.path.exists(self.out)
        with atomic_target(self.out, _WriteError) as tmp:
            if exists:
                shutil.copyfile(self.out, tmp)
            with h5py.File(tmp, "a" if exists else "w") as f:
                _h5.stamp(f, FORMAT, FORMAT_VERSION, created=not exists)
                f.attrs["updated"] = _now()
                f.attrs["spec"] = self.spec.to_json()
                f.attrs["variants"] = json.dumps(self.spec.identity(), sort_keys=True)
                for i, v in enumerate(self.spec.variants):
                    g = f.require_group("runs").require_group(group_key(v.name))
                    g.attrs["variant"] = v.name
                    g.attrs["index"] = np.int64(i)
                for rec in self.pending:
                    _write_run(f, rec)
                if session is not None:
                    sessions = json.loads(_text(f.attrs.get("sessions", "[]")))
                    sessions.append(session)
                    f.attrs["sessions"] = json.dumps(sessions, sort_keys=True)
                    f.attrs["wall_seconds"] = float(session["wall_seconds"])
                    f.attrs["run_seconds"] = float(session["run_seconds"])
                f.flush()
        self.written += len(self.pending)
        self.pending = []
        self.last = time.perf_counter()
        self.cost = self.last - t0


# ------------------------------------------------------------------------------ running

_ABORT = None  # the worker's abort event (set by _init_worker)


def _init_worker(abort, parent: int) -> None:
    """Worker processes ignore Ctrl-C (the parent decides), watch ``abort``, and exit
    as soon as the sweep process ``parent`` is gone (even after a SIGKILL)."""
    global _ABORT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import warnings

    from sparseae.errors import SparseaeWarning

    warnings.simplefilter("ignore", SparseaeWarning)  # the parent showed them (check_runs)
    _ABORT = abort
    from sparseae._parent import watch

    watch(parent)


def execute(config_dict: dict, abort=None) -> dict | None:
    """Run one config to the end; return summary, history (float64 arrays), wall seconds
    and pid, or None when ``abort`` (checked between epochs) stopped it early."""
    from sparseae.runs import make_run

    abort = _ABORT if abort is None else abort
    t0 = time.perf_counter()
    config = TrainConfig.from_dict(config_dict)
    run = make_run(config)
    summary = run.run(None, abort)
    if run.epoch < config.epochs:
        return None
    return _record(run, summary, time.perf_counter() - t0)


def _record(run, summary: dict, seconds: float) -> dict:
    history = {k: np.asarray(v, dtype=np.float64) for k, v in run.history.items()}
    return {"summary": summary, "history": history, "seconds": seconds, "pid": os.getpid()}


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:  # children forked from a clean single-threaded server
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["sparseae.sweep"])
        return ctx
    return multiprocessing.get_context("spawn")


def run_sweep(spec, out_path, workers: int | None = None, trials: int | None = None,
              progress=None, stop=None, abort=None, lockstep: bool | None = None,
              lockstep_runs: int = 1024, lockstep_overlap: bool | None = None,
              on_run=None) -> dict:
    """Run every (variant, trial) of ``spec`` not yet in ``out_path``; return statistics.

    Parameters
    ----------
    spec : SweepSpec, a dict (as :func:`parse_spec`) or the path of a TOML file.
    out_path : the results file (created, or resumed when it holds this sweep).
    workers : worker processes (default ``os.cpu_count()``); 1 runs in this process.
        Ignored with ``lockstep``.
    trials : trials per variant (default: the spec's).
    lockstep : train all runs in this process as batched groups, one training call
        per step for every run of a group (:mod:`sparseae.lockstep`); the results
        equal independent runs (bit for bit on the CPU).  Default: on when a
        variant runs on cuda.  Runs go in waves of ``lockstep_runs`` runs, all of
        a wave in memory and in flight together (about 25 MB per run at the
        default sizes); they finish (and are written) group by group, and a stop
        lets the current wave finish and starts no further one.
        ``lockstep_overlap`` is :func:`sparseae.lockstep.run_lockstep`'s ``overlap``
        (default: on for cuda).
    progress : ``progress(done, total, eta_seconds)``, called once with ``done = 0``
        before the first run and after each finished run (``eta`` None until known).
    on_run : ``on_run(variant, trial, summary)``, called for each finished run (before
        ``progress``).
    stop : an event; once set no further run starts and runs in flight finish (and are
        written).  abort : an event; once set runs in flight stop at their next epoch
        boundary and are dropped.  A KeyboardInterrupt (no handler installed) aborts.

    Returns
    -------
    dict with ``out``, ``runs`` (in the sweep), ``done`` (executed now), ``skipped``
    (already in the file), ``abandoned``, ``interrupted``, ``workers``, ``wall_seconds``,
    ``run_seconds`` (sum over executed runs) and ``ratio`` (run_seconds / wall_seconds).
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = parse_spec(spec)
    trials = spec.trials if trials is None else trials
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials: expected an integer >= 1, got {trials!r}")
    if isinstance(lockstep_runs, bool) or not isinstance(lockstep_runs, int) or \
            lockstep_runs < 1:
        raise ConfigError(f"lockstep_runs: expected an integer >= 1, got {lockstep_runs!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected an integer >= 1, got {workers!r}")
    out = os.fspath(out_path)
    check_size(spec, trials, "trials")
    with _lock.locked(out, ResultsError, "results"):
        check_runs(spec)
        todo, skipped = _plan(spec, out, trials)
        return _run(spec, out, trials, todo, skipped, workers, progress, stop, abort, lockstep,
                    lockstep_runs, lockstep_overlap, on_run)


def _plan(spec: SweepSpec, out: str, trials: int):
    """``(todo, skipped)``: the ``(variant, trial, config)`` runs not yet in ``out``."""
    existing = _existing_runs(out, spec)
    todo, skipped = [], 0
    for v, t in spec.runs(trials):
        config = v.trial_config(t)
        previous = existing.get((v.name, t))
        if previous is not None:
            if not _same_config(json.loads(previous), config.to_dict()):
                raise ConfigError(f"{out}: run {v.name!r} trial {t} was made with another "
                                  "config; choose another output file")
            skipped += 1
            continue
        todo.append((v, t, config))
    return todo, skipped


def plan(spec, out_path, trials: int | None = None) -> list:
    """What :func:`run_sweep` would do, without running or writing anything: one dict
    per run (``variant``, ``trial``, ``seed``, ``done``: already in ``out_path``)."""
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = parse_spec(spec)
    trials = spec.trials if trials is None else trials
    check_size(spec, trials, "trials")
    out = os.fspath(out_path)
    todo, _ = _plan(spec, out, trials)
    pending = {(v.name, t) for v, t, _ in todo}
    return [{"variant": v.name, "trial": t, "seed": v.trial_config(t).seed,
             "done": (v.name, t) not in pending} for v, t in spec.runs(trials)]


def _run(spec, out, trials, todo, skipped, workers, progress, stop, abort, lockstep,
         lockstep_runs, lockstep_overlap, on_run=None) -> dict:
    stop = threading.Event() if stop is None else stop
    abort = threading.Event() if abort is None else abort
    writer = _Writer(out, spec)
    if lockstep is None:
        lockstep = any(v.config.device == "cuda" for v in spec.variants)
    n_workers = 1 if lockstep else max(1, min(workers, len(todo)))
    stats = {"out": out, "runs": len(spec.variants) * trials, "done": 0, "skipped": skipped,
             "abandoned": 0, "interrupted": False, "workers": n_workers,
             "lockstep": bool(lockstep)}
    if lockstep:
        stats["lockstep_timing"] = {"groups": 0, "train_calls": 0, "train_seconds": 0.0,
                                    "host_seconds": 0.0}
    started = _now()
    t0 = time.perf_counter()
    run_seconds = 0.0
    total = len(todo)
    if progress is not None:
        progress(0, total, None)

    def finished(item, rec):
        nonlocal run_seconds
        v, t, config = item
        writer.add({"variant": v.name, "trial": t, "seed": config.seed, "config": config.to_json(),
                    "summary": rec["summary"], "history": rec["history"],
                    "seconds": rec["seconds"], "finished": _now(), "pid": rec["pid"]})
        run_seconds += rec["seconds"]
        stats["done"] += 1
        if on_run is not None:
            on_run(v.name, t, rec["summary"])
        if progress is not None:
            done = stats["done"]
            elapsed = time.perf_counter() - t0
            progress(done, total, elapsed / done * (total - done))

    error = None
    try:
        if lockstep:
            _run_lockstep(todo, writer, finished, stop, abort, stats, lockstep_runs,
                          lockstep_overlap)
        elif n_workers == 1:
            for item in todo:
                if stop.is_set() or abort.is_set():
                    break
                rec = execute(item[2].to_dict(), abort)
                if rec is None:
                    stats["abandoned"] += 1
                    break
                finished(item, rec)
                writer.maybe_write()
        else:
            error = _run_pool(todo, n_workers, writer, finished, stop, abort, stats)
    except BaseException as exc:  # Ctrl-C without a handler, or a failed run: keep what finished
        stats["interrupted"] = isinstance(exc, KeyboardInterrupt)
        _finish(writer, stats, started, t0, run_seconds)
        raise
    stats["interrupted"] = stats["interrupted"] or stop.is_set() or abort.is_set() or \
        stats["done"] < total
    _finish(writer, stats, started, t0, run_seconds)
    if error is not None:
        raise error
    return stats


def _run_lockstep(todo, writer, finished, stop, abort, stats, wave: int, overlap):
    """Run ``todo`` in lockstep in this process, ``wave`` runs at a time (the runs of
    a wave are all in memory and in flight together), writing runs as they finish."""
    from sparseae.lockstep import run_lockstep
    from sparseae.runs import make_run

    timing = stats["lockstep_timing"]
    for lo in range(0, len(todo), wave):
        if stop.is_set() or abort.is_set():
            return
        items = {}
        runs = []
        for item in todo[lo:lo + wave]:
            run = make_run(item[2])
            items[id(run)] = item
            runs.append(run)

        def on_finish(run):
            t1 = time.perf_counter()
            summary = run.summary()
            seconds = run.lockstep_seconds + time.perf_counter() - t1
            finished(items[id(run)], _record(run, summary, seconds))
            writer.maybe_write()

        part = {}
        try:
            done = run_lockstep(runs, on_finish, abort, max_runs=wave, timing=part,
                                overlap=overlap)
        finally:
            for key, value in part.items():
                timing[key] += value
        stats["abandoned"] += len(runs) - len(done)


def _run_pool(todo, n_workers, writer, finished, stop, abort, stats):
    """Run ``todo`` on a process pool; return the first run's error (or None)."""
    ctx = _mp_context()
    worker_abort = ctx.Event()
    queue = iter(todo)
    running = {}
    error = None
    pool = cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx,
                                  initializer=_init_worker,
                                  initargs=(worker_abort, os.getpid()))
    try:
        def submit():
            while error is None and not stop.is_set() and not abort.is_set() \
                    and len(running) < 2 * n_workers:
                item = next(queue, None)
                if item is None:
                    return
                running[pool.submit(execute, item[2].to_dict())] = item

        submit()
        while running:
            if abort.is_set():
                worker_abort.set()
            if stop.is_set() or abort.is_set() or error is not None:
                for fut in list(running):
                    if fut.cancel():
                        del running[fut]
                if not running:
                    break
            done, _ = cf.wait(list(running), timeout=writer.wait_hint(0.25),
                              return_when=cf.FIRST_COMPLETED)
            for fut in done:
                item = running.pop(fut)
                try:
                    rec = fut.result()
                except cf.CancelledError:
                    continue
                except Exception as exc:  # a run failed: stop the sweep, keep what finished
                    if error is None:
                        v, t, _ = item
                        msg = f"run {v.name!r} trial {t} failed: {type(exc).__name__}: {exc}"
                        error = (type(exc)(msg) if isinstance(exc, SparseaeError)
                                 else ResultsError(msg))
                        worker_abort.set()
                    continue
                if rec is None:
                    stats["abandoned"] += 1
                else:
                    finished(item, rec)
            writer.maybe_write()
            submit()
    except BaseException:
        worker_abort.set()
        for fut in running:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return error


def _finish(writer, stats, started, t0, run_seconds):
    wall = time.perf_counter() - t0
    stats["wall_seconds"] = wall
    stats["run_seconds"] = run_seconds
    stats["ratio"] = run_seconds / wall if wall > 0 else 0.0
    if stats["done"] == 0 and not writer.pending:
        return  # nothing new: leave the file as it is
    session = {"started": started, "wall_seconds": wall, "run_seconds": run_seconds,
               "done": stats["done"], "skipped": stats["skipped"], "workers": stats["workers"],
               "interrupted": stats["interrupted"]}
    writer.write(session)
