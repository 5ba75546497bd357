"""``sparseae data``: write data sets to files."""

import os

import click

from sparseae.cli.common import FilePath, InputError, check_output, fail
from sparseae.errors import SparseaeError

_OUTPUT_HELP = ("Output file (.h5, .hdf5 or .npz), written atomically; it records where the "
                "data came from (source, version, preprocessing, split seed).")
_SPLIT_SEED_HELP = ("Seed of the train/validation(/test) split (0: the split `--data NAME` "
                    "uses).")


@click.group()
def data():
    """Generate data sets, or write a built-in or MNIST-style one to a file."""


def _write(output, overwrite, make):
    """Check ``output``, build ``(dataset, meta) = make()``, save, print one line."""
    from sparseae.data import save

    from sparseae.data import EXTENSIONS

    check_output(output, overwrite, EXTENSIONS)
    try:
        ds, meta = make()
        save(output, ds, meta)
    except SparseaeError as exc:
        fail(exc)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    sizes = "/".join(str(getattr(ds, s).shape[0]) for s in ("train", "validation", "test"))
    click.echo(f"wrote {output}: train/validation/test {sizes} x {ds.dim}"
               f" ({os.path.getsize(output)} bytes)")


def _output_options(f):
    f = click.option("--overwrite", is_flag=True, help="Replace an existing output file.")(f)
    return click.option("-o", "--output", type=FilePath(), required=True, help=_OUTPUT_HELP)(f)


@data.command("binary-clustering")
@click.option("--clusters", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--dim", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--per-cluster", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--noise", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quirks", is_flag=True,
              help="The reference code's generator (gecco25 profile's data_quirks).")
@_output_options
def binary_clustering(clusters, dim, per_cluster, noise, seed, quirks, output, overwrite):
    """Write the binary-clustering task's train/test/validation splits."""
    from sparseae import __version__
    from sparseae.data import binary_clustering as generate

    meta = {"generator": "binary-clustering", "clusters": clusters, "dim": dim,
            "per_cluster": per_cluster, "noise": noise, "seed": seed, "quirks": quirks,
            "dataset": "binary-clustering", "source": "sparseae binary-clustering generator",
            "version": f"sparseae {__version__}", "preprocessing": "none (bits)",
            "split_seed": seed}
    _write(output, overwrite,
           lambda: (generate(clusters, dim, per_cluster, noise, seed, quirks=quirks), meta))


def _named(name, doc):
    @data.command(name, help=doc)
    @click.option("--split-seed", type=click.IntRange(min=0), default=0, show_default=True,
                  help=_SPLIT_SEED_HELP)
    @_output_options
    def command(split_seed, output, overwrite):
        from sparseae.datasets import build

        _write(output, overwrite, lambda: build(name, split_seed))

    return command


_named("digits", "Write scikit-learn's 8x8 digits / 16 (1,797 x 64; needs the datasets extra).")
_named("digits-binary", "Write scikit-learn's 8x8 digits thresholded at 8 (binary; needs the "
                        "datasets extra).")
_named("mnist1d", "Write MNIST-1D from the mnist1d package's offline generator, mapped onto "
                  "[0, 1] (5,000 x 40; needs the datasets extra).")


def _folder(kind, label):
    @data.command(kind, help=f"Write {label} from its IDX files in a folder "
                             "(train-images-idx3-ubyte and t10k-images-idx3-ubyte, or .idx "
                             "names, optionally .gz): pixels / 255, flattened, validation "
                             "carved from the training images with the split seed.")
    @click.option("--from", "folder", required=True, metavar="DIR", type=str,
                  help=f"The folder holding the {label} IDX files.")
    @click.option("--split-seed", type=click.IntRange(min=0), default=0, show_default=True,
                  help=_SPLIT_SEED_HELP)
    @_output_options
    def command(folder, split_seed, output, overwrite):
        from sparseae.datasets import build

        if not folder.strip():
            raise InputError("Invalid value for '--from': the folder name is empty")
        where = os.path.abspath(os.path.expanduser(folder))
        _write(output, overwrite, lambda: build(f"{kind}:{where}", split_seed))

    return command


_folder("mnist", "MNIST")
_folder("fashion-mnist", "Fashion-MNIST")
