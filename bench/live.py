#!/usr/bin/env python3
"""Live capture: the highest replay rate this machine captures with no drop.

    sudo .venv/bin/python bench/live.py TRACE [--procs 1 2]

In a network namespace of its own, a veth pair; tcpreplay sends the first
`rate x 3 s` frames of TRACE into one end at --pps steps while `pipeline start
--interface` captures the other end (--capture-procs K). A step passes when the
pipeline read every frame tcpreplay sent and the kernel dropped none; the
figure is the highest passing step (tcpreplay's --topspeed as the last step).
Needs root, iproute2 and tcpreplay; `make bench` runs it when they are there.
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parents[1]
STEPS = (10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 150_000, 200_000, 0)   # 0: --topspeed
SECONDS = 3
RING_MB = 8          # small on purpose: a big ring would hide a rate the pipeline cannot sustain


def available() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


def sh(*cmd, ns=None, **kw):
    full = (["ip", "netns", "exec", ns] if ns else []) + [str(c) for c in cmd]
    return subprocess.run(full, capture_output=True, text=True, check=True, **kw)


def head(trace: Path, n: int, out: Path) -> int:
    with open(trace, "rb") as fi, open(out, "wb") as fo:
        r = dpkt.pcap.UniversalReader(fi)
        w = dpkt.pcap.Writer(fo, snaplen=65535, linktype=r.datalink())
        k = 0
        for ts, buf in r:
            w.writepkt(buf, ts)
            k += 1
            if k >= n:
                break
    return k


def start_capture(ns, tmp: Path, procs: int, workers: int = 2, ring_mb: int = RING_MB):
    """`pipeline start --interface vB` in the namespace, once it captures: (process, stats path)."""
    st = tmp / "st.json"
    exe = Path(sys.executable).parent / "pipeline"
    p = subprocess.Popen(["ip", "netns", "exec", ns, str(exe), "start", "--interface", "vB", "--workers", str(workers),
                          "--capture-procs", str(procs), "--ring-mb", str(ring_mb), "--output", f"jsonl:{tmp / 'o.jsonl'}",
                          "--stats-json", str(st), "--status-socket", str(tmp / "status.sock")],
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    if "capturing on" not in line:
        p.kill()
        raise SystemExit(f"pipeline did not start: {line}{p.stderr.read()}")
    return p, st


def stop_capture(p, st: Path) -> dict:
    """Let the ring drain, stop the run as an operator would (SIGINT): its --stats-json."""
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    return json.loads(st.read_text())


@contextlib.contextmanager
def veth_pair(ns: str, mtu: int = 9000):
    """A network namespace holding a veth pair vA <-> vB, removed on the way out."""
    try:
        sh("ip", "netns", "add", ns)
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        sh("ip", "link", "add", "vA", "type", "veth", "peer", "name", "vB", ns=ns)
        for dev in ("vA", "vB"):
            sh("ip", "link", "set", dev, "mtu", str(mtu), "up", ns=ns)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def step(ns, pcap: Path, pps: int, procs: int, tmp: Path) -> dict:
    p, st = start_capture(ns, tmp, procs)
    rate = ["--pps", str(pps)] if pps else ["--topspeed"]
    r = sh("tcpreplay", "-i", "vA", *rate, pcap, ns=ns, timeout=600)
    sent = int(re.search(r"Successful packets:\s+(\d+)", r.stdout).group(1))
    actual = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", r.stdout)
    s = stop_capture(p, st)
    return {"pps": pps or "topspeed", "achieved_pps": float(actual.group(1)) if actual else None, "sent": sent,
            "read": s["frames_read"], "dropped": s["frames_dropped"],
            "ok": s["frames_dropped"] == 0 and s["frames_read"] >= sent}


def measure(trace: Path, procs_list=(1, 2)) -> dict:
    why = available()
    if why:
        return {"skipped": why}
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    out = {}
    try:
        with veth_pair(f"pbench{os.getpid()}") as ns:
            for procs in procs_list:
                best, rows = None, []
                for pps in STEPS:
                    n = (pps or 300_000) * SECONDS
                    pcap = tmp / f"head-{n}.pcap"
                    if not pcap.exists():
                        head(trace, n, pcap)
                    row = step(ns, pcap, pps, procs, tmp)
                    rows.append(row)
                    print(f"  capture-procs {procs}: {row}", flush=True)
                    if not row["ok"]:
                        break
                    best = max(best or 0, row["achieved_pps"] or pps)
                out[f"procs_{procs}"] = {"max_pps_no_drop": best, "steps": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    print(json.dumps(measure(Path(a.trace), a.procs), indent=1))
