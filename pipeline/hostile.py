"""Hostile traces: legitimate traffic under floods and scans, for tests and the benchmark.

    frames, legit = build(seed=1, attack="flood", scale=0.1)
    python -m pipeline.hostile OUT.pcap [--attack flood|scan|udp|mix|none] [--scale S] [--seed N]

A sensor meets its worst traffic when its records matter most, so what it must
show is that the legitimate sessions come out of an attack exactly as they come
out of the same traffic alone (`--attack none` gives that quiet trace: the same
legitimate frames, the same seed). The legitimate part, over ~150 s:
2,000 short TCP sessions (handshake, request/response rounds, FIN or RST),
400 long-lived TCP sessions opened before the attack that exchange a keep-alive
every 25-35 s and stay open, and 1,000 DNS query/answer pairs (all times
`scale`). The attacks, from 10 s to 130 s:

* flood: 600,000 spoofed SYNs to one web server (random sources and ports), a
  tenth of them answered by a SYN-ACK that is never acknowledged (half-open);
* scan: a SYN scan of all 65,536 ports of one host in 60 s, closed ports
  answered by RST-ACK, 16 open ones by SYN-ACK and then the scanner's RST;
* udp: 300,000 spoofed one-way UDP datagrams to random ports of one host;
* mix: flood, scan and udp together.

`legit` holds the legitimate sessions as `pipeline.tracegen` describes them
(client/server endpoints, start, counters), to pick their records out of a run.
Everything follows from random.Random(seed); standard library only.
"""
import argparse
import struct
import sys

from . import tracegen as tg
from .tracegen import ACK, RST, SYN, TCP, UDP, Flow, Trace, ether, ip, ipv4

ATTACKS = ("none", "flood", "scan", "udp", "mix")
SPAN = 150.0                        # seconds of legitimate traffic
ATTACK_START, ATTACK_END = 10.0, 130.0
VICTIM, SCANNED = ip("198.51.100.80"), ip("198.51.100.90")
SCANNER = ip("203.0.113.66")
ATTACKER_MAC, VICTIM_MAC = bytes.fromhex("02aa00000001"), bytes.fromhex("02bb00000001")


def _legit(tr, scale: float) -> None:
    """The legitimate sessions (tracegen's Flow builders), each with its own 5-tuple."""
    r = tr.r
    hosts = tg.pools(r)
    ports = iter(r.sample(range(32768, 61000), int(3400 * scale) + 8))
    for _ in range(int(2000 * scale)):
        f = Flow(tr, "tcp", TCP, r.choice(hosts["c4"]), r.choice(hosts["s4"]), next(ports), r.choice(tg.SERVICES))
        tg.tcp_session(f, r, r.uniform(0, SPAN - 20), round(r.uniform(0.002, 0.2), 6),
                       r.choices(("fin", "rst"), (4, 1))[0], r.random() < 0.1, r.random() < 0.25, r.randint(1, 4),
                       think=2.0)
    for _ in range(int(400 * scale)):
        f = Flow(tr, "tcp-long", TCP, r.choice(hosts["c4"]), r.choice(hosts["s4"]), next(ports), 443)
        _long_session(f, r, r.uniform(0, 5))
    for _ in range(int(1000 * scale)):
        f = Flow(tr, "dns", UDP, r.choice(hosts["c4"]), r.choice(hosts["dns4"]), next(ports), 53)
        tg.dns_session(f, r, r.uniform(0, SPAN - 5), r.choice(tg.NAMES))


def _long_session(f, r, t) -> None:
    """A handshake, then a one-byte keep-alive and its ACK every 25-35 s until the end."""
    rtt = round(r.uniform(0.005, 0.1), 6)
    seq = {True: r.getrandbits(32), False: r.getrandbits(32)}
    f.send(t, True, f.tcp(True, seq[True], 0, SYN))
    f.send(t + rtt / 2, False, f.tcp(False, seq[False], seq[True] + 1, SYN | ACK))
    seq[True] += 1
    seq[False] += 1
    f.send(t + rtt, True, f.tcp(True, seq[True], seq[False], ACK))
    f.rtt = round(f.last - f.first, 6)
    t += rtt + r.uniform(25, 35)
    while t < SPAN:
        up = r.random() < 0.5
        f.send(t, up, f.tcp(up, seq[up], seq[not up], ACK | 0x08, b"\0"))
        seq[up] += 1
        f.send(t + rtt / 2, not up, f.tcp(not up, seq[not up], seq[up], ACK))
        t += r.uniform(25, 35)


class _Raw:
    """Attack frames written straight out: no Flow (and no expected counters) per spoofed packet."""

    def __init__(self, tr):
        self.tr = tr

    def tcp(self, t, src, dst, sport, dport, seq, ack, flags, smac=ATTACKER_MAC, dmac=VICTIM_MAC):
        seg = tg.tcp(src, dst, sport, dport, seq, ack, flags)
        self.tr.emit(self.tr.ts(t), ether(smac, dmac, 0x0800, ipv4(src, dst, TCP, seg, 0, 64)))

    def udp(self, t, src, dst, sport, dport, data):
        seg = tg.udp(src, dst, sport, dport, data)
        self.tr.emit(self.tr.ts(t), ether(ATTACKER_MAC, VICTIM_MAC, 0x0800, ipv4(src, dst, UDP, seg, 0, 64)))


def _spoofed(r) -> bytes:
    return struct.pack("!I", r.randrange(0x01000000, 0xDF000000))


def _flood(tr, raw, scale: float) -> None:
    r = tr.r
    n = int(600_000 * scale)
    for i in range(n):
        t = ATTACK_START + (ATTACK_END - ATTACK_START) * i / max(1, n)
        src, sport, seq = _spoofed(r), r.randrange(1024, 65536), r.getrandbits(32)
        raw.tcp(t, src, VICTIM, sport, 80, seq, 0, SYN)
        if r.random() < 0.1:            # the server answers some; the spoofed source never does
            raw.tcp(t + 0.0004, VICTIM, src, 80, sport, r.getrandbits(32), seq + 1, SYN | ACK,
                    VICTIM_MAC, ATTACKER_MAC)


def _scan(tr, raw, scale: float) -> None:
    r = tr.r
    ports = list(range(65536))
    r.shuffle(ports)
    ports = ports[:max(16, int(65536 * min(1.0, scale * 4)))]
    open_ports = set(r.sample(ports, 16))
    dur = 60.0
    for i, port in enumerate(ports):
        t = ATTACK_START + 20 + dur * i / len(ports)
        sport, seq = 40000 + (i % 20000), r.getrandbits(32)
        raw.tcp(t, SCANNER, SCANNED, sport, port, seq, 0, SYN)
        if port in open_ports:
            raw.tcp(t + 0.0003, SCANNED, SCANNER, port, sport, r.getrandbits(32), seq + 1, SYN | ACK,
                    VICTIM_MAC, ATTACKER_MAC)
            raw.tcp(t + 0.0006, SCANNER, SCANNED, sport, port, seq + 1, 0, RST)
        else:
            raw.tcp(t + 0.0003, SCANNED, SCANNER, port, sport, 0, seq + 1, RST | ACK, VICTIM_MAC, ATTACKER_MAC)


def _udp(tr, raw, scale: float) -> None:
    r = tr.r
    n = int(300_000 * scale)
    payload = bytes(32)
    for i in range(n):
        t = ATTACK_START + (ATTACK_END - ATTACK_START) * i / max(1, n)
        raw.udp(t, _spoofed(r), VICTIM, r.randrange(1024, 65536), r.randrange(1, 65536), payload)


def build(seed: int = 1, attack: str = "flood", scale: float = 1.0, start: float = 1_700_000_000.0):
    """Frames (timestamp, Ethernet frame) in time order, and the legitimate sessions. The
    legitimate frames are the same for every `attack` with the same seed and scale."""
    if attack not in ATTACKS:
        raise ValueError(f"attack {attack!r}: one of {', '.join(ATTACKS)}")
    tr = Trace(seed, start)
    _legit(tr, scale)
    legit = sorted((fl.record() for fl in tr.flows), key=lambda d: d["start"])
    atk = Trace(seed + 1, start)             # its own random stream: the legitimate part never changes
    raw = _Raw(atk)
    if attack in ("flood", "mix"):
        _flood(atk, raw, scale)
    if attack in ("scan", "mix"):
        _scan(atk, raw, scale)
    if attack in ("udp", "mix"):
        _udp(atk, raw, scale)
    frames = sorted(tr.frames + atk.frames, key=lambda fr: fr[0])
    return frames, legit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.hostile",
                                description="Write legitimate traffic under an attack (classic pcap, Ethernet).")
    p.add_argument("out", help="pcap file to write")
    p.add_argument("--attack", choices=ATTACKS, default="flood")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every count (default 1)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if not a.scale > 0:
        p.error("--scale must be > 0")
    frames, legit = build(a.seed, a.attack, a.scale)
    tg.write_pcap(a.out, frames)
    print(f"{a.out}: {len(frames)} frames, {len(legit)} legitimate sessions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
