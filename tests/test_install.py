"""Install and documentation (issue 11): numba's kernel cache outside the package, bench/
runnable from any folder, and a README that says what is true."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import os, sparseae; from sparseae.kernels import cpu; "
         "print(cpu.train_epoch._cache._cache_path); print(os.path.dirname(cpu.__file__))")


def _run(code, env, cwd):
    env = {k: v for k, v in env.items() if k != "NUMBA_CACHE_DIR"} | {"PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.split("\n")


def test_kernel_cache_lives_outside_the_package(tmp_path):
    """pip uninstall leaves files it did not install; numba's cache next to the kernels
    kept a site-packages/sparseae folder alive that shadowed the next (editable) install."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    cache, package = _run(PROBE, env, tmp_path)[:2]
    assert cache.startswith(str(tmp_path / "xdg" / "sparseae" / "numba") + os.sep), cache
    assert not cache.startswith(package)
    # the user's choice wins
    code = f"import os; os.environ['NUMBA_CACHE_DIR'] = {str(tmp_path / 'mine')!r}; " + PROBE
    cache = _run(code, env, tmp_path)[0]
    assert cache.startswith(str(tmp_path / "mine") + os.sep), cache
    # numba imported before sparseae: its config is set instead of the environment
    cache = _run("import numba; " + PROBE, env, tmp_path)[0]
    assert cache.startswith(str(tmp_path / "xdg" / "sparseae" / "numba") + os.sep), cache


def test_bench_runs_from_any_folder_with_the_checkout_on_the_path(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench.paper", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0 and "usage" in p.stdout, p.stderr
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "PYTHONPATH=/path/to/sparseae python -m bench.paper" in readme


def test_readme_and_license():
    readme = open(os.path.join(ROOT, "README.md")).read()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```\n(.*?)\n```", setup, re.S)
    assert commands == ["python3 -m pip install . && sparseae train",
                        "python3 -m pip install -e '.[test]' && python3 -m pytest -q"]
    assert "ALGORITHM.md" not in readme
    assert "'sparseae[cuda]'" in readme
    assert "`small` (1000, 30, 2)" in readme and "`large` (1000, 60, 30, 10)" in readme
    assert "wall / sum" not in readme and "sum of run seconds / wall" in readme
    assert "bit-identical on the same machine" in readme
    license_text = open(os.path.join(ROOT, "LICENSE")).read()
    assert license_text.startswith("MIT License") and "2026 sparseae developers" in license_text
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "python3 -m pip install -e '.[test]'" in ci and "\npython3 -m pytest -q\n" in ci


def test_bench_paper_estimate_deals_runs_to_the_first_free_worker():
    import sys as _sys

    _sys.path.insert(0, ROOT)
    try:
        from bench.paper import estimate
    finally:
        _sys.path.remove(ROOT)
    runs = {"a": [{"seconds": 10.0, "cpu_seconds": 4.0}, {"seconds": 9.0, "cpu_seconds": 4.0}],
            "b": [{"seconds": 2.0}]}  # CPU seconds where recorded, else wall
    e = estimate(runs, trials=3, cores=2)
    assert e["rows"] == {"a": 4.0, "b": 2.0} and e["runs"] == 6
    # a b a b a b on 2 workers: w0 runs a (to 4), b (6), a (10); w1 runs b (2), a (6), b (8)
    assert e["cpu_seconds"] == 18.0 and e["wall_seconds"] == 10.0 and e["longest_run"] == 4.0


def test_kernel_cache_folder_follows_the_kernel_sources(tmp_path, monkeypatch):
    """numba checks a cached entry point against its own file only, so a changed helper
    (kernels/cpu_layers.py) must lead to another folder, or the old code keeps loading."""
    import shutil

    from sparseae import _cache

    tree = tmp_path / "tree"
    shutil.copytree(os.path.join(ROOT, "kernels"), tree / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "sparseae").mkdir()
    for name in ("_cache.py", "_options.py"):
        shutil.copy(os.path.join(ROOT, "sparseae", name), tree / "sparseae" / name)
    probe = ("import importlib.util as u, sys; s = u.spec_from_file_location('c', sys.argv[1]); "
             "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.kernels_tag())")

    def tag():
        p = subprocess.run([sys.executable, "-c", probe, str(tree / "sparseae" / "_cache.py")],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    first = tag()
    assert re.fullmatch(r"k[0-9a-f]{12}", first) and first == tag()
    assert first == _cache.kernels_tag()  # the copy is the checkout's code
    layers = tree / "kernels" / "cpu_layers.py"
    layers.write_text(layers.read_text() + "\n# edited\n")
    second = tag()
    assert second != first
    (tree / "sparseae" / "_options.py").write_text(
        (tree / "sparseae" / "_options.py").read_text() + "\n")
    assert tag() not in (first, second)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.cache_dir() == str(tmp_path / "xdg" / "sparseae" / "numba" / first)
