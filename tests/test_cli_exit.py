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
