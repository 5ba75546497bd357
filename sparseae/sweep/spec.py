"""Sweep specs: the TOML file, its variants and trials.

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

    [cluster]                   # settings for --cluster slurm / pbs (sparseae.sweep.cluster)
    queue = "short"
    cores = 32
    memory = "64GB"

Each variant has a stable name: its ``name``, else ``field=value,...`` of
its grid values (or of its table's fields), else ``base``.  Everything is
validated before anything runs (:class:`~sparseae.errors.ConfigError`, one
line naming the file, the variant and the field).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import dataclass, field

from sparseae.config import TrainConfig
from sparseae.errors import ConfigError, SparseaeError

#: Top-level keys of a sweep spec.
SPEC_KEYS = ("base", "grid", "variant", "trials", "seed", "description", "cluster")
FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


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
    cluster: dict = field(default_factory=dict)  #: the ``[cluster]`` table (settings for Dask)

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
    cluster = data.get("cluster", {})
    if cluster:
        from sparseae.sweep.cluster_settings import check_table

        try:
            cluster = check_table(cluster)
        except ConfigError as exc:
            err(str(exc))
    elif not isinstance(cluster, dict):
        err("cluster: expected a table [cluster]")
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
    spec = SweepSpec(variants=variants, trials=trials, source=data, cluster=cluster)
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
