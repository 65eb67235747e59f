"""The real `pipeline` command on damaged captures and on traces with mutated frames.

Why: issue 6 asks for proof that bad input never ends in a traceback or a hang:
a file that cannot be read is refused with exit 2 and one line naming it; damage
inside a file is reported with its offset, counted, and the run exits 0; and in a
trace whose frames are mutated (record framing intact) every frame is accounted
for. The cases come from tests/damage.py (seeded, from real traces); frame counts
are taken independently with dpkt.
"""
import io
import re
import subprocess

import dpkt
import pytest

from tests import damage, runner

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 60      # seconds; a run that takes longer is a hang

DAMAGED = damage.damaged_captures()
MUTATED = damage.mutated_traces()


def _cli(path, tmp):
    try:
        return runner.run([path], tmp, "--quiet", workers=1, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name}: no exit within {RUN_TIMEOUT} s (hang)")


def _file(tmp_path, name, data):
    path = tmp_path / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    path.write_bytes(data)
    return path


def test_enough_cases():
    """The issue's floor holds even without ../shared."""
    base = [c for c in DAMAGED if not c.name.startswith(("zeek_", "nfstream_"))]
    assert len(base) >= 60 and len(DAMAGED) >= 60
    assert len([m for m in MUTATED if m.name.startswith("tracegen")]) >= 20
    assert all(m.mutated for m in MUTATED)


@pytest.mark.parametrize("case", DAMAGED, ids=[c.name for c in DAMAGED])
def test_damaged_capture(case, tmp_path):
    path = _file(tmp_path, case.name + ".cap", case.data)
    p, recs, stats = _cli(path, tmp_path / "o")
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == (2 if case.fatal else 0), p.stderr
    lines = p.stderr.strip().splitlines()
    if case.fatal:
        assert len(lines) == 1 and str(path) in lines[0], p.stderr
        return
    warnings = [line for line in lines if "warning:" in line]
    assert all(str(path) in w for w in warnings), warnings
    if case.damaged:
        assert any(re.search(r"offset \d+", w) for w in warnings), p.stderr
        assert stats["capture_damage"] >= 1
    runner.check_identities(stats, recs)


def _dpkt_count(data: bytes) -> int:
    """Frames in a sound capture, as dpkt counts them."""
    return sum(1 for _ in dpkt.pcap.UniversalReader(io.BytesIO(data)))


@pytest.mark.parametrize("trace", MUTATED, ids=[m.name for m in MUTATED])
def test_mutated_trace(trace, tmp_path):
    path = _file(tmp_path, trace.name + ".cap", trace.data)
    expected = _dpkt_count(trace.data)
    assert expected == trace.frames
    p, recs, stats = _cli(path, tmp_path / "o")
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 0, p.stderr
    assert "warning:" not in p.stderr, p.stderr     # the records are sound: no capture damage
    assert stats["frames_read"] == expected, stats
    assert stats["capture_damage"] == 0
    runner.check_identities(stats, recs)
