"""Live capture end to end: a trace replayed with tcpreplay onto a veth pair (in a
network namespace of the test's own), captured by `pipeline start --interface`,
stopped with SIGINT, gives the sessions of an offline run of the same trace.

Needs root (CI is root), iproute2 and tcpreplay; skips with the reason otherwise.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import psutil
import pytest

from tests import runner
from tests.test_live import ROOT, netns, sh  # noqa: F401 (netns is a fixture)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CAP_NET_RAW)")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("live_e2e")
    pcap = out / "t.pcap"
    subprocess.run([sys.executable, "-m", "pipeline.tracegen", str(pcap), "--sessions", "150", "--seed", "11",
                    "--truth", str(out / "truth.json")], cwd=ROOT, check=True, capture_output=True, timeout=60)
    p, recs, stats = runner.run([pcap], out / "offline", workers=2)
    assert p.returncode == 0, p.stderr
    return pcap, recs, stats


def per_tuple(recs, what=("packets", "bytes")):
    """Packets and bytes per 5-tuple over final records: independent of how sessions were cut
    by time (a replay at 30k frames/s has no idle gaps that the trace's own times have)."""
    c = Counter()
    for r in runner.finals(recs):
        k = (r["transport"], r["client_ip"], r["client_port"], r["server_ip"], r["server_port"], str(r["vlan"]))
        k = min(k, (k[0], k[3], k[4], k[1], k[2], k[5]))
        if "packets" in what:
            c[k + ("packets",)] += r["packet_count"]
        if "bytes" in what:
            c[k + ("bytes",)] += r["byte_count"]
    return c


def live_run(ns, tmp, pcap, *extra):
    out, st = tmp / "live.jsonl", tmp / "live.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = ["ip", "netns", "exec", ns, *runner.pipeline_cmd(), "start", "--interface", "vB", "--workers", "2",
           "--output", f"jsonl:{out}", "--stats-json", str(st), "--status-socket", str(tmp / "status.sock"), *extra]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "capturing on vB" in line, line + p.stderr.read() if p.poll() is not None else line
        r = sh("tcpreplay", "-i", "vA", "--pps", "30000", str(pcap), ns=ns, timeout=120)
        sent = int(r.stdout.split("Successful packets:")[1].split()[0])
        time.sleep(1.0)                      # the last block retires (100 ms) and reaches the workers
        p.send_signal(signal.SIGINT)
        err = p.stderr.read()
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 0, err
    assert "Traceback" not in err
    recs = runner.sessions([json.loads(x) for x in out.read_text().splitlines()])
    return sent, recs, json.loads(st.read_text())


def test_live_capture_equals_offline_run(netns, trace, tmp_path):
    if shutil.which("tcpreplay") is None:
        pytest.skip("tcpreplay not installed (Debian tcpreplay)")
    pcap, off_recs, off_stats = trace
    sent, recs, stats = live_run(netns, tmp_path, pcap)
    assert stats["frames_read"] == sent == off_stats["frames_read"]
    assert stats["frames_dropped"] == 0
    assert stats["interrupted"] is True
    runner.check_identities(stats, recs)
    assert per_tuple(recs) == per_tuple(off_recs)
    assert all(r["end_reason"] in ("shutdown", "closed", "idle") for r in runner.finals(recs))


def test_two_capture_processes_share_the_load(netns, trace, tmp_path):
    if shutil.which("tcpreplay") is None:
        pytest.skip("tcpreplay not installed (Debian tcpreplay)")
    pcap, off_recs, off_stats = trace
    sent, recs, stats = live_run(netns, tmp_path, pcap, "--capture-procs", "2")
    # PACKET_FANOUT's defrag mode hands a fragmented datagram over as one frame,
    # so frames may be fewer than sent, and the bytes of its fragments' extra headers are
    # not seen; datagrams (packet_count) are the same.
    assert stats["frames_dropped"] == 0 and stats["frames_read"] <= sent
    runner.check_identities(stats, recs)
    assert per_tuple(recs, ("packets",)) == per_tuple(off_recs, ("packets",))
    procs = {r["session_id"] >> 4 & 0xF for r in runner.finals(recs)}
    assert procs == {0, 1}, procs     # both capture processes opened sessions


def test_duration_stops_an_idle_capture(netns, tmp_path):
    """... and under systemd (a datagram socket standing in for it) says READY=1 once capturing."""
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify"))
    t0 = time.monotonic()
    p = subprocess.run(["ip", "netns", "exec", netns, *runner.pipeline_cmd(), "start", "--interface", "vB",
                        "--duration", "2", "--output", f"jsonl:{tmp_path / 'o.jsonl'}",
                        "--status-socket", str(tmp_path / "status.sock"),
                        "--stats-json", str(tmp_path / "s.json")],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=str(tmp_path / "notify")),
                       capture_output=True, text=True, timeout=60)
    systemd.setblocking(False)
    said = []
    while True:
        try:
            said.append(systemd.recv(4096).decode())
        except BlockingIOError:
            break
    systemd.close()
    assert said == ["READY=1\nSTATUS=capturing, 2 workers"], said
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 >= 2
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["frames_read"] == st["frames_dropped"] + st["frames_ip"] + st["frames_non_ip"] \
        + st["frames_malformed"] + st["frames_unassembled"]


def test_a_closed_stderr_does_not_stop_the_orderly_stop(netns, tmp_path):
    """stderr gone (the reading end closed: a restarted journal, a dead pipe) when the stop
    signal comes: the stop's log line is lost, the run still ends in order (exit 0, the
    statistics written) instead of waiting for ever."""
    cmd = ["ip", "netns", "exec", netns, *runner.pipeline_cmd(), "start", "--interface", "vB",
           "--output", f"jsonl:{tmp_path / 'o.jsonl'}", "--status-socket", str(tmp_path / "status.sock"),
           "--stats-json", str(tmp_path / "s.json")]
    p = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE, text=True)
    try:
        assert "capturing on vB" in p.stderr.readline()
        p.stderr.close()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            for child in psutil.Process(p.pid).children(recursive=True):
                child.kill()
            p.kill()
            p.wait()
    assert rc == 0
    assert json.loads((tmp_path / "s.json").read_text())["interrupted"] is True


def test_capture_needs_cap_net_raw(unprivileged):
    p = subprocess.run(unprivileged.as_nobody(*unprivileged.pipeline(), "start", "--interface", "lo", "--output",
                                              "jsonl:-"),
                       cwd="/", env=unprivileged.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAP_NET_RAW" in lines[0], p.stderr


def test_bad_filter_is_one_line(tmp_path):
    p = subprocess.run([*runner.pipeline_cmd(), "start", "--interface", "lo", "--filter", "udp and and"],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--filter" in p.stderr
