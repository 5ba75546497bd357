"""End-to-end check of the library on a GPU: Lipi-AE-S and canonical runs with
``device="cuda"`` against the same runs on the CPU (small sizes, quick).

    PYTHONPATH=<checkout> python -m bench.gpu_lib
"""

import json
import os
import time

import numpy as np


def main():
    from sparseae import LipiRun, TrainConfig, make_run

    out = {}
    base = dict(paradigm="lipi", clusters=10, dim=1000, per_cluster=100, epochs=3, population=10,
                operator="random", prune_probability=0.5, schedule="fixed", seed=2)
    for sync in (False, True):
        res = {}
        for device in ("cpu", "cuda"):
            cfg = TrainConfig(device=device, sync_cells=sync, **base)
            run = LipiRun(cfg)
            t0 = time.perf_counter()
            s = run.run()
            res[device] = (s, time.perf_counter() - t0, run.encoders.params.copy(),
                           run.encoders.mask.copy())
        (sc, tc, pc, mc), (sg, tg, pg, mg) = res["cpu"], res["cuda"]
        rel = float(np.abs(pc - pg).max() / np.abs(pc).max())
        out[f"lipi sync={sync}"] = {
            "cpu_seconds": tc, "cuda_seconds": tg, "max_rel_param_diff": rel,
            "same_masks": bool(np.array_equal(mc, mg)),
            "test_l1_cpu": sc["test_l1"], "test_l1_cuda": sg["test_l1"]}
    cfg = dict(paradigm="canonical", epochs=3, operator="variance", schedule="fixed",
               prune_probability=1.0, seed=3)
    sc = make_run(TrainConfig(device="cpu", **cfg)).run()
    sg = make_run(TrainConfig(device="cuda", **cfg)).run()
    out["canonical variance"] = {"test_l1_cpu": sc["test_l1"], "test_l1_cuda": sg["test_l1"],
                                 "preserved_cpu": sc["preserved"], "preserved_cuda": sg["preserved"]}
    # how float32 rounding differences grow: Adam turns a tiny gradient of either sign
    # into a step of about lr, so trajectories drift apart after a few hundred steps
    for epochs in (1, 2, 4):
        r = {}
        for device in ("cpu", "cuda"):
            run = make_run(TrainConfig(paradigm="canonical", epochs=epochs, seed=5, device=device,
                                       lr_decay=False))
            run.run()
            r[device] = np.concatenate([run.model.encoder.params[0],
                                        run.model.decoder.params[0]]).astype(np.float64)
        d = np.abs(r["cpu"] - r["cuda"])
        out[f"canonical drift after {epochs} epochs"] = {
            "max_rel": float(d.max() / np.abs(r["cpu"]).max()),
            "median_abs": float(np.median(d)),
            "fraction_differing_by_more_than_1e-4": float((d > 1e-4).mean())}
    text = json.dumps(out, indent=1)
    print(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_lib.json"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
