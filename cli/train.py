"""``sparseae train``: train on generated or user data and print a summary."""

import signal
import sys
import threading

import click

from sparseae.cli.common import InputError, fail, print_summary, progress
from sparseae.config import PARADIGMS, PROFILES, TrainConfig
from sparseae.errors import SparseaeError
from sparseae.operators import OPERATORS
from sparseae.schedules import SCHEDULES

_D = TrainConfig()
#: CLI parameter -> config field, where the names differ
_FIELD = {"data_path": "data"}
#: CLI parameters that are not part of the run's configuration
_NOT_CONFIG = {"config_path", "profile", "checkpoint", "checkpoint_every", "resume", "quiet", "as_json"}
_UNIT = click.FloatRange(0, 1)


def _amount(value):
    """A fraction in [0, 1] ("0.1") or an integer count ("25")."""
    text = str(value)
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        raise click.BadParameter(f"expected a fraction in [0, 1] or a count, got {text!r}") from None


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML file of config fields (e.g. operator = [\"random\", \"conjunctive\", ...] "
                   "one per cell); flags given here override it.")
@click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True,
              help="default: real pruning with permanent masks; gecco25: behave like the "
                   "published code (its data, pruning and settings; flags still override).")
@click.option("--paradigm", type=click.Choice(PARADIGMS), default=_D.paradigm, show_default=True,
              help="lipi: Lipi-AE-S coevolution on a ring of cells; canonical: one autoencoder.")
@click.option("--arch", default=_D.arch, show_default=True,
              help="Preset (default, small, large) or encoder widths such as 784,64,8.")
@click.option("--epochs", type=click.IntRange(min=1), default=_D.epochs, show_default=True)
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
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="Train on user data (.h5 or .npz with train/test[/validation]).")
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
@click.option("--prune-amount", default=str(_D.prune_amount), show_default=True,
              help="Fraction of live entries per tensor (RANDOM, VARIANCE, MAGNITUDE) or a count.")
@click.option("--threshold", type=_UNIT, default=_D.threshold, show_default=True,
              help="CONJUNCTIVE threshold C on the normalised pre-activation.")
@click.option("--heldout", type=click.IntRange(min=1), default=_D.heldout, show_default=True,
              help="CONJUNCTIVE held-out samples (from the validation split).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Write the run state here (HDF5) every --checkpoint-every epochs and at the end.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Epochs between checkpoints (default: only at the end and on Ctrl-C).")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue the run saved in this checkpoint (--epochs may extend it).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def train(ctx, config_path, profile, paradigm, arch, epochs, lr, lr_decay, adam, device,
          sync_cells, population, radius, lr_sigma,
          batch_size, seed, data_path, clusters, dim, per_cluster, noise, data_seed, operator,
          schedule, prune_probability, prune_amount, threshold, heldout, checkpoint,
          checkpoint_every, resume, quiet, as_json):
    """Train autoencoders with pruning and print a summary.

    By default Lipi-AE-S (the paper's method, default profile) on generated
    binary-clustering data.  Ctrl-C stops between epochs, writes the
    checkpoint (when --checkpoint or --resume names one) and exits with 130.
    """
    from sparseae.runs import make_run, resume_run

    given = {p for p in ctx.params
             if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE}
    try:
        if resume is not None:
            changed = given - _NOT_CONFIG - {"epochs", "data_path", "device"}
            if changed:
                flag = "--" + sorted(changed)[0].replace("_", "-")
                raise InputError(f"{flag} cannot change when resuming: the checkpoint fixes the "
                                 "run's settings (only --epochs, --data and output flags apply)")
            data = None
            if data_path is not None:
                from sparseae.data import load

                data = load(data_path)
            run = resume_run(resume, data, epochs if "epochs" in given else None)
            if "device" in given:  # where the kernels run does not change the run's state
                from sparseae.backend import kernels

                kernels(device)
                run.config.device = device
            if checkpoint is None:
                checkpoint = resume
        else:
            # flags given on the command line override the profile's settings
            fields = {_FIELD.get(name, name): ctx.params[name] for name in given
                      if name not in _NOT_CONFIG}
            if "prune_amount" in fields:
                fields["prune_amount"] = _amount(fields["prune_amount"])
            if config_path is not None:
                if "profile" in given:
                    fields["profile"] = profile
                config = TrainConfig.from_toml(config_path, **fields)
            else:
                fields["paradigm"] = paradigm
                config = TrainConfig.from_profile(profile, **fields)
            run = make_run(config)
        if checkpoint is not None:  # fail now, not after an hour of training
            run.save(checkpoint)
    except SparseaeError as exc:
        fail(exc)

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    total = run.config.epochs
    try:
        with progress(total - run.epoch, "training", quiet or as_json) as bar:
            def after_epoch(r):
                if bar is not None:
                    bar.label = f"epoch {r.epoch}/{total} {_progress_text(r)}"
                    bar.update(1)
                if checkpoint is not None and checkpoint_every and r.epoch % checkpoint_every == 0:
                    r.save(checkpoint)
            summary = run.run(after_epoch, stop)
        if checkpoint is not None:
            run.save(checkpoint)
    except SparseaeError as exc:
        fail(exc)
    finally:
        signal.signal(signal.SIGINT, previous)
    if stop.is_set():
        where = f"; checkpoint {checkpoint}" if checkpoint else ""
        click.echo(f"interrupted after epoch {run.epoch}{where}", err=True)
        sys.exit(130)
    print_summary(summary, as_json)


def _progress_text(run) -> str:
    h = run.history
    if "best_replacement_loss" in h:  # Lipi-AE-S: the best centre of this epoch
        best = int(h["replacement_loss"][-1].argmin())
        return (f"best loss {h['best_replacement_loss'][-1]:.4f} "
                f"preserved {h['preserved'][-1][best]:.3f}")
    return f"loss {h['train_loss'][-1]:.4f} preserved {h['preserved'][-1]:.3f}"
