#!/usr/bin/env python3
"""Worker memory per open session, measured as an operator would: a real `pipeline start`.

    .venv/bin/python bench/memory.py [--cases tcp,dns,tls] [--big 200000] [--small 20000] [--workers 1]

For each case, two captures hold `big` and `small` sessions that are all still
open at the end of the capture; `pipeline start --workers W` reads each, and
the figure is (the workers' peak RSS with `big` open sessions - with `small`)
/ (big - small). Both captures have the same number of frames (the small one
pads each session with frames that change nothing it keeps), so the batches'
transient buffers are the same in both runs and cancel out. The cases:

* tcp: a completed handshake, no payload (SYN, SYN-ACK, ACK; padding: the
  server's pure ACKs);
* dns: one DNS query to UDP port 53, its answer not yet seen (the classifier
  keeps the query's name and type while it waits; padding: empty datagrams);
* tls: a handshake, then the first 100 bytes of a ClientHello (the classifier
  keeps them while it waits for the rest; padding: the server's pure ACKs).

The peak RSS is each worker's own (`max_rss_bytes` in --stats-json, the
kernel's high-water mark). Nothing here asserts a figure: they go to
docs/benchmarks.md.
"""
import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("tcp", "dns", "tls")
SPAN = 10.0                 # seconds of packet time: every session stays open (the shortest timeout, DNS, is 15 s)
_SYN, _ACK, _PSH = 0x02, 0x10, 0x08
_SERVER = bytes((172, 16, 0, 1))
_MACS = bytes.fromhex("02000000000102000000000208 00".replace(" ", ""))
# the first 100 bytes of a ClientHello: a 512-byte handshake record, most of it still to come
HELLO_START = (bytes.fromhex("1603010200010001fc0303") + bytes(range(32)) + b"\x20" + bytes(range(32, 64))
               + bytes.fromhex("0020") + bytes.fromhex("130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f0035"))[:100]
assert len(HELLO_START) == 100


def _query(i: int) -> bytes:
    name = b"".join(bytes([len(p)]) + p for p in (b"host%d" % i, b"example", b"com")) + b"\0"
    return struct.pack("!6H", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1"


def _frame(client: bytes, up: bool, proto: int, sport: int, dport: int, seg: bytes) -> bytes:
    src, dst = (client, _SERVER) if up else (_SERVER, client)
    if not up:
        sport, dport = dport, sport
    if proto == 6:
        flags, seq, ack, data = seg
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0) + data
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(seg), 0) + seg
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src, dst)
    return (_MACS + ip + l4).ljust(60, b"\0")


def _session(case: str, i: int):
    """The frames of session i (up, frame) and its padding frame."""
    client = struct.pack("!I", 0x0A000000 + i)
    port = 32768 + i % 28000
    if case == "dns":
        return [_frame(client, True, 17, port, 53, _query(i))], _frame(client, True, 17, port, 53, b"")
    cs, ss = (i * 2654435761) & 0xFFFFFFFF, (i * 40503 + 7) & 0xFFFFFFFF
    segs = [(True, (_SYN, cs, 0, b"")), (False, (_SYN | _ACK, ss, cs + 1, b"")),
            (True, (_ACK, cs + 1, ss + 1, b""))]
    if case == "tls":
        segs.append((True, (_PSH | _ACK, cs + 1, ss + 1, HELLO_START)))
    frames = [_frame(client, up, 6, port, 443, seg) for up, seg in segs]
    pad = _frame(client, False, 6, port, 443, (_ACK, ss + 1, cs + 1 + (len(HELLO_START) if case == "tls" else 0),
                                                 b""))
    return frames, pad


def write_trace(path, case: str, sessions: int, frames_total: int, start: float = 1_700_000_000.0) -> int:
    """A classic pcap of `sessions` sessions of `case`, one after the other over SPAN
    seconds, padded up to `frames_total` frames. Returns the frames written."""
    per = max(1, frames_total // sessions)
    gap = SPAN / sessions
    n = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        out = []
        for i in range(sessions):
            frames, pad = _session(case, i)
            frames = frames + [pad] * (per - len(frames))
            t0 = start + i * gap
            for k, fr in enumerate(frames):
                us = round((t0 + k * gap / (len(frames) + 1)) * 1e6)
                out.append(struct.pack("<IIII", us // 10**6, us % 10**6, len(fr), len(fr)) + fr)
            n += len(frames)
            if len(out) > 65536:
                f.write(b"".join(out))
                out = []
        f.write(b"".join(out))
    return n


def pipeline_cmd():
    exe = Path(sys.executable).parent / "pipeline"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]


def peak_rss(trace, workers: int, tmp: Path, *extra) -> list:
    """The workers' peak RSS (bytes) over a `pipeline start` of `trace`."""
    st = tmp / "st.json"
    p = subprocess.run(pipeline_cmd() + ["start", "--workers", str(workers), "--read", str(trace), "--output",
                                         f"jsonl:{tmp / 's.jsonl'}", "--stats-json", str(st), "--quiet", *extra],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"pipeline failed: {p.stderr.strip()}")
    return [w["max_rss_bytes"] for w in json.loads(st.read_text())["workers"]]


def per_session(case: str, big: int = 200_000, small: int = 20_000, workers: int = 1) -> dict:
    """Bytes of worker RSS per open session for `case` (the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as d:
        tmp = Path(d)
        frames = {"tcp": 3, "dns": 1, "tls": 4}[case] * big
        rss = {}
        for n in (big, small):
            trace = tmp / f"{case}-{n}.pcap"
            write_trace(trace, case, n, frames)
            rss[n] = sum(peak_rss(trace, workers, tmp))
            trace.unlink()
    return {"bytes_per_session": round((rss[big] - rss[small]) / (big - small)),
            "peak_rss_big_mb": round(rss[big] / 2**20, 1), "peak_rss_small_mb": round(rss[small] / 2**20, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--big", type=int, default=200_000)
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    for case in a.cases.split(","):
        print(case, json.dumps(per_session(case, a.big, a.small, a.workers)))


if __name__ == "__main__":
    main()
