"""``sparseae compress``: the final compression phase on a saved run."""

import os

import click

from sparseae.cli.common import (
    DataArg,
    FilePath,
    InputError,
    fail,
    print_summary,
    warnings_as_lines,
)
from sparseae.density import ALLOCATIONS, DEFAULT_ALLOCATION
from sparseae.errors import SparseaeError
from sparseae.operators import PRUNING_OPERATORS


@click.command()
@click.argument("checkpoint", type=FilePath())
@click.option("--density", type=click.FloatRange(0, 1, min_open=True), required=True,
              help="Target density: the fraction of the parameters left live.")
@click.option("--operator", type=click.Choice(PRUNING_OPERATORS), default="magnitude",
              show_default=True, help="Which entries each tensor loses.")
@click.option("--allocation", type=click.Choice(ALLOCATIONS), default=DEFAULT_ALLOCATION,
              show_default=True,
              help="How the live entries are shared among the tensors: erk (by shape, as "
                   "RigL), fanin (every unit keeps the same number of inputs; at least 4 "
                   "in the narrow layers) or global (the largest |w| over all tensors).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=30, show_default=True,
              help="Canonical Adam epochs: pruning over the first half, then fine-tuning at "
                   "the density with permanent masks (0: prune at once).")
@click.option("--lr", type=click.FloatRange(min=0, max=10, min_open=True), default=1e-3,
              show_default=True, help="Fine-tuning learning rate (x0.1 in the last quarter).")
@click.option("--refit", is_flag=True,
              help="Then choose the output layer's inputs again by fitting and fine-tune "
                   "--finetune-epochs more (low densities: at most two inputs per output "
                   "unit; kept when its validation L1 is lower).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds every draw: the same checkpoint and seed give the same result.")
@click.option("-o", "--output", type=FilePath(), default=None,
              help="Write the compressed model here as a checkpoint (sparseae eval reads "
                   "it); an existing file is refused unless --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output checkpoint.")
@click.option("--data", "data_path", type=DataArg(), default=None,
              help="The run's data, when it is not found from the checkpoint.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the kernels run.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (test_l1_before, test_l1, preserved, flops, ...).")
def compress(checkpoint, density, operator, allocation, finetune_epochs, lr, refit, seed,
             output, overwrite, data_path, device, as_json):
    """Prune the best model of CHECKPOINT (a canonical run's model, or a population's
    centre of lowest validation L1) to --density with --operator, fine-tune it with permanent
    masks, and print test L1 before and after, density, FLOPs and the compacted shape."""
    from sparseae import datasets
    from sparseae.compress import compress_checkpoint
    from sparseae.data import load

    if not os.path.isfile(checkpoint):
        what = "is a folder" if os.path.isdir(checkpoint) else "file not found"
        raise InputError(f"checkpoint: {what}: {checkpoint}")
    if overwrite and output is None:
        raise InputError("--overwrite needs --output")
    if output is not None:
        if os.path.exists(output) and os.path.samefile(checkpoint, output):
            raise InputError(f"--output: {output} is the input checkpoint; choose another file")
        if os.path.exists(output) and not overwrite:
            raise InputError(f"--output: {output} exists; replace it with --overwrite or "
                             "choose another file")
    try:
        with warnings_as_lines():
            data = data_file = None
            if data_path is not None:
                data = load(data_path)
                # recorded in the output's config: a name stays a name
                data_file = datasets.canonical(data_path) if datasets.is_named(data_path) \
                    else os.path.abspath(data_path)
            info = compress_checkpoint(checkpoint, density, operator, finetune_epochs,
                                       seed=seed, lr=lr, out=output, data=data,
                                       data_file=data_file, device=device,
                                       allocation=allocation, refit=refit)
    except SparseaeError as exc:
        fail(exc)
    info.pop("seconds", None)  # the JSON stays the same from run to run
    if output is not None:
        info["output"] = output
    if as_json:
        print_summary(info, True)
        return
    shape = "-".join(str(w) for w in info["widths"])
    click.echo(f"compressed {checkpoint}" + (f" (centre {info['cell']})" if "cell" in info
                                            else "") + f": {operator}, {finetune_epochs} "
               f"fine-tuning epochs, seed {seed}")
    if "refit" in info:
        click.echo(f"  refit       {'kept' if info['refit'] else 'not kept'} (validation L1 "
                   f"{info['validation_l1_before_refit']:.4f} before, "
                   f"{info['validation_l1']:.4f} now)")
    click.echo(f"  test L1     {info['test_l1_before']:.4f} -> {info['test_l1']:.4f}")
    click.echo(f"  density     {info['preserved']:.4f} ({info['live']} of "
               f"{info['parameters']} parameters live)")
    click.echo(f"  FLOPs       {info['flops']} per sample with the live weights; "
               f"{info['flops_compacted']} as the compacted dense network "
               f"({info['flops_dense']} before)")
    click.echo(f"  compacted   {shape}")
    if output is not None:
        click.echo(f"  written     {output}")
