"""Outputs in real runs of `pipeline start` (issue 25): a UDP receiver that is not there
never ends a run, a full disk leaves whole lines and still the statistics, receivers
that must be there are checked before any input is read, and --help names every kind."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from collector.outputs import FORMS, KINDS
from pipeline import tracegen
from tests import runner

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(runner.ROOT), os.environ.get("PYTHONPATH")])))
TIMEOUT = 120


def pipeline(*args, timeout=TIMEOUT):
    return subprocess.run(runner.pipeline_cmd() + list(args), capture_output=True, text=True, env=ENV,
                          cwd=runner.ROOT, timeout=timeout)


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """~1,500 sessions: their records are well over 256 KiB in every line format."""
    path = tmp_path_factory.mktemp("trace") / "t.pcap"
    frames, _ = tracegen.build(seed=25, sessions=1500)
    tracegen.write_pcap(str(path), frames)
    return path


def test_udp_outputs_without_a_receiver_go_on(trace, tmp_path):
    """Nothing listens on either port: every datagram draws "port unreachable". The run
    ends with 0, every record is in the file output, the refusals are counted, and each
    UDP output says so in two lines: when they start, and their count at the end."""
    syslog, ipfix = f"syslog:udp://127.0.0.1:{free_port()}", f"ipfix:udp://127.0.0.1:{free_port()}"
    out, st = tmp_path / "s.jsonl", tmp_path / "st.json"
    p = pipeline("start", "--read", str(trace), "--output", syslog, "--output", ipfix,
                 "--output", f"jsonl:{out}", "--stats-json", str(st), "--quiet")
    assert p.returncode == 0, p.stderr
    stats = json.loads(st.read_text())
    recs = runner.sessions(json.loads(x) for x in out.read_text().splitlines())
    assert len(recs) == stats["records"] and stats["outputs"][f"jsonl:{out}"] == len(recs)
    for spec in (syslog, ipfix):
        refused = stats["output_issues"][spec]["datagrams_refused"]
        assert refused > 0 and stats["outputs"][spec] < len(recs)
        lines = [x for x in p.stderr.splitlines() if f"output {spec}:" in x]
        assert len(lines) == 2, p.stderr
        assert "datagrams refused" in lines[0] and f"{refused} datagrams refused until the end" in lines[1]
    assert "Traceback" not in p.stderr


def _tmpfs(size: str):
    """A fresh tmpfs of `size` (needs root), or a reason why not."""
    if os.geteuid() != 0:
        return None, "mounting a tmpfs needs root"
    folder = Path(tempfile.mkdtemp(prefix="pipeline-tmpfs-"))
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        folder.rmdir()
        return None, f"cannot mount a tmpfs here: {p.stderr.strip()}"
    return folder, None


@pytest.fixture
def small_disk():
    # the trace's first batch of records fits in every format (~129 records: ~290 KB as ECS events),
    # all its records do not (CSV, the smallest: ~500 KB)
    folder, why = _tmpfs("384k")
    if folder is None:
        pytest.skip(why)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["jsonl", "ecs", "csv"])
def test_full_disk_leaves_whole_lines_and_the_statistics(trace, tmp_path, small_disk, kind):
    out, st = small_disk / f"s.{kind}", tmp_path / "st.json"       # statistics on another filesystem
    p = pipeline("start", "--read", str(trace), "--output", f"{kind}:{out}", "--stats-json", str(st), "--quiet")
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("\n") == 1 and "No space left on device" in p.stderr, p.stderr
    data = out.read_bytes()
    assert data and data.endswith(b"\n")                            # no half line for Filebeat to ship
    if kind == "csv":
        lines = data.decode().splitlines()
        assert all(line.count(",") == lines[0].count(",") for line in lines if '"' not in line)
    else:
        rows = [json.loads(x) for x in data.splitlines()]           # every line whole
    stats = json.loads(st.read_text())
    assert "No space left on device" in stats["error"]
    assert stats["frames_read"] > 0 and stats["records"] > 0
    written = stats["outputs"][f"{kind}:{out}"]
    assert written == (len(data.splitlines()) - 1 if kind == "csv" else len(rows))


def test_tcp_receivers_are_checked_before_any_input(trace, tmp_path):
    for spec in (f"syslog:tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}",
                 f"ipfix:tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}"):
        p = pipeline("start", "--read", str(trace), "--output", spec, "--stats-json", str(tmp_path / "st.json"))
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and spec in p.stderr and p.stdout == ""
        assert not (tmp_path / "st.json").exists()


def test_help_and_defaults_list_every_output_kind():
    """Every kind the registry knows, with its form; the kinds the issue found missing
    by name, so an empty registry cannot pass."""
    assert {"jsonl", "ecs", "csv", "ipfix", "syslog", "kafka"} <= set(KINDS)
    flat = lambda text: " ".join(text.split())                      # noqa: E731 - help wraps lines
    for args in (["start", "--help"], ["collector", "--help"], ["config", "--defaults"]):
        p = pipeline(*args)
        assert p.returncode == 0, p.stderr
        text = flat(p.stdout.replace("# ", " "))
        for kind in KINDS:
            assert flat(FORMS[kind]) in text, (args, kind)
