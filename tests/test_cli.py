import json
import re

import pytest
from click.testing import CliRunner

from sparseae.cli.main import main

SMALL = ["--clusters", "3", "--dim", "40", "--per-cluster", "5", "--epochs", "2"]


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_train_json_summary():
    r = invoke("train", *SMALL, "--json", "--seed", "2")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    for key in ("test_l1", "train_l1", "parameters", "preserved", "epochs", "seconds", "us_per_step"):
        assert key in s
    assert s["epochs"] == 2 and s["preserved"] == 1.0
    assert s["parameters"] == 2 * (40 * 30 + 30 * 10) + 30 + 10 + 30 + 40
    assert 0.0 < s["test_l1"] < 1.0
    again = json.loads(invoke("train", *SMALL, "--json", "--seed", "2").output)
    assert again["test_l1"] == s["test_l1"]


def test_train_human_summary_is_quiet_without_tty():
    r = invoke("train", *SMALL, "--arch", "small")
    assert r.exit_code == 0, r.output
    assert "test_l1" in r.output and "us_per_step" in r.output
    # no progress bar off a terminal: plain progress lines (stderr) at the quarters only
    before = r.output.split("summary:")[0]
    assert "\r" not in before
    assert all(re.match(r"epoch \d+/2  elapsed \d+:\d\d:\d\d  eta ", line)
               for line in before.splitlines()), before


@pytest.mark.parametrize("args, flag", [
    (["--epochs", "0"], "--epochs"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "16"], "--batch-size"),  # larger than the 15-sample training split
    (["--noise", "1.5"], "--noise"),
    (["--arch", "foo"], "--arch"),
    (["--arch", "41,5"], "width"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_values_exit_2_naming_the_flag(args, flag):
    r = invoke("train", *SMALL, *args)
    assert r.exit_code == 2, r.output
    assert flag in r.output
    assert "Traceback" not in r.output


def test_version_and_help():
    assert invoke("--version").exit_code == 0
    r = invoke("train", "--help")
    assert r.exit_code == 0 and "--batch-size" in r.output


def test_warnings_become_lines_but_resource_warnings_stay_silent(capsys):
    import warnings

    from sparseae.cli.common import warnings_as_lines

    with warnings_as_lines():
        warnings.warn("unclosed file <_io.FileIO name=15 mode='rb'>", ResourceWarning)
        warnings.warn("data: the validation split is small\nsecond line", UserWarning)
    err = capsys.readouterr().err
    assert err == "Warning: data: the validation split is small second line\n", err  # one line
