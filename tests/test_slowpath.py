"""The slow path: every link type, VLAN/QinQ, MPLS, PPPoE, LLC/SNAP, IPv6 extension
headers, fragments, every tunnel kind, malformed frames; frames built here with
struct. Hypothesis fuzzes `decode` (random bytes for every link type, bit flips and
truncations of valid frames) and `decode_transport`: no exception, ever. Over the
shared captures: no exception, and every Zeek tunnel capture yields its tunnel."""
import struct
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.frontend import slowpath
from pipeline.frontend.decoded import IP, MALFORMED, NON_IP, Layer
from pipeline.frontend.fragments import FrameMeta, Reassembler
from pipeline.frontend.linktypes import LINKTYPES
from pipeline.frontend.tunnels import UDP_TUNNEL_PORTS

decode = slowpath.decode

A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
C4, D4 = bytes([192, 168, 1, 1]), bytes([192, 168, 1, 2])
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")
MAC = bytes.fromhex("020000000001020000000002")


# -- builders ------------------------------------------------------------------------
def tcp(sport=1234, dport=80, seq=1000, ack=2000, flags=0x18, data=b"", opts=b""):
    doff = (20 + len(opts)) // 4
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 65535, 0, 0) + opts + data


def udp(sport=5000, dport=53, data=b""):
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def ipv4(proto, payload, src=A4, dst=B4, ident=7, mf=False, offset=0, total=None, ihl=5, opts=b""):
    ihl = ihl if not opts else 5 + len(opts) // 4
    total = 4 * ihl + len(payload) if total is None else total
    fr = (0x2000 if mf else 0) | (offset // 8)
    return struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, total, ident, fr, 64, proto, 0, src, dst) + opts + payload


def ipv6(nh, payload, src=A6, dst=B6, plen=None):
    plen = len(payload) if plen is None else plen
    return struct.pack(">IHBB16s16s", 6 << 28, plen, nh, 64, src, dst) + payload


def ext(nh, size=8):
    """A generic IPv6 extension header (hop-by-hop, routing, destination options) of `size` bytes."""
    return bytes([nh, size // 8 - 1]) + bytes(size - 2)


def ah(nh, size=24):
    return bytes([nh, size // 4 - 2]) + bytes(size - 2)


def frag6(nh, offset=0, more=False, ident=0x1234):
    return struct.pack(">BBHI", nh, 0, offset | (1 if more else 0), ident)


def eth(et, payload, tags=()):
    out = MAC
    for tpid, vid in tags:
        out += struct.pack(">HH", tpid, vid)
    return out + struct.pack(">H", et) + payload


def mpls(*labels):
    out = b""
    for i, label in enumerate(labels):
        out += struct.pack(">I", (label << 12) | (1 << 8 if i == len(labels) - 1 else 0) | 64)
    return out


def gre(proto, payload, key=None, csum=False, seq=None):
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    out = struct.pack(">HH", flags, proto)
    if csum:
        out += bytes(4)
    if key is not None:
        out += struct.pack(">I", key)
    if seq is not None:
        out += struct.pack(">I", seq)
    return out + payload


def gtp(teid, inner, mtype=0xFF, seq=None, exts=()):
    flags = 0x30
    opt = b""
    if seq is not None or exts:
        flags |= (0x02 if seq is not None else 0) | (0x04 if exts else 0)
        opt = struct.pack(">HBB", seq or 0, 0, exts[0][0] if exts else 0)
        for i, (_, content) in enumerate(exts):
            nxt = exts[i + 1][0] if i + 1 < len(exts) else 0
            body = content + bytes(-(len(content) + 2) % 4)
            opt += bytes([(len(body) + 2) // 4]) + body + bytes([nxt])
    return struct.pack(">BBHI", flags, mtype, len(opt) + len(inner), teid) + opt + inner


def vxlan(vni, inner):
    return struct.pack(">BBHI", 0x08, 0, 0, vni << 8) + inner


def geneve(vni, proto, inner, opts=b""):
    return struct.pack(">BBHI", len(opts) // 4, 0, proto, vni << 8) + opts + inner


def e4(inner=None, **kw):
    """Ethernet + IPv4 + TCP, the usual inner packet."""
    return eth(0x0800, ipv4(6, tcp(**kw) if inner is None else inner, src=C4, dst=D4))


def ip4_tcp(**kw):
    return ipv4(6, tcp(**kw), src=C4, dst=D4)


def udp4(sport, dport, payload, src=A4, dst=B4):
    return eth(0x0800, ipv4(17, udp(sport, dport, payload), src=src, dst=dst))


def layers(d):
    return [(l.path, l.tunnel, l.tunnel_id) for l in d.layers]


# -- plain frames and link types --------------------------------------------------------
def test_ethernet_ipv4_tcp_fields():
    d = decode(1, eth(0x0800, ipv4(6, tcp(sport=40000, dport=443, seq=7, ack=9, flags=0xC2, data=b"x" * 10))))
    assert d.kind == IP and not d.error and not d.inner_malformed
    (l,) = d.layers
    assert (l.ipver, l.src, l.dst, l.proto, l.path) == (4, A4, B4, 6, "eth.ipv4.tcp")
    assert (l.sport, l.dport, l.seq, l.ack, l.tcpflags, l.payload) == (40000, 443, 7, 9, 0xC2, 10)
    assert l.vlans == () and l.frag is None and l.tunnel is None and l.tunnel_id == 0


def test_ethernet_ipv6_udp_and_icmp():
    d = decode(1, eth(0x86DD, ipv6(17, udp(5353, 5353, b"q" * 20))))
    (l,) = d.layers
    assert (l.ipver, l.src, l.dst, l.path, l.sport, l.dport, l.payload) == (6, A6, B6, "eth.ipv6.udp", 5353, 5353, 20)
    d = decode(1, eth(0x0800, ipv4(1, b"\x08\x00" + bytes(30))))
    (l,) = d.layers
    assert (l.path, l.sport, l.dport, l.payload) == ("eth.ipv4.icmp", 0, 0, 24)    # after the 8-byte header
    d = decode(1, eth(0x86DD, ipv6(58, b"\x80\x00" + bytes(14))))
    assert d.layers[0].path == "eth.ipv6.icmpv6" and d.layers[0].payload == 8
    d = decode(1, eth(0x0800, ipv4(1, b"\x08\x00")))                              # cut inside: not malformed
    assert d.kind == IP and d.layers[0].payload == 0


PKT4 = ipv4(17, udp(1000, 2000, b"abcd"))
PKT6 = ipv6(6, tcp())

LINK_FRAMES = [
    (1, eth(0x0800, PKT4), "eth.ipv4.udp"),
    (113, struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x0800) + PKT4, "sll.ipv4.udp"),
    (113, struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x86DD) + PKT6, "sll.ipv6.tcp"),
    (276, struct.pack(">HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, bytes(8)) + PKT6, "sll2.ipv6.tcp"),
    (276, struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes(8)) + PKT4, "sll2.ipv4.udp"),
    (0, struct.pack("<I", 2) + PKT4, "null.ipv4.udp"),
    (0, struct.pack(">I", 2) + PKT4, "null.ipv4.udp"),
    (0, struct.pack("<I", 30) + PKT6, "null.ipv6.tcp"),
    (108, struct.pack(">I", 24) + PKT6, "null.ipv6.tcp"),
    (108, struct.pack(">I", 28) + PKT6, "null.ipv6.tcp"),
    (12, PKT4, "raw.ipv4.udp"),
    (14, PKT6, "raw.ipv6.tcp"),
    (101, PKT4, "raw.ipv4.udp"),
    (101, PKT6, "raw.ipv6.tcp"),
    (228, PKT4, "raw.ipv4.udp"),
    (229, PKT6, "raw.ipv6.tcp"),
    (9, b"\xff\x03\x00\x21" + PKT4, "ppp.ipv4.udp"),
    (9, b"\x00\x57" + PKT6, "ppp.ipv6.tcp"),
    (9, b"\x21" + PKT4, "ppp.ipv4.udp"),                       # compressed protocol field
    (9, b"\x0f\x00\x08\x00" + PKT4, "chdlc.ipv4.udp"),         # Cisco HDLC under DLT_PPP
    (50, b"\xff\x03\x00\x21" + PKT4, "ppp.ipv4.udp"),
    (104, b"\x0f\x00\x08\x00" + PKT4, "chdlc.ipv4.udp"),
    (104, b"\x8f\x00\x86\xdd" + PKT6, "chdlc.ipv6.tcp"),
    (104, b"\x0f\x00\x88\x47" + mpls(16) + PKT4, "chdlc.mpls.ipv4.udp"),
    (105, b"\x08\x01" + bytes(22) + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + PKT4, "wlan.llc.ipv4.udp"),
    (127, b"\x00\x00\x08\x00" + bytes(4) + b"\x08\x01" + bytes(22) + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + PKT4,
     "radiotap.wlan.llc.ipv4.udp"),
]


@pytest.mark.parametrize("linktype,frame,path", LINK_FRAMES)
def test_link_types(linktype, frame, path):
    d = decode(linktype, frame)
    assert d.kind == IP, d.error
    (l,) = d.layers
    assert l.path == path
    if l.ipver == 4:
        assert (l.src, l.dst, l.sport, l.dport, l.payload) == (A4, B4, 1000, 2000, 4)
    else:
        assert (l.src, l.dst, l.sport, l.dport) == (A6, B6, 1234, 80)


@pytest.mark.parametrize("linktype,frame,error", [
    (147, PKT4, "linktype 147 not decoded"),
    (1, eth(0x0806, bytes(28)), "arp"),
    (1, eth(0x88CC, bytes(40)), "lldp"),
    (1, eth(0x8863, bytes(20)), "pppoe discovery"),
    (1, eth(26, b"\x42\x42\x03" + bytes(23)), "llc sap 0x42"),          # STP
    (1, eth(0x8864, b"\x11\x00\x00\x01\x00\x06\xc0\x21" + bytes(4)), "ppp protocol 0xc021"),   # LCP
    (104, b"\x8f\x00\x80\x35" + bytes(20), "slarp"),
    (104, b"\x8f\x00\x20\x00" + bytes(20), "cdp"),
    (113, struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x0806) + bytes(28), "arp"),
    (0, struct.pack("<I", 99) + PKT4, "null family 99"),
    (105, b"\x80\x00" + bytes(40), "802.11 management/control"),
])
def test_non_ip(linktype, frame, error):
    d = decode(linktype, frame)
    assert (d.kind, d.error, d.layers) == (NON_IP, error, [])


# -- VLAN, MPLS, PPPoE, LLC/SNAP -----------------------------------------------------------
def test_vlan_and_qinq():
    d = decode(1, eth(0x0800, PKT4, tags=[(0x8100, 0x2000 | 10)]))
    assert d.layers[0].path == "eth.vlan.ipv4.udp" and d.layers[0].vlans == (10,)
    d = decode(1, eth(0x86DD, PKT6, tags=[(0x88A8, 100), (0x8100, 0xE000 | 200)]))
    assert d.layers[0].path == "eth.vlan.vlan.ipv6.tcp" and d.layers[0].vlans == (100, 200)
    d = decode(1, eth(0x0800, PKT4, tags=[(0x9100, 1), (0x9100, 2), (0x8100, 3)]))
    assert d.layers[0].path == "eth.vlan.vlan.vlan.ipv4.udp" and d.layers[0].vlans == (1, 2, 3)


def test_mpls():
    d = decode(1, eth(0x8847, mpls(100) + PKT4))
    assert d.layers[0].path == "eth.mpls.ipv4.udp"
    d = decode(1, eth(0x8848, mpls(100, 200, 300) + PKT6, tags=[(0x8100, 5)]))
    assert d.layers[0].path == "eth.vlan.mpls.mpls.mpls.ipv6.tcp" and d.layers[0].vlans == (5,)
    # Ethernet pseudo-wire with and without the control word
    d = decode(1, eth(0x8847, mpls(100, 200) + bytes(4) + eth(0x0800, PKT4, tags=[(0x8100, 7)])))
    assert d.layers[0].path == "eth.mpls.mpls.eth.vlan.ipv4.udp" and d.layers[0].vlans == (7,)
    d = decode(1, eth(0x8847, mpls(100) + eth(0x0800, PKT4)))
    assert d.layers[0].path == "eth.mpls.eth.ipv4.udp"
    # unknown payload: not IP; no bottom of stack before the end: malformed
    assert decode(1, eth(0x8847, mpls(100) + b"\x91" + bytes(40))).kind == NON_IP
    assert decode(1, eth(0x8847, struct.pack(">I", 100 << 12) * 3)).kind == MALFORMED
    assert decode(1, eth(0x8847, mpls(*range(1, 40)) + PKT4)).kind == MALFORMED


def test_pppoe_session():
    body = b"\x00\x21" + PKT4
    d = decode(1, eth(0x8864, struct.pack(">BBHH", 0x11, 0, 0x1234, len(body)) + body))
    assert d.kind == IP and d.layers[0].path == "eth.pppoe.ppp.ipv4.udp"
    body = b"\x00\x57" + PKT6
    d = decode(1, eth(0x8864, struct.pack(">BBHH", 0x11, 0, 1, len(body)) + body,
                      tags=[(0x88A8, 10), (0x8100, 20)]))
    assert d.layers[0].path == "eth.vlan.vlan.pppoe.ppp.ipv6.tcp" and d.layers[0].vlans == (10, 20)


def test_llc_snap():
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + PKT4
    d = decode(1, eth(len(snap), snap))
    assert d.kind == IP and d.layers[0].path == "eth.llc.ipv4.udp"
    snap = b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + bytes(20)    # CDP
    assert decode(1, eth(len(snap), snap)).error == "cdp"


# -- IP details ----------------------------------------------------------------------------
def test_ipv4_options_padding_tso_and_snaplen():
    d = decode(1, eth(0x0800, ipv4(6, tcp(data=b"z" * 5), opts=b"\x01\x01\x01\x00")))
    assert d.layers[0].payload == 5 and d.layers[0].dport == 80
    # Ethernet padding is not payload
    frame = eth(0x0800, ipv4(6, tcp()))
    assert decode(1, frame + bytes(60 - len(frame))).layers[0].payload == 0
    # total length 0 (TSO): the captured length
    d = decode(1, eth(0x0800, ipv4(6, tcp(data=b"y" * 3000), total=0)))
    assert d.kind == IP and d.layers[0].payload == 3000
    # snaplen: payload from the IP lengths, not the capture
    d = decode(1, eth(0x0800, ipv4(6, tcp(data=b"y" * 1400)))[:80])
    assert d.kind == IP and d.layers[0].payload == 1400
    d = decode(1, eth(0x86DD, ipv6(6, tcp(data=b"y" * 1400)))[:68])   # 14 bytes of TCP: enough
    assert d.kind == IP and d.layers[0].payload == 1400 and d.layers[0].tcpflags == 0x18
    # TCP options are part of the header
    d = decode(1, eth(0x0800, ipv4(6, tcp(opts=b"\x02\x04\x05\xb4" + bytes(8), data=b"d" * 7))))
    assert d.layers[0].payload == 7


def test_ipv6_extension_headers():
    d = decode(1, eth(0x86DD, ipv6(0, ext(43, 8) + ext(60, 16) + ext(6, 8) + tcp(data=b"p" * 9))))
    (l,) = d.layers
    assert (l.proto, l.path, l.dport, l.payload) == (6, "eth.ipv6.tcp", 80, 9)
    # AH is skipped like an extension header
    d = decode(1, eth(0x86DD, ipv6(51, ah(17, 24) + udp(1, 2, b"q" * 3))))
    assert (d.layers[0].proto, d.layers[0].sport, d.layers[0].payload) == (17, 1, 3)
    # mobility header, then no next header
    d = decode(1, eth(0x86DD, ipv6(135, ext(59, 8))))
    assert (d.layers[0].proto, d.layers[0].path, d.layers[0].payload) == (59, "eth.ipv6.ipv6-nonxt", 0)
    # ESP is a transport
    d = decode(1, eth(0x86DD, ipv6(60, ext(50, 8) + bytes(40))))
    assert (d.layers[0].proto, d.layers[0].path, d.layers[0].payload, d.layers[0].sport) == (50, "eth.ipv6.esp", 40, 0)
    # SCTP: ports and a 12-byte common header; other transports: no ports, the whole payload
    d = decode(1, eth(0x0800, ipv4(132, struct.pack(">HHII", 36412, 2905, 0, 0) + bytes(20))))
    assert (d.layers[0].path, d.layers[0].sport, d.layers[0].dport, d.layers[0].payload) == ("eth.ipv4.sctp", 36412, 2905, 20)
    d = decode(1, eth(0x0800, ipv4(89, bytes(44))))
    assert (d.layers[0].path, d.layers[0].payload) == ("eth.ipv4.ospf", 44)
    d = decode(1, eth(0x0800, ipv4(253, bytes(10))))
    assert (d.layers[0].path, d.layers[0].proto) == ("eth.ipv4", 253)


def test_ipv4_fragments():
    data = udp(5000, 53, b"D" * 100)
    first = decode(1, eth(0x0800, ipv4(17, data[:48], ident=99, mf=True)))
    (l,) = first.layers
    assert first.kind == IP and l.frag is not None and l.path == "eth.ipv4"
    assert (l.sport, l.dport) == (0, 0)
    assert (l.frag.ident, l.frag.offset, l.frag.more, l.frag.proto, l.frag.payload, l.frag.payload_len) == \
        (99, 0, True, 17, data[:48], 48)
    mid = decode(1, eth(0x0800, ipv4(17, data[48:96], ident=99, mf=True, offset=48)))
    assert (mid.layers[0].frag.offset, mid.layers[0].frag.more, mid.layers[0].frag.payload) == (48, True, data[48:96])
    last = decode(1, eth(0x0800, ipv4(17, data[96:], ident=99, offset=96)))
    assert (last.layers[0].frag.offset, last.layers[0].frag.more) == (96, False)
    # snaplen: the captured bytes, the IP length
    cut = decode(1, eth(0x0800, ipv4(17, data[:96], ident=99, mf=True))[:60])
    assert cut.layers[0].frag.payload_len == 96 and len(cut.layers[0].frag.payload) == 60 - 34
    # reassembled: decode_transport finishes the layer
    out = slowpath.decode_transport(l, data)
    assert len(out) == 1
    done = out[0]
    assert (done.frag, done.path, done.sport, done.dport, done.payload, done.src) == (None, "eth.ipv4.udp", 5000, 53, 100, A4)
    assert l.frag is not None   # the input layer is left alone


def test_ipv6_fragments_and_atomic():
    data = tcp(data=b"T" * 64)
    d = decode(1, eth(0x86DD, ipv6(0, ext(44, 8) + frag6(6, 0, True, 0xABCD) + data[:40])))
    (l,) = d.layers
    assert l.frag is not None and (l.frag.ident, l.frag.offset, l.frag.more, l.frag.proto) == (0xABCD, 0, True, 6)
    assert l.frag.payload == data[:40] and l.frag.payload_len == 40 and l.path == "eth.ipv6" and l.sport == 0
    d = decode(1, eth(0x86DD, ipv6(44, frag6(6, 40, False, 0xABCD) + data[40:])))
    assert (d.layers[0].frag.offset, d.layers[0].frag.more, d.layers[0].frag.payload_len) == (40, False, len(data) - 40)
    atomic = decode(1, eth(0x86DD, ipv6(44, frag6(6, 0, False) + data)))
    assert atomic.layers[0].frag is not None and atomic.layers[0].frag.more is False
    (done,) = slowpath.decode_transport(atomic.layers[0], atomic.layers[0].frag.payload)
    assert (done.path, done.dport, done.payload, done.tcpflags, done.frag) == ("eth.ipv6.tcp", 80, 64, 0x18, None)
    # extension headers after the fragment header are in the fragmentable part
    dgram = ext(17, 16) + udp(7, 8, b"u" * 10)
    d = decode(1, eth(0x86DD, ipv6(44, frag6(60, 0, False) + dgram)))
    assert d.layers[0].frag.proto == 60
    (done,) = slowpath.decode_transport(d.layers[0], d.layers[0].frag.payload)
    assert (done.proto, done.sport, done.dport, done.payload, done.path) == (17, 7, 8, 10, "eth.ipv6.udp")


def test_decode_transport_tunnel_and_malformed():
    inner = ipv4(6, tcp(sport=1, dport=2), src=C4, dst=D4)
    data = udp(2152, 2152, gtp(77, inner))
    first = decode(1, eth(0x0800, ipv4(17, data[:32], mf=True))).layers[0]
    out = slowpath.decode_transport(first, data)
    assert [(l.path, l.tunnel, l.tunnel_id) for l in out] == [
        ("eth.ipv4.udp.gtp", "gtp", 77, ), ("eth.ipv4.udp.gtp.ipv4.tcp", None, 0)]
    assert (out[1].src, out[1].sport, out[1].dport) == (C4, 1, 2)
    # the capture kept less than the datagram: payload from the declared length
    (done,) = slowpath.decode_transport(first, data[:20], length=len(data) + 100)
    assert done.payload == len(data) + 100 - 8
    # a transport header too short: the layer with ports 0, nothing inner
    tfirst = decode(1, eth(0x0800, ipv4(6, tcp()[:8], mf=True))).layers[0]
    out = slowpath.decode_transport(tfirst, tcp()[:10])
    assert len(out) == 1 and out[0].frag is None and (out[0].sport, out[0].dport) == (0, 0)
    assert out[0].path == "eth.ipv4.tcp"
    # depth limit applies
    assert len(slowpath.decode_transport(first, data, max_depth=0)) == 1


# -- tunnels ---------------------------------------------------------------------------
def test_gtp():
    d = decode(1, udp4(40000, 2152, gtp(0xDEADBEEF, ip4_tcp(sport=9, dport=10))))
    assert layers(d) == [("eth.ipv4.udp.gtp", "gtp", 0xDEADBEEF), ("eth.ipv4.udp.gtp.ipv4.tcp", None, 0)]
    assert (d.layers[1].src, d.layers[1].dst, d.layers[1].sport, d.layers[1].dport) == (C4, D4, 9, 10)
    assert d.layers[0].vlans == () and d.layers[0].payload == len(gtp(0, ip4_tcp()))
    # source port 2152 only, sequence number, extension headers, IPv6 inner
    inner6 = ipv6(17, udp(1, 2))
    d = decode(1, udp4(2152, 3000, gtp(5, inner6, seq=1, exts=[(0x85, b"\x01\x09"), (0x40, b"\x00\x00\x00\x00\x00\x00")])))
    assert layers(d) == [("eth.ipv4.udp.gtp", "gtp", 5), ("eth.ipv4.udp.gtp.ipv6.udp", None, 0)]
    # not a G-PDU / not GTPv1 / too short: a plain UDP layer
    for payload in (gtp(5, ip4_tcp(), mtype=1), b"\x50\xff" + bytes(20), b"\x30\xff\x00"):
        d = decode(1, udp4(2152, 2152, payload))
        assert layers(d) == [("eth.ipv4.udp", None, 0)] and d.kind == IP
    # an inner packet that is not IP: outer kept, inner malformed
    d = decode(1, udp4(2152, 2152, gtp(5, b"\x71" + bytes(30))))
    assert d.kind == IP and d.inner_malformed and layers(d) == [("eth.ipv4.udp.gtp", "gtp", 5)]


def test_gre_variants():
    d = decode(1, eth(0x0800, ipv4(47, gre(0x0800, ip4_tcp()))))
    assert layers(d) == [("eth.ipv4.gre", "gre", 0), ("eth.ipv4.gre.ipv4.tcp", None, 0)]
    d = decode(1, eth(0x0800, ipv4(47, gre(0x86DD, ipv6(17, udp(1, 2)), key=42, csum=True, seq=3))))
    assert layers(d) == [("eth.ipv4.gre", "gre", 42), ("eth.ipv4.gre.ipv6.udp", None, 0)]
    d = decode(1, eth(0x86DD, ipv6(47, gre(0x6558, e4(), key=7))))
    assert layers(d) == [("eth.ipv6.gre", "gre", 7), ("eth.ipv6.gre.eth.ipv4.tcp", None, 0)]
    d = decode(1, eth(0x0800, ipv4(47, gre(0x8847, mpls(10) + ip4_tcp()))))
    assert layers(d)[1] == ("eth.ipv4.gre.mpls.ipv4.tcp", None, 0)
    # Aruba: the client's 802.11 data frame; a management frame leaves the tunnel without an inner layer
    wlan = b"\x08\x01" + bytes(22) + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ip4_tcp()
    for proto in (0x8200, 0x8210, 0x8370, 0x9000):
        d = decode(1, eth(0x0800, ipv4(47, gre(proto, wlan))))
        assert layers(d) == [("eth.ipv4.gre", "gre", 0), ("eth.ipv4.gre.wlan.llc.ipv4.tcp", None, 0)]
    d = decode(1, eth(0x0800, ipv4(47, gre(0x8200, bytes(60)))))
    assert d.kind == IP and not d.inner_malformed and layers(d) == [("eth.ipv4.gre", "gre", 0)]
    assert d.error == "inner not ip: 802.11 management/control"
    assert layers(decode(1, eth(0x0800, ipv4(47, gre(0x8201, wlan))))) == [("eth.ipv4.gre", None, 0)]
    # GRE-in-GRE
    d = decode(1, eth(0x0800, ipv4(47, gre(0x0800, ipv4(47, gre(0x0800, ip4_tcp(), key=2)), key=1))))
    assert layers(d) == [("eth.ipv4.gre", "gre", 1), ("eth.ipv4.gre.ipv4.gre", "gre", 2),
                         ("eth.ipv4.gre.ipv4.gre.ipv4.tcp", None, 0)]


def test_pptp_enhanced_gre():
    ppp = b"\xff\x03\x00\x21" + ip4_tcp()
    hdr = struct.pack(">HHHHI", 0x3001, 0x880B, len(ppp), 0x1234, 5)     # K, S, version 1
    d = decode(1, eth(0x0800, ipv4(47, hdr + ppp)))
    assert layers(d) == [("eth.ipv4.gre", "gre", 0x1234), ("eth.ipv4.gre.ppp.ipv4.tcp", None, 0)]
    ack_only = struct.pack(">HHHHI", 0x2081, 0x880B, 0, 0x1234, 5)
    assert layers(decode(1, eth(0x0800, ipv4(47, ack_only)))) == [("eth.ipv4.gre", None, 0)]


def test_erspan():
    inner = eth(0x0800, ipv4(17, udp(1, 2), src=C4, dst=D4), tags=[(0x8100, 10)])
    t2 = struct.pack(">HHI", 0x1000 | 5, 0x0000 | 300, 0) + inner          # version 1, session 300
    d = decode(1, eth(0x0800, ipv4(47, gre(0x88BE, t2, seq=1))))
    assert layers(d) == [("eth.ipv4.gre.erspan", "erspan", 300), ("eth.ipv4.gre.erspan.eth.vlan.ipv4.udp", None, 0)]
    assert d.layers[1].vlans == (10,) and d.layers[0].vlans == ()
    t3 = struct.pack(">HHIHH", 0x2000 | 10, 0x0000 | 0x3FF, 0, 0, 0) + inner     # version 2, session 1023
    d = decode(1, eth(0x0800, ipv4(47, gre(0x22EB, t3, seq=1))))
    assert layers(d) == [("eth.ipv4.gre.erspan", "erspan", 1023), ("eth.ipv4.gre.erspan.eth.vlan.ipv4.udp", None, 0)]
    t3o = struct.pack(">HHIHH", 0x2000, 9, 0, 0, 1) + bytes(8) + inner         # optional sub-header
    assert layers(decode(1, eth(0x0800, ipv4(47, gre(0x22EB, t3o)))))[0] == ("eth.ipv4.gre.erspan", "erspan", 9)
    d = decode(1, eth(0x0800, ipv4(47, gre(0x88BE, inner))))                    # type I: no header
    assert layers(d)[0] == ("eth.ipv4.gre.erspan", "erspan", 0) and len(d.layers) == 2


@pytest.mark.parametrize("outer,nh,inner,path", [
    (4, 4, ip4_tcp(), "eth.ipv4.ipv4.tcp"),
    (4, 41, ipv6(17, udp(1, 2)), "eth.ipv4.ipv6.udp"),
    (6, 4, ip4_tcp(), "eth.ipv6.ipv4.tcp"),
    (6, 41, ipv6(17, udp(1, 2)), "eth.ipv6.ipv6.udp"),
])
def test_ip_in_ip(outer, nh, inner, path):
    frame = eth(0x0800, ipv4(nh, inner)) if outer == 4 else eth(0x86DD, ipv6(nh, inner))
    d = decode(1, frame)
    assert layers(d) == [(f"eth.ipv{outer}", "ipip", 0), (path, None, 0)]
    assert d.layers[0].proto == nh and d.layers[0].payload == len(inner)


def test_ipip_version_mismatch_is_inner_malformed():
    d = decode(1, eth(0x0800, ipv4(4, ipv6(17, udp(1, 2)))))
    assert d.kind == IP and d.inner_malformed and layers(d) == [("eth.ipv4", "ipip", 0)]


def test_6in6in6():
    d = decode(1, eth(0x86DD, ipv6(41, ipv6(41, ipv6(17, udp(1, 2))))))
    assert [l.path for l in d.layers] == ["eth.ipv6", "eth.ipv6.ipv6", "eth.ipv6.ipv6.ipv6.udp"]


def test_vxlan_geneve():
    d = decode(1, udp4(5555, 4789, vxlan(0xABCDE, e4(sport=3, dport=4))))
    assert layers(d) == [("eth.ipv4.udp.vxlan", "vxlan", 0xABCDE), ("eth.ipv4.udp.vxlan.eth.ipv4.tcp", None, 0)]
    assert (d.layers[1].src, d.layers[1].sport, d.layers[1].dport) == (C4, 3, 4)
    # only the destination port counts for VXLAN; I flag required
    assert len(decode(1, udp4(4789, 5555, vxlan(1, e4()))).layers) == 1
    assert len(decode(1, udp4(5555, 4789, b"\x00" + vxlan(1, e4())[1:])).layers) == 1
    inner = eth(0x0800, ip4_tcp(), tags=[(0x8100, 33)])
    d = decode(1, udp4(5555, 6081, geneve(77, 0x6558, inner, opts=bytes(12))))
    assert layers(d) == [("eth.ipv4.udp.geneve", "geneve", 77), ("eth.ipv4.udp.geneve.eth.vlan.ipv4.tcp", None, 0)]
    assert d.layers[1].vlans == (33,)
    d = decode(1, udp4(5555, 6081, geneve(78, 0x86DD, ipv6(17, udp(1, 2)))))
    assert layers(d)[1] == ("eth.ipv4.udp.geneve.ipv6.udp", None, 0)
    d = decode(1, udp4(5555, 6081, geneve(78, 0x0806, bytes(28))))          # ARP directly: no tunnel
    assert layers(d) == [("eth.ipv4.udp", None, 0)]
    # inner Ethernet carrying ARP: the tunnel stands, no inner layer, not malformed
    d = decode(1, udp4(5555, 4789, vxlan(9, eth(0x0806, bytes(28)))))
    assert layers(d) == [("eth.ipv4.udp.vxlan", "vxlan", 9)] and not d.inner_malformed and "arp" in d.error
    # inner frame cut short: inner malformed, outer kept with its tunnel
    d = decode(1, udp4(5555, 4789, vxlan(9, e4()[:30])))
    assert d.kind == IP and d.inner_malformed and layers(d) == [("eth.ipv4.udp.vxlan", "vxlan", 9)]


def test_teredo():
    inner = ipv6(58, b"\x80\x00" + bytes(14))
    d = decode(1, udp4(3544, 50000, inner))
    assert layers(d) == [("eth.ipv4.udp.teredo", "teredo", 0), ("eth.ipv4.udp.teredo.ipv6.icmpv6", None, 0)]
    origin = b"\x00\x00" + bytes(6)
    auth = b"\x00\x01\x02\x03" + b"id" + b"abc" + bytes(8) + b"\x00"
    for pre in (origin, auth, auth + origin):
        d = decode(1, udp4(50000, 3544, pre + inner))
        assert layers(d)[0] == ("eth.ipv4.udp.teredo", "teredo", 0) and len(d.layers) == 2
    # bubble (no next header) with trailing bytes: still IPv6
    assert len(decode(1, udp4(3544, 1, ipv6(59, b"") + b"xxxx")).layers) == 2
    # not IPv6, or a payload length beyond the UDP payload: plain UDP
    assert layers(decode(1, udp4(3544, 1, ip4_tcp() + bytes(20)))) == [("eth.ipv4.udp", None, 0)]
    assert layers(decode(1, udp4(3544, 1, ipv6(17, udp(1, 2), plen=200)))) == [("eth.ipv4.udp", None, 0)]
    assert layers(decode(1, udp4(3544, 1, b"hello"))) == [("eth.ipv4.udp", None, 0)]


TEREDO_CLIENT = bytes.fromhex("2001000041379e508000f12ab9c82815")     # 2001:0:4137:9e50:...
NATIVE6 = bytes.fromhex("20014860000020010000000000000068")


def teredo_shapes():
    """(UDP payload, is Teredo by shape) on a port other than 3544."""
    to_client = ipv6(6, tcp(), src=NATIVE6, dst=TEREDO_CLIENT)
    origin = b"\x00\x00" + bytes(6)
    auth = b"\x00\x01\x02\x03" + b"id" + b"abc" + bytes(8) + b"\x00"
    bubble = ipv6(59, b"", src=TEREDO_CLIENT, dst=NATIVE6)
    plain = ipv6(6, tcp(), src=A6, dst=B6)
    return [
        (to_client, True),
        (ipv6(17, udp(1, 2), src=TEREDO_CLIENT, dst=NATIVE6), True),
        (bubble, True),
        (bubble + b"trailing", True),                      # a bubble may carry bytes after it
        (origin + plain, True),                            # behind a Teredo header no Teredo address is needed
        (auth + plain, True),
        (auth + origin + plain, True),
        (plain, False),                                    # IPv6 in UDP, but no Teredo address: not Teredo
        (to_client + b"x", False),                         # the IPv6 packet must fill the payload exactly
        (to_client[:-1], False),
        (ipv6(6, tcp(), src=NATIVE6, dst=TEREDO_CLIENT, plen=1000), False),
        (origin + plain + b"x", False),
        (b"\x45" + to_client[1:], False),                  # version 4
        (b"\x00\x01\x02", False),
        (b"\x00\x01\xff\xff" + bytes(60), False),         # authentication header longer than the payload
        (bytes(48), False),
        (b"", False),
    ]


@pytest.mark.parametrize("payload,teredo", teredo_shapes())
def test_teredo_by_shape_on_any_port(payload, teredo):
    """Relays answer from ports of their own: Teredo is recognised by its shape on any UDP
    port, strictly (exact length; a Teredo address unless a Teredo header comes first)."""
    d = decode(1, udp4(32900, 3797, payload))
    if teredo:
        assert layers(d)[0] == ("eth.ipv4.udp.teredo", "teredo", 0) and len(d.layers) == 2
        assert d.layers[1].ipver == 6 and not d.inner_malformed
    else:
        assert layers(d) == [("eth.ipv4.udp", None, 0)]
    # --no-teredo-heuristic: port 3544 only
    assert layers(decode(1, udp4(32900, 3797, payload), teredo_any_port=False)) == [("eth.ipv4.udp", None, 0)]
    if teredo:
        d = decode(1, udp4(3544, 3797, payload), teredo_any_port=False)
        assert layers(d)[0] == ("eth.ipv4.udp.teredo", "teredo", 0)


def test_teredo_by_shape_on_a_tunnel_port_and_in_a_reassembled_datagram():
    payload = ipv6(17, udp(1, 2), src=TEREDO_CLIENT, dst=NATIVE6)
    # a payload on the GTP port that is not GTP but is Teredo
    assert layers(decode(1, udp4(2152, 2152, payload)))[0] == ("eth.ipv4.udp.teredo", "teredo", 0)
    data = udp(3797, 32900, payload)
    first = decode(1, eth(0x0800, ipv4(17, data[:24], mf=True))).layers[0]
    assert [l.tunnel for l in slowpath.decode_transport(first, data)] == ["teredo", None]
    assert [l.tunnel for l in slowpath.decode_transport(first, data, teredo_any_port=False)] == [None]


@pytest.mark.parametrize("frame,path,vlans", [
    (eth(0x88E7, struct.pack(">I", 0x00123456) + eth(0x0800, PKT4)), "eth.pbb.eth.ipv4.udp", ()),
    (eth(0x88E7, struct.pack(">I", 7) + eth(0x86DD, PKT6, tags=[(0x8100, 30)]), tags=[(0x88A8, 20)]),
     "eth.vlan.pbb.eth.vlan.ipv6.tcp", (20, 30)),
    (eth(0x8926, struct.pack(">I", 0x80010002) + struct.pack(">H", 0x0800) + PKT4), "eth.vntag.ipv4.udp", ()),
    (eth(0x8926, struct.pack(">I", 5) + struct.pack(">HHH", 0x8100, 40, 0x86DD) + PKT6),
     "eth.vntag.vlan.ipv6.tcp", (40,)),
    (eth(0x893F, bytes(6) + struct.pack(">H", 0x0800) + PKT4), "eth.etag.ipv4.udp", ()),
])
def test_pbb_vntag_etag(frame, path, vlans):
    """802.1ah PBB (I-TAG, then the customer's frame), Cisco VN-Tag and 802.1BR E-Tag."""
    d = decode(1, frame)
    assert d.kind == IP, d.error
    (l,) = d.layers
    assert (l.path, l.vlans) == (path, vlans)
    assert (l.sport, l.dport) == ((1000, 2000) if l.ipver == 4 else (1234, 80))


@pytest.mark.parametrize("frame,kind,error", [
    (eth(0x88E7, bytes(3)), MALFORMED, "truncated pbb header"),
    (eth(0x88E7, bytes(4) + MAC[:8]), MALFORMED, "truncated ethernet header"),
    (eth(0x88E7, bytes(4) + eth(0x0806, bytes(28))), NON_IP, "arp"),
    (eth(0x8926, bytes(5)), MALFORMED, "truncated vntag header"),
    (eth(0x893F, bytes(7)), MALFORMED, "truncated etag header"),
])
def test_pbb_vntag_etag_bad(frame, kind, error):
    d = decode(1, frame)
    assert (d.kind, d.error) == (kind, error)


def test_every_tunnel_has_a_scope():
    """Every tunnel a decoder can name has its line in tunnels.SCOPES (the front-end keys
    inner sessions by it), and address-space ids come only from VNIs, NVGRE and ERSPAN."""
    from pipeline.frontend.tunnels import SCOPES
    seen = {}
    for lt, f in valid_frames() + [(1, udp4(3797, 32900, p)) for p, t in teredo_shapes() if t]:
        for l in decode(lt, f).layers:
            if l.tunnel is not None:
                seen.setdefault(l.tunnel, set()).add(l.tunnel_space)
    assert set(seen) <= set(SCOPES)
    assert set(seen) >= {"gtp", "gre", "erspan", "ipip", "vxlan", "geneve", "teredo", "ayiya", "capwap", "tzsp",
                         "etherip", "mpls"}
    assert {t for t, spaces in seen.items() if spaces != {0}} == {"vxlan", "geneve", "erspan"}


def test_address_space_ids():
    d = decode(1, udp4(5555, 4789, vxlan(0xABCDE, e4())))
    assert (d.layers[0].tunnel_id, d.layers[0].tunnel_space) == (0xABCDE, 0xABCDE)
    d = decode(1, udp4(40000, 2152, gtp(0xDEADBEEF, ip4_tcp())))
    assert (d.layers[0].tunnel_id, d.layers[0].tunnel_space) == (0xDEADBEEF, 0)        # a TEID is per direction
    d = decode(1, eth(0x0800, ipv4(47, gre(0x6558, e4(), key=0x123456AB))))            # NVGRE: VSID, flow id
    assert (d.layers[0].tunnel_id, d.layers[0].tunnel_space) == (0x123456AB, 0x123456)
    d = decode(1, eth(0x0800, ipv4(47, gre(0x0800, ip4_tcp(), key=77))))               # a plain GRE key: none
    assert (d.layers[0].tunnel_id, d.layers[0].tunnel_space) == (77, 0)
    d = decode(1, udp4(1, 4754, gre(0x6558, e4(), key=0x00000501)))                   # NVGRE in UDP
    assert d.layers[0].tunnel_space == 5


def test_ayiya():
    inner = ipv6(6, tcp())
    hdr = bytes([0x41, 0x52, 0x11, 41]) + bytes(4) + bytes(16) + bytes(20)   # id 16 bytes, sig 5*4
    d = decode(1, udp4(5072, 5072, hdr + inner))
    assert layers(d) == [("eth.ipv4.udp.ayiya", "ayiya", 0), ("eth.ipv4.udp.ayiya.ipv6.tcp", None, 0)]
    hdr4 = bytes([0x00, 0x00, 0x01, 4]) + bytes(4) + bytes(1)
    assert layers(decode(1, udp4(1, 5072, hdr4 + ip4_tcp())))[1] == ("eth.ipv4.udp.ayiya.ipv4.tcp", None, 0)
    not_forward = bytes([0x41, 0x52, 0x12, 41]) + bytes(40)
    assert len(decode(1, udp4(5072, 5072, not_forward + inner)).layers) == 1


def test_gre_udp_capwap_tzsp_etherip_mpls_udp():
    d = decode(1, udp4(1, 4754, gre(0x0800, ip4_tcp(), key=5)))
    assert layers(d) == [("eth.ipv4.udp.gre", "gre", 5), ("eth.ipv4.udp.gre.ipv4.tcp", None, 0)]
    # CAPWAP: 802.3 inner, and native 802.11 with Cisco's swapped frame control
    capwap8023 = bytes([0, 0x10, 0x00, 0x00]) + bytes(4)                 # HLEN 2 words, T=0
    d = decode(1, udp4(12345, 5247, capwap8023 + e4()))
    assert layers(d) == [("eth.ipv4.udp.capwap", "capwap", 0), ("eth.ipv4.udp.capwap.eth.ipv4.tcp", None, 0)]
    wlan = b"\x01\x08" + bytes(22) + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ip4_tcp()
    capwap80211 = bytes([0, 0x10, 0x03, 0x00]) + bytes(4)                # WBID 1, T=1
    d = decode(1, udp4(5247, 12345, capwap80211 + wlan))
    assert layers(d)[1] == ("eth.ipv4.udp.capwap.wlan.llc.ipv4.tcp", None, 0)
    assert layers(decode(1, udp4(5247, 1, bytes([0x01]) + bytes(30)))) == [("eth.ipv4.udp", None, 0)]  # DTLS
    # TZSP: tags (padding, one TLV), END, then Ethernet
    tz = b"\x01\x00\x00\x01" + b"\x00" + b"\x0a\x02\x01\x02" + b"\x01"
    d = decode(1, udp4(1, 37008, tz + e4()))
    assert layers(d) == [("eth.ipv4.udp.tzsp", "tzsp", 0), ("eth.ipv4.udp.tzsp.eth.ipv4.tcp", None, 0)]
    d = decode(1, eth(0x0800, ipv4(97, b"\x30\x00" + e4())))
    assert layers(d) == [("eth.ipv4.etherip", "etherip", 0), ("eth.ipv4.etherip.eth.ipv4.tcp", None, 0)]
    d = decode(1, udp4(1, 6635, mpls(5, 6) + ip4_tcp()))
    assert layers(d) == [("eth.ipv4.udp", "mpls", 0), ("eth.ipv4.udp.mpls.mpls.ipv4.tcp", None, 0)]


def test_udp_tunnel_ports_cover_the_registry():
    assert {2152, 3544, 4754, 4789, 5072, 5247, 6081, 37008} <= UDP_TUNNEL_PORTS


def test_depth_limit_and_loops():
    pkt = ip4_tcp()
    for _ in range(30):
        pkt = ipv4(4, pkt)
    d = decode(1, eth(0x0800, pkt), max_depth=3)
    assert d.kind == IP and len(d.layers) == 4 and "depth" in d.error and not d.inner_malformed
    assert d.layers[-1].tunnel == "ipip"            # the cut is visible to the caller
    assert len(decode(1, eth(0x0800, pkt)).layers) == 9
    assert len(decode(1, eth(0x0800, pkt), max_depth=0).layers) == 1
    # GTP in GTP in GTP ... bounded the same way
    g = ip4_tcp()
    for i in range(20):
        g = ipv4(17, udp(2152, 2152, gtp(i, g)))
    assert len(decode(1, eth(0x0800, g)).layers) == 9


# -- malformed -------------------------------------------------------------------------
@pytest.mark.parametrize("linktype,frame,error", [
    (1, MAC[:10], "truncated ethernet header"),
    (1, eth(0x8100, b"\x00"), "truncated vlan header"),
    (1, eth(0x0800, b""), "truncated ip header"),
    (1, eth(0x0800, b"\x55" + bytes(30)), "bad ip version 5"),
    (1, eth(0x0800, ipv6(17, udp(1, 2))), "ipv6 header where ipv4 expected"),
    (1, eth(0x86DD, ipv4(17, udp(1, 2))), "ipv4 header where ipv6 expected"),
    (1, eth(0x0800, ipv4(17, udp(1, 2))[:15]), "truncated ipv4 header"),
    (1, eth(0x0800, b"\x44" + ipv4(17, udp(1, 2))[1:]), "bad ipv4 header length"),
    (1, eth(0x0800, ipv4(17, udp(1, 2), total=12)), "bad ipv4 total length"),
    (1, eth(0x0800, b"\x4f" + ipv4(17, udp(1, 2))[1:]), "truncated ipv4 header"),
    (1, eth(0x86DD, ipv6(17, udp(1, 2))[:39]), "truncated ipv6 header"),
    (1, eth(0x86DD, ipv6(0, ext(6, 16) + tcp(), plen=8)), "ipv6 extension headers beyond payload length"),
    (1, eth(0x86DD, ipv6(0, ext(6, 8))[:-7]), "truncated ipv6 extension header"),
    (1, eth(0x0800, ipv4(6, tcp())[:20 + 12]), "truncated tcp header"),
    (1, eth(0x0800, ipv4(6, tcp(), total=30)), "tcp header beyond ip length"),
    (1, eth(0x0800, ipv4(6, tcp()[:12] + b"\x40" + tcp()[13:])), "bad tcp data offset"),
    (1, eth(0x0800, ipv4(6, tcp(opts=bytes(20)), total=50)), "tcp header beyond ip length"),
    (1, eth(0x0800, ipv4(17, udp(1, 2), total=24)), "udp header beyond ip length"),
    (1, eth(0x0800, ipv4(17, udp(1, 2))[:22]), "truncated udp header"),
    (113, bytes(10), "truncated sll header"),
    (276, bytes(19), "truncated sll2 header"),
    (0, b"\x02\x00", "truncated null header"),
    (104, b"\x0f", "truncated chdlc header"),
    (9, b"", "truncated ppp header"),
])
def test_malformed(linktype, frame, error):
    d = decode(linktype, frame)
    assert (d.kind, d.error, d.layers) == (MALFORMED, error, [])


def test_decode_accepts_memoryview_and_bytearray():
    frame = eth(0x0800, PKT4)
    buf = bytearray(b"junk" + frame + b"junk")
    assert decode(1, memoryview(buf)[4:4 + len(frame)]).layers[0].path == "eth.ipv4.udp"
    assert decode(1, bytearray(frame)).layers[0].sport == 1000


# -- fuzzing -----------------------------------------------------------------------------
def check_invariants(d, max_depth=8):
    assert d.kind in (IP, NON_IP, MALFORMED)
    assert isinstance(d.error, str) and "decoder error" not in d.error   # a bug caught by the safety net
    if d.kind != IP:
        assert d.layers == [] and not d.inner_malformed
        return
    assert 1 <= len(d.layers) <= max_depth + 1
    for i, l in enumerate(d.layers):
        check_layer(l)
        if i < len(d.layers) - 1:
            assert l.tunnel is not None and l.frag is None
            assert d.layers[i + 1].path.startswith(l.path + ".")


def check_layer(l):
    assert isinstance(l, Layer)
    assert l.ipver in (4, 6) and len(l.src) == len(l.dst) == (4 if l.ipver == 4 else 16)
    assert isinstance(l.src, bytes) and isinstance(l.dst, bytes)
    assert 0 <= l.proto <= 255 and 0 <= l.sport <= 0xFFFF and 0 <= l.dport <= 0xFFFF
    assert 0 <= l.tcpflags <= 255 and 0 <= l.payload <= 0x10000 + 0xFFFF and l.path
    assert isinstance(l.vlans, tuple) and all(0 <= v < 4096 for v in l.vlans)
    if l.frag is not None:
        assert l.tunnel is None and l.frag.payload_len >= 0 and isinstance(l.frag.payload, bytes)


LINKTYPE_CHOICES = sorted(LINKTYPES) + [147, 2**31, -1]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LINKTYPE_CHOICES), st.binary(max_size=200), st.integers(0, 10))
def test_fuzz_random_bytes(linktype, frame, max_depth):
    check_invariants(decode(linktype, frame, max_depth), max_depth)


def valid_frames():
    """Valid frames of every kind the tests build: the mutation corpus."""
    out = [(lt, f) for lt, f, _ in LINK_FRAMES]
    data = udp(2152, 2152, gtp(7, ip4_tcp(), seq=1, exts=[(0x85, b"\x01\x09")]))
    ppp = b"\xff\x03\x00\x21" + ip4_tcp()
    tz = b"\x01\x00\x00\x01" + b"\x00" + b"\x0a\x02\x01\x02" + b"\x01"
    out += [(1, f) for f in (
        eth(0x0800, ipv4(17, data)),
        eth(0x0800, ipv4(17, data[:24], mf=True)),
        eth(0x86DD, ipv6(0, ext(44, 8) + frag6(60, 8, True) + bytes(16))),
        eth(0x86DD, ipv6(0, ext(51, 16) + ah(60, 16) + ext(6, 8) + tcp())),
        eth(0x0800, ipv4(47, gre(0x0800, ip4_tcp(), key=1, csum=True, seq=2))),
        eth(0x0800, ipv4(47, struct.pack(">HHHHI", 0x3001, 0x880B, len(ppp), 1, 5) + ppp)),
        eth(0x0800, ipv4(47, gre(0x22EB, struct.pack(">HHIHH", 0x2000, 9, 0, 0, 1) + bytes(8) + e4(), seq=1))),
        eth(0x0800, ipv4(47, gre(0x88BE, struct.pack(">HHI", 0x1000, 3, 0) + e4(), seq=1))),
        eth(0x8847, mpls(1, 2) + bytes(4) + e4()),
        eth(0x8864, struct.pack(">BBHH", 0x11, 0, 1, 30) + b"\x00\x57" + ipv6(41, ipv6(17, udp(1, 2))),
            tags=[(0x88A8, 1), (0x8100, 2)]),
        udp4(1, 4789, vxlan(3, eth(0x0800, ipv4(17, udp(1, 6081, geneve(4, 0x6558, e4()))), tags=[(0x8100, 9)]))),
        udp4(3544, 1, b"\x00\x01\x02\x03idabc" + bytes(9) + b"\x00\x00" + bytes(6) + ipv6(59, b"")),
        udp4(5072, 5072, bytes([0x41, 0x52, 0x11, 41]) + bytes(40) + ipv6(6, tcp())),
        udp4(1, 5247, bytes([0, 0x10, 0x03, 0x00]) + bytes(4) + b"\x01\x08" + bytes(22)
             + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ip4_tcp()),
        udp4(1, 37008, tz + e4()),
        udp4(1, 6635, mpls(5, 6) + ip4_tcp()),
        eth(0x0800, ipv4(97, b"\x30\x00" + e4())),
        udp4(3797, 32900, b"\x00\x00" + bytes(6) + ipv6(17, udp(1, 2), src=TEREDO_CLIENT, dst=NATIVE6)),
        eth(0x88E7, struct.pack(">I", 9) + eth(0x0800, ip4_tcp(), tags=[(0x8100, 3)])),
        eth(0x8926, struct.pack(">IH", 9, 0x86DD) + ipv6(17, udp(1, 2))),
        eth(0x0800, ipv4(47, gre(0x8200, b"\x88\x01" + bytes(24) + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ip4_tcp()))),
    )]
    return out


CORPUS = valid_frames()


def test_corpus_is_valid():
    for lt, f in CORPUS:
        d = decode(lt, f)
        assert d.kind == IP and not d.inner_malformed, (lt, f.hex(), d)


def test_truncation_at_every_length():
    for lt, f in CORPUS:
        for n in range(len(f) + 1):
            check_invariants(decode(lt, f[:n]))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.lists(st.integers(0, 10**6), min_size=1, max_size=6), st.data())
def test_fuzz_mutations(item, flips, data):
    lt, f = item
    b = bytearray(f)
    for x in flips:
        b[x % len(b)] ^= 1 << (x // len(b) % 8)
    if data.draw(st.booleans()):
        b = b[:data.draw(st.integers(0, len(b)))]
    if data.draw(st.booleans()):
        b += data.draw(st.binary(max_size=40))
    check_invariants(decode(lt, bytes(b)))


@settings(max_examples=800, deadline=None)
@given(st.sampled_from([4, 6]), st.integers(0, 255), st.binary(max_size=120), st.one_of(st.none(), st.integers(-5, 70000)),
       st.integers(0, 9))
def test_fuzz_decode_transport(ipver, proto, payload, length, max_depth):
    first = decode(1, eth(0x0800, ipv4(proto, b"", mf=True)) if ipver == 4 else
                   eth(0x86DD, ipv6(44, frag6(proto, 0, True))))
    (layer,) = first.layers
    out = slowpath.decode_transport(layer, payload, max_depth, length)
    assert 1 <= len(out) <= max_depth + 1
    for l in out:
        assert l.frag is None
        check_layer(l)


def test_decode_transport_never_raises_on_odd_input():
    assert slowpath.decode_transport(Layer(4, A4, B4, 17, "eth.ipv4"), b"\x00")[0].frag is None
    assert len(slowpath.decode_transport(object(), b"")) == 1


# -- the shared captures -------------------------------------------------------------------
SHARED = Path(__file__).resolve().parents[2] / "shared"
PCAPS = SHARED / "pcaps"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (a clone without ../shared)")


def capture_files():
    if not PCAPS.is_dir():
        return []
    return sorted(p for p in PCAPS.glob("*/*") if p.suffix in (".pcap", ".pcapng", ".cap"))


def read_frames(path):
    """(linktype, frame) for each frame dpkt can read; None when dpkt cannot open the file."""
    import dpkt
    f = open(path, "rb")
    try:
        try:
            reader = dpkt.pcap.UniversalReader(f)
        except Exception:
            f.seek(0)
            reader = dpkt.pcapng.Reader(f)
        lt = reader.datalink()
        out = []
        try:
            for _ts, buf in reader:
                out.append((lt, bytes(buf)))
        except Exception:
            pass   # a damaged tail: keep what was read
        return out
    except Exception:
        return None
    finally:
        f.close()


def decode_capture(path):
    """Decode every frame, completing fragmented datagrams with the reassembler and
    decode_transport as the front-end does. Returns (kinds, list of layer lists)."""
    frames = read_frames(path)
    if frames is None:
        return None, None
    ra = Reassembler()
    kinds, stacks = Counter(), []
    for i, (lt, buf) in enumerate(frames):
        d = decode(lt, buf)
        check_invariants(d)
        kinds[d.kind] += 1
        stack = list(d.layers)
        if stack and stack[-1].frag is not None:
            last = stack[-1]
            fr = last.frag
            dg = ra.add((len(stack), stack[0].src, last.ipver, last.src, last.dst, fr.ident, fr.proto), last,
                        FrameMeta(i, float(i), len(buf), len(buf)))
            if dg is not None:
                rest = slowpath.decode_transport(dg.first_layer, dg.payload, 8 - (len(stack) - 1), dg.length)
                for l in rest:
                    check_layer(l)
                stack = stack[:-1] + rest
        stacks.append(stack)
    return kinds, stacks


CAPS = capture_files()


@needs_shared
@pytest.mark.parametrize("path", CAPS, ids=[f"{p.parent.name}/{p.name}" for p in CAPS])
def test_shared_capture_decodes(path):
    kinds, _ = decode_capture(path)
    if kinds is None:
        pytest.skip("dpkt cannot read this file")


def expected_tunnel(name):
    """(tunnel, minimum layers) a Zeek tunnel capture must show in at least one frame."""
    if name.startswith("tunnels__gtp__"):
        return "gtp", 2
    for prefix, tunnel in (("tunnels__vxlan", "vxlan"), ("tunnels__geneve", "geneve"), ("tunnels__ayiya", "ayiya"),
                           ("tunnels__gre-erspan", "erspan"), ("tunnels__gre", "gre"),
                           ("tunnels__tunnel-direct-bypass", "gre"), ("tunnels__teredo", "teredo"),
                           ("tunnels__Teredo", "teredo")):
        if name.startswith(prefix):
            return tunnel, (4 if "triple" in name else 3 if name == "tunnels__geneve-vxlan-dns-truncated.pcap"
                            or name == "tunnels__gre-pptp.pcap" or name == "tunnels__gre-within-gre.pcap" else 2)
    if name == "tunnels__6in6in6.pcap":
        return "ipip", 3
    if any(name.startswith(f"tunnels__{x}") for x in ("4in4", "4in6", "6in4", "6in6", "ping6-in-ipv4",
                                                       "mpls-6in6-6in6-4in6")):
        return "ipip", 2
    return None


# Zeek tunnel captures with no inner IP layer to find, and why.
NO_INNER = {
    "tunnels__gtp__gtp10_not_0xff.pcap": "GTP-U messages other than G-PDU (0xff): no inner packet",
    "tunnels__gtp__gtp3_false_gtp.pcap": "DNS on UDP 2152, not GTP",
    "tunnels__gtp__gtp_control_prime.pcap": "GTP' (charging) on UDP 3386: not GTP-U",
    "tunnels__gtp__gtp_create_pdp_ctx.pcap": "GTP-C on UDP 2123: control plane, no user packets",
    "tunnels__gtp__pdp_ctx_messages.pcapng": "GTP-C on UDP 2123: control plane, no user packets",
    "tunnels__gre-aruba-amsdu.pcap": "Aruba GRE: an 802.11 A-MSDU (several packets in one frame), not decoded",
    "tunnels__gre-aruba-ccmp.pcap": "Aruba GRE: encrypted 802.11 frames (CCMP)",
    "tunnels__geneve-arp.pcap": "Geneve protocol type 0x0806: ARP with no Ethernet header, no IP",
    "tunnels__geneve-truncated.pcapng": "the only frame's inner Ethernet is cut short: inner_malformed",
    "tunnels__mpls-6in6-6in6-invalid-version-6.pcap": "the second IPv6 header has version 14: inner_malformed",
    "tunnels__socks.pcap": "SOCKS is a proxy protocol, not an encapsulation",
}

ZEEK_TUNNELS = [p for p in CAPS if p.parent.name == "zeek" and p.name.startswith("tunnels__")]


@needs_shared
@pytest.mark.parametrize("path", ZEEK_TUNNELS, ids=[p.name for p in ZEEK_TUNNELS])
def test_zeek_tunnel_capture_yields_its_tunnel(path):
    kinds, stacks = decode_capture(path)
    if kinds is None:
        pytest.skip("dpkt cannot read this file")
    want = expected_tunnel(path.name)
    if path.name in NO_INNER:
        assert not any(len(s) >= 2 for s in stacks), NO_INNER[path.name]
        return
    assert want is not None, f"{path.name}: add it to expected_tunnel or NO_INNER"
    tunnel, depth = want
    hits = [s for s in stacks if len(s) >= depth and any(l.tunnel == tunnel for l in s[:-1])]
    assert hits, f"no frame with {depth} layers and tunnel {tunnel}: {kinds}"


@needs_shared
def test_zeek_edge_cases():
    """A few specific outcomes on the Zeek edge-case captures."""
    z = PCAPS / "zeek"

    def stacks(name):
        return decode_capture(z / name)[1]

    assert {s[0].path for s in stacks("http-qinq-0.pcap")} == {"eth.vlan.vlan.ipv4.tcp"}
    assert {s[0].path for s in stacks("pppoe-over-qinq.pcap")} == {"eth.vlan.vlan.pppoe.ppp.ipv4.tcp"}
    assert {s[0].path for s in stacks("linux_dlt_sll2.pcap") if s} == {"sll2.ipv4.icmp", "sll2.ipv6.icmpv6"}
    assert "eth.vlan.mpls.mpls.ipv4.tcp" in {s[0].path for s in stacks("mpls-in-vlan.pcap")}
    erspan = [s for s in stacks("tunnels__gre-erspan3-dot1q.pcap") if len(s) == 2]
    assert erspan and erspan[0][1].path == "eth.ipv4.gre.erspan.eth.vlan.ipv4.icmp" and erspan[0][1].vlans
    kinds, _ = decode_capture(z / "trunc__ip4-trunc.pcap")
    assert kinds == {MALFORMED: 1}
    kinds, _ = decode_capture(z / "linuxsll-arp.pcap")
    assert set(kinds) == {NON_IP}
    # fragments reassemble into complete datagrams with ports (2 plain TCP frames + 1 datagram)
    assert sum(1 for s in stacks("ipv4__fragmented-4.pcap") if s[0].frag is None and s[0].sport) == 3
    dns = [s[0] for s in stacks("ipv6-fragmented-dns.pcap") if s[0].frag is None]
    assert len(dns) == 5 and all(53 in (l.sport, l.dport) and l.path == "eth.ipv6.udp" for l in dns)
    assert max(l.payload for l in dns) == 3230     # the reassembled answer, three fragments
    # the fragmented outer GTP datagram completes with its inner packet
    assert any(len(s) == 2 and s[0].tunnel == "gtp" for s in stacks("tunnels__gtp__gtp_ext_header.pcap"))


# -- what the rows carry for the record: IP lengths, Ethernet addresses, ICMP type -------------
HOST_A, HOST_B = bytes.fromhex("aabbccddeeff"), bytes.fromhex("112233445566")


def test_ip_lengths():
    """`iplen` is the IP header's own length field (IPv4 total length, IPv6 40 + payload
    length), whatever the capture kept; a reassembled datagram: its header and its whole
    payload once."""
    (l,) = decode(1, eth(0x0800, ipv4(6, tcp(data=b"x" * 10)))).layers
    assert l.iplen == 20 + 20 + 10
    (l,) = decode(1, eth(0x0800, ipv4(17, udp(data=b"y" * 7), opts=bytes(8)))).layers
    assert l.iplen == 28 + 8 + 7
    (l,) = decode(1, eth(0x0800, ipv4(17, udp(data=b"z" * 300)))[:60]).layers      # snaplen 60
    assert l.iplen == 20 + 8 + 300
    (l,) = decode(1, eth(0x86DD, ipv6(0, ext(17, 16) + udp(data=b"q" * 5)))).layers
    assert l.iplen == 40 + 16 + 8 + 5
    data = udp(5000, 53, b"D" * 100)
    first = decode(1, eth(0x0800, ipv4(17, data[:48], ident=99, mf=True))).layers[0]
    (done,) = slowpath.decode_transport(first, data)
    assert done.iplen == 20 + 108                        # not the first fragment's 68
    dgram = tcp(data=b"T" * 64)
    first = decode(1, eth(0x86DD, ipv6(0, ext(44, 8) + frag6(6, 0, True) + dgram[:40]))).layers[0]
    (done,) = slowpath.decode_transport(first, dgram)
    assert done.iplen == 40 + 8 + len(dgram)             # hop-by-hop kept, fragment header gone


def test_ethernet_addresses_nearest_the_ip_header():
    """smac/dmac: the Ethernet header right below each IP layer: a tunnel carrying
    Ethernet (VXLAN) gives its inner frame's addresses, one carrying bare IP (GRE, GTP)
    none, nor a link without Ethernet (raw IP, Linux SLL); a PBB frame the customer's."""
    def frame(dst, src, et, payload):
        return dst + src + struct.pack(">H", et) + payload
    (l,) = decode(1, frame(HOST_B, HOST_A, 0x0800, PKT4)).layers
    assert (l.smac, l.dmac) == (0xAABBCCDDEEFF, 0x112233445566)
    d = decode(1, udp4(5555, 4789, vxlan(7, frame(HOST_A, HOST_B, 0x0800, ip4_tcp()))))
    assert [(x.smac, x.dmac) for x in d.layers] == [(0x020000000002, 0x020000000001), (0x112233445566, 0xAABBCCDDEEFF)]
    d = decode(1, eth(0x0800, ipv4(47, gre(0x0800, ip4_tcp()))))
    assert d.layers[1].path.endswith("gre.ipv4.tcp") and (d.layers[1].smac, d.layers[1].dmac) == (0, 0)
    assert [(x.smac, x.dmac) for x in decode(101, PKT4).layers] == [(0, 0)]
    sll = struct.pack(">HHH8sH", 0, 1, 6, HOST_A + bytes(2), 0x0800) + PKT4
    assert [(x.smac, x.dmac) for x in decode(113, sll).layers] == [(0, 0)]
    (l,) = decode(1, eth(0x88E7, struct.pack(">I", 0x00123456) + frame(HOST_B, HOST_A, 0x0800, PKT4))).layers
    assert l.path == "eth.pbb.eth.ipv4.udp" and (l.smac, l.dmac) == (0xAABBCCDDEEFF, 0x112233445566)


def test_icmp_type_and_code_in_seq():
    from contracts.wire import ICMP_SEEN
    (l,) = decode(1, eth(0x0800, ipv4(1, b"\x08\x00" + bytes(30)))).layers
    assert l.seq == ICMP_SEEN | 8 << 8
    (l,) = decode(1, eth(0x86DD, ipv6(58, b"\x87\x00" + bytes(22)))).layers
    assert l.seq == ICMP_SEEN | 135 << 8
    (l,) = decode(1, eth(0x0800, ipv4(1, b"\x03\x0d" + bytes(6)))).layers
    assert l.seq == ICMP_SEEN | 3 << 8 | 13
    (l,) = decode(1, eth(0x0800, ipv4(1, b"\x03", total=28))).layers            # type only: not seen
    assert l.seq == 0
