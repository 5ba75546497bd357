"""One validated run configuration.

:class:`TrainConfig` is a flat dataclass so that every field can be set from
the CLI, a TOML file or a sweep grid by name.  :meth:`TrainConfig.validate`
raises :class:`~sparseae.errors.ConfigError` naming the field and its allowed
range; nothing runs on a config that did not validate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from sparseae._options import ADAM_BETAS, ADAM_EPS
from sparseae.errors import ConfigError

PROFILES = ("default", "gecco25")
PARADIGMS = ("lipi", "canonical")
#: Defaults per paradigm for the fields left at None (README, "Defaults": chosen from
#: measurements).  Lipi-AE-S prunes by default (the paper's method); canonical does not.
PARADIGM_DEFAULTS = {
    "canonical": {"lr": 1e-3, "operator": "none", "prune_probability": 0.5},
    "lipi": {"lr": 3e-3, "operator": "random", "prune_probability": 0.05},
}


#: The gecco25 profile: the reference code's behaviour and the paper's settings
#: (ALGORITHM.md sections 1-7).  Adam is "fresh" in Lipi-AE-S and "persistent" in
#: canonical training; VARIANCE uses P0 = 0.1, also in mixed rings (TrainConfig.from_profile).
GECCO25 = dict(
    prune_output_bias=True, data_quirks=True, regrowth=True, random_scope="all",
    variance_direction="high", variance_draws="per_entry", heldout_source="test_reference",
    structural=False, schedule_t="reference",
    epochs=400, lr=1e-5, batch_size=5, population=10, radius=1, threshold=0.1,
    operator="none", prune_probability=0.5, prune_amount=0.1, seed=1,
)


@dataclass
class TrainConfig:
    """Everything that determines a run (same config + same seed = same result).

    Notes
    -----
    Defaults for canonical training were chosen from measurements (README,
    "Defaults"): lr 1e-3 with the step decay of ALGORITHM.md section 5.
    """

    profile: str = "default"
    paradigm: str = "lipi"
    arch: str = "default"
    epochs: int = 400
    #: Adam learning rate (Lipi-AE-S: each cell's initial lr); None = the paradigm's default
    lr: float | None = None
    batch_size: int = 5
    seed: int = 0
    lr_decay: bool = True
    beta1: float = ADAM_BETAS[0]
    beta2: float = ADAM_BETAS[1]
    eps: float = ADAM_EPS
    # generated data (ignored when the caller passes a Dataset)
    clusters: int = 10
    dim: int = 1000
    per_cluster: int = 100
    noise: float = 0.05
    data_seed: int | None = None
    # user data: path of an .h5/.npz file with train/test/validation, a data set name
    # (digits, digits-binary, mnist1d; binary-clustering = None) or mnist:DIR /
    # fashion-mnist:DIR (sparseae.datasets); None = generate binary clustering
    data: str | None = None
    # pruning (ALGORITHM.md sections 3-4)
    #: pruning operator (comma-separated: one per cell, round-robin); None = paradigm default
    operator: str | None = None
    schedule: str = "exponential"
    #: P0 of the schedule; None = the paradigm's default
    prune_probability: float | None = None
    #: P0 of VARIANCE cells when it differs from the others' (None: prune_probability);
    #: gecco25 sets 0.1, the reference's VARIANCE P0, in rings that mix operators
    variance_probability: float | None = None
    prune_amount: float = 0.1
    threshold: float = 0.1
    heldout: int = 100
    # Lipi-AE-S (ALGORITHM.md section 5)
    population: int = 10
    radius: int = 1
    lr_sigma: float = 1e-5
    #: Adam state: "persistent" (belongs to the individual and travels with it) or
    #: "fresh" (a new Adam every step, the reference's Lipi-AE-S: steps of about lr*sign(g))
    adam: str = "persistent"
    #: where the kernels run: "cpu" or "cuda" (same results up to float32 rounding)
    device: str = "cpu"
    #: Lipi-AE-S: all cells of an epoch read the previous epoch's centres and train
    #: together (not the paper's asynchronous order, which trains only the cells that
    #: do not see each other together; README, "GPU" and "Performance")
    sync_cells: bool = False
    # ---- the switches that differ between profiles (README, "Profiles") ----
    #: prune the decoder's output biases too (False: they stay live, see operators.prune_pair)
    prune_output_bias: bool = False
    #: generate data with the reference's quirks (Binomial(2, .5) centroids, repeated test noise)
    data_quirks: bool = False
    #: pruned weights are only zeroed and may regrow; preserved = zeros at the last event
    regrowth: bool = False
    #: RANDOM draws from the "live" entries of each tensor, or from "all" of them
    random_scope: str = "live"
    #: VARIANCE prunes units of "low" activation spread more (paper text) or "high" (reference)
    variance_direction: str = "low"
    #: VARIANCE prunes "amount" of the live entries, or "per_entry" independent draws
    variance_draws: str = "amount"
    #: CONJUNCTIVE held-out samples: "validation" split, or "test_reference" (test rows
    #: 1..n-1 with replacement, as the reference)
    heldout_source: str = "validation"
    #: prune the weights of units that no longer compute (operators.propagate_dead_units)
    structural: bool = True
    #: the schedules' final epoch T: "final_epoch" (epochs - 1 in both paradigms) or
    #: "reference" (canonical epochs, Lipi-AE-S epochs - 1)
    schedule_t: str = "final_epoch"
    #: the total the lr decay step and the schedules' T are computed from (None: epochs).
    #: ``train --resume R --epochs N --keep-schedule`` sets it to R's total, so the
    #: extension continues R's schedules instead of stretching them to N epochs.
    schedule_epochs: int | None = None
    # ---- pruning to a chosen density (sparseae.density, sparseae.compress) ----
    #: prune every individual to the gradual cubic schedule's density after each of
    #: its epochs (Zhu & Gupta 2017), ending at this total density (None: off; the
    #: operator's events then follow ``schedule`` as usual)
    target_density: float | None = None
    #: the window of that schedule, as fractions of the run: the density is 1 up to
    #: ``density_start`` and ``target_density`` from ``density_end`` on
    density_start: float = 0.0
    density_end: float = 0.75
    #: how the live entries are shared among the tensors: "erk" (fixed by the shapes,
    #: Erdos-Renyi-Kernel as in RigL), "fanin" (every unit keeps the same number of
    #: incoming entries, at least density.MIN_FANIN in the narrow layers) or "global"
    #: (by the largest |w| over all tensors)
    density_allocation: str = "fanin"
    #: prune-and-regrow inside the window (SET / RigL): each event also drops
    #: ``prune_amount`` of every tensor's live entries by the operator and regrows as
    #: many pruned ones, by gradient magnitude or at random ("none": off)
    regrow: str = "none"
    #: after the run, prune the best individual to this density and fine-tune it
    #: with permanent masks (sparseae.compress; None: off)
    final_density: float | None = None
    #: operator of that final phase (None: the run's first operator, magnitude if none)
    final_operator: str | None = None
    #: canonical Adam epochs of the final phase (pruning over the first half)
    finetune_epochs: int = 30
    #: learning rate of the final phase's fine-tuning
    finetune_lr: float = 1e-3
    #: after the final phase, choose the output layer's inputs again by fitting and
    #: fine-tune as long again (sparseae.refit; low densities: <= 2 inputs per output)
    final_refit: bool = False

    def validate(self) -> "TrainConfig":
        """The validated config: this one, or a copy with the paradigm's defaults
        filled in and lists normalised (``self`` is never changed)."""
        _choice("profile", self.profile, PROFILES)
        _choice("paradigm", self.paradigm, PARADIGMS)
        changes = {name: value for name, value in PARADIGM_DEFAULTS[self.paradigm].items()
                   if getattr(self, name) is None}
        if isinstance(self.arch, (list, tuple)) and all(
                isinstance(w, int) and not isinstance(w, bool) for w in self.arch):
            changes["arch"] = ",".join(str(w) for w in self.arch)  # widths as a TOML array
        if isinstance(self.operator, (list, tuple)) and self.operator and all(
                isinstance(op, str) for op in self.operator):
            changes["operator"] = ",".join(self.operator)
        config = dataclasses.replace(self, **changes) if changes else self
        config._check()
        return config

    def _check(self) -> None:
        from sparseae.model import Architecture

        if not isinstance(self.arch, str):
            raise ConfigError(f"arch: expected a preset name or widths like 784,64,8, "
                              f"got {self.arch!r}")
        Architecture.parse(self.arch)
        _int("epochs", self.epochs, 1)
        _int("batch_size", self.batch_size, 1)
        _int("seed", self.seed, 0)
        _float("lr", self.lr, 0.0, 10.0, lo_open=True)
        _float("beta1", self.beta1, 0.0, 1.0, hi_open=True)
        _float("beta2", self.beta2, 0.0, 1.0, hi_open=True)
        _float("eps", self.eps, 0.0, 1.0, lo_open=True)
        _int("clusters", self.clusters, 1)
        _int("dim", self.dim, 1)
        _int("per_cluster", self.per_cluster, 1)
        _float("noise", self.noise, 0.0, 1.0)
        if self.data_seed is not None:
            _int("data_seed", self.data_seed, 0)
        from sparseae.operators import OPERATORS
        from sparseae.schedules import SCHEDULES

        if not isinstance(self.operator, str):
            raise ConfigError(f"operator: expected a name or a list of names, got {self.operator!r}")
        for op in self.operator.split(","):
            _choice("operator", op, OPERATORS)
        if "," in self.operator and self.paradigm != "lipi":
            raise ConfigError("operator: several operators (one per cell) need paradigm lipi")
        _choice("adam", self.adam, ("persistent", "fresh"))
        _choice("device", self.device, ("cpu", "cuda"))
        _int("population", self.population, 1)
        _int("radius", self.radius, 0)
        if self.paradigm == "lipi":
            _check_radius(self.radius, self.population)
        _float("lr_sigma", self.lr_sigma, 0.0, 10.0)
        _choice("schedule", self.schedule, tuple(SCHEDULES))
        _float("prune_probability", self.prune_probability, 0.0, 1.0)
        if self.variance_probability is not None:
            _float("variance_probability", self.variance_probability, 0.0, 1.0)
        _float("threshold", self.threshold, 0.0, 1.0)
        _int("heldout", self.heldout, 1)
        if isinstance(self.prune_amount, int) and not isinstance(self.prune_amount, bool):
            _int("prune_amount", self.prune_amount, 0)
        else:
            _float("prune_amount", self.prune_amount, 0.0, 1.0)
        if self.data is not None and (not isinstance(self.data, str) or not self.data.strip()):
            raise ConfigError(f"data: expected a file path or a data set name, got "
                              f"{self.data!r}")
        if self.data is not None:
            from sparseae import datasets
            from sparseae.errors import DataError

            # binary-clustering -> None (generated from the fields above); a name that a
            # sweep spec joined onto its folder -> the name
            self.data = datasets.canonical(self.data)
            try:
                datasets.check(self.data)
            except DataError as exc:
                raise ConfigError(str(exc)) from None
        _choice("random_scope", self.random_scope, ("live", "all"))
        _choice("variance_direction", self.variance_direction, ("low", "high"))
        _choice("variance_draws", self.variance_draws, ("amount", "per_entry"))
        _choice("heldout_source", self.heldout_source, ("validation", "test_reference"))
        _choice("schedule_t", self.schedule_t, ("final_epoch", "reference"))
        if self.schedule_epochs is not None:
            _int("schedule_epochs", self.schedule_epochs, 1)
        for name in ("lr_decay", "prune_output_bias", "data_quirks", "regrowth", "structural",
                     "sync_cells", "final_refit"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        self._check_density()

    def _check_density(self) -> None:
        from sparseae.density import ALLOCATIONS, REGROW
        from sparseae.operators import PRUNING_OPERATORS

        ops = self.operator.split(",")
        if self.target_density is not None:
            _float("target_density", self.target_density, 0.0, 1.0, lo_open=True)
            if all(op == "none" for op in ops):
                raise ConfigError("target_density: needs a pruning operator (random, variance, "
                                  "conjunctive or magnitude), got operator none")
            if self.regrowth:
                raise ConfigError("target_density: needs permanent masks, but regrowth is true "
                                  "(the gecco25 profile's); set regrowth = false")
        _float("density_start", self.density_start, 0.0, 1.0, hi_open=True)
        _float("density_end", self.density_end, 0.0, 1.0, lo_open=True)
        if self.density_end <= self.density_start:
            raise ConfigError(f"density_end: must be > density_start ({self.density_start:g}), "
                              f"got {self.density_end!r}")
        _choice("regrow", self.regrow, REGROW)
        _choice("density_allocation", self.density_allocation, ALLOCATIONS)
        if self.regrow != "none" and self.target_density is None:
            raise ConfigError(f"regrow: {self.regrow} needs target_density (prune-and-regrow "
                              "keeps the schedule's density)")
        if self.final_density is not None:
            _float("final_density", self.final_density, 0.0, 1.0, lo_open=True)
        if self.final_operator is not None:
            _choice("final_operator", self.final_operator, PRUNING_OPERATORS)
        _int("finetune_epochs", self.finetune_epochs, 0)
        _float("finetune_lr", self.finetune_lr, 0.0, 10.0, lo_open=True)

    def final_op(self) -> str:
        """The final phase's operator: ``final_operator``, else the run's first
        pruning operator, else magnitude."""
        if self.final_operator is not None:
            return self.final_operator
        ops = [op for op in self.operator.split(",") if op != "none"]
        return ops[0] if ops else "magnitude"

    def p0(self, operator: str) -> float:
        """P0 of ``operator``'s pruning schedule (ALGORITHM.md section 4)."""
        if operator == "variance" and self.variance_probability is not None:
            return self.variance_probability
        return self.prune_probability

    def final_epoch(self) -> int:
        """T of the schedules (ALGORITHM.md section 4)."""
        total = self.epochs if self.schedule_epochs is None else self.schedule_epochs
        if self.schedule_t == "reference" and self.paradigm == "canonical":
            return total
        return total - 1

    @classmethod
    def from_profile(cls, profile: str = "default", **fields) -> "TrainConfig":
        """A config with ``profile``'s switches and settings, then ``fields`` on top."""
        _choice("profile", profile, PROFILES)
        base = {"profile": profile}
        if profile == "gecco25":
            paradigm = fields.get("paradigm", cls.paradigm)
            operator = fields.get("operator") or "none"
            ops = set(operator.split(",") if isinstance(operator, str) else operator)
            base.update(GECCO25)
            base["adam"] = "fresh" if paradigm == "lipi" else "persistent"
            # the reference's VARIANCE P0 is 0.1, the other operators' 0.5
            if ops == {"variance"}:
                base["prune_probability"] = 0.1
            elif "variance" in ops:
                base["variance_probability"] = 0.1
        base.update(fields)
        return cls(**base).validate()

    @classmethod
    def from_toml(cls, path, **overrides) -> "TrainConfig":
        """A config from a TOML file of config fields (plus ``profile``);
        ``overrides`` win.  ``operator`` may be a list: one per cell.  A relative
        ``data`` path in the file is relative to the file's folder."""
        from sparseae.schema import read_toml

        fields = read_toml(path, "config")
        data = fields.get("data")
        if isinstance(data, str) and data.strip():
            # a path in a file is relative to the file (as in sweep specs), and so is
            # the DIR of mnist:DIR; a data set name stays as it is
            from sparseae import datasets

            folder = os.path.dirname(os.path.abspath(os.fspath(path)))
            named = datasets.parse(data)
            if named is None and not os.path.isabs(data):
                fields["data"] = os.path.normpath(os.path.join(folder, data))
            elif named is not None and named[1]:
                where = os.path.expanduser(named[1])
                fields["data"] = f"{named[0]}:{os.path.normpath(os.path.join(folder, where))}"
        fields.update(overrides)
        profile = fields.pop("profile", "default")
        if not isinstance(profile, str):
            raise ConfigError(f"config: {path} profile must be one of {', '.join(PROFILES)}, "
                              f"got {profile!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ConfigError(f"config: {path} has unknown field(s) {', '.join(unknown)}")
        try:
            return cls.from_profile(profile, **fields)
        except ConfigError as exc:  # a value from the file: name the file and its field
            field = str(exc).split(":", 1)[0]
            if field in fields and field not in overrides:
                raise ConfigError(f"config: {path}: {exc}") from None
            raise

    def cell_operators(self) -> list:
        """The operator of each cell: a list of ``population`` names, assigned
        round-robin from ``operator`` (comma-separated or a list)."""
        ops = self.operator.split(",")
        return [ops[k % len(ops)] for k in range(self.population)]

    @property
    def lr_step(self) -> int:
        """Epochs between the step decays (x0.1) of the learning rate."""
        total = self.epochs if self.schedule_epochs is None else self.schedule_epochs
        return max(1, total // 4)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (0-based) under the step decay."""
        if not self.lr_decay:
            return self.lr
        return self.lr * 0.1 ** (epoch // self.lr_step)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"config: unknown field(s) {', '.join(unknown)}")
        return cls(**d).validate()

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes).validate()


def _check_radius(radius: int, population: int) -> None:
    """A neighbourhood of 2r + 1 cells on a ring of N: each cell at most twice."""
    if radius > population // 2:
        raise ConfigError(f"radius: must be <= {population // 2} for population {population} "
                          f"(a larger radius repeats cells in every neighbourhood), got {radius}")
    if 2 * radius + 1 > population:
        import warnings

        from sparseae.errors import SparseaeWarning

        warnings.warn(f"radius {radius} with population {population}: the neighbourhood of "
                      f"{2 * radius + 1} cells holds one cell twice", SparseaeWarning,
                      stacklevel=3)


def _choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name}: must be {rng}, got {value}")


def _float(name, value, lo, hi, lo_open=False, hi_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    bad = (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi)
    if bad or value != value:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ConfigError(f"{name}: must be in {rng}, got {value!r}")
