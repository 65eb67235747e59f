"""Traces for the state that passes from chunk to chunk (K front-end processes must give
one process's records): IPv4 fragments completed across chunk edges, out of order,
duplicated, never completed (expired after 30 s, or left at the end), fragments inside
GTP-U; GTP-U and VXLAN tunnels whose outer sessions idle out and come back; long
sessions (interim reports); many short ones (evictions); a fragment flood. Deterministic
from the seed."""
import random
import struct

from pipeline.tracegen import UDP, ether, gtpu, ip, ipv4, tcp, udp, write_pcap

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
TCP = 6


def vxlan(vni: int, frame: bytes) -> bytes:
    return struct.pack("!BBHI", 0x08, 0, 0, vni << 8) + frame


def fragments(src, dst, ident, payload, size=24):
    """An IPv4 datagram carrying `payload` (a transport segment) as fragments of `size` bytes."""
    out = []
    for off in range(0, len(payload), size):
        part = payload[off:off + size]
        out.append(ipv4(src, dst, UDP, part, ident, 64, offset=off, more=off + size < len(payload)))
    return out


class _Frames:
    def __init__(self, seed, start=1_700_000_000.0):
        self.r = random.Random(seed)
        self.t = start
        self.frames = []

    def emit(self, pkt, dt=0.05):
        self.t += dt * self.r.random()
        self.frames.append((self.t, ether(MAC_A, MAC_B, 0x0800, pkt)))


def stateful(seed: int = 1, datagrams: int = 60):
    """Frames of every kind of sequenced state, interleaved with plain traffic."""
    f = _Frames(seed)
    r = f.r
    o1, o2 = ip("172.16.0.1"), ip("172.16.0.2")
    v1, v2 = ip("172.17.0.1"), ip("172.17.0.2")
    for i in range(datagrams):
        src, dst = ip(f"10.1.{i % 7}.{1 + i % 200}"), ip(f"10.2.0.{1 + i % 50}")
        seg = udp(src, dst, 1000 + i, 53 if i % 3 else 5000, bytes(r.randrange(256) for _ in range(r.choice((40, 80, 200)))))
        fr = fragments(src, dst, 100 + i, seg)
        kind = i % 6
        if kind == 1:
            r.shuffle(fr)                       # out of order
        elif kind == 2:
            fr = fr + [fr[0]]                   # a late duplicate
        elif kind == 3:
            fr = fr[:-1]                        # never completed: expires (30 s) or is left at the end
        for pkt in fr:
            f.emit(pkt)
            for _ in range(r.randrange(3)):     # plain traffic in between: the datagram spans chunks
                a, b = ip("192.0.2.1"), ip(f"192.0.2.{2 + r.randrange(5)}")
                f.emit(ipv4(a, b, UDP, udp(a, b, 7, 9, b"x" * 10), 1, 64))
        if kind == 4:                           # fragments inside a GTP-U tunnel
            for pkt in fragments(src, dst, 900 + i, seg):
                f.emit(ipv4(o1, o2, UDP, udp(o1, o2, 2152, 2152, gtpu(77, pkt)), 5000 + i, 64))
        if kind == 5:                           # a TCP exchange inside VXLAN, and one inside GTP-U
            c, s = ip(f"10.9.0.{1 + i % 9}"), ip("10.9.1.1")
            for k, flags in enumerate((0x02, 0x12, 0x10, 0x18, 0x11, 0x11, 0x10)):
                up = k % 2 == 0
                a, b = (c, s) if up else (s, c)
                seg = tcp(a, b, 40000 + i if up else 80, 80 if up else 40000 + i, 1000 + k, 2000 + k, flags,
                          b"GET / HTTP/1.1\r\n\r\n" if flags == 0x18 else b"")
                inner = ether(MAC_B, MAC_A, 0x0800, ipv4(a, b, TCP, seg, 7 + k, 64))
                f.emit(ipv4(v1, v2, UDP, udp(v1, v2, 49152 + i % 7, 4789, vxlan(42 + i % 3, inner)), 300 + k, 64))
                f.emit(ipv4(o1, o2, UDP, udp(o1, o2, 2152, 2152, gtpu(88, ipv4(a, b, TCP, seg, 9 + k, 64))), 600 + k, 64))
        if i % 5 == 2:                          # a long UDP session, seen now and then: interim reports
            a, b = ip("198.51.100.1"), ip("198.51.100.2")
            f.emit(ipv4(a, b, UDP, udp(a, b, 5060, 5060, b"long"), 2, 64))
            f.emit(ipv4(b, a, UDP, udp(b, a, 5060, 5060, b"ok"), 3, 64))     # answered: not ended as unanswered
        if i % 15 == 14:
            f.t += 35.0                         # past the 30 s reassembly timeout, and tunnels idle out
        if i % 20 == 19:
            f.t += 70.0                         # past UDP's 60 s idle timeout: outer sessions end, come back
    for i in range(200):                        # many short sessions: evictions under --max-sessions
        a, b = ip(f"10.50.{i // 200}.{1 + i % 200}"), ip("10.60.0.1")
        f.emit(ipv4(a, b, UDP, udp(a, b, 20000 + i, 53, b"q" * 12), 3, 64), dt=0.01)
    return f.frames


def talkative(seed: int = 1, sessions: int = 40, seconds: float = 30.0):
    """Long sessions, plain and inside VXLAN, each sending now and then for `seconds` of
    packet time (TCP ones open and close), and short ones in between; no fragment: the
    front-end's rows are then the same whatever its chunks, and so must be the records."""
    f = _Frames(seed)
    r = f.r
    v1, v2 = ip("172.17.0.1"), ip("172.17.0.2")
    end = f.t + seconds
    k = 0
    while f.t < end:
        i = r.randrange(sessions)
        a, b = ip(f"10.7.0.{1 + i}"), ip("10.8.0.1")
        up = r.random() < 0.6
        src, dst = (a, b) if up else (b, a)
        if i % 3 == 0:
            seg = tcp(src, dst, 30000 + i if up else 443, 443 if up else 30000 + i, 1000 + k, 2000 + k, 0x18, b"t" * 20)
            pkt = ipv4(src, dst, TCP, seg, k & 0xFFFF, 64)
        else:
            pkt = ipv4(src, dst, UDP, udp(src, dst, 30000 + i if up else 53, 53 if up else 30000 + i, b"u" * 30),
                       k & 0xFFFF, 64)
        if i % 4 == 1:
            pkt = ipv4(v1, v2, UDP, udp(v1, v2, 49152, 4789, vxlan(7, ether(MAC_B, MAC_A, 0x0800, pkt))), k & 0xFFFF, 64)
        f.emit(pkt, dt=0.08)
        if r.random() < 0.2:                    # a short one
            c = ip(f"10.9.{k % 200}.{1 + k % 250}")
            f.emit(ipv4(c, b, UDP, udp(c, b, 40000, 123, b"n" * 48), 1, 64), dt=0.01)
        k += 1
    return f.frames


def flood(seed: int = 1, datagrams: int = 3000, plain: int = 600):
    """A fragment flood: first fragments of `datagrams` datagrams never completed, each
    from another source, among plain traffic; then past the reassembly timeout, so the
    state becomes light again."""
    f = _Frames(seed)
    d = ip("10.9.9.9")
    for i in range(datagrams):
        src = ip(f"10.{100 + (i >> 16) & 127}.{(i >> 8) & 255}.{i & 255}")
        f.emit(ipv4(src, d, UDP, udp(src, d, 1, 2, bytes(40))[:24], i & 0xFFFF, 64, offset=0, more=True), dt=1e-4)
        if i % 5 == 0:
            a, b = ip("192.0.2.1"), ip(f"192.0.2.{2 + i % 50}")
            f.emit(ipv4(a, b, UDP, udp(a, b, 7, 9, b"x" * 10), 1, 64), dt=1e-4)
    f.t += 40.0
    for i in range(plain):
        a, b = ip("192.0.2.1"), ip(f"192.0.2.{2 + i % 50}")
        f.emit(ipv4(a, b, UDP, udp(a, b, 7, 9, b"y" * 10), 1, 64))
    return f.frames


def write(path, frames) -> str:
    write_pcap(str(path), frames)
    return str(path)
