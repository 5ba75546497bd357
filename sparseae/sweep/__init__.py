"""Sweeps: many independent runs (variants x trials) into one results file.

* :mod:`sparseae.sweep.spec` -- the TOML spec, its variants and trials;
* :mod:`sparseae.sweep.results` -- the HDF5 results file: layout, resume
  (finished runs are skipped), the single atomic writer;
* :mod:`sparseae.sweep.executors` -- where runs execute: this process, local
  worker processes, lockstep groups (one contract, ready for more);
* :mod:`sparseae.sweep.run` -- :func:`run_sweep` and :func:`plan`, which tie
  them together.

:func:`run_sweep` runs every (variant, trial) as an independent run in local
worker processes, or, with ``lockstep`` (the default on cuda), all of them in
this process as batched groups that share one training call per step
(:mod:`sparseae.lockstep`; the same results).  The parent process is the only
writer of the results file.
"""

from sparseae.errors import ConfigError, ResultsError
from sparseae.sweep.executors import execute
from sparseae.sweep.results import (
    FORMAT,
    FORMAT_VERSION,
    check_header,
    config_difference,
    open_results,
    results_group,
    same_config,
    write_run,
)
from sparseae.sweep.run import plan, run_sweep
from sparseae.sweep.spec import (
    FIELDS,
    SPEC_KEYS,
    SweepSpec,
    Variant,
    check_runs,
    check_size,
    load_spec,
    parse_spec,
    variant_name,
)

#: Summary keys that measure time rather than results (they differ between identical runs).
TIMING_KEYS = ("seconds", "seconds_per_epoch", "train_seconds", "prune_seconds", "us_per_step",
               "compile_seconds")

__all__ = ["ConfigError", "FIELDS", "FORMAT", "FORMAT_VERSION", "ResultsError", "SPEC_KEYS",
           "SweepSpec", "TIMING_KEYS", "Variant", "check_header", "check_runs", "check_size",
           "config_difference", "execute", "load_spec", "open_results", "parse_spec", "plan",
           "results_group", "run_sweep", "same_config", "variant_name", "write_run"]
