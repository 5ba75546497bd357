"""The environment probe and the closing table of ``bench.gpu``."""

import platform

import numpy as np


def log(*a):
    print(*a, flush=True)


def environment(ck) -> dict:
    """Python, numpy, numba and numba-cuda versions (the GPU itself: :func:`device`)."""
    env = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import numba

        env["numba"] = numba.__version__
        env["numba.cuda"] = getattr(ck._numba_cuda(), "implementation", "?")
        try:
            from importlib.metadata import version

            env["numba-cuda"] = version("numba-cuda")
        except Exception:
            pass
    except Exception as exc:
        env["numba"] = f"error: {exc}"
    return env


def device(ck, env) -> None:
    """Add the GPU's name, compute capability and SM count to ``env``."""
    c = ck.cuda
    try:
        dev = c.get_current_device()
        env["device"] = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        env["compute_capability"] = list(dev.compute_capability)
        env["multiprocessors"] = int(dev.MULTIPROCESSOR_COUNT)
    except Exception as exc:
        env.setdefault("device", f"? ({type(exc).__name__}: {exc})")
        env.setdefault("compute_capability", "?")


def print_table(results, best, variant_p, steps, batch) -> None:
    """The checks, the variants and the timing per population size."""
    env = results["environment"]
    STEPS, BATCH = steps, batch
    log("")
    log("checks (max |gpu-cpu| / max |cpu|):")
    for name, r in results["checks"].items():
        if "error" in r:
            log(f"  {name:18s} ERROR {r['error']}")
            continue
        keys = [k for k in r if isinstance(r[k], float) and k != "seconds"]
        log(f"  {name:18s} " + " ".join(f"{k}={r[k]:.1e}" for k in keys)
            + "".join(f" {k}={r[k]}" for k in r if isinstance(r[k], (bool, int))
                      and not isinstance(r[k], float) and k != "seconds"))
    log(f"variants at P={variant_p} (epoch, {STEPS} steps):")
    for v in results["variants"]:
        if "error" in v:
            log(f"  tpb={v['tpb']} maxreg={v['max_registers']} unroll={v['unroll']} "
                f"pipe={int(v['pipeline'])}: ERROR {v['error']}")
        else:
            log(f"  tpb={v['tpb']:4d} maxreg={str(v['max_registers']):5s} unroll={v['unroll']} "
                f"pipe={int(v['pipeline'])} carve={v['carveout']} regs={v.get('regs_per_thread')} "
                f"local={v.get('local_mem_per_thread')} epoch={v['epoch_ms']:.2f} ms "
                f"{v['net_steps_per_s'] / 1e6:.3f} M net-steps/s")
    log(f"device {env['device']}, tpb={best['tpb']} max_registers={best['max_registers']} "
        f"unroll={best['unroll']} pipeline={best['pipeline']} carveout={best['carveout']}, "
        f"batch {BATCH}:")
    log(f"  {'P':>5} | {'step ms':>8} | {'epoch ms':>9} | {'ms/step':>8} | {'M net-steps/s':>13} | {'+stats ms':>9}")
    for r in results["sizes"]:
        if "error" in r:
            log(f"  {r['P']:>5} | ERROR {r['error']}")
            continue
        log(f"  {r['P']:>5} | {r['step_ms']:8.3f} | {r['epoch_ms']:9.2f} | "
            f"{r['epoch_ms_per_step']:8.4f} | {r['epoch_net_steps_per_s'] / 1e6:13.3f} | "
            f"{r.get('epoch_stats_ms', float('nan')):9.2f}")
    hp = results.get("host_path", {})
    if "epoch_ms_with_copies" in hp:
        log(f"  numpy in/out, P={hp['P']} epoch: {hp['epoch_ms_with_copies']:.1f} ms")
    if "epoch_ms" in results.get("cpu", {}):
        log(f"  CPU kernel, P=1 epoch: {results['cpu']['epoch_ms']:.1f} ms "
            f"({results['cpu']['net_steps_per_s'] / 1e3:.1f} k net-steps/s)")
