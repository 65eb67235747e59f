"""Damaged captures and traces with mutated frames, made from real traces, deterministically.

Why: the front-end must survive whatever a capture file holds. This module makes
the evidence: (a) capture files damaged at the file level (cut short, absurd
record lengths, garbage spliced in, zeroed ranges, flipped file-header bits,
broken pcapng blocks, files that are no capture at all), and (b) traces whose
record framing is intact but whose frames are mutated inside (IP/IPv6 lengths,
IHL, next headers, TCP data offset, UDP length, fragment fields, tunnel headers,
VLAN ethertypes, captured length cut), so that the number of frames is known
exactly and every one of them must be accounted for.

Sources are `pipeline.tracegen` traces (always) and, where ../shared/pcaps
exists, a selection of its captures. Everything follows from string seeds
(random.Random(str) is stable across runs and platforms).
"""
from __future__ import annotations

import bz2
import gzip
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import tracegen

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps"

# shared captures used as sources, when present (small ones: every case is a real CLI run)
SHARED_DAMAGE = ("zeek/mixed-vlan-mpls.pcap", "zeek/tunnels__gre-sample.pcap", "nfstream/gtp-u.pcap",
                 "nfstream/dhcp_big_endian.pcapng", "zeek/tunnels__gtp__pdp_ctx_messages.pcapng")
SHARED_MUTATE = ("zeek/mixed-vlan-mpls.pcap", "zeek/pppoe.pcap", "zeek/pppoe-over-qinq.pcap",
                 "zeek/http-qinq-0.pcap", "zeek/tunnels__gre-sample.pcap", "zeek/tunnels__gre-pptp.pcap",
                 "zeek/tunnels__gre-erspan3-dot1q.pcap", "zeek/tunnels__vxlan.pcap", "zeek/tunnels__geneve.pcap",
                 "zeek/tunnels__Teredo.pcap", "zeek/tunnels__6in4.pcap", "nfstream/6in4tunnel.pcap",
                 "nfstream/gtp-u.pcap", "zeek/tunnels__gtp__gtp1_gn_normal_incl_fragmentation.pcap",
                 "zeek/ipv6-fragmented-dns.pcap", "zeek/ipv4__fragmented-1.pcap",
                 "zeek/icmp__icmp6-destunreach-ip6ext.pcap", "zeek/tunnels__gtp__pdp_ctx_messages.pcapng")


@dataclass
class Damaged:
    """A capture file damaged at the file level."""
    name: str
    data: bytes
    damaged: bool           # holds a fault that the reader must report (with its offset) if it reads the file
    fatal: bool             # True: must be refused (exit 2); False: must be read (exit 0)


@dataclass
class Mutated:
    """A trace with intact record framing and mutated frames."""
    name: str
    data: bytes
    frames: int             # records in the file (as written here)
    mutated: int            # frames changed
    notes: list = field(default_factory=list)


# -- reading and writing the two formats (sources are sound files) -----------------------------
def pcap_records(data: bytes):
    """(file header, order, [(record header, frame)]) of a sound classic pcap; None if it is not one."""
    magic = data[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if order is None or len(data) < 24:
        return None
    recs, pos = [], 24
    while pos + 16 <= len(data):
        cap = struct.unpack_from(order + "I", data, pos + 8)[0]
        if pos + 16 + cap > len(data):
            return None
        recs.append((data[pos:pos + 16], data[pos + 16:pos + 16 + cap]))
        pos += 16 + cap
    if pos != len(data):
        return None
    return data[:24], order, recs


def pcap_linktype(header: bytes, order: str) -> int:
    return struct.unpack_from(order + "I", header, 20)[0] & 0xFFFF


def pcapng_blocks(data: bytes):
    """[(offset, type, length)] of a sound single-byte-order pcapng, and its order; None otherwise."""
    if data[:4] != b"\x0a\x0d\x0d\x0a" or len(data) < 28:
        return None
    order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(data[8:12])
    if order is None:
        return None
    out, pos = [], 0
    while pos + 12 <= len(data):
        btype, blen = struct.unpack_from(order + "II", data, pos)
        if blen < 12 or blen % 4 or pos + blen > len(data):
            return None
        out.append((pos, btype, blen))
        pos += blen
    return (out, order) if pos == len(data) else None


def pcapng_frames(data: bytes):
    """[(data offset, caplen, linktype)] of the Enhanced Packet Blocks of a sound pcapng."""
    got = pcapng_blocks(data)
    if got is None:
        return None
    blocks, order = got
    links, out = [], []
    for pos, btype, blen in blocks:
        if btype == 0x0A0D0D0A:
            links = []
        elif btype == 1:
            links.append(struct.unpack_from(order + "H", data, pos + 8)[0])
        elif btype == 6:
            ifc, _, _, cap = struct.unpack_from(order + "IIII", data, pos + 8)
            if ifc < len(links):
                out.append((pos + 28, cap, links[ifc]))
    return out


def _block(order, btype, body):
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def to_pcapng(pcap: bytes, order: str = "<") -> bytes:
    """The same frames as pcapng: one section, one interface, Enhanced Packet Blocks (microseconds)."""
    head, porder, recs = pcap_records(pcap)
    out = [_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)),
           _block(order, 1, struct.pack(order + "HHI", pcap_linktype(head, porder), 0, 65535))]
    nano = head[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    for rh, frame in recs:
        sec, frac, _cap, wire = struct.unpack(porder + "IIII", rh)
        ticks = sec * 1_000_000 + (frac // 1000 if nano else frac)
        out.append(_block(order, 6, struct.pack(order + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                                len(frame), wire) + frame))
    return b"".join(out)


def tracegen_pcap(seed: int, sessions: int = 30, nanosecond: bool = False) -> bytes:
    frames, _ = tracegen.build(seed=seed, sessions=sessions)
    magic, scale = (0xA1B23C4D, 10**9) if nanosecond else (0xA1B2C3D4, 10**6)
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    for ts, frame in frames:
        sec = int(ts)
        frac = min(round((ts - sec) * scale), scale - 1)
        out.append(struct.pack("<IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def shared(names):
    """(name, bytes) of the shared captures in `names` that exist here."""
    out = []
    for n in names:
        p = PCAPS / n
        if p.is_file():
            out.append((n.replace("/", "_"), p.read_bytes()))
    return out


# -- (a) damaged capture files --------------------------------------------------------------
def _set(data: bytearray, at: int, fmt: str, value: int) -> None:
    struct.pack_into(fmt, data, at, value)


def _pcap_damage(name: str, data: bytes) -> list[Damaged]:
    head, order, recs = pcap_records(data)
    starts, pos = [], 24
    for rh, fr in recs:
        starts.append(pos)
        pos += 16 + len(fr)
    snaplen = struct.unpack_from(order + "I", head, 16)[0]
    r = random.Random(f"damage:{name}")
    out = []

    def add(kind, blob, damaged, fatal=False):
        out.append(Damaged(f"{name}:{kind}", bytes(blob), damaged, fatal))

    def mid(lo=1):       # a record (not the first two: something precedes the damage)
        i = r.randrange(min(2, len(recs) - 1), len(recs))
        return i, starts[i]

    for k in range(2):
        i, s = mid()
        add(f"cut-mid-header{k}", data[:s + r.randrange(1, 16)], True)
        i, s = mid()
        if len(recs[i][1]) > 1:
            add(f"cut-mid-record{k}", data[:s + 16 + r.randrange(1, len(recs[i][1]))], True)
    add("cut-file-header", data[:r.randrange(1, 24)], False, True)
    for k, cap in enumerate((snaplen + 1 + r.randrange(300000), 1 << 31, 0xFFFFFFFF)):
        i, s = mid()
        b = bytearray(data)
        _set(b, s + 8, order + "I", cap)
        add(f"caplen-{cap:#x}", b, True)
    i, s = mid()
    b = bytearray(data)
    _set(b, s + 12, order + "I", max(0, len(recs[i][1]) - 1 - r.randrange(10)))    # incl_len > orig_len
    add("incl-over-orig", b, False)
    for k in range(2):
        i, s = mid()
        junk = r.randbytes(r.randrange(37, 3000))
        add(f"garbage-spliced{k}", data[:s] + junk + data[s:], True)
    i, s = mid()
    junk = r.randbytes(r.randrange(100, 2000))
    add("garbage-overwrite", data[:s] + junk + data[s + len(junk):], True)
    i, s = mid()
    n = r.randrange(16, 4000)
    # zeros read as empty records until the walk meets live bytes again: damage is likely, not certain
    add("zeroed-range", data[:s + 5] + bytes(n) + data[s + 5 + n:], False)
    add("concatenated-files", data + data, True)
    for fld, at in (("magic", 0), ("version", 4 if order == "<" else 5), ("linktype", 20 if order == "<" else 23),
                    ("snaplen", 18 if order == "<" else 17)):
        b = bytearray(data)
        b[at] ^= 1 << r.randrange(8)
        add(f"flip-{fld}", b, False, fld in ("magic", "version"))
    b = bytearray(data)
    for _ in range(30):
        i, s = mid()
        b[s + r.randrange(16)] ^= 1 << r.randrange(8)
    add("flipped-record-headers", b, True)
    return out


def _pcapng_damage(name: str, data: bytes) -> list[Damaged]:
    blocks, order = pcapng_blocks(data)
    r = random.Random(f"damage:{name}")
    out = []

    def add(kind, blob, damaged, fatal=False):
        out.append(Damaged(f"{name}:{kind}", bytes(blob), damaged, fatal))

    pkts = [b for b in blocks if b[1] in (2, 3, 6)]
    later = pkts[min(2, len(pkts) - 1):]
    for k in range(2):
        pos, _t, blen = r.choice(later)
        add(f"cut-mid-block{k}", data[:pos + r.randrange(1, blen)], True)
    add("cut-section-header", data[:r.randrange(1, 28)], False, True)
    for k, bad in enumerate((13, 8, 0xFFFFFFF0, 1 << 31)):
        pos, _t, blen = r.choice(later)
        b = bytearray(data)
        _set(b, pos + 4, order + "I", bad)
        add(f"block-length-{bad:#x}", b, True)
    pos, _t, blen = r.choice(later)
    b = bytearray(data)
    _set(b, pos + blen - 4, order + "I", blen + 4)
    add("trailing-length-mismatch", b, True)
    pos, _t, blen = r.choice(later)
    b = bytearray(data)
    _set(b, pos + 20, order + "I", blen)                  # caplen bigger than its block
    add("caplen-over-block", b, True)
    pos = r.choice(later)[0]
    unknown = _block(order, 0x0BADF00D & 0x7FFFFFFF, r.randbytes(40))
    add("unknown-block-type", data[:pos] + unknown + data[pos:], False)
    pos = r.choice(later)[0]
    add("garbage-spliced", data[:pos] + r.randbytes(r.randrange(40, 2000)) + data[pos:], True)
    shb_end = blocks[0][2]
    add("missing-shb", data[shb_end:], False, True)
    add("missing-idb", b"".join(data[p:p + n] for p, t, n in blocks if t != 1), True)
    b = bytearray(data)
    b[8] ^= 0xFF
    add("bad-byte-order-magic", b, False, True)
    b = bytearray(data)
    _set(b, 12, order + "H", 2)
    add("shb-version-2", b, False, True)
    pos = r.choice(later)[0]
    v2 = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 7, 0, -1))
    add("second-section-bad-version", data[:pos] + v2 + data[pos:], True)
    idbs = [b for b in blocks if b[1] == 1]
    if idbs:
        b = bytearray(data)
        b[idbs[0][0] + 8 + (0 if order == "<" else 1)] ^= 1 << r.randrange(8)
        add("flip-idb-linktype", b, False)
    return out


def _not_captures() -> list[Damaged]:
    pcap = tracegen_pcap(5, sessions=3)
    return [Damaged("empty", b"", False, True),
            Damaged("one-byte", b"\xd4", False, True),
            Damaged("magic-only", pcap[:4], False, True),
            Damaged("header-only", pcap[:24], False, False),
            Damaged("text", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n" * 20, False, True),
            Damaged("gzip", gzip.compress(pcap), False, True),
            Damaged("bzip2", bz2.compress(pcap), False, True),
            Damaged("pcapng-magic-only", b"\x0a\x0d\x0d\x0a" + bytes(8), False, True),
            Damaged("random", random.Random("random").randbytes(5000), False, True)]


def damaged_captures() -> list[Damaged]:
    """All file-level damage cases (60+ without ../shared, more with it)."""
    base = tracegen_pcap(1)
    sources = [("tracegen-1", base), ("tracegen-2-nano", tracegen_pcap(2, nanosecond=True))]
    out = []
    for name, data in sources + shared(n for n in SHARED_DAMAGE if n.endswith(".pcap")):
        out += _pcap_damage(name, data)
    ng = [("tracegen-1-ng", to_pcapng(base)), ("tracegen-3-ng-be", to_pcapng(tracegen_pcap(3), ">"))]
    for name, data in ng + shared(n for n in SHARED_DAMAGE if n.endswith(".pcapng")):
        if pcapng_blocks(data) is not None:
            out += _pcapng_damage(name, data)
    return out + _not_captures()


# -- (b) frames mutated inside intact records ------------------------------------------------
def _u16(b, o):
    return struct.unpack_from(">H", b, o)[0]


def _need(b, end):
    if end > len(b):
        raise IndexError


def fields(linktype: int, frame: bytes) -> list[tuple[str, int, int]]:
    """(name, offset, size) of the header fields worth mutating in a frame, outermost first,
    following VLAN/MPLS/PPPoE, IPv6 extension headers and tunnels (GRE, GTP-U, VXLAN, Geneve,
    IP-in-IP, Teredo). Written independently of the decoder under test."""
    out: list = []
    try:
        if linktype == 1:
            _eth(frame, 0, out, 0)
        elif linktype in (101, 12, 14, 228, 229):
            _ip(frame, 0, out, 0)
        elif linktype in (0, 108):
            _ip(frame, 4, out, 0)
        elif linktype == 113:
            _ethertype(frame, 16, 14, out, 0)
        elif linktype == 276:
            _need(frame, 20)
            out.append(("ethertype", 0, 2))
            _ethertype(frame, 20, None, out, 0, _u16(frame, 0))
    except (IndexError, struct.error):
        pass
    return out


def _eth(b, off, out, depth):
    _ethertype(b, off + 14, off + 12, out, depth)


def _ethertype(b, off, etpos, out, depth, et=None):
    if et is None:
        _need(b, etpos + 2)
        out.append(("ethertype", etpos, 2))
        et = _u16(b, etpos)
    while et in (0x8100, 0x88A8, 0x9100):
        _need(b, off + 4)
        out.append(("vlan_ethertype", off + 2, 2))
        et, off = _u16(b, off + 2), off + 4
    if et in (0x8847, 0x8848):
        while True:
            _need(b, off + 4)
            out.append(("mpls", off, 4))
            bos, off = b[off + 2] & 1, off + 4
            if bos:
                break
        _need(b, off + 1)
        if b[off] >> 4 in (4, 6):
            _ip(b, off, out, depth)
        return
    if et == 0x8864:
        _need(b, off + 8)
        out += [("pppoe_length", off + 4, 2), ("ppp_proto", off + 6, 2)]
        if _u16(b, off + 6) in (0x21, 0x57):
            _ip(b, off + 8, out, depth)
        return
    if et in (0x0800, 0x86DD):
        _ip(b, off, out, depth)


def _ip(b, off, out, depth):
    if depth > 6:
        return
    _need(b, off + 20)
    v = b[off] >> 4
    if v == 4:
        out += [("ipv4_ihl", off, 1), ("ipv4_total", off + 2, 2), ("ipv4_frag", off + 6, 2),
                ("ipv4_proto", off + 9, 1)]
        if _u16(b, off + 6) & 0x1FFF:
            return
        _transport(b, off + (b[off] & 15) * 4, b[off + 9], out, depth)
    elif v == 6:
        _need(b, off + 40)
        out += [("ipv6_plen", off + 4, 2), ("ipv6_nh", off + 6, 1)]
        nh, p = b[off + 6], off + 40
        while nh in (0, 43, 44, 51, 60):
            _need(b, p + 8)
            out.append(("ipv6_ext_nh", p, 1))
            if nh == 44:
                out.append(("ipv6_frag", p + 2, 2))
                if _u16(b, p + 2) & 0xFFF8:
                    return
                nh, p = b[p], p + 8
                continue
            out.append(("ipv6_ext_len", p + 1, 1))
            size = (b[p + 1] + 2) * 4 if nh == 51 else (b[p + 1] + 1) * 8
            nh, p = b[p], p + size
        _transport(b, p, nh, out, depth)


def _transport(b, off, proto, out, depth):
    if proto == 6:
        _need(b, off + 13)
        out.append(("tcp_doff", off + 12, 1))
    elif proto == 17:
        _need(b, off + 8)
        out.append(("udp_length", off + 4, 2))
        sport, dport, o = _u16(b, off), _u16(b, off + 2), off + 8
        ports = (sport, dport)
        if 2152 in ports:
            _need(b, o + 8)
            out += [("gtp_flags", o, 1), ("gtp_type", o + 1, 1), ("gtp_length", o + 2, 2)]
            flags = b[o]
            if b[o + 1] == 0xFF and not flags & 4:
                _ip(b, o + (12 if flags & 3 else 8), out, depth + 1)
        elif 4789 in ports:
            _need(b, o + 8)
            out += [("vxlan_flags", o, 1), ("vxlan_vni", o + 4, 3)]
            _eth(b, o + 8, out, depth + 1)
        elif 6081 in ports:
            _need(b, o + 8)
            out += [("geneve_optlen", o, 1), ("geneve_proto", o + 2, 2)]
            proto, inner = _u16(b, o + 2), o + 8 + (b[o] & 0x3F) * 4
            if proto == 0x6558:
                _eth(b, inner, out, depth + 1)
            elif proto in (0x0800, 0x86DD):
                _ip(b, inner, out, depth + 1)
        elif 4754 in ports:
            _gre(b, o, out, depth)
        elif 3544 in ports:
            _need(b, o + 1)
            if b[o] >> 4 == 6:
                _ip(b, o, out, depth + 1)
    elif proto == 47:
        _gre(b, off, out, depth)
    elif proto in (4, 41):
        _ip(b, off, out, depth + 1)


def _gre(b, off, out, depth):
    _need(b, off + 4)
    out += [("gre_flags", off, 2), ("gre_proto", off + 2, 2)]
    flags, proto = _u16(b, off), _u16(b, off + 2)
    if flags & 7 == 1:                                   # PPTP's enhanced GRE
        inner = off + 8 + (4 if flags & 0x1000 else 0) + (4 if flags & 0x80 else 0)
        _need(b, inner + 4)
        if proto == 0x880B and b[inner:inner + 2] == b"\xff\x03" and _u16(b, inner + 2) in (0x21, 0x57):
            _ip(b, inner + 4, out, depth + 1)
        return
    inner = off + 4 + 4 * bin(flags & 0xB000).count("1")
    if proto in (0x0800, 0x86DD):
        _ip(b, inner, out, depth + 1)
    elif proto == 0x6558:
        _eth(b, inner, out, depth + 1)
    elif proto == 0x88BE:
        _eth(b, inner + 8, out, depth + 1)
    elif proto == 0x22EB:
        _need(b, inner + 12)
        _eth(b, inner + 12 + (8 if b[inner + 11] & 1 else 0), out, depth + 1)


FOCUS = {
    "ip-lengths": ("ipv4_total", "ipv6_plen"),
    "ihl": ("ipv4_ihl",),
    "ipv6": ("ipv6_plen", "ipv6_nh", "ipv6_ext_nh", "ipv6_ext_len"),
    "tcp": ("tcp_doff",),
    "udp": ("udp_length",),
    "fragments": ("ipv4_frag", "ipv6_frag", "ipv4_total", "ipv6_plen"),
    "tunnels": ("gtp_flags", "gtp_type", "gtp_length", "gre_flags", "gre_proto", "vxlan_flags", "vxlan_vni",
                "geneve_optlen", "geneve_proto", "ipv4_proto", "udp_length"),
    "l2": ("ethertype", "vlan_ethertype", "mpls", "pppoe_length", "ppp_proto"),
    "caplen": (),
    "bytes": (),
    "mixed": None,
}


def _new_value(r: random.Random, name: str, old: int, size: int) -> int:
    top = (1 << (8 * size)) - 1
    if name == "ipv4_ihl" and r.random() < 0.7:
        return (old & 0xF0) | r.randrange(16)
    if name == "tcp_doff" and r.random() < 0.7:
        return (old & 0x0F) | (r.randrange(16) << 4)
    how = r.randrange(5)
    if how == 0:
        return 0
    if how == 1:
        return top
    if how == 2:
        return r.randrange(top + 1)
    if how == 3:
        return (old + r.choice((-1, 1)) * r.randrange(1, 9)) & top
    return old ^ (1 << r.randrange(8 * size))


def mutate_frame(r: random.Random, linktype: int, frame: bytes, focus: str):
    """The frame mutated as `focus` says (a FOCUS key), and a note; (frame, None) where
    the frame has nothing to mutate for that focus."""
    if focus == "caplen":
        return (frame[:r.randrange(len(frame))], f"cut to {len(frame)}") if frame else (frame, None)
    b = bytearray(frame)
    if focus == "bytes":
        for _ in range(r.randrange(1, 6)):
            if b:
                b[r.randrange(len(b))] = r.randrange(256)
        return bytes(b), "random bytes"
    if focus == "mixed" and r.random() < 0.15:
        return mutate_frame(r, linktype, frame, r.choice(("caplen", "bytes")))
    want = FOCUS[focus]
    cands = [f for f in fields(linktype, frame) if want is None or f[0] in want]
    if not cands:
        return frame, None
    notes = []
    for _ in range(1 if r.random() < 0.7 else 2):
        name, off, size = r.choice(cands)
        old = int.from_bytes(b[off:off + size], "big")
        new = _new_value(r, name, old, size)
        b[off:off + size] = new.to_bytes(size, "big")
        notes.append(f"{name}@{off} {old:#x}->{new:#x}")
    return bytes(b), "; ".join(notes)


def mutate_pcap(name: str, data: bytes, focus: str, rate: float = 0.6) -> Mutated | None:
    """Mutate the frames of a sound classic pcap; record headers stay consistent (a cut
    frame gets its caplen rewritten, its wire length kept)."""
    got = pcap_records(data)
    if got is None:
        return None
    head, order, recs = got
    lt = pcap_linktype(head, order)
    r = random.Random(f"mutate:{name}:{focus}")
    out, n = [head], 0
    notes = []
    for i, (rh, frame) in enumerate(recs):
        if r.random() < rate:
            new, note = mutate_frame(r, lt, frame, focus)
            if note is not None and new != frame:
                n += 1
                notes.append(f"frame {i + 1}: {note}")
                if len(new) != len(frame):
                    rh = rh[:8] + struct.pack(order + "I", len(new)) + rh[12:]
                frame = new
        out.append(rh + frame)
    return Mutated(f"{name}:{focus}", b"".join(out), len(recs), n, notes)


def mutate_pcapng(name: str, data: bytes, focus: str, rate: float = 0.6) -> Mutated | None:
    """Mutate frames of a sound pcapng in place (same length: blocks stay sound)."""
    frames = pcapng_frames(data)
    if frames is None or focus == "caplen":
        return None
    b = bytearray(data)
    r = random.Random(f"mutate:{name}:{focus}")
    n, notes = 0, []
    for i, (off, cap, lt) in enumerate(frames):
        if r.random() < rate:
            frame = bytes(b[off:off + cap])
            new, note = mutate_frame(r, lt, frame, focus)
            if note is not None and new != frame and len(new) == len(frame):
                b[off:off + cap] = new
                n += 1
                notes.append(f"frame {i + 1}: {note}")
    return Mutated(f"{name}:{focus}", bytes(b), len(frames), n, notes)


def mutated_traces() -> list[Mutated]:
    """All mutated traces (20+ without ../shared, more with it)."""
    out = []
    for seed in (1, 2):
        base = tracegen_pcap(seed, sessions=40)
        for focus in FOCUS:
            out.append(mutate_pcap(f"tracegen-{seed}", base, focus))
    out.append(mutate_pcapng("tracegen-3-ng", to_pcapng(tracegen_pcap(3, sessions=40)), "mixed"))
    for name, data in shared(SHARED_MUTATE):
        for focus in ("mixed", "tunnels") if "tunnel" in name or "gtp" in name else ("mixed",):
            m = (mutate_pcapng if name.endswith(".pcapng") else mutate_pcap)(name, data, focus, rate=0.8)
            if m is not None and m.mutated:
                out.append(m)
    return [m for m in out if m is not None]
