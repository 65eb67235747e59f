"""`--workers auto` / `--capture-procs auto`: the model's choices (pipeline/sizing.py) and
the flags end to end. The expectations follow from the model's formulas by hand
(docs/operations.md), not from running it."""
import subprocess
import sys

import pytest

from pipeline import sizing
from tests import runner


def test_two_cores_keep_todays_default():
    """On 2 cores the four processes share them: one front-end, two workers (`make bench`)."""
    assert sizing.choose(2) == (1, 2)
    assert sizing.choose(2, live=True) == (1, 2)


def test_the_reader_caps_offline_and_sixteen_cores_take_two_front_ends():
    # 1/(r+s) = 1e6/0.36 = 2.78M frames/s: the reader; N = 7 workers (7/1.95 >= 1.25 x 2.78)
    assert sizing.choose(16) == (2, 7)
    x, lim = sizing.throughput(2, 7, 16)
    assert lim == "reader" and x == pytest.approx(1e6 / 0.36)
    assert sizing.choose(32) == (2, 7)          # more cores buy nothing past the reader
    # 8 cores: 1 + 2 + N + 1 <= 8 leaves 4 workers, the limit (4/1.95us = 2.05M)
    assert sizing.choose(8) == (2, 4)
    assert sizing.throughput(2, 4, 8)[1] == "workers"


def test_live_has_no_reader_and_more_headroom():
    # K + N + 1 <= 16; the collector caps at 1/(4.0 x 0.0615) = 4.07M, 5 captures reach it
    assert sizing.choose(16, live=True) == (5, 10)
    assert sizing.throughput(5, 10, 16, live=True)[1] == "collector"


def test_a_given_count_stays():
    assert sizing.choose(16, N=4) == (2, 4)
    assert sizing.choose(2, N=8) == (1, 8)
    K, N = sizing.choose(16, K=1)
    assert K == 1 and N == 3                    # 1.02M frames/s needs 1.02 x 1.25 x 1.95 = 2.5 -> 3 workers
    assert sizing.choose(2, K=3) == (3, 1)      # the cores are already taken: the fewest workers


def test_cores_from_cpus_or_affinity():
    assert sizing.cores([3, 5, 7]) == 3
    assert sizing.cores() >= 1


def test_flags_auto_end_to_end(tmp_path):
    """--cpus 0-1 and auto: one front-end process and two workers; one core: one worker."""
    trace = tmp_path / "t.pcap"
    subprocess.run([sys.executable, "-m", "pipeline.tracegen", str(trace), "--sessions", "50"],
                   check=True, capture_output=True, cwd=runner.ROOT)
    p, _, st = runner.run([trace], tmp_path / "a", "--workers", "auto", "--capture-procs", "auto", "--cpus", "0-1")
    assert p.returncode == 0, p.stderr
    assert len(st["captures"]) == 1 and len(st["workers"]) == 2
    p, _, st = runner.run([trace], tmp_path / "b", "--workers", "auto", "--capture-procs", "auto", "--cpus", "0")
    assert p.returncode == 0, p.stderr
    assert len(st["captures"]) == 1 and len(st["workers"]) == 1


def test_capture_procs_over_sixteen_is_one_line(tmp_path):
    p = subprocess.run([*runner.pipeline_cmd(), "start", "--read", "x.pcap", "--capture-procs", "17"],
                       capture_output=True, text=True, cwd=runner.ROOT)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "16" in p.stderr
