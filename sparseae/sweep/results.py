"""The results file of a sweep: one HDF5 file, one writer.

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
group's training calls), ``cpu_seconds`` (the CPU time of the thread that ran
it; absent in lockstep and in files written before it existed), ``finished``,
``pid``, and one float64 dataset per history series (per-cell series of
Lipi-AE-S are 2-D ``(epochs, N)``).  A session entry of a Dask sweep also
holds ``cluster``, ``retried`` (runs started again after their worker died),
``failed`` (``variant``, ``trial``, ``error`` of runs that raised; not in
``runs/``, so a rerun retries them) and ``cpu_seconds``.

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

import dataclasses
import json
import math
import os
import shutil
import time

import numpy as np

from sparseae import _h5
from sparseae._atomic import atomic_target
from sparseae.config import TrainConfig
from sparseae.errors import ConfigError, ResultsError
from sparseae.schema import read_result_run, run_groups

FORMAT = "sparseae-results"
FORMAT_VERSION = 1
#: At most this fraction of the sweep's time goes to copying the results file.
_WRITE_BUDGET = 0.1


def results_group(name: str) -> str:
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


def existing_runs(out: str, spec) -> dict:
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
        key = config_difference(a, b)
        if key is not None:
            return f"variant {name!r} has {key}={a.get(key)!r} there, {b.get(key)!r} here"
    return ""


def config_difference(old: dict, new: dict):
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


def same_config(old: dict, new: dict) -> bool:
    return config_difference(old, new) is None


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


def write_run(f, rec: dict) -> None:
    g = f.require_group("runs").require_group(results_group(rec["variant"]))
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
    if "cpu_seconds" in rec:
        r.attrs["cpu_seconds"] = float(rec["cpu_seconds"])
    r.attrs["finished"] = rec["finished"]
    r.attrs["pid"] = np.int64(rec["pid"])
    for name, values in rec["history"].items():
        r.create_dataset(name, data=np.asarray(values, dtype=np.float64))


class Writer:
    """The single writer of the results file: copy, add, fsync, ``os.replace``."""

    def __init__(self, out: str, spec):
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
                    g = f.require_group("runs").require_group(results_group(v.name))
                    g.attrs["variant"] = v.name
                    g.attrs["index"] = np.int64(i)
                for rec in self.pending:
                    write_run(f, rec)
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
