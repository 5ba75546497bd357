"""``sparseae train``: train on generated or user data and print a summary."""

import contextlib
import os
import signal
import sys
import threading

import click

from sparseae.cli.common import (
    DataArg,
    FilePath,
    InputError,
    eprint,
    fail,
    print_summary,
    warnings_as_lines,
)
from sparseae.cli.progress import Progress
from sparseae.config import PARADIGMS, PROFILES, TrainConfig
from sparseae.errors import SparseaeError
from sparseae.density import ALLOCATIONS, REGROW
from sparseae.operators import OPERATORS
from sparseae.schedules import SCHEDULES

_D = TrainConfig()
#: CLI parameter -> config field, where the names differ
_FIELD = {"data_path": "data", "history_path": "history", "config_path": "config"}
#: CLI parameters that are not part of the run's configuration
_NOT_CONFIG = {"config_path", "profile", "checkpoint", "checkpoint_every", "resume", "quiet",
               "as_json", "overwrite", "history_path", "keep_schedule"}
_UNIT = click.FloatRange(0, 1)


class Amount(click.ParamType):
    """A fraction in [0, 1] ("0.1") or an integer count ("25")."""

    name = "amount"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        try:
            return int(text) if text.isdigit() else float(text)
        except ValueError:
            self.fail(f"expected a fraction in [0, 1] or a count, got {text!r}", param, ctx)


@click.command()
@click.option("--config", "config_path", type=FilePath(), default=None,
              help="TOML file of config fields (e.g. operator = [\"random\", \"conjunctive\", ...] "
                   "one per cell); flags given here override it.")
@click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True,
              help="default: real pruning with permanent masks; gecco25: behave like the "
                   "published code (its data, pruning and settings; flags still override).")
@click.option("--paradigm", type=click.Choice(PARADIGMS), default=_D.paradigm, show_default=True,
              help="lipi: Lipi-AE-S coevolution on a ring of cells; canonical: one autoencoder.")
@click.option("--arch", default=_D.arch, show_default=True,
              help="Preset (default, small, large) or encoder widths such as 784,64,8.")
@click.option("--epochs", type=click.IntRange(min=1), default=_D.epochs, show_default=True,
              help="Epochs to train.  With --resume: the run's new total (at least the epochs "
                   "done); the lr decay step and the pruning schedule's T then follow the new "
                   "total (so the result differs from a run configured with it from the start) "
                   "unless --keep-schedule.")
@click.option("--lr", type=click.FloatRange(min=0, max=10, min_open=True), default=None,
              help="Adam learning rate (Lipi-AE-S: every cell's initial lr). "
                   "[default: 3e-3 lipi, 1e-3 canonical]")
@click.option("--lr-decay/--no-lr-decay", default=True, show_default=True,
              help="Canonical: step decay x0.1 every max(1, epochs//4) epochs.")
@click.option("--adam", type=click.Choice(["persistent", "fresh"]), default=_D.adam,
              show_default=True, help="Adam state kept per individual, or new every step.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=_D.device,
              show_default=True, help="Where the kernels run.")
@click.option("--sync-cells/--async-cells", default=False, show_default=True,
              help="Lipi-AE-S: all cells of an epoch read the previous epoch's centres and train "
                   "together in one batched call (not the paper's order).")
@click.option("--population", type=click.IntRange(min=1), default=_D.population,
              show_default=True, help="Lipi-AE-S: number of cells on the ring.")
@click.option("--radius", type=click.IntRange(min=0), default=_D.radius, show_default=True,
              help="Lipi-AE-S: neighbourhood radius r (2r+1 centres).")
@click.option("--lr-sigma", type=click.FloatRange(0, 10), default=_D.lr_sigma, show_default=True,
              help="Lipi-AE-S: std of each cell's lr mutation per epoch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_D.batch_size, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=_D.seed, show_default=True)
@click.option("--data", "data_path", type=DataArg(), default=None,
              help="Train on user data (.h5 or .npz with train/test/validation), a built-in "
                   "data set (digits, digits-binary, mnist1d, binary-clustering; the first "
                   "three need the datasets extra) or MNIST-style IDX files in a folder "
                   "(mnist:DIR, fashion-mnist:DIR).")
@click.option("--clusters", type=click.IntRange(min=1), default=_D.clusters, show_default=True,
              help="Generated data: number of centroids.")
@click.option("--dim", type=click.IntRange(min=1), default=_D.dim, show_default=True,
              help="Generated data: bits per sample.")
@click.option("--per-cluster", type=click.IntRange(min=1), default=_D.per_cluster, show_default=True,
              help="Generated data: samples per centroid in each split.")
@click.option("--noise", type=_UNIT, default=_D.noise, show_default=True,
              help="Generated data: bit-flip probability.")
@click.option("--data-seed", type=click.IntRange(min=0), default=None,
              help="Generated data: seed (default: --seed).")
@click.option("--operator", default=None,
              help=f"Pruning operator: {', '.join(OPERATORS)}; Lipi-AE-S takes a comma-separated "
                   "list assigned to cells round-robin.  [default: random (lipi), none (canonical)]")
@click.option("--schedule", type=click.Choice(list(SCHEDULES)), default=_D.schedule,
              show_default=True, help="Pruning probability schedule p(t).")
@click.option("--prune-probability", type=_UNIT, default=None,
              help="P0 of the schedule.  [default: 0.05 (lipi), 0.5 (canonical)]")
@click.option("--prune-amount", type=Amount(), default=_D.prune_amount, show_default=True,
              help="Fraction of live entries per tensor (RANDOM, VARIANCE, MAGNITUDE) or a count.")
@click.option("--threshold", type=_UNIT, default=_D.threshold, show_default=True,
              help="CONJUNCTIVE threshold C on the normalised pre-activation.")
@click.option("--heldout", type=click.IntRange(min=1), default=_D.heldout, show_default=True,
              help="CONJUNCTIVE held-out samples (from the validation split; at most its size).")
@click.option("--target-density", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Prune every individual after each epoch to the cubic schedule's density, "
                   "ending at this one (README, \"Compression\"); replaces --schedule's events.")
@click.option("--density-start", type=click.FloatRange(0, 1, max_open=True),
              default=_D.density_start, show_default=True,
              help="--target-density: the schedule's window starts at this fraction of the run.")
@click.option("--density-end", type=click.FloatRange(0, 1, min_open=True),
              default=_D.density_end, show_default=True,
              help="--target-density: the density is reached at this fraction of the run.")
@click.option("--density-allocation", type=click.Choice(ALLOCATIONS),
              default=_D.density_allocation, show_default=True,
              help="How the live entries are shared among the tensors (by shape, the same "
                   "number of inputs per unit, or by the largest |w| over all of them).")
@click.option("--regrow", type=click.Choice(REGROW), default=_D.regrow,
              show_default=True,
              help="--target-density: drop --prune-amount of each tensor's live entries by the "
                   "operator and regrow as many (by gradient or at random) while the window is "
                   "open.")
@click.option("--final-density", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="After the run, prune the best individual to this density and fine-tune it "
                   "(the summary's final_* entries).")
@click.option("--final-operator", type=click.Choice(["random", "variance", "conjunctive",
                                                     "magnitude"]), default=None,
              help="Operator of the final phase.  [default: the run's operator, magnitude if "
                   "none]")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=_D.finetune_epochs,
              show_default=True, help="--final-density: fine-tuning epochs.")
@click.option("--finetune-lr", type=click.FloatRange(min=0, max=10, min_open=True),
              default=_D.finetune_lr, show_default=True,
              help="--final-density: fine-tuning learning rate.")
@click.option("--final-refit/--no-final-refit", default=None,
              help="--final-density: then choose the output layer's inputs again by fitting "
                   "and fine-tune as long again (at most two inputs per output unit).")
@click.option("--checkpoint", type=FilePath(), default=None,
              help="Write the run state here (HDF5) every --checkpoint-every epochs, at the end "
                   "and on Ctrl-C.  An existing file is refused unless it is the --resume file "
                   "or --overwrite is given.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Epochs between checkpoints (default: only at the end and on Ctrl-C).")
@click.option("--resume", type=FilePath(), default=None,
              help="Continue the run saved in this checkpoint (and keep writing it unless "
                   "--checkpoint names another file); --epochs may extend it.")
@click.option("--keep-schedule", is_flag=True,
              help="With --resume and a larger --epochs: keep the saved run's lr decay step and "
                   "pruning schedule (continue them past their end) instead of stretching them "
                   "to the new total.")
@click.option("--history", "history_path", type=FilePath(), default=None,
              help="Also write the per-epoch history as CSV (losses, lr, pruned, preserved; "
                   "per cell for Lipi-AE-S) at the end, at every checkpoint and on Ctrl-C.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --checkpoint / --history file of another run.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress (default: a bar on a terminal, else a line every 30 s and at "
                   "every quarter of the run; SPARSEAE_PROGRESS_SECONDS sets the interval).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def train(ctx, config_path, profile, paradigm, arch, epochs, lr, lr_decay, adam, device,
          sync_cells, population, radius, lr_sigma,
          batch_size, seed, data_path, clusters, dim, per_cluster, noise, data_seed, operator,
          schedule, prune_probability, prune_amount, threshold, heldout, target_density,
          density_start, density_end, density_allocation, regrow, final_density, final_operator,
          finetune_epochs, finetune_lr, final_refit, checkpoint,
          checkpoint_every, resume, keep_schedule, history_path, overwrite, quiet, as_json):
    """Train autoencoders with pruning and print a summary.

    By default Lipi-AE-S (the paper's method, default profile) on generated
    binary-clustering data.  Ctrl-C (or SIGTERM) stops between epochs, writes
    the checkpoint (when --checkpoint or --resume names one) and the history,
    prints the summary of the state reached and exits with 130.
    """
    given = {p for p in ctx.params
             if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE}
    with warnings_as_lines(), contextlib.ExitStack() as held:
        try:
            run, checkpoint = _prepare(ctx, given, held, config_path, profile, paradigm, epochs,
                                       device, data_path, checkpoint, checkpoint_every, resume,
                                       keep_schedule, history_path, overwrite)
        except SparseaeError as exc:
            fail(exc, _fields(given))
        _train(run, checkpoint, checkpoint_every, history_path, quiet, as_json, given)


def _fields(given) -> set:
    return {_FIELD.get(name, name) for name in given}


def _prepare(ctx, given, held, config_path, profile, paradigm, epochs, device, data_path,
             checkpoint, checkpoint_every, resume, keep_schedule, history_path, overwrite):
    """Check the outputs (lock them), build or resume the run, write the first checkpoint."""
    from sparseae import _lock
    from sparseae.errors import CheckpointError, ConfigError
    from sparseae.runs import make_run, resume_run

    if checkpoint_every is not None and checkpoint is None and resume is None:
        raise InputError("--checkpoint-every needs --checkpoint (or --resume)")
    if keep_schedule and (resume is None or "epochs" not in given):
        raise InputError("--keep-schedule needs --resume and --epochs")
    if overwrite and checkpoint is None and history_path is None:
        raise InputError("--overwrite needs --checkpoint or --history")
    if resume is not None:
        changed = given - _NOT_CONFIG - {"epochs", "data_path", "device"}
        if changed:
            flag = "--" + sorted(changed)[0].replace("_", "-")
            raise InputError(f"{flag} cannot change when resuming: the checkpoint fixes the "
                             "run's settings (only --epochs, --data and output flags apply)")
    if resume is not None and not os.path.isfile(resume):
        what = "is a folder" if os.path.isdir(resume) else "file not found"
        raise CheckpointError(f"checkpoint: {what}: {resume}")
    if checkpoint is None:
        checkpoint = resume
    if checkpoint is not None:
        _lock.acquire(checkpoint, CheckpointError, "checkpoint")
        held.callback(_lock.release, checkpoint)
        if os.path.isfile(checkpoint) and not overwrite and not (
                resume is not None and os.path.exists(resume)
                and os.path.samefile(checkpoint, resume)):
            raise InputError(f"--checkpoint: {checkpoint} exists ({_describe_file(checkpoint)}); "
                             f"continue it with --resume {checkpoint}, or replace it with "
                             "--overwrite")
        if os.path.isfile(checkpoint) and overwrite and _describe_file(checkpoint) == _FOREIGN:
            raise InputError(f"--checkpoint: {checkpoint} is not a sparseae checkpoint; "
                             "refusing to replace it (choose another file name)")
    if history_path is not None:
        _lock.acquire(history_path, ConfigError, "history")
        held.callback(_lock.release, history_path)
        if os.path.isfile(history_path) and not overwrite and resume is None:
            raise InputError(f"--history: {history_path} exists; replace it with --overwrite "
                             "or choose another file")
    if resume is not None:
        data = None
        if data_path is not None:
            from sparseae.data import load

            data = load(data_path)
        run = resume_run(resume, data, epochs if "epochs" in given else None, keep_schedule)
        if "epochs" in given and epochs == run.epoch:
            import warnings

            from sparseae.errors import SparseaeWarning

            warnings.warn(f"--epochs {epochs}: {resume} has done {run.epoch} epochs already, "
                          "nothing to train (--epochs is the run's new total)", SparseaeWarning)
        if "device" in given:  # where the kernels run does not change the run's state
            from sparseae.backend import kernels

            kernels(device)
            run.config.device = device
    else:
        # flags given on the command line override the profile's settings
        fields = {_FIELD.get(name, name): ctx.params[name] for name in given
                  if name not in _NOT_CONFIG}
        if config_path is not None:
            if "profile" in given:
                fields["profile"] = profile
            config = TrainConfig.from_toml(config_path, **fields)
        else:
            fields["paradigm"] = paradigm
            config = TrainConfig.from_profile(profile, **fields)
        run = make_run(config)
        from sparseae._checks import warn_heldout

        warn_heldout(run.config, run.data, given="heldout" in given)
    if checkpoint is not None:  # fail now, not after an hour of training
        run.save(checkpoint)
    return run, checkpoint


_FOREIGN = "not a sparseae checkpoint"


def _describe_file(path) -> str:
    """A few words on what an existing checkpoint file holds."""
    from sparseae import checkpoint as ckpt_io

    try:
        ck = ckpt_io.load(path)
        return (f"a {ck.kind} run at epoch {ck.state.get('epoch', '?')} of "
                f"{ck.config.get('epochs', '?')}")
    except SparseaeError:
        return _FOREIGN


def _train(run, checkpoint, checkpoint_every, history_path, quiet, as_json, given):
    from sparseae.history import write_csv

    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # a second Ctrl-C: leave now (the last checkpoint stays valid)
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    total = run.config.epochs
    bar = Progress(total, "epoch", quiet or as_json, start=run.epoch)

    def save():
        if checkpoint is not None:
            run.save(checkpoint)
        if history_path is not None:
            write_csv(run, history_path)

    try:
        def after_epoch(r):
            bar.update(r.epoch, _progress_text(r))
            if checkpoint_every and r.epoch % checkpoint_every == 0:
                save()

        summary = run.run(after_epoch, stop)
        bar.close()
        save()
    except SparseaeError as exc:
        bar.close()
        fail(exc, _fields(given))
    except KeyboardInterrupt:
        bar.close()
        eprint(f"interrupted again during epoch {run.epoch + 1}: stopped without saving"
               + (f" (the last checkpoint in {checkpoint} is intact)" if checkpoint else ""))
        sys.exit(130)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    summary.update(_describe(run))
    if stop.is_set():
        if checkpoint:
            eprint(f"interrupted after epoch {run.epoch}; checkpoint {checkpoint} "
                   f"(continue with: sparseae train --resume {checkpoint})")
        else:
            print_summary(summary, as_json, title=f"summary at epoch {run.epoch} (interrupted)")
            eprint(f"interrupted after epoch {run.epoch}; the state is not saved (add "
                   "--checkpoint FILE to keep it and continue later with --resume FILE)")
        sys.exit(130)
    print_summary(summary, as_json)


def _describe(run) -> dict:
    from sparseae.inputs import run_fingerprint
    from sparseae.provenance import describe

    return describe(run.config, run_fingerprint(run))


def _progress_text(run) -> str:
    h = run.history
    if "best_replacement_loss" in h:  # Lipi-AE-S: the best centre of this epoch
        best = int(h["replacement_loss"][-1].argmin())
        return (f"best cell: batch L1 {h['best_replacement_loss'][-1]:.4f} (one training "
                f"batch, not test_l1), preserved {h['preserved'][-1][best]:.3f}")
    return (f"train L1 {h['train_loss'][-1]:.4f} (epoch mean), "
            f"preserved {h['preserved'][-1]:.3f}")
