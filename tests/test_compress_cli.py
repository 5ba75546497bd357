"""``sparseae compress``: the final phase on checkpoints of both paradigms and profiles."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from sparseae.cli.main import main

SMALL = ["--clusters", "3", "--dim", "40", "--per-cluster", "5", "--epochs", "3", "-q"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("compress")
    out = {}
    for name, args in (("canonical", ["--paradigm", "canonical"]),
                       ("lipi", ["--paradigm", "lipi", "--population", "3"]),
                       ("gecco25", ["--profile", "gecco25", "--paradigm", "lipi",
                                    "--population", "3", "--operator", "random"])):
        path = d / f"{name}.h5"
        r = invoke("train", *SMALL, *args, "--checkpoint", path)
        assert r.exit_code == 0, r.output
        out[name] = path
    return out


def error_lines(r):
    return [x for x in r.output.strip().splitlines() if x.startswith("Error:")]


@pytest.mark.parametrize("kind", ["canonical", "lipi", "gecco25"])
def test_compress_json_and_eval_reads_the_output(ckpts, kind, tmp_path):
    out = tmp_path / "small.h5"
    r = invoke("compress", ckpts[kind], "--density", "0.2", "--operator", "magnitude",
               "--finetune-epochs", "4", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    for key in ("test_l1_before", "test_l1", "preserved", "flops", "widths"):
        assert key in s
    assert s["preserved"] == pytest.approx(0.2, abs=1e-3)
    assert ("cell" in s) == (kind != "canonical")
    e = invoke("eval", out, "--json")
    assert e.exit_code == 0, e.output
    ev = json.loads(e.output)
    assert ev["test_l1"] == pytest.approx(s["test_l1"], rel=1e-6)
    assert ev["preserved"] == pytest.approx(s["preserved"])
    assert ev["flops"] == s["flops"] and ev["flops_compacted"] == s["flops_compacted"]
    assert s["flops"] < s["flops_dense"]
    with h5py.File(out) as f:  # pruned weights are exactly 0
        for half in ("encoder", "decoder"):
            p, m = f[half]["params"][()], f[half]["mask"][()]
            assert not p[m == 0].any()


def test_compress_is_deterministic_under_a_seed(ckpts, tmp_path):
    outs, jsons = [], []
    for k in range(2):
        out = tmp_path / f"o{k}.h5"
        r = invoke("compress", ckpts["lipi"], "--density", "0.3", "--operator", "random",
                   "--finetune-epochs", "3", "--seed", "7", "-o", out, "--json")
        assert r.exit_code == 0, r.output
        jsons.append({k: v for k, v in json.loads(r.output).items() if k != "output"})
        outs.append(out)
    assert jsons[0] == jsons[1]
    with h5py.File(outs[0]) as a, h5py.File(outs[1]) as b:
        for half in ("encoder", "decoder"):
            for key in ("params", "mask"):
                assert np.array_equal(a[half][key][()], b[half][key][()])
    other = invoke("compress", ckpts["lipi"], "--density", "0.3", "--operator", "random",
                   "--finetune-epochs", "3", "--seed", "8", "--json")
    assert json.loads(other.output)["test_l1"] != jsons[0]["test_l1"]


def test_compress_refit_reports_and_keeps_the_density(ckpts, tmp_path):
    out = tmp_path / "refit.h5"
    r = invoke("compress", ckpts["canonical"], "--density", "0.05", "--finetune-epochs", "2",
               "--refit", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert isinstance(s["refit"], bool) and s["validation_l1_before_refit"] > 0
    plain = json.loads(invoke("compress", ckpts["canonical"], "--density", "0.05",
                              "--finetune-epochs", "2", "--json").output)
    assert s["live"] == plain["live"] and s["test_l1_before"] == plain["test_l1_before"]
    ev = json.loads(invoke("eval", out, "--json").output)
    assert ev["test_l1"] == pytest.approx(s["test_l1"], rel=1e-6)
    human = invoke("compress", ckpts["canonical"], "--density", "0.05", "--finetune-epochs",
                   "2", "--refit")
    assert human.exit_code == 0 and "refit" in human.output


def test_compress_human_output(ckpts):
    r = invoke("compress", ckpts["canonical"], "--density", "0.5", "--finetune-epochs", "0")
    assert r.exit_code == 0, r.output
    for word in ("test L1", "density", "FLOPs", "compacted"):
        assert word in r.output


def test_compress_bad_inputs_exit_2_with_one_line(ckpts, tmp_path):
    existing = tmp_path / "exists.h5"
    existing.write_bytes(b"x")
    notck = tmp_path / "not.h5"
    notck.write_text("hello")
    cases = [
        ([tmp_path / "missing.h5", "--density", "0.3"], "not found"),
        ([tmp_path, "--density", "0.3"], None),
        ([notck, "--density", "0.3"], "checkpoint"),
        ([ckpts["canonical"], "--density", "0"], "--density"),
        ([ckpts["canonical"], "--density", "0.005"], "output biases"),
        ([ckpts["canonical"], "--density", "1.5"], "--density"),
        ([ckpts["canonical"]], "--density"),
        ([ckpts["canonical"], "--density", "0.3", "--operator", "none"], "--operator"),
        ([ckpts["canonical"], "--density", "0.3", "--finetune-epochs", "-1"],
         "--finetune-epochs"),
        ([ckpts["canonical"], "--density", "0.3", "-o", existing], "--overwrite"),
        ([ckpts["canonical"], "--density", "0.3", "--overwrite"], "--output"),
        ([ckpts["canonical"], "--density", "0.3", "-o", ckpts["canonical"], "--overwrite"],
         "input"),
    ]
    for args, needle in cases:
        r = invoke("compress", *args)
        assert r.exit_code == 2, (args, r.output)
        lines = error_lines(r)
        assert len(lines) == 1, (args, r.output)
        assert needle is None or needle in lines[0], (args, r.output)
        assert "Traceback" not in r.output
    assert existing.read_bytes() == b"x"


def test_compress_overwrite_replaces_the_output(ckpts, tmp_path):
    out = tmp_path / "o.h5"
    assert invoke("compress", ckpts["canonical"], "--density", "0.5", "--finetune-epochs", "1",
                  "-o", out).exit_code == 0
    r = invoke("compress", ckpts["canonical"], "--density", "0.25", "--finetune-epochs", "1",
               "-o", out, "--overwrite", "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(invoke("eval", out, "--json").output)
    assert ev["preserved"] == pytest.approx(0.25, abs=1e-3)


def test_train_flags_for_density_and_the_final_phase():
    r = invoke("train", *SMALL, "--paradigm", "canonical", "--operator", "magnitude",
               "--target-density", "0.3", "--regrow", "gradient", "--final-density", "0.1",
               "--finetune-epochs", "2", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["preserved"] == pytest.approx(0.3, abs=1e-3)
    assert s["final_preserved"] == pytest.approx(0.1, abs=1e-3)
    for args, needle in ((["--regrow", "random"], "--regrow"),
                         (["--target-density", "0.2", "--operator", "none",
                           "--paradigm", "canonical"], "--target-density"),
                         (["--density-start", "0.6", "--density-end", "0.5"], "--density-end"),
                         (["--final-density", "0"], "--final-density")):
        r = invoke("train", *SMALL, *args)
        assert r.exit_code == 2, (args, r.output)
        assert len(error_lines(r)) == 1 and needle in error_lines(r)[0], (args, r.output)


def test_compress_on_named_data_records_the_name(tmp_path):
    pytest.importorskip("sklearn")
    ck, out = tmp_path / "d.h5", tmp_path / "small.h5"
    r = invoke("train", "--paradigm", "canonical", "--data", "digits", "--arch", "small",
               "--epochs", "2", "-q", "--checkpoint", ck)
    assert r.exit_code == 0, r.output
    # other data of the same width: the output must name them, not the run's
    r = invoke("compress", ck, "--density", "0.5", "--finetune-epochs", "2", "--data",
               "digits-binary", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        config = json.loads(f.attrs["config"])
    assert config["data"] == "digits-binary"
    e = invoke("eval", out, "--json")  # finds its data by the name
    assert e.exit_code == 0, e.output
    assert json.loads(e.output)["test_l1"] == pytest.approx(json.loads(r.output)["test_l1"],
                                                            rel=1e-6)
