"""`pipeline.cli.run`, the console entry point: it ends the process without the
interpreter's teardown (atexit handlers, freeing every object), yet keeps main's
exit code and everything main printed."""
import subprocess
import sys

import pytest

from tests.runner import ROOT

SCRIPT = """
import atexit, sys
atexit.register(lambda: print("teardown ran", file=sys.stderr))
import pipeline.cli as cli
cli.main = lambda: (print("from main", end=""), {rc})[1]
cli.run()
"""


@pytest.mark.parametrize("rc", [0, 3, None])
def test_run_keeps_output_and_exit_code_and_skips_teardown(rc):
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(rc=rc)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert p.returncode == (rc or 0)
    assert p.stdout == "from main"        # still in the buffer (a pipe, no newline) when run() ends
    assert "teardown ran" not in p.stderr


BROKEN = """
import sys
sys.modules[{module!r}] = None          # importing it now fails, as with a broken install
sys.argv = ["pipeline", "start", "--workers", "2", "--read", {trace!r}, "--output", "jsonl:" + {out!r}]
from pipeline.cli import run
run()
"""


@pytest.mark.parametrize("module,who", [("workers.process", "worker"), ("collector.process", "collector")])
def test_a_child_that_cannot_import_ends_the_run_in_one_line(tmp_path, module, who):
    """Workers and the collector import their modules after the fork. One that cannot
    says so in one line and the run ends (status 1); a worker is not restarted over
    and over."""
    from pipeline import tracegen
    frames, _ = tracegen.build(seed=2, sessions=20)
    trace = tmp_path / "t.pcap"
    tracegen.write_pcap(str(trace), frames)
    p = subprocess.run([sys.executable, "-c", BROKEN.format(module=module, trace=str(trace),
                                                             out=str(tmp_path / "o.jsonl"))],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 1
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert errors and all(line.startswith("pipeline: error: ") for line in errors)
    assert f"{who}" in errors[0] and "cannot start" in errors[0]
    assert "Traceback" not in p.stderr and "restarting" not in p.stderr
