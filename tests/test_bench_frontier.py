"""bench.frontier end to end on a tiny study: its table is what its numbers say."""

import json
import os
import subprocess
import sys

import numpy as np
from scipy.stats import mannwhitneyu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_frontier_medians_winners_and_p_values_follow_from_the_runs(tmp_path):
    png = tmp_path / "frontier.png"
    out = subprocess.run(
        [sys.executable, "-m", "bench.frontier", "--seeds", "2", "--epochs", "2",
         "--finetune-epochs", "1", "--densities", "0.5,0.1", "--workers", "1", "--json",
         "--plot", str(png), "--refit"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout[out.stdout.index("\n{") + 1:])
    ops = ("random", "variance", "conjunctive", "magnitude")
    assert set(d["rows"]) == {f"{op}@{x}" for op in ops for x in (0.5, 0.1)} | {"none@1"}
    assert d["refit"] is True
    for key, row in d["rows"].items():
        # at 0.5 and 0.1 the output layer keeps more than two inputs per unit: no refit
        assert row["refit_kept"] == 0
        assert len(row["values"]) == 2
        assert row["median"] == np.median(row["values"])
        if row["operator"] != "none":
            assert abs(row["preserved"] - row["density"]) < 1e-3, key
    for x in ("0.5", "0.1"):
        w = d["winners"][x]
        meds = {op: d["rows"][f"{op}@{float(x)}"]["median"] for op in ops}
        assert w["best"] == min(meds, key=meds.get) and w["median"] == meds[w["best"]]
        best = d["rows"][f"{w['best']}@{float(x)}"]["values"]
        for op, p in w["p"].items():
            other = d["rows"][f"{op}@{float(x)}"]["values"]
            assert np.isclose(p, mannwhitneyu(best, other, alternative="two-sided").pvalue)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
