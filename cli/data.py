"""``sparseae data``: write data sets to files."""

import os

import click

from sparseae.cli.common import InputError, fail
from sparseae.errors import SparseaeError


@click.group()
def data():
    """Generate data sets."""


@data.command("binary-clustering")
@click.option("--clusters", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--dim", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--per-cluster", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--noise", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Output file (.h5 or .npz), written atomically.")
def binary_clustering(clusters, dim, per_cluster, noise, seed, output):
    """Write the binary-clustering task's train/test/validation splits."""
    from sparseae.data import binary_clustering as generate
    from sparseae.data import save

    try:
        ds = generate(clusters, dim, per_cluster, noise, seed)
        save(output, ds)
    except SparseaeError as exc:
        fail(exc)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}: train/test/validation {ds.train.shape[0]} x {ds.dim}"
               f" ({os.path.getsize(output)} bytes)")
