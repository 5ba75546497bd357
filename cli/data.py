"""``sparseae data``: write data sets to files."""

import os

import click

from sparseae.cli.common import FilePath, InputError, fail
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
@click.option("--quirks", is_flag=True,
              help="The reference code's generator (gecco25 profile's data_quirks).")
@click.option("-o", "--output", type=FilePath(), required=True,
              help="Output file (.h5, .hdf5 or .npz), written atomically; it records the "
                   "generator's parameters.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def binary_clustering(clusters, dim, per_cluster, noise, seed, quirks, output, overwrite):
    """Write the binary-clustering task's train/test/validation splits."""
    from sparseae.data import EXTENSIONS
    from sparseae.data import binary_clustering as generate
    from sparseae.data import save

    ext = os.path.splitext(output)[1].lower()
    if ext not in EXTENSIONS:
        raise InputError(f"Invalid value for '-o' / '--output': {output} has the extension "
                         f"{ext or '(none)'!r}; expected one of {', '.join(EXTENSIONS)}")
    if os.path.isfile(output) and not overwrite:
        raise InputError(f"Invalid value for '-o' / '--output': {output} exists; replace it "
                         "with --overwrite or choose another file")
    meta = {"generator": "binary-clustering", "clusters": clusters, "dim": dim,
            "per_cluster": per_cluster, "noise": noise, "seed": seed, "quirks": quirks}
    try:
        ds = generate(clusters, dim, per_cluster, noise, seed, quirks=quirks)
        save(output, ds, meta)
    except SparseaeError as exc:
        fail(exc)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}: train/test/validation {ds.train.shape[0]} x {ds.dim}"
               f" ({os.path.getsize(output)} bytes)")
