"""Headers below IP, one small decoder each, and the registries that chain them.

A decoder reads one header at `off` in the frame `b`, appends its name to the
layer's path (and a VLAN id to its tags), and says what follows:

    decoder(b: bytes, off: int, l2: L2) -> (next, next_off)

`next` is another decoder or an IP marker (`IP`, `IP4`, `IP6`: an IP header
of any / that version starts at `next_off`). A decoder raises `NotIP` when
the frame carries something else (ARP, LLDP, SLARP, ...) and `Malformed` when
its header is cut short or impossible. `walk` follows the chain up to the IP
header; `LINKTYPES` says where the chain starts for each pcap link type, and
`ETHERTYPES`, `PPP_PROTOCOLS`, `NULL_FAMILIES` map the next-protocol fields.
Adding a link layer or an ethertype is one function and one registry entry.

Tunnels (`tunnels.py`) name the decoder their inner packet starts with
(`ethernet`, `ppp`, `mpls`, `wlan`, or an IP marker).
"""
import struct

from . import names

_U16 = struct.Struct(">H").unpack_from


def _mac(b, off: int) -> int:
    return int.from_bytes(b[off:off + 6], "big")


class NotIP(Exception):
    """The frame (or a tunnel's inner frame) carries no IP: the message says what."""


class Malformed(Exception):
    """A header is cut short by the capture or impossible: the message says which."""


class IpNext:
    """Marker: an IP header starts here; `version` 0 means "read the nibble"."""
    __slots__ = ("version",)

    def __init__(self, version: int):
        self.version = version

    def __repr__(self):
        return f"IpNext({self.version})"


IP = IpNext(0)
IP4 = IpNext(4)
IP6 = IpNext(6)

MAX_LINK_HEADERS = 16   # per IP layer (tags, labels, ...): more is treated as malformed


class L2:
    """What the headers below one IP layer leave for it: path names, VLAN ids and the
    addresses of the Ethernet header nearest the IP header (0: none)."""
    __slots__ = ("path", "vlans", "smac", "dmac")

    def __init__(self, prefix: str = ""):
        self.path = [prefix] if prefix else []
        self.vlans = []
        self.smac = self.dmac = 0


def need(b, off: int, n: int, what: str) -> None:
    if off < 0 or off + n > len(b):
        raise Malformed(f"truncated {what} header")


def walk(b, off: int, nxt, l2: L2):
    """Follow the decoders from `nxt` at `off` to the IP header: returns (IpNext, offset)."""
    for _ in range(MAX_LINK_HEADERS + 1):
        if isinstance(nxt, IpNext):
            return nxt, off
        nxt, off = nxt(b, off, l2)
    raise Malformed("too many link headers")


def by_ethertype(et: int):
    nxt = ETHERTYPES.get(et)
    if nxt is None:
        raise NotIP(names.ethertype(et))
    return nxt


def _type_or_length(b, at: int):
    """The Ethernet type/length field at `at`: an ethertype, or an 802.3 length (LLC follows)."""
    (et,) = _U16(b, at)
    if et >= 0x0600:
        return by_ethertype(et), at + 2
    if et <= 1500:
        return llc, at + 2
    raise NotIP(f"ethertype 0x{et:04x}")


# -- Ethernet and what rides on it ---------------------------------------------

def ethernet(b, off, l2):
    """Ethernet II / 802.3: its addresses are kept (a later one, the customer's frame in
    PBB or a pseudo-wire, replaces them: the one nearest IP names the hosts)."""
    need(b, off, 14, "ethernet")
    l2.path.append(names.ETH)
    l2.dmac = _mac(b, off)
    l2.smac = _mac(b, off + 6)
    return _type_or_length(b, off + 12)


def vlan(b, off, l2):
    """802.1Q / 802.1ad / QinQ tag: the id (12 bits) goes to the layer's vlans."""
    need(b, off, 4, "vlan")
    l2.path.append(names.VLAN)
    l2.vlans.append(_U16(b, off)[0] & 0x0FFF)
    return _type_or_length(b, off + 2)


def pbb(b, off, l2):
    """IEEE 802.1ah provider backbone bridging (0x88e7): the 4-byte I-TAG (flags and the
    service instance id), then the customer's whole Ethernet frame."""
    need(b, off, 4, "pbb")
    l2.path.append(names.PBB)
    return ethernet, off + 4


def _skipped_tag(name: str, size: int):
    """A tag of `size` bytes that says nothing the key uses, then the next ethertype."""
    def tag(b, off, l2):
        need(b, off, size + 2, name)
        l2.path.append(name)
        return _type_or_length(b, off + size)
    tag.__name__ = name
    return tag


vntag = _skipped_tag(names.VNTAG, 4)   # Cisco VN-Tag (0x8926): destination and source virtual interfaces
etag = _skipped_tag(names.ETAG, 6)     # IEEE 802.1BR E-Tag (0x893f): port extender channel ids


def fabricpath(b, off, l2):
    """Cisco FabricPath (0x8903): a 2-byte FTag/TTL field, then the classic Ethernet frame."""
    need(b, off, 2, "fabricpath")
    l2.path.append("fabricpath")
    return ethernet, off + 2


def llc(b, off, l2):
    """802.2 LLC; SNAP carries an ethertype, SAP 0x06 carries IPv4."""
    need(b, off, 3, "llc")
    dsap, ssap, ctrl = b[off], b[off + 1], b[off + 2]
    l2.path.append(names.LLC)
    if dsap == 0xAA and ssap == 0xAA and ctrl == 0x03:
        need(b, off, 8, "snap")
        return by_ethertype(_U16(b, off + 6)[0]), off + 8
    if dsap == 0x06 and ssap == 0x06:
        return IP4, off + 3
    raise NotIP(f"llc sap 0x{dsap:02x}")


def mpls(b, off, l2):
    """Labels down to bottom-of-stack (one path name each), then guess the payload:
    first nibble 4 / 6 is IP; else a pseudo-wire carrying Ethernet, with or without
    the 4-byte control word, if an IP-bearing ethertype sits where it should."""
    for _ in range(MAX_LINK_HEADERS):
        need(b, off, 4, "mpls")
        l2.path.append(names.MPLS)
        bottom = b[off + 2] & 1
        off += 4
        if bottom:
            break
    else:
        raise Malformed("too many mpls labels")
    if off >= len(b):
        raise Malformed("truncated mpls payload")
    nibble = b[off] >> 4
    if nibble == 4:
        return IP4, off
    if nibble == 6:
        return IP6, off
    for start in ((off + 4, off) if nibble == 0 else (off,)):
        if start + 14 <= len(b) and _U16(b, start + 12)[0] in _PW_ETHERTYPES:
            return ethernet, start
    raise NotIP("mpls payload not ip")


def pppoe(b, off, l2):
    """PPPoE session stage (ethertype 0x8864): a 6-byte header, then PPP without address/control."""
    need(b, off, 6, "pppoe")
    if b[off] != 0x11:
        raise NotIP(f"pppoe version/type 0x{b[off]:02x}")
    if b[off + 1] != 0:
        raise NotIP(f"pppoe code 0x{b[off + 1]:02x}")
    l2.path.append(names.PPPOE)
    return ppp, off + 6


# -- PPP and HDLC --------------------------------------------------------------

def ppp(b, off, l2):
    """PPP: optional address/control (ff 03), then a 1- or 2-byte protocol field."""
    if b[off:off + 2] == b"\xff\x03":
        off += 2
    need(b, off, 1, "ppp")
    if b[off] & 1:                 # protocol field compression: odd first byte
        proto, off = b[off], off + 1
    else:
        need(b, off, 2, "ppp")
        proto, off = _U16(b, off)[0], off + 2
    l2.path.append(names.PPP)
    nxt = PPP_PROTOCOLS.get(proto)
    if nxt is None:
        raise NotIP(f"ppp protocol 0x{proto:04x}")
    return nxt, off


def ppp_link(b, off, l2):
    """DLT_PPP / PPP in HDLC framing; some captures put Cisco HDLC under DLT_PPP."""
    need(b, off, 1, "ppp")
    if b[off] in (0x0F, 0x8F):
        return chdlc(b, off, l2)
    return ppp(b, off, l2)


def chdlc(b, off, l2):
    """Cisco HDLC: address, control, then an ethertype (SLARP and CDP are not IP)."""
    need(b, off, 4, "chdlc")
    l2.path.append(names.CHDLC)
    (proto,) = _U16(b, off + 2)
    if proto == 0x8035:
        raise NotIP("slarp")
    return by_ethertype(proto), off + 4


# -- capture pseudo-headers ----------------------------------------------------

def null(b, off, l2):
    """BSD loopback: a 4-byte address family, in host (DLT_NULL) or network (DLT_LOOP) order."""
    need(b, off, 4, "null")
    l2.path.append(names.NULL)
    raw4 = bytes(b[off:off + 4])
    nxt = NULL_FAMILIES.get(int.from_bytes(raw4, "little")) or NULL_FAMILIES.get(int.from_bytes(raw4, "big"))
    if nxt is None:
        raise NotIP(f"null family {int.from_bytes(raw4, 'little')}")
    return nxt, off + 4


def _sll_protocol(proto: int):
    if proto == 0x0004:            # 802.2 frame
        return llc
    return by_ethertype(proto)


def sll(b, off, l2):
    """Linux cooked capture v1: 16 bytes, protocol (an ethertype) last."""
    need(b, off, 16, "sll")
    l2.path.append(names.SLL)
    return _sll_protocol(_U16(b, off + 14)[0]), off + 16


def sll2(b, off, l2):
    """Linux cooked capture v2: 20 bytes, protocol (an ethertype) first."""
    need(b, off, 20, "sll2")
    l2.path.append(names.SLL2)
    return _sll_protocol(_U16(b, off)[0]), off + 20


def raw(b, off, l2):
    l2.path.append(names.RAW)
    return IP, off


def raw4(b, off, l2):
    l2.path.append(names.RAW)
    return IP4, off


def raw6(b, off, l2):
    l2.path.append(names.RAW)
    return IP6, off


# -- 802.11 (data frames with LLC; also the inner frames of CAPWAP and TZSP) --

def wlan(b, off, l2):
    need(b, off, 24, "802.11")
    fc0, fc1 = b[off], b[off + 1]
    if fc0 & 0x03 and not fc1 & 0x03:   # protocol version must be 0: Cisco APs swap the
        fc0, fc1 = fc1, fc0             # frame control bytes (CAPWAP)
    ftype, subtype = (fc0 >> 2) & 3, fc0 >> 4
    if ftype != 2:
        raise NotIP("802.11 management/control")
    if subtype & 0x4:
        raise NotIP("802.11 null data")
    if fc1 & 0x40:
        raise NotIP("802.11 protected")
    size = 24
    if fc1 & 0x03 == 0x03:         # to-DS and from-DS: a fourth address
        size += 6
    if subtype & 0x8:              # QoS data: QoS control, maybe HT control
        need(b, off, size + 2, "802.11")
        if b[off + size] & 0x80:
            raise NotIP("802.11 a-msdu")
        size += 2
        if fc1 & 0x80:
            size += 4
    need(b, off, size, "802.11")
    l2.path.append(names.WLAN)
    return llc, off + size


def radiotap(b, off, l2):
    need(b, off, 4, "radiotap")
    size = b[off + 2] | (b[off + 3] << 8)
    if size < 8:
        raise Malformed("bad radiotap length")
    need(b, off, size, "radiotap")
    l2.path.append(names.RADIOTAP)
    return wlan, off + size


# -- registries ----------------------------------------------------------------

ETHERTYPES = {
    0x0800: IP4,
    0x86DD: IP6,
    0x8100: vlan,
    0x88A8: vlan,
    0x9100: vlan,
    0x8847: mpls,
    0x8848: mpls,
    0x8864: pppoe,
    0x6558: ethernet,   # transparent Ethernet bridging (GRE, Geneve)
    0x8903: fabricpath,
    0x88E7: pbb,
    0x8926: vntag,
    0x893F: etag,
}

_PW_ETHERTYPES = frozenset(et for et, nxt in ETHERTYPES.items() if nxt is not ethernet)

PPP_PROTOCOLS = {
    0x0021: IP4,
    0x0057: IP6,
    0x0281: mpls,
    0x0283: mpls,
}

NULL_FAMILIES = {
    2: IP4,     # AF_INET
    24: IP6,    # AF_INET6: NetBSD, OpenBSD, BSD/OS
    28: IP6,    # FreeBSD
    30: IP6,    # Darwin
}

LINKTYPES = {
    0: null,        # DLT_NULL
    1: ethernet,
    9: ppp_link,
    12: raw,        # DLT_RAW (most systems)
    14: raw,        # DLT_RAW (OpenBSD)
    50: ppp_link,   # PPP in HDLC-like framing
    101: raw,       # LINKTYPE_RAW
    104: chdlc,
    105: wlan,
    108: null,      # DLT_LOOP
    113: sll,
    127: radiotap,
    228: raw4,
    229: raw6,
    276: sll2,
}
