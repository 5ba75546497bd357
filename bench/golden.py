"""Fingerprints of a few short runs of each paradigm and profile: did a change
alter any result?

Run from the repository root::

    python -m bench.golden --write before.json     # on the commit before a change
    python -m bench.golden --check before.json     # after it: exit 1 on any difference

A fingerprint is the SHA-256 of the final parameters, masks and Adam moments
(subnormal moments read as 0: they are flushed since ``kernels/fpenv.py``) and
of the run's history.  Results are bit-identical for the same code on the same
machine; float32 rounding follows the CPU's vector width (LLVM's target), so
compare fingerprints made on one machine (``llvm_cpu`` is recorded).
"""

import argparse
import hashlib
import json
import sys

import numpy as np

CASES = {
    "canonical none": dict(paradigm="canonical", epochs=12, seed=3),
    "canonical conjunctive-exponential": dict(paradigm="canonical", epochs=12, seed=3,
                                              operator="conjunctive", schedule="exponential"),
    "canonical variance-fixed": dict(paradigm="canonical", epochs=12, seed=3,
                                     operator="variance", schedule="fixed"),
    "lipi random (default)": dict(paradigm="lipi", epochs=4, seed=2, population=4),
    "gecco25 lipi random": dict(profile="gecco25", paradigm="lipi", epochs=3, seed=1,
                                population=4, operator="random"),
    "gecco25 canonical conjunctive": dict(profile="gecco25", paradigm="canonical", epochs=8,
                                          seed=1, operator="conjunctive"),
}


def fingerprint(run) -> str:
    tiny = np.finfo(np.float32).tiny
    h = hashlib.sha256()
    halves = ([run.model.encoder, run.model.decoder] if run.config.paradigm == "canonical"
              else [run.encoders, run.decoders])
    for a in halves:
        for arr in (a.params, a.mask):
            h.update(np.ascontiguousarray(arr).tobytes())
        for arr in (a.m, a.v):
            h.update(np.where(np.abs(arr) < tiny, 0, arr).astype(np.float32).tobytes())
    for key in sorted(run.history):
        h.update(key.encode())
        h.update(np.asarray(run.history[key], np.float64).tobytes())
    return h.hexdigest()


def compute() -> dict:
    from llvmlite import binding

    from sparseae import CanonicalRun, LipiRun, TrainConfig

    out = {"llvm_cpu": binding.get_host_cpu_name(), "runs": {}}
    for name, fields in CASES.items():
        fields = dict(fields)
        profile = fields.pop("profile", "default")
        config = TrainConfig.from_profile(profile, **fields)
        run = (CanonicalRun if config.paradigm == "canonical" else LipiRun)(config)
        run.run()
        out["runs"][name] = fingerprint(run)
        print(f"{out['runs'][name][:16]}  {name}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.golden", description=__doc__.split("\n")[0])
    ap.add_argument("--write", metavar="FILE", help="write the fingerprints to FILE")
    ap.add_argument("--check", metavar="FILE", help="compare with the fingerprints in FILE")
    args = ap.parse_args(argv)
    got = compute()
    if args.write:
        with open(args.write, "w") as f:
            json.dump(got, f, indent=1)
    if args.check:
        with open(args.check) as f:
            want = json.load(f)
        if want.get("llvm_cpu") != got["llvm_cpu"]:
            print(f"note: {args.check} was made for {want.get('llvm_cpu')}, this machine is "
                  f"{got['llvm_cpu']}: rounding may differ")
        bad = [k for k in got["runs"] if want["runs"].get(k) != got["runs"][k]]
        print("identical" if not bad else "DIFFERENT: " + ", ".join(bad))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
