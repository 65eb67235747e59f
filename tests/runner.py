"""Run the real `pipeline` command (real processes, real ZeroMQ sockets) and read what it wrote."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pipeline_cmd():
    exe = Path(sys.executable).parent / "pipeline"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]


def run(reads, tmp, *extra, workers=2, timeout=300, expect_output=True):
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    out, st = tmp / "s.jsonl", tmp / "st.json"
    for p in (out, st):
        if p.exists():
            p.unlink()
    cmd = pipeline_cmd() + ["start", "--workers", str(workers), "--output", f"jsonl:{out}",
                            "--stats-json", str(st)]
    for r in reads:
        cmd += ["--read", str(r)]
    cmd += list(extra)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    stats = json.loads(st.read_text()) if st.exists() else None
    return p, sessions(lines), stats


# real captures whose sessions carry the application fields (HTTP, TLS SNI, DNS query)
APP_CAPTURES = ("aimini-http.pcap", "googledns_android10.pcap", "dns_long_domainname.pcap")


def app_records(tmp):
    """The session records of a real run over APP_CAPTURES (in ../shared); the test is
    skipped where they are absent."""
    import pytest
    from tests.shared import PCAPS
    reads = [PCAPS / "nfstream" / n for n in APP_CAPTURES]
    if not all(p.is_file() for p in reads):
        pytest.skip(f"../shared/pcaps/nfstream/{{{','.join(APP_CAPTURES)}}} absent")
    recs = []
    for i, r in enumerate(reads):
        p, got, _ = run([r], Path(tmp) / f"app{i}")
        assert p.returncode == 0, p.stderr
        recs += got
    return recs


def child_titled(pid: int, title: str, wait: float = 60.0):
    """The child process of `pid` whose title is `title` (psutil.Process), once it is up; None
    if it never shows within `wait` seconds."""
    import time

    import psutil
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for c in psutil.Process(pid).children():
            try:
                if c.cmdline() and c.cmdline()[0] == title:
                    return c
            except psutil.Error:
                pass
        time.sleep(0.1)
    return None


def kill_a_worker(p, out_dir):
    """SIGKILL worker 1 of run `p` (started with stderr=PIPE, --output jsonl:OUT/o.jsonl,
    --stats-json OUT/s.json) once it has sessions open: the run must restart it, end with
    exit 0 and lose nothing silently (every frame in a final record or counted lost).
    Returns the run's statistics."""
    import time
    victim = child_titled(p.pid, "pipeline: worker 1")
    assert victim is not None
    time.sleep(1.5)                        # it has sessions open by now
    victim.kill()
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert b"worker 1 died (signal 9)" in err and b"Traceback" not in err
    st = json.loads((Path(out_dir) / "s.json").read_text())
    assert st["worker_restarts"] == 1
    recs = sessions([json.loads(x) for x in (Path(out_dir) / "o.jsonl").read_text().splitlines()])
    top = sum(r["cap_packet_count"] for r in finals(recs) if r["parent_session_id"] is None)
    assert top + st["frames_lost"] == st["frames_ip"]
    assert st["frames_read"] == sum(st[k] for k in ("frames_ip", "frames_non_ip", "frames_malformed",
                                                    "frames_unassembled", "frames_dropped"))
    return st


def as_wire(d):
    """A JSON-lines record back as the wire list the collector's outputs take: the declared
    fields in order, then the extension fields (classification metadata, plugins) as a dict."""
    from contracts.record import INDEX, NAMES
    extra = {k: v for k, v in d.items() if k not in INDEX}
    return [d.get(n) for n in NAMES] + ([extra] if extra else [])


def sessions(lines):
    """The session records of a JSON-lines output (aggregate records left out)."""
    return [r for r in lines if r.get("type") == "session"]


def finals(recs):
    return [r for r in recs if r["type"] == "session" and r["final"]]


def comparable(recs, drop=("worker",)):
    """Final records as sortable tuples, without the fields that may differ between runs."""
    return sorted(tuple((k, json.dumps(v)) for k, v in sorted(r.items()) if k not in drop) for r in finals(recs))


def check_identities(stats, recs):
    """The two accounting identities of --stats-json."""
    classes = ("frames_ip", "frames_non_ip", "frames_malformed", "frames_unassembled", "frames_dropped")
    assert stats["frames_read"] == sum(stats[k] for k in classes), stats
    top = sum(r["cap_packet_count"] for r in finals(recs) if r["parent_session_id"] is None)
    assert top == stats["frames_ip"], (top, stats["frames_ip"])
