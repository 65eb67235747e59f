"""`make install` writes the bytecode of every installed package ahead of runs.

Where Python may not write bytecode as it imports (PYTHONDONTWRITEBYTECODE, a
__pycache__ the --user of a run cannot write), each process of a run compiles
every module it imports whose bytecode is missing or stale, at every start: the
supervisor and each worker again. A package left out of the Makefile's list is
such a module set; the list must follow pyproject.toml's.
"""
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _installed_packages() -> set:
    """The top-level packages pyproject.toml installs (its find patterns, "name*")."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = cfg["tool"]["setuptools"]["packages"]["find"]["include"]
    return {p.rstrip("*").rstrip(".") for p in include}


def test_make_install_compiles_every_installed_package():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "-B", "install"], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = [shlex.split(line) for line in dry.stdout.splitlines() if "compileall" in line]
    assert len(lines) == 1, dry.stdout
    words = lines[0]
    compiled = set(words[words.index("compileall") + 1:]) - {"-q"}
    expected = _installed_packages()
    assert expected <= {p.name for p in ROOT.iterdir() if p.is_dir()}   # the patterns name real packages
    assert compiled == expected
