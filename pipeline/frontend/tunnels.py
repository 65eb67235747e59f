"""Tunnels: one small decoder per encapsulation, and the registries that find them.

A tunnel decoder looks at a transport payload and says whether it carries an
inner packet:

    decoder(p: bytes, declared: int) -> Hit | None

`p` is the captured transport payload (bounded by the IP lengths), `declared`
its length according to the IP lengths (larger when the capture was cut
short). `None` means "not this tunnel, or a message that carries no packet":
the layer then stays a plain UDP / GRE / ... layer, never malformed. A `Hit`
names the tunnel, its header id (TEID, GRE key, ...), its address-space id
where it has one (VNI, ...), the header names to add to the carrying layer's
path, where the inner packet starts and ends in `p`, and the decoder it starts
with (`linktypes.ethernet`, `linktypes.ppp`, an IP marker, ...). The inner
packet is decoded by the slow path like a frame.

Registries: `IP_TUNNELS` by IP protocol, `UDP_TUNNELS` by UDP port (with the
side the port must be on), `GRE_PROTOCOLS` by GRE protocol type. A new
tunnel is one decoder, one entry, and its line in `SCOPES`. `UDP_TUNNEL_PORTS`
tells the fast path which UDP frames to leave to the slow path. Teredo is also
recognised by its shape on any UDP port (`teredo_by_shape`; the fast path has
the same test, vectorised).

Scope. The sessions a tunnel carries are keyed inside a scope (keying.tunnel_scope)
made only of what both directions of a conversation share, so that one inner
conversation is one session whichever outer sessions carried it: `SCOPES` says,
per tunnel, which outer ends are part of it (both addresses; a Teredo client's
address and port), and `Hit.space` is its address-space id (VNI, ...). Per-direction
ids (GTP TEIDs, PPTP call ids, GRE keys) never are, nor the outer ports of a
point-to-point tunnel or the outer session (docs/design.md, "Tunnel scope").
"""
import struct
from dataclasses import dataclass, replace
from typing import Optional

from . import names
from .linktypes import IP, IP4, IP6, ethernet, mpls, ppp, wlan

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from


@dataclass(frozen=True, slots=True)
class Hit:
    name: str                  # Layer.tunnel
    id: int                    # Layer.tunnel_id: TEID, VNI, GRE key or call id, ERSPAN session, ...
    path: tuple                # names added to the carrying layer's path ("gtp",), ("gre", "erspan"), ()
    inner: object              # decoder (or IP marker) the inner packet starts with
    off: int                   # inner packet start in the transport payload
    end: Optional[int] = None  # inner packet end (None: the end of the payload)
    space: int = 0             # Layer.tunnel_space: address-space id (VNI, VSID, ERSPAN session), 0: none


# -- IP protocol tunnels -------------------------------------------------------

def ipip4(p, declared):
    return Hit(names.IPIP, 0, (), IP4, 0)


def ipip6(p, declared):
    return Hit(names.IPIP, 0, (), IP6, 0)


def etherip(p, declared):
    """EtherIP (RFC 3378): a 2-byte header (version 3), then Ethernet."""
    if len(p) < 2 or p[0] >> 4 != 3:
        return None
    return Hit(names.ETHERIP, 0, (), ethernet, 2)


def mpls_in_ip(p, declared):
    return Hit(names.MPLS_TUNNEL, 0, (), mpls, 0)


def _gre_carries(inner):
    """A GRE payload that starts with `inner` right after the GRE header; id = key."""
    def hit(p, off, flags, key):
        return Hit(names.GRE, key, (), inner, off)
    return hit


def _gre_bridged(p, off, flags, key):
    """Transparent Ethernet bridging (0x6558): with a key, NVGRE (RFC 7637): the key's
    upper 24 bits are the virtual subnet id, an address space; the low 8 bits are a
    flow id the encapsulator may choose per direction."""
    return Hit(names.GRE, key, (), ethernet, off, space=key >> 8 if flags & 0x2000 else 0)


def _erspan2(p, off, flags, key):
    """ERSPAN type II (with a sequence number: 8-byte header, version 1) or type I (none)."""
    if not flags & 0x1000:
        return Hit(names.ERSPAN, 0, (names.ERSPAN,), ethernet, off)
    if len(p) < off + 8 or p[off] >> 4 != 1:
        return None
    session = _U16(p, off + 2)[0] & 0x03FF
    return Hit(names.ERSPAN, session, (names.ERSPAN,), ethernet, off + 8, space=session)


def _erspan3(p, off, flags, key):
    """ERSPAN type III: 12-byte header (version 2), an optional 8-byte platform
    sub-header, then an Ethernet frame (frame type 0) or an IP packet (2)."""
    if len(p) < off + 12 or p[off] >> 4 != 2:
        return None
    session = _U16(p, off + 2)[0] & 0x03FF
    tail = _U16(p, off + 10)[0]
    size = 12 + (8 if tail & 1 else 0)
    inner = {0: ethernet, 2: IP}.get((tail >> 10) & 0x1F)
    if inner is None:
        return None
    return Hit(names.ERSPAN, session, (names.ERSPAN,), inner, off + size, space=session)


# GRE protocol type -> (payload, offset after the GRE header, GRE flags, key) -> Hit | None.
GRE_PROTOCOLS = {
    0x0800: _gre_carries(IP4),
    0x86DD: _gre_carries(IP6),
    0x6558: _gre_bridged,             # transparent Ethernet bridging, NVGRE
    0x8847: _gre_carries(mpls),
    0x8848: _gre_carries(mpls),
    0x880B: _gre_carries(ppp),
    0x88BE: _erspan2,
    0x22EB: _erspan3,
}
# Aruba access points send their clients' 802.11 frames to the controller in GRE, in a
# range of protocol types; A-MSDU frames (several packets in one) and encrypted ones
# stay undecoded (linktypes.wlan says why).
GRE_PROTOCOLS.update({t: _gre_carries(wlan) for t in [*range(0x8200, 0x8300, 0x10), *range(0x8300, 0x8380, 0x10),
                                                       0x9000]})


def gre(p, declared):
    """GRE version 0 (RFC 2784/2890: optional checksum, key, sequence; id = key)
    and version 1 (PPTP enhanced GRE: PPP, id = call id)."""
    if len(p) < 4:
        return None
    flags, proto = _U16(p, 0)[0], _U16(p, 2)[0]
    version = flags & 0x7
    if version == 1:
        if proto != 0x880B or not flags & 0x2000 or len(p) < 8:
            return None
        length, call = _U16(p, 4)[0], _U16(p, 6)[0]
        off = 8 + (4 if flags & 0x1000 else 0) + (4 if flags & 0x0080 else 0)
        if length == 0 or off > len(p):
            return None          # acknowledgement only
        return Hit(names.GRE, call, (), ppp, off, off + length)
    if version != 0 or flags & 0x4000:   # source routing (deprecated): not followed
        return None
    off = 4
    if flags & 0x8000:
        off += 4
    key = 0
    if flags & 0x2000:
        if len(p) < off + 4:
            return None
        key = _U32(p, off)[0]
        off += 4
    if flags & 0x1000:
        off += 4
    if off > len(p):
        return None
    carried = GRE_PROTOCOLS.get(proto)
    return carried(p, off, flags, key) if carried is not None else None


IP_TUNNELS = {
    4: ipip4,
    41: ipip6,
    47: gre,
    97: etherip,
    137: mpls_in_ip,
}


# -- UDP tunnels ---------------------------------------------------------------

def gtp(p, declared):
    """GTP-U v1: only G-PDUs (message type 0xff) carry a packet, IPv4 or IPv6; id = TEID.
    The optional sequence / N-PDU / next-extension fields and the extension header
    chain are skipped; the inner packet ends where the GTP length says."""
    if len(p) < 8:
        return None
    flags, mtype = p[0], p[1]
    if flags >> 5 != 1 or not flags & 0x10 or mtype != 0xFF:
        return None
    end = 8 + _U16(p, 2)[0]
    teid = _U32(p, 4)[0]
    off = 8
    if flags & 0x07:
        if len(p) < 12:
            return None
        nxt, off = p[11], 12
        while flags & 0x04 and nxt:
            if off >= len(p):
                return None
            size = p[off] * 4
            if size == 0 or off + size > len(p):
                return None
            nxt, off = p[off + size - 1], off + size
    if off > end:
        return None
    return Hit(names.GTP, teid, (names.GTP,), IP, off, end)


def vxlan(p, declared):
    """VXLAN (RFC 7348): 8 bytes, the I flag set; id = VNI; inner Ethernet."""
    if len(p) < 8 or not p[0] & 0x08:
        return None
    vni = int.from_bytes(p[4:7], "big")
    return Hit(names.VXLAN, vni, (names.VXLAN,), ethernet, 8, space=vni)


GENEVE_PROTOCOLS = {0x6558: ethernet, 0x0800: IP4, 0x86DD: IP6}


def geneve(p, declared):
    """Geneve (RFC 8926): 8 bytes plus options; id = VNI; inner per protocol type."""
    if len(p) < 8 or p[0] >> 6 != 0:
        return None
    size = 8 + (p[0] & 0x3F) * 4
    inner = GENEVE_PROTOCOLS.get(_U16(p, 2)[0])
    if inner is None or size > len(p):
        return None
    vni = int.from_bytes(p[4:7], "big")
    return Hit(names.GENEVE, vni, (names.GENEVE,), inner, size, space=vni)


def _teredo_start(p) -> int:
    """Where the IPv6 packet starts after Teredo's optional authentication and origin
    indication headers (RFC 4380 5.1.1), or -1."""
    off = 0
    if p[:2] == b"\x00\x01":
        if len(p) < 4:
            return -1
        off = 4 + p[2] + p[3] + 8 + 1
    if p[off:off + 2] == b"\x00\x00":
        off += 8
    return off


def teredo(p, declared):
    """Teredo (RFC 4380) on its port: optional authentication and origin indication
    headers, then an IPv6 packet: only if it really is one (version 6, its payload
    length within the UDP payload)."""
    off = _teredo_start(p)
    if off < 0 or len(p) < off + 40 or p[off] >> 4 != 6:
        return None
    if off + 40 + _U16(p, off + 4)[0] > declared:
        return None
    return Hit(names.TEREDO, 0, (names.TEREDO,), IP6, off)


TEREDO_PREFIX = b"\x20\x01\x00\x00"     # 2001::/32: every Teredo client's address


def teredo_by_shape(p, declared):
    """Teredo on any UDP port (relays answer from ports of their own), recognised by
    its shape, more strictly than on 3544 so that other UDP payloads do not pass: the
    IPv6 packet fills the UDP payload exactly (a bubble, no next header and no
    payload, may have bytes after it), and without a Teredo header in front one of its
    addresses is a Teredo address. The fast path applies the same test
    (fastpath._teredo_shaped)."""
    off = _teredo_start(p)
    if off < 0 or len(p) < off + 40 or p[off] >> 4 != 6:
        return None
    plen = _U16(p, off + 4)[0]
    if off + 40 + plen != declared and not (plen == 0 and p[off + 6] == 59):
        return None
    if off == 0 and p[8:12] != TEREDO_PREFIX and p[24:28] != TEREDO_PREFIX:
        return None
    return Hit(names.TEREDO, 0, (names.TEREDO,), IP6, off)


def ayiya(p, declared):
    """AYIYA: identity and signature sizes from the header; opcode 1 (forward)
    carries the packet named by next header (4 or 41)."""
    if len(p) < 8:
        return None
    size = 8 + (1 << (p[0] >> 4)) + (p[1] >> 4) * 4
    inner = {4: IP4, 41: IP6}.get(p[3])
    if p[2] & 0x0F != 1 or inner is None or size > len(p):
        return None
    return Hit(names.AYIYA, 0, (names.AYIYA,), inner, size)


def gre_udp(p, declared):
    """GRE-in-UDP (RFC 8086, port 4754)."""
    hit = gre(p, declared)
    if hit is None:
        return None
    return replace(hit, path=(names.GRE,) + hit.path)


def mpls_udp(p, declared):
    """MPLS-in-UDP (RFC 7510, port 6635)."""
    return Hit(names.MPLS_TUNNEL, 0, (), mpls, 0) if len(p) >= 4 else None


def capwap(p, declared):
    """CAPWAP data (RFC 5415): unfragmented, not a keep-alive, no DTLS; the inner
    frame is 802.3 (T=0) or native 802.11 (T=1, binding 1)."""
    if len(p) < 8 or p[0] != 0:
        return None
    size = (p[1] >> 3) * 4
    wbid = (p[2] >> 1) & 0x1F
    native = p[2] & 1
    if size < 8 or size > len(p) or p[3] & 0x80 or p[3] & 0x08:
        return None
    if not native:
        inner = ethernet
    elif wbid == 1:
        inner = wlan
    else:
        return None
    return Hit(names.CAPWAP, 0, (names.CAPWAP,), inner, size)


def tzsp(p, declared):
    """TZSP: version 1, a received/transmitted packet, tagged fields up to the END
    tag, then an Ethernet (1) or 802.11 (18) frame."""
    if len(p) < 5 or p[0] != 1 or p[1] not in (0, 1):
        return None
    inner = {1: ethernet, 18: wlan}.get(_U16(p, 2)[0])
    if inner is None:
        return None
    off = 4
    while True:
        if off >= len(p):
            return None
        tag = p[off]
        if tag == 1:
            off += 1
            break
        off += 1 if tag == 0 else 2 + (p[off + 1] if off + 1 < len(p) else 0)
    return Hit(names.TZSP, 0, (names.TZSP,), inner, off)


@dataclass(frozen=True, slots=True)
class UdpTunnel:
    decode: object
    either: bool      # the port may be the source port too (else destination only)


TEREDO_PORT = 3544

UDP_TUNNELS = {
    2152: UdpTunnel(gtp, True),
    TEREDO_PORT: UdpTunnel(teredo, True),
    4754: UdpTunnel(gre_udp, False),
    4789: UdpTunnel(vxlan, False),
    5072: UdpTunnel(ayiya, True),
    5247: UdpTunnel(capwap, True),
    6081: UdpTunnel(geneve, False),
    6635: UdpTunnel(mpls_udp, False),
    37008: UdpTunnel(tzsp, True),
}

UDP_TUNNEL_PORTS = frozenset(UDP_TUNNELS)


# -- scopes --------------------------------------------------------------------

def endpoints(outer, inner):
    """The outer layer's two addresses, in the order met (tunnel_scope orders them)."""
    return outer.src, outer.dst


def _end(addr: bytes, port: int) -> bytes:
    return addr + port.to_bytes(2, "big")


def teredo_client(outer, inner):
    """A Teredo client's outer address and port: the one end every packet of its
    conversations shares, whichever server or relay is at the other end (a ping goes out
    through the server and comes back through a relay; qualification asks two server
    addresses). The client is the end facing port 3544 (the server), else the end whose
    inner address is a Teredo address (2001::/32); with both or neither, the two ends."""
    src, dst = _end(outer.src, outer.sport), _end(outer.dst, outer.dport)
    if (outer.sport == TEREDO_PORT) != (outer.dport == TEREDO_PORT):
        return (dst, b"") if outer.sport == TEREDO_PORT else (src, b"")
    if inner is not None:
        from_client, to_client = inner.src[:4] == TEREDO_PREFIX, inner.dst[:4] == TEREDO_PREFIX
        if from_client != to_client:
            return (src, b"") if from_client else (dst, b"")
    return src, dst


@dataclass(frozen=True, slots=True)
class Scope:
    ends: object      # (outer layer, inner layer or None) -> the outer ends in the scope, in either order
    space: str        # what Hit.space holds (also part of the scope), or why there is none


# Per tunnel: what the scope of the sessions it carries is made of, besides the outer
# layer's own scope, the tunnel kind and (under --vlan-key) the outer VLAN ids. Only
# fields that are the same in both directions of a conversation belong here: never the
# outer ports of a point-to-point tunnel, nor the outer session.
SCOPES = {
    names.GTP: Scope(endpoints, "none: each end picks the TEID it receives on, so uplink and "
                                "downlink TEIDs differ"),
    names.GRE: Scope(endpoints, "NVGRE's virtual subnet id (TEB with a key: key >> 8); other keys "
                                "are not: each end may set its own (Linux ikey/okey, PMIPv6 uplink and "
                                "downlink keys, NVGRE's flow-id byte), and PPTP call ids are per direction"),
    names.ERSPAN: Scope(endpoints, "the ERSPAN session id: one mirror session, both directions"),
    names.IPIP: Scope(endpoints, "none: the pair of endpoints is the tunnel"),
    names.ETHERIP: Scope(endpoints, "none: the pair of endpoints is the tunnel"),
    names.MPLS_TUNNEL: Scope(endpoints, "none: labels are link headers of the inner layer"),
    names.VXLAN: Scope(endpoints, "the VNI; outer UDP source ports are per direction (an entropy hash)"),
    names.GENEVE: Scope(endpoints, "the VNI; outer UDP source ports are per direction (an entropy hash)"),
    names.AYIYA: Scope(endpoints, "none: identities are per sender; client ports change per session"),
    names.CAPWAP: Scope(endpoints, "none: the access point and its controller are the tunnel"),
    names.TZSP: Scope(endpoints, "none: the sensor and its collector are the tunnel"),
    names.TEREDO: Scope(teredo_client, "none; the ends are the client's address and port only"),
}


def udp_tunnel(sport: int, dport: int, p, declared: int, teredo_any_port: bool = True):
    """The tunnel a UDP payload carries, by destination port first, then source port;
    then, unless told not to, Teredo by its shape on any port."""
    for port, is_dst in ((dport, True), (sport, False)):
        t = UDP_TUNNELS.get(port)
        if t is not None and (is_dst or t.either):
            hit = t.decode(p, declared)
            if hit is not None:
                return hit
    return teredo_by_shape(p, declared) if teredo_any_port else None


def ip_tunnel(proto: int, p, declared: int):
    fn = IP_TUNNELS.get(proto)
    return fn(p, declared) if fn is not None else None
