"""Operating a running instance (issue 7): /metrics, `pipeline status`, the progress bar.

A run is made long on purpose (a larger trace cut into tiny chunks) so that it can be
observed while it runs; nothing here asserts a duration.
"""
import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests import runner
from tests.runner import ROOT

ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("operate")
    subprocess.run([sys.executable, "-m", "pipeline.tracegen", str(d / "t.pcap"), "--sessions", "4000",
                    "--truth", str(d / "truth.json")], cwd=ROOT, check=True, capture_output=True, timeout=120)
    return d / "t.pcap"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def slow_run(trace, tmp, *extra, **kw):
    return subprocess.Popen([*runner.pipeline_cmd(), "start", "--read", str(trace), "--workers", "2",
                             "--chunk-frames", "8", "--output", f"jsonl:{tmp / 'o.jsonl'}", *extra],
                            cwd=ROOT, env=ENV, **kw)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    frames = {}
    for m in re.finditer(r'^pipeline_worker_frames_total\{worker="(\d+)"\} ([0-9.e+]+)$', text, re.M):
        frames[m.group(1)] = float(m.group(2))
    return text, frames


def test_metrics_answer_repeatedly_and_grow(big_trace, tmp_path):
    port = free_port()
    p = slow_run(big_trace, tmp_path, "--metrics-port", str(port), stderr=subprocess.PIPE)
    seen = []
    try:
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            try:
                text, frames = scrape(port)
            except OSError:
                time.sleep(0.1)
                continue
            seen.append(frames)
            time.sleep(0.3)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    assert p.returncode == 0
    assert "pipeline_process_resident_bytes" in text and 'process="worker 0"' in text
    assert re.search(r'^pipeline_process_anonymous_bytes\{process="worker 0"\} [0-9.e+]+$', text, re.M)
    assert "pipeline_worker_sessions_open" in text and "pipeline_worker_queue" in text
    answered = [f for f in seen if f]
    assert len(answered) >= 3, seen
    assert set(answered[-1]) == {"0", "1"}          # a label per worker
    totals = [sum(f.values()) for f in answered]
    assert totals == sorted(totals) and totals[-1] > totals[0], totals   # counters grow, never shrink


def test_status_prints_live_figures(big_trace, tmp_path):
    sock = tmp_path / "status.sock"
    p = slow_run(big_trace, tmp_path, "--status-socket", str(sock), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # the table first, then two snapshots a second apart: every query lands early in the
        # run, well before it ends on a loaded two-core CI machine
        time.sleep(0.5)
        table = subprocess.run([*runner.pipeline_cmd(), "status", "--socket", str(sock)],
                               cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=30)
        snaps = []
        for _ in range(2):
            r = subprocess.run([*runner.pipeline_cmd(), "status", "--socket", str(sock), "--json"],
                               cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            snaps.append(json.loads(r.stdout))
            time.sleep(1.0)
    finally:
        p.wait(timeout=120)
    assert p.returncode == 0
    a, b = snaps
    assert [w["worker"] for w in b["workers"]] == [0, 1]
    assert sum(w["frames"] for w in b["workers"]) > sum(w["frames"] for w in a["workers"])
    assert b["frontend"]["frames_read"] > a["frontend"]["frames_read"] > 0
    assert b["processes"]["worker 0"]["rss_bytes"] > 0
    assert table.returncode == 0 and "frames/s" in table.stdout and len(table.stdout.splitlines()) >= 4
    gone = subprocess.run([*runner.pipeline_cmd(), "status", "--socket", str(sock)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1   # nobody answers any more


def proc_status(pid) -> dict:
    """/proc/PID/status's memory lines in bytes: the kernel's own split of RSS."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    return out


def test_memory_is_reported_as_anonymous_and_resident(big_trace, tmp_path):
    """Status reports each process's anonymous memory (what to alert on) beside its RSS, which
    counts the mapped capture file and the libraries too. The kernel's RssAnon, read before and
    after each snapshot, is the independent figure."""
    sock = tmp_path / "status.sock"
    p = slow_run(big_trace, tmp_path, "--status-socket", str(sock), stderr=subprocess.PIPE)
    slack = 8 << 20          # what a process may allocate or free between two reads
    told_apart = 0
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        first = json.loads(subprocess.run([*runner.pipeline_cmd(), "status", "--socket", str(sock), "--json"],
                                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=30).stdout)
        pids = {name: q["pid"] for name, q in first["processes"].items()}
        before = {name: proc_status(pid) for name, pid in pids.items()}
        from contracts.monitor import query_status
        snap = query_status(str(sock))
        after = {name: proc_status(pid) for name, pid in pids.items()}
        table = subprocess.run([*runner.pipeline_cmd(), "status", "--socket", str(sock)], cwd=ROOT, env=ENV,
                               capture_output=True, text=True, timeout=30).stdout
    finally:
        p.wait(timeout=120)
    assert p.returncode == 0
    assert {"frontend", "collector", "worker 0", "worker 1"} <= set(pids)
    for name in pids:
        got, lo, hi = snap["processes"][name], before[name], after[name]
        anon = sorted((lo["RssAnon"], hi["RssAnon"]))
        assert anon[0] - slack <= got["anon_bytes"] <= anon[1] + slack, (name, got, lo, hi)
        assert min(lo["VmRSS"], hi["VmRSS"]) - slack <= got["rss_bytes"] <= max(lo["VmRSS"], hi["VmRSS"]) + slack
        if min(lo["RssFile"], hi["RssFile"]) > 2 * slack:
            # file pages (libraries, the mapped trace) beyond the slack: RSS reported as
            # anonymous would fail the check above, and the two figures differ
            assert got["rss_bytes"] - got["anon_bytes"] > slack
            told_apart += 1
    # the front-end at least (it maps the trace); the workers let go of the trace's pages
    # after each batch (workers.process.release), so theirs may be the libraries' alone
    assert told_apart >= 1, before
    assert "anon MB" in table and "rss" in table


def _read_all(fd, proc):
    out = b""
    while True:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    return out


def test_progress_bar_only_on_a_terminal(big_trace, tmp_path):
    master, slave = pty.openpty()
    p = slow_run(big_trace, tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    tty_err = _read_all(master, p).decode(errors="replace")
    p.wait(timeout=120)
    os.close(master)
    assert p.returncode == 0
    assert re.search(r"\[#* *\] +\d+\.\d% .* frames/s .* open sessions +ETA \d+:\d\d", tty_err), tty_err[-500:]
    q = slow_run(big_trace, tmp_path, stderr=subprocess.PIPE)
    _, err = q.communicate(timeout=120)
    assert q.returncode == 0
    assert b"ETA" not in err and b"\r" not in err     # not a terminal: the summary line only
    quiet_master, quiet_slave = pty.openpty()
    r = slow_run(big_trace, tmp_path, "--quiet", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=quiet_slave)
    os.close(quiet_slave)
    quiet_err = _read_all(quiet_master, r)
    r.wait(timeout=120)
    os.close(quiet_master)
    assert r.returncode == 0 and b"ETA" not in quiet_err


def test_cpus_pin_workers(big_trace, tmp_path):
    """--cpus: each worker runs on the CPU the stats say, read back inside the worker by a plugin."""
    import psutil
    cpus = sorted(psutil.Process().cpu_affinity())
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    plugin = tmp_path / "affinityplugin.py"
    plugin.write_text("import os\nclass Affinity:\n    def on_expire(self, s):\n"
                      "        s.extra = {'cpus_allowed': sorted(os.sched_getaffinity(0))}\n")
    env = dict(ENV, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    spec = f"{cpus[0]},{cpus[1]}"
    p = subprocess.run([*runner.pipeline_cmd(), "start", "--read", str(big_trace), "--workers", "2", "--cpus", spec,
                        "--plugin", "affinityplugin:Affinity", "--output", f"jsonl:{tmp_path / 'o.jsonl'}",
                        "--stats-json", str(tmp_path / "s.json"), "--quiet"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    st = json.loads((tmp_path / "s.json").read_text())
    # capture process first, then the workers, then the collector, round robin over the list
    assert st["cpus"] == {"capture 0": cpus[0], "worker 0": cpus[1], "worker 1": cpus[0], "collector": cpus[1]}
    recs = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    seen = {(r["worker"], tuple(r["cpus_allowed"])) for r in runner.finals(recs)}
    assert seen == {(0, (cpus[1],)), (1, (cpus[0],))}


def test_workers_auto_and_bad_cpus(big_trace, tmp_path):
    bad = subprocess.run([*runner.pipeline_cmd(), "start", "--read", str(big_trace), "--cpus", "100000"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--cpus" in bad.stderr
    p = subprocess.run([*runner.pipeline_cmd(), "start", "--read", str(big_trace), "--workers", "auto",
                        "--output", f"jsonl:{tmp_path / 'o.jsonl'}", "--stats-json", str(tmp_path / "s.json"),
                        "--quiet"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert 1 <= len(json.loads((tmp_path / "s.json").read_text())["workers"]) <= os.cpu_count()


def test_worker_killed_mid_run_is_restarted_and_counted(big_trace, tmp_path):
    """SIGKILL one worker while the run goes on: exit 0, a restart, and what was lost in the stats."""
    st_path = tmp_path / "s.json"
    p = slow_run(big_trace, tmp_path, "--stats-json", str(st_path), stderr=subprocess.PIPE)
    st = runner.kill_a_worker(p, tmp_path)
    assert st["sessions_lost"] >= 1 and st["frames_lost"] >= 1


def test_metrics_port_taken_or_bad_is_one_line(big_trace, tmp_path):
    bad = subprocess.run([*runner.pipeline_cmd(), "start", "--read", str(big_trace), "--metrics-port", "99999"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        taken = subprocess.run([*runner.pipeline_cmd(), "start", "--read", str(big_trace), "--metrics-port",
                                str(holder.getsockname()[1]), "--output", f"jsonl:{tmp_path / 'o.jsonl'}"],
                               cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert taken.returncode == 1 and "Traceback" not in taken.stderr
    assert taken.stderr.strip().splitlines() == [taken.stderr.strip().splitlines()[0]] and "in use" in taken.stderr


@pytest.fixture
def open_folder():
    """A folder anyone may write in (pytest's tmp is root-only): outputs made as --user."""
    import shutil
    import tempfile
    from pathlib import Path
    out = Path(tempfile.mkdtemp(prefix="pipeline-user-", dir="/tmp"))
    out.chmod(0o777)
    yield out
    shutil.rmtree(out, ignore_errors=True)


def user_run(unprivileged, trace, out, env):
    return subprocess.run([*unprivileged.pipeline(), "start", "--read", str(trace), "--user", "nobody",
                           "--output", f"jsonl:{out / 'o.jsonl'}", "--quiet"],
                          cwd=unprivileged.folder, env=env, capture_output=True, text=True, timeout=120)


def test_user_drops_every_process(big_trace, open_folder, unprivileged):
    """--user: the children run as that user and still reach the supervisor's sockets;
    the outputs they create belong to it. Run from a copy nobody can read (conftest.py)."""
    import pwd
    p = user_run(unprivileged, big_trace, open_folder, unprivileged.env)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert (open_folder / "o.jsonl").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert len((open_folder / "o.jsonl").read_text().splitlines()) > 1000


def test_user_who_cannot_read_the_code_is_refused_at_start(big_trace, open_folder, unprivileged):
    """The code in a folder --user cannot enter (a root's 0700 home): one line at start, naming
    what it cannot read, instead of processes that fail at their next import."""
    import shutil
    import tempfile
    from pathlib import Path
    private = Path(tempfile.mkdtemp(prefix="pipeline-private-", dir="/tmp"))       # 0700, root's
    try:
        shutil.copytree(unprivileged.code / "workers", private / "workers")
        env = dict(unprivileged.env, PYTHONPATH=os.pathsep.join([str(private), unprivileged.env["PYTHONPATH"]]))
        p = user_run(unprivileged, big_trace, open_folder, env)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"pipeline: error: --user nobody cannot read {private}/workers/"), lines[0]
    assert not (open_folder / "o.jsonl").exists()


def one_packet_trace(path):
    """A pcap of one UDP datagram: one frame, one session, one record."""
    import dpkt
    udp = dpkt.udp.UDP(sport=5353, dport=53, data=b"x" * 8)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=17, data=udp)
    ip.len = len(ip)
    frame = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip)
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh)
        w.writepkt(bytes(frame), ts=1.0)
    return path


def test_summary_lines_count_in_the_singular(tmp_path):
    trace = one_packet_trace(tmp_path / "one.pcap")
    p = subprocess.run([*runner.pipeline_cmd(), "start", "--read", str(trace), "--workers", "1",
                        "--output", f"jsonl:{tmp_path / 'o.jsonl'}", "--stats-json", str(tmp_path / "s.json")],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    st = json.loads((tmp_path / "s.json").read_text())
    assert (st["frames_read"], st["sessions"], st["records"]) == (1, 1, 1)      # the trace is what it says
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("pipeline: 1 frame (1 ip,") and "-> 1 session, 1 record in" in line, line
    assert line.endswith(", 1 worker)"), line
    assert not re.search(r"\b1 (frames|sessions|records|workers)\b", line), line
