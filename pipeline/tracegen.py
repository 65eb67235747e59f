"""A small generator of realistic classic-pcap traces with exact ground truth.

    frames, truth = build(seed=1, sessions=200)
    write_pcap("demo.pcap", frames)
    python -m pipeline.tracegen OUT.pcap [--seed N] [--sessions N] [--truth OUT.json] [--nanosecond]

The trace holds `sessions` ordinary sessions that start at random over ~10
minutes (so many are open at once): TCP (handshake, data both ways, some with
one retransmitted segment and some SYNs with 12 bytes of options; closed by FIN
both ways, by RST, or left open), DNS query/response on UDP 53, other UDP, and
ICMP / ICMPv6 echo, over IPv4 and IPv6; about 10% behind an 802.1Q tag and two
behind QinQ. On top of them, always: one GTP-U tunnel (its outer session and a
TCP and a DNS session inside, one TEID), one UDP datagram sent in three IPv4
fragments, one UDP session silent for 90 s in the middle (two sessions under the
default 60 s UDP idle timeout) and three ARP request/reply pairs.

Each expected session is counted while its frames are built, with the
pipeline's semantics (contracts/record.py): client = sender of the first packet,
ul = client -> server, packets = IP datagrams (a fragmented one once, while
cap_packet_count counts its frames), bytes = whole frame lengths (also for the
sessions inside the tunnel), data bytes = transport payload from the IP lengths
(ICMP: what follows the 8-byte echo header); a fragmented datagram's time is
that of its last fragment, which completes it. Frames shorter than 60 bytes are
padded to 60, as on the wire; wire length == captured length.
Everything follows from random.Random(seed); standard library only.
"""
import argparse
import ipaddress
import json
import random
import struct
import sys

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MASK = 0xFFFFFFFF
GTPU_PORT = 2152
SPAN = 600.0                                          # seconds over which sessions start
ROUTER_MAC = bytes.fromhex("00005e000101")
SYN_OPTS = bytes.fromhex("020405b40103030701010402")  # MSS 1460, NOP, WS 7, NOP, NOP, SACK permitted
# the ordinary sessions, in every 20: 9 TCP, 4 DNS, 3 other UDP, 4 ICMP echo; the digit is the IP version
MIX = ("tcp4",) * 6 + ("tcp6",) * 3 + ("dns4",) * 3 + ("dns6",) + ("udp4",) * 2 + ("udp6",) \
    + ("icmp4",) * 2 + ("icmp6",) * 2
SERVICES = (443, 443, 443, 80, 22, 25, 993, 8080)
NAMES = ("example.com", "www.example.org", "mail.example.net", "cdn.example.com", "api.example.org")
VIDS = (10, 20, 30, 100, 300)
COUNTS = ("packet_count", "byte_count", "cap_packet_count", "cap_byte_count", "data_packet_count", "data_byte_count")


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# ---------------------------------------------------------------- headers

def csum(data: bytes) -> int:
    """Internet checksum (RFC 1071)."""
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!xBH", proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def with_csum(hdr: bytes, at: int, data: bytes = b"", pre: bytes = b"", zero: int = 0) -> bytes:
    """hdr + data with the checksum over pre + hdr + data written at hdr[at:at + 2]."""
    s = csum(pre + hdr + data) or zero
    return hdr[:at] + struct.pack("!H", s) + hdr[at + 2:] + data


def ipv4(src, dst, proto, payload, ident, ttl, df=False, offset=0, more=False) -> bytes:
    frag = (0x4000 if df else 0) | (0x2000 if more else 0) | offset // 8
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0, src, dst)
    return with_csum(hdr, 10) + payload


def ipv6(src, dst, nh, payload, hlim) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, hlim, src, dst) + payload


def tcp(src, dst, sport, dport, seq, ack, flags, data=b"", opts=b"", win=64240) -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(opts) // 4) << 4, flags, win, 0, 0) + opts
    return with_csum(hdr, 16, data, pseudo(src, dst, TCP, len(hdr) + len(data)))


def udp(src, dst, sport, dport, data) -> bytes:
    hdr = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    return with_csum(hdr, 6, data, pseudo(src, dst, UDP, 8 + len(data)), zero=0xFFFF)


def icmp_echo(src, dst, reply, ident, seq, data) -> bytes:
    v6 = len(src) == 16
    hdr = struct.pack("!BBHHH", (129 if reply else 128) if v6 else (0 if reply else 8), 0, 0, ident, seq)
    return with_csum(hdr, 2, data, pseudo(src, dst, ICMP6, 8 + len(data)) if v6 else b"")


def gtpu(teid, inner) -> bytes:
    """GTP-U v1 G-PDU, no optional fields."""
    return struct.pack("!BBHI", 0x30, 0xFF, len(inner), teid) + inner


def ether(src, dst, etype, payload, vlans=()) -> bytes:
    tpids = (0x88A8, 0x8100) if len(vlans) == 2 else (0x8100,)
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in zip(tpids, vlans))
    return (dst + src + tags + struct.pack("!H", etype) + payload).ljust(60, b"\0")


def arp(op, sha, spa, tha, tpa) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, tha, tpa)


def dns(ident, name, answer=None) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\1\0\1"
    if answer is None:
        return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + q
    return struct.pack("!6H", ident, 0x8180, 1, 1, 0, 0) + q + struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + answer


# ---------------------------------------------------------------- sessions

class Trace:
    """The frames being built, and per-host state (TTL, IPv4 identification)."""

    def __init__(self, seed, start):
        self.r, self.start = random.Random(seed), start
        self.frames, self.flows, self._ttl, self._ident = [], [], {}, {}

    def ts(self, t):
        """Seconds into the trace -> capture timestamp, on whole microseconds."""
        return self.start + round(t, 6)

    def emit(self, ts, frame) -> int:
        self.frames.append((ts, frame))
        return len(frame)

    @staticmethod
    def mac(addr):
        return b"\x02" + (b"\0" + addr)[-5:]

    def ttl(self, addr):
        if addr not in self._ttl:
            self._ttl[addr] = self.r.choice((64, 64, 128, 52, 117, 245))
        return self._ttl[addr]

    def ident(self, addr):
        if addr not in self._ident:
            self._ident[addr] = self.r.getrandbits(16)
        self._ident[addr] = (self._ident[addr] + 1) & 0xFFFF
        return self._ident[addr]


class Flow:
    """One expected session: builds its datagrams and counts them as the pipeline should report them."""

    def __init__(self, tr, kind, proto, cli, srv, cport=None, sport=None, vlan=None, tunnel=None, **flags):
        self.tr, self.proto, self.cli, self.srv, self.cport, self.sport = tr, proto, cli, srv, cport, sport
        self.vlan, self.tunnel = vlan or (), tunnel
        self.n = {side + c: 0 for side in ("", "ul_", "dl_") for c in COUNTS}
        self.retx = self.flags = 0
        self.first = self.last = self.rtt = None
        self.closed = False
        self.info = {"kind": kind, "tunnel_inner": tunnel is not None, "tunnel_outer": False, "fragmented": False}
        self.info.update(flags)
        tr.flows.append(self)

    def ends(self, up):
        return ((self.cli, self.srv, self.cport, self.sport) if up else (self.srv, self.cli, self.sport, self.cport))

    def tcp(self, up, seq, ack, flags, data=b"", opts=b""):
        return tcp(*self.ends(up), seq & MASK, ack & MASK, flags, data, opts)

    def udp(self, up, data):
        return udp(*self.ends(up), data)

    def icmp(self, up, ident, seq, data):
        return icmp_echo(*self.ends(up)[:2], not up, ident, seq, data)

    def send(self, t, up, seg, retx=False):
        """One IP datagram carrying `seg`, t seconds into the trace; IPv4 fragments it at MTU 1500.
        Returns the lengths of its frames."""
        a, b = self.ends(up)[:2]
        tr = self.tr
        if len(a) == 16:
            dgrams = [ipv6(a, b, self.proto, seg, tr.ttl(a))]
        else:
            ident, ttl = tr.ident(a), tr.ttl(a)
            dgrams = [ipv4(a, b, self.proto, seg[o:o + 1480], ident, ttl, self.proto == TCP, o, o + 1480 < len(seg))
                      for o in range(0, len(seg), 1480)]
        if self.tunnel:
            outer, teid = self.tunnel
            lens = [n for d in dgrams for n in outer.send(t, up, outer.udp(up, gtpu(teid, d)))]
        else:
            macs = (tr.mac(self.cli), ROUTER_MAC) if up else (ROUTER_MAC, tr.mac(self.cli))
            etype = 0x86DD if len(a) == 16 else 0x0800
            lens = [tr.emit(tr.ts(t + 12e-6 * i), ether(*macs, etype, d, self.vlan)) for i, d in enumerate(dgrams)]
        hdr = (seg[12] >> 4) * 4 if self.proto == TCP else 8
        for side in ("", "ul_" if up else "dl_"):
            for name, v in zip(COUNTS, (1, sum(lens), len(lens), sum(lens), len(seg) > hdr, len(seg) - hdr)):
                self.n[side + name] += v
        self.retx += retx
        self.flags |= seg[13] if self.proto == TCP else 0
        ts = tr.ts(t + 12e-6 * (len(dgrams) - 1))      # a fragmented datagram is whole at its last fragment
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)
        return lens

    def record(self) -> dict:
        return dict(self.info, client_ip=str(ipaddress.ip_address(self.cli)), client_port=self.cport,
                    server_ip=str(ipaddress.ip_address(self.srv)), server_port=self.sport, transport=self.proto,
                    ip_version=4 if len(self.cli) == 4 else 6, vlan=list(self.vlan) or None, start=self.first,
                    end=self.last, rtt=self.rtt, closed=self.closed, retransmission_count=self.retx,
                    tcp_flags=self.flags, **self.n)


def tcp_session(f, r, t, rtt, close="fin", retx=False, opts=False, rounds=3, think=5.0, mss=1460):
    """Handshake (SYN at t, SYN-ACK at t + rtt/2, ACK at t + rtt), request/response rounds, then
    FIN both ways + final ACK ("fin"), an RST ("rst") or nothing ("open")."""
    seq = {True: r.getrandbits(32), False: r.getrandbits(32)}
    plan = []
    for _ in range(rounds):
        k = r.choice((1, 1, 2, 3, 6))
        plan.append((r.randint(40, 700), [mss] * (k - 1) + [r.randint(1, mss)]))
    again = r.randrange(sum(1 + len(resp) for _, resp in plan)) if retx else -1
    now, nth = t, 0

    def send(up, flags, dt, n=0, opts=b""):
        nonlocal now, nth
        now += dt
        seg = f.tcp(up, seq[up], seq[not up] if flags & ACK else 0, flags, r.randbytes(n), opts)
        f.send(now, up, seg)
        if n:
            if nth == again:                       # no ACK in time: the same segment again
                now += 0.2 + 2 * rtt
                f.send(now, up, seg, retx=True)
            nth += 1
        seq[up] += n + bool(flags & (SYN | FIN))

    send(True, SYN, 0, opts=SYN_OPTS if opts else b"")
    send(False, SYN | ACK, rtt / 2, opts=SYN_OPTS if opts else b"")
    send(True, ACK, rtt / 2)
    f.rtt = round(f.last - f.first, 6)
    for req, resp in plan:
        send(True, PSH | ACK, r.uniform(0.001, think), req)
        for i, n in enumerate(resp):
            dt = rtt / 2 + 0.003 if i == 0 else r.uniform(1e-4, 2e-3)
            send(False, (PSH if i == len(resp) - 1 else 0) | ACK, dt, n)
        send(True, ACK, rtt / 2)
    if close == "fin":
        closer = r.random() < 0.7
        send(closer, FIN | ACK, r.uniform(0.01, 1.0))
        send(not closer, FIN | ACK, rtt / 2)
        send(closer, ACK, rtt / 2)
    elif close == "rst":
        send(r.random() < 0.5, RST | ACK, r.uniform(0.01, 1.0))
    f.closed = close != "open"
    return now


def dns_session(f, r, t, name):
    for _ in range(r.choice((1, 1, 2))):
        ident = r.getrandbits(16)
        f.send(t, True, f.udp(True, dns(ident, name)))
        t += r.uniform(0.002, 0.08)
        f.send(t, False, f.udp(False, dns(ident, name, r.randbytes(4))))
        t += r.uniform(1e-4, 0.01)
    return t


def udp_session(f, r, t, count, gap=8.0):
    for i in range(count):
        up = i == 0 or r.random() < 0.5
        f.send(t, up, f.udp(up, r.randbytes(r.randint(16, 1200))))
        t += r.uniform(0.001, gap)
    return t


def ping_session(f, r, t, count):
    ident, rtt = r.getrandbits(16), round(r.uniform(0.002, 0.15), 6)
    for seq in range(1, count + 1):
        data = struct.pack("!Q", int(t * 1e6)) + bytes(range(16, 64))
        f.send(t, True, f.icmp(True, ident, seq, data))
        f.send(t + rtt, False, f.icmp(False, ident, seq, data))
        t += 1.0
    return t


def pools(r):
    return {"c4": [ip(f"10.0.{k >> 8}.{k & 255}") for k in r.sample(range(2, 1024), 60)],
            "s4": [ip(f"{net}.{k}") for net in ("198.51.100", "203.0.113") for k in r.sample(range(1, 255), 20)],
            "c6": [ip("2001:db8:0:1::")[:8] + r.getrandbits(64).to_bytes(8, "big") for _ in range(30)],
            "s6": [ip(f"2001:db8:ffff::{k:x}") for k in r.sample(range(1, 4096), 20)],
            "dns4": [ip("192.0.2.53"), ip("192.0.2.153")], "dns6": [ip("2001:db8:53::53")]}


def build(seed: int = 1, sessions: int = 200, start: float = 1_700_000_000.0):
    """Frames (timestamp, Ethernet frame bytes) in time order, and the expected sessions."""
    tr = Trace(seed, start)
    r = tr.r
    hosts = pools(r)
    kinds = [MIX[i % len(MIX)] for i in range(sessions)]
    r.shuffle(kinds)
    tagged = r.sample(range(sessions), min(sessions, sessions // 10 + 2))
    vlans = {i: (r.choice((1000, 2000)), r.choice(VIDS)) if k < 2 else (r.choice(VIDS),) for k, i in enumerate(tagged)}
    ports = r.sample(range(32768, 61000), sessions + 3)     # client ports: every 5-tuple unique
    pairs = set()
    for i, kind in enumerate(kinds):
        v, t, vlan = kind[-1], r.uniform(0, SPAN - 60), vlans.get(i)
        cli, srv = r.choice(hosts["c" + v]), r.choice(hosts["s" + v])
        if kind.startswith("tcp"):
            f = Flow(tr, "tcp", TCP, cli, srv, ports[i], r.choice(SERVICES), vlan)
            tcp_session(f, r, t, round(r.uniform(0.002, 0.2), 6), r.choices(("fin", "rst", "open"), (6, 2, 2))[0],
                        r.random() < 0.2, r.random() < 0.25, r.randint(1, 5))
        elif kind.startswith("dns"):
            f = Flow(tr, "dns", UDP, cli, r.choice(hosts["dns" + v]), ports[i], 53, vlan)
            dns_session(f, r, t, r.choice(NAMES))
        elif kind.startswith("udp"):
            udp_session(Flow(tr, "udp", UDP, cli, srv, ports[i], r.randint(10000, 29999), vlan), r, t, r.randint(2, 20))
        else:                                           # one ICMP session per host pair
            if (cli, srv) in pairs:
                srv = ip(f"198.18.{i >> 8}.{i & 255}" if v == "4" else f"2001:db8:ffff:1::{i:x}")
            pairs.add((cli, srv))
            ping_session(Flow(tr, "icmp", ICMP if v == "4" else ICMP6, cli, srv, vlan=vlan), r, t, r.randint(1, 5))

    # GTP-U: eNodeB <-> gateway, one TEID both ways, a UE's DNS query and TCP session inside
    enb, gw, ue, t = ip("172.16.0.10"), ip("172.16.0.1"), ip("100.64.0.7"), r.uniform(60, SPAN - 120)
    outer = Flow(tr, "gtp", UDP, enb, gw, GTPU_PORT, GTPU_PORT, tunnel_outer=True)
    tunnel = (outer, r.getrandbits(32))
    dns_session(Flow(tr, "dns", UDP, ue, hosts["dns4"][0], ports[-1], 53, tunnel=tunnel), r, t, "example.com")
    tcp_session(Flow(tr, "tcp", TCP, ue, r.choice(hosts["s4"]), ports[-1], 443, tunnel=tunnel), r, t + 0.1,
                0.04, "fin", True, True, 3, think=3.0, mss=1380)
    # one UDP datagram in three IPv4 fragments
    f = Flow(tr, "fragment", UDP, r.choice(hosts["c4"]), r.choice(hosts["s4"]), ports[-2], r.randint(10000, 29999),
             fragmented=True)
    f.send(r.uniform(0, SPAN), True, f.udp(True, r.randbytes(r.randint(3000, 4000))))
    # one UDP conversation silent for 90 s: two sessions under a 60 s idle timeout
    ends = (r.choice(hosts["c4"]), r.choice(hosts["s4"]), ports[-3], r.randint(10000, 29999))
    t = udp_session(Flow(tr, "udp-gap", UDP, *ends), r, r.uniform(60, 200), 6, gap=2.0)
    udp_session(Flow(tr, "udp-gap", UDP, *ends), r, t + 90, 6, gap=2.0)
    # ARP: who has the router?
    for _ in range(3):
        t, host, router = r.uniform(0, SPAN), r.choice(hosts["c4"]), ip("10.0.0.1")
        mac = tr.mac(host)
        tr.emit(tr.ts(t), ether(mac, b"\xff" * 6, 0x0806, arp(1, mac, host, bytes(6), router)))
        tr.emit(tr.ts(t + 3e-4), ether(ROUTER_MAC, mac, 0x0806, arp(2, ROUTER_MAC, router, mac, host)))

    frames = sorted(tr.frames, key=lambda fr: fr[0])
    return frames, sorted((fl.record() for fl in tr.flows), key=lambda d: d["start"])


def write_pcap(path: str, frames, snaplen: int = 65535, nanosecond: bool = False) -> None:
    """Classic pcap, little-endian, link type Ethernet; microsecond or nanosecond timestamps."""
    magic, scale = (0xA1B23C4D, 10**9) if nanosecond else (0xA1B2C3D4, 10**6)
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, 1)]
    for ts, frame in frames:
        sec = int(ts // 1)
        frac = round((ts - sec) * scale)
        sec, frac = sec + frac // scale, frac % scale
        cap = frame[:snaplen]
        out.append(struct.pack("<IIII", sec, frac, len(cap), len(frame)) + cap)
    with open(path, "wb") as fh:
        fh.write(b"".join(out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tracegen", description="Write a synthetic trace "
                                "with known sessions (classic pcap, Ethernet).")
    p.add_argument("out", help="pcap file to write")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sessions", type=int, default=200, help="ordinary sessions (the special cases come on top)")
    p.add_argument("--truth", help="also write the expected sessions here, as JSON")
    p.add_argument("--nanosecond", action="store_true", help="nanosecond timestamps (magic a1b23c4d)")
    a = p.parse_args(argv)
    if a.sessions < 0:
        p.error("--sessions must be >= 0")
    frames, truth = build(a.seed, a.sessions)
    write_pcap(a.out, frames, nanosecond=a.nanosecond)
    if a.truth:
        with open(a.truth, "w") as fh:
            json.dump(truth, fh, indent=1)
    print(f"{a.out}: {len(frames)} frames, {len(truth)} expected sessions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
