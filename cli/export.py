"""``sparseae export``: the compacted network of a checkpoint as .npz or ONNX."""

import json

import click

from sparseae.cli.common import DataArg, FilePath, check_output, fail, warnings_as_lines
from sparseae.errors import SparseaeError


@click.command("export")
@click.argument("checkpoint", type=FilePath())
@click.option("-o", "--output", type=FilePath(), required=True,
              help="model.npz (plain per-layer weights and biases, readable with numpy alone) "
                   "or model.onnx (needs pip install 'sparseae[onnx]'), written atomically.")
@click.option("--cell", type=click.IntRange(min=0), default=None,
              help="Export this centre of a Lipi-AE-S population.  [default: the centre of "
                   "lowest validation L1, as `compress` picks it]")
@click.option("--data", "data_path", type=DataArg(), default=None,
              help="Pick the best centre by validation L1 on these data (.h5/.npz, a data set "
                   "name or mnist:DIR) instead of the run's own (found from the checkpoint).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the L1 evaluations that pick the best centre run.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as one JSON object.")
def export(checkpoint, output, cell, data_path, device, overwrite, as_json):
    """Write the compacted network of CHECKPOINT (pruned units removed) to OUTPUT.

    The network computes what the checkpoint's model computes: same input and
    reconstruction width; its latent code keeps only the latent units that
    affect the reconstruction, and the file records their original indices
    (`latent_units`).
    """
    from sparseae import export as ex

    ext = check_output(output, overwrite, ex.SUFFIXES)
    try:
        if ext == ".onnx":
            ex.require_onnx()  # fail before reading anything
        with warnings_as_lines():
            data = None
            if data_path is not None:
                from sparseae.data import load

                data = load(data_path)
            net, info = ex.from_checkpoint(checkpoint, data, cell, device)
            ex.save(net, output)
    except SparseaeError as exc:
        fail(exc, flags={"cell": "--cell"})
    summary = {"output": output, **info, "widths": net.widths,
               "latent_units": [int(u) for u in net.latent_units],
               "latent_dim": net.latent_dim, "parameters": net.n_params, "flops": net.flops}
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    picked = ""
    if info["paradigm"] == "lipi":
        picked = f" of centre {info['cell']}"
        if "validation_l1" in info:
            picked += (f" (best by validation L1 {info['validation_l1']:.6g}; test L1 "
                       f"{info['test_l1']:.6g})")
    click.echo(f"wrote {output}: {'-'.join(map(str, net.widths))}{picked}, latent units "
               f"{','.join(map(str, summary['latent_units'])) or 'none'} of {net.latent_dim}, "
               f"{net.n_params} parameters, {net.flops} FLOPs per sample")
