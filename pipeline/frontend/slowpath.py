"""The per-frame decoder ("slow path"): any supported link type, tunnels, IPv6
extension headers, fragments, and every malformed or truncated frame.

Theory of operation. A frame is decoded as a chain of layers, outermost first.
For one IP layer:
  1. the headers below IP (`linktypes.walk`, from the link type's decoder, or
     from the decoder a tunnel names for its inner packet) give the path names
     and VLAN ids;
  2. the IP header (`_ipv4` / `_ipv6`, IPv6 extension headers skipped) gives
     addresses, the transport protocol and the lengths; a fragment stops the
     decode there (`Layer.frag`: the front-end reassembles, then calls
     `decode_transport`);
  3. the transport header (`TRANSPORT_HEADERS`) gives ports, TCP fields and the
     payload length, from the IP lengths, never from the capture;
  4. the tunnel registries (`tunnels.ip_tunnel`, `tunnels.udp_tunnel`; Teredo
     also by its shape on any UDP port, unless `teredo_any_port=False`) say
     whether the payload carries another packet; if so the layer names the
     tunnel and the inner packet is decoded the same way, one level deeper.

Errors. Nothing here raises to the caller. Below the outermost IP layer's
transport, any failure classifies the whole frame: `NotIP` -> NON_IP,
`Malformed` (or any unexpected error) -> MALFORMED, with a short `error`.
Inside a tunnel, the outer layers stand: an inner packet that is not IP ends
the decode quietly (`error` says why), a bad one sets `inner_malformed`, and
`max_depth` tunnels at most are followed (`error` says so; the last layer keeps
its tunnel fields so the front-end can count the cut).

Paths. A fragment's layer path stops at the IP version ("eth.ipv4"): the
transport is added when the datagram is complete.
"""
import struct

from contracts.wire import ICMP_SEEN
from . import names
from .decoded import IP, MALFORMED, NON_IP, Decoded, Frag, Layer
from .linktypes import LINKTYPES, L2, IpNext, Malformed, NotIP, walk
from .tunnels import ip_tunnel, udp_tunnel

_V4 = struct.Struct(">BBHHHBBH4s4s").unpack_from
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_TCP = struct.Struct(">HHIIBB").unpack_from

UDP = 17


# -- transports: fill the layer's ports (and TCP fields); return the header length

def _ports(layer, p, name):
    if len(p) < 4:
        raise Malformed(f"truncated {name} header")
    layer.sport, layer.dport = _U16(p, 0)[0], _U16(p, 2)[0]


def _tcp(layer, p, declared):
    if declared < 20:
        raise Malformed("tcp header beyond ip length")
    if len(p) < 14:
        raise Malformed("truncated tcp header")
    layer.sport, layer.dport, layer.seq, layer.ack, off, layer.tcpflags = _TCP(p, 0)
    size = (off >> 4) * 4
    if size < 20:
        raise Malformed("bad tcp data offset")
    if size > declared:
        raise Malformed("tcp header beyond ip length")
    return size


def _fixed(name, size):
    """A transport with ports first and a fixed-size header (UDP, UDP-Lite, SCTP)."""
    def decode(layer, p, declared):
        if declared < size:
            raise Malformed(f"{name} header beyond ip length")
        _ports(layer, p, name)
        return size
    return decode


def _dccp(layer, p, declared):
    if declared < 12:
        raise Malformed("dccp header beyond ip length")
    _ports(layer, p, "dccp")
    if len(p) < 5:
        raise Malformed("truncated dccp header")
    size = p[4] * 4
    if size < 12 or size > declared:
        raise Malformed("bad dccp data offset")
    return size


def _icmp(layer, p, declared):
    """ICMP / ICMPv6: no ports (sessions are keyed on addresses); the 8-byte header
    (type, code, checksum, identifier/rest) is not payload. Counted from the IP
    lengths, so a capture cut inside it is not malformed. Type and code go in `seq`
    (wire.ICMP_SEEN | type << 8 | code) for the session's Community ID."""
    if len(p) >= 2 and declared >= 2:
        layer.seq = ICMP_SEEN | p[0] << 8 | p[1]
    return min(8, declared)


# IP protocol -> decoder; any other transport has no ports and a 0-byte header
# (its payload is the whole IP payload).
TRANSPORT_HEADERS = {
    1: _icmp,
    58: _icmp,
    6: _tcp,
    17: _fixed("udp", 8),
    33: _dccp,
    132: _fixed("sctp", 12),
    136: _fixed("udplite", 8),
}

# IPv6 extension headers skipped to reach the transport (44, the fragment header,
# ends the walk); AH counts its length in 4-byte units, the others in 8-byte units.
IPV6_EXTENSIONS = {0: 8, 43: 8, 44: 8, 51: 4, 60: 8, 135: 8}


def _transport(layer, proto, p, declared, teredo_any_port):
    """Finish `layer` from its transport header: ports, payload length, path, and the
    tunnel it carries. Returns the inner packet to decode, (start, bytes), or None."""
    hdr = TRANSPORT_HEADERS.get(proto)
    size = hdr(layer, p, declared) if hdr is not None else 0
    layer.payload = declared - size
    name = names.transport(proto)
    if name:
        layer.path += "." + name
    if proto == UDP:
        hit = udp_tunnel(layer.sport, layer.dport, p[8:], layer.payload, teredo_any_port)
        base = 8
    else:
        hit = ip_tunnel(proto, p, layer.payload)
        base = 0
    if hit is None:
        return None
    layer.tunnel, layer.tunnel_id, layer.tunnel_space = hit.name, hit.id, hit.space
    if hit.path:
        layer.path += "." + ".".join(hit.path)
    end = len(p) if hit.end is None else min(len(p), base + hit.end)
    return hit.inner, p[base + hit.off:end]


# -- IP ------------------------------------------------------------------------

def _ipv4(b, off, l2, teredo_any_port):
    avail = len(b) - off
    if avail < 20:
        raise Malformed("truncated ipv4 header")
    vihl, _tos, total, ident, frag, _ttl, proto, _sum, src, dst = _V4(b, off)
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        raise Malformed("bad ipv4 header length")
    if ihl > avail:
        raise Malformed("truncated ipv4 header")
    if total == 0:                 # TSO / offloaded capture: the frame says how long
        total = avail
    elif total < ihl:
        raise Malformed("bad ipv4 total length")
    end = off + min(total, avail)
    layer = Layer(4, src, dst, proto, ".".join(l2.path + [names.IPV4]), tuple(l2.vlans), iplen=total,
                  smac=l2.smac, dmac=l2.dmac)
    declared = total - ihl
    if frag & 0x3FFF:
        layer.payload = declared
        layer.frag = Frag(ident, (frag & 0x1FFF) * 8, bool(frag & 0x2000), proto, b[off + ihl:end], declared, ihl)
        return layer, None
    return layer, _transport(layer, proto, b[off + ihl:end], declared, teredo_any_port)


def _extensions(p, nh, declared):
    """Skip IPv6 extension headers in `p` (the bytes after the IPv6 or fragment header).
    Returns (transport protocol, its offset, the 8-byte fragment header or None)."""
    off = 0
    while True:
        unit = IPV6_EXTENSIONS.get(nh)
        if unit is None:
            return nh, off, None
        if nh == 44:
            if off + 8 > declared:
                raise Malformed("ipv6 extension headers beyond payload length")
            if off + 8 > len(p):
                raise Malformed("truncated ipv6 fragment header")
            return nh, off, p[off:off + 8]
        if off + 2 > declared:
            raise Malformed("ipv6 extension headers beyond payload length")
        if off + 2 > len(p):
            raise Malformed("truncated ipv6 extension header")
        size = (p[off + 1] + (2 if unit == 4 else 1)) * unit
        if off + size > declared:
            raise Malformed("ipv6 extension headers beyond payload length")
        nh, off = p[off], off + size


def _ipv6(b, off, l2, teredo_any_port):
    avail = len(b) - off
    if avail < 40:
        raise Malformed("truncated ipv6 header")
    plen, nh = _U16(b, off + 4)[0], b[off + 6]
    if plen == 0:                  # jumbogram or offloaded capture: the frame says how long
        plen = avail - 40
    layer = Layer(6, b[off + 8:off + 24], b[off + 24:off + 40], nh, ".".join(l2.path + [names.IPV6]),
                  tuple(l2.vlans), iplen=40 + plen, smac=l2.smac, dmac=l2.dmac)
    p = b[off + 40:off + min(40 + plen, avail)]
    proto, x, fh = _extensions(p, nh, plen)
    if fh is not None:
        fo = _U16(fh, 2)[0]
        start = x + 8
        layer.proto = fh[0]
        layer.payload = plen - start
        layer.frag = Frag(_U32(fh, 4)[0], fo & 0xFFF8, bool(fo & 1), fh[0], p[start:], plen - start, 40 + x)
        return layer, None
    layer.proto = proto
    return layer, _transport(layer, proto, p[x:], plen - x, teredo_any_port)


_IP_VERSIONS = {4: _ipv4, 6: _ipv6}


def _ip(b, off, want: IpNext, l2, teredo_any_port):
    if off >= len(b):
        raise Malformed("truncated ip header")
    version = b[off] >> 4
    fn = _IP_VERSIONS.get(version)
    if fn is None:
        raise Malformed(f"bad ip version {version}")
    if want.version and version != want.version:
        raise Malformed(f"ipv{version} header where ipv{want.version} expected")
    return fn(b, off, l2, teredo_any_port)


def _layer(b, start, prefix, teredo_any_port):
    """One IP layer from the decoder `start` at offset 0 of `b`: (Layer, inner or None)."""
    l2 = L2(prefix)
    want, off = walk(b, 0, start, l2)
    return _ip(b, off, want, l2, teredo_any_port)


def _follow(d: Decoded, inner, max_depth: int, teredo_any_port: bool) -> None:
    """Decode tunnels' inner packets into d.layers; never raises."""
    depth = 0
    while inner is not None:
        if depth >= max_depth:
            d.error = f"tunnel depth limit {max_depth}"
            return
        start, data = inner
        try:
            layer, inner = _layer(data, start, d.layers[-1].path, teredo_any_port)
        except NotIP as e:
            d.error = f"inner not ip: {e}"
            return
        except Malformed as e:
            d.inner_malformed, d.error = True, f"inner: {e}"
            return
        except Exception as e:  # a decoder bug must not lose the outer layers
            d.inner_malformed, d.error = True, f"inner: decoder error ({type(e).__name__})"
            return
        d.layers.append(layer)
        depth += 1


# -- API -------------------------------------------------------------------------

def decode(linktype: int, frame, max_depth: int = 8, teredo_any_port: bool = True) -> Decoded:
    """Decode one captured frame of pcap link type `linktype`. Never raises.
    `teredo_any_port=False`: Teredo on port 3544 only, not by its shape elsewhere."""
    try:
        start = LINKTYPES.get(linktype)
        if start is None:
            return Decoded(NON_IP, error=f"linktype {linktype} not decoded")
        layer, inner = _layer(bytes(frame), start, "", teredo_any_port)
    except NotIP as e:
        return Decoded(NON_IP, error=str(e))
    except Malformed as e:
        return Decoded(MALFORMED, error=str(e))
    except Exception as e:
        return Decoded(MALFORMED, error=f"decoder error ({type(e).__name__})")
    d = Decoded(IP, [layer])
    _follow(d, inner, max_depth, teredo_any_port)
    return d


def decode_transport(layer: Layer, payload, max_depth: int = 8, length: int | None = None,
                     teredo_any_port: bool = True) -> list[Layer]:
    """Finish the decode of a reassembled datagram: `layer` is the fragment-0 Layer
    (frag set), `payload` the whole transport payload (IPv6: what follows the
    fragment header), `length` its length from the IP lengths when the capture
    cut it short (default: len(payload)). Returns [the completed layer (frag=None,
    ports/flags/seq/payload filled, tunnel set if it carries one), inner layers...].
    A malformed transport header gives [the layer with frag=None and ports 0].
    Never raises."""
    try:
        frag = layer.frag
        out = Layer(layer.ipver, layer.src, layer.dst, frag.proto if frag is not None else layer.proto,
                    layer.path, tuple(layer.vlans), smac=layer.smac, dmac=layer.dmac)
    except Exception:
        return [layer]
    base_path = out.path
    try:
        p = bytes(payload)
        declared = len(p) if length is None else max(0, int(length))
        p = p[:declared]
        out.iplen = (frag.header if frag is not None else 0) + declared   # the whole datagram, once
        proto, x = out.proto, 0
        if out.ipver == 6:
            proto, x, fh = _extensions(p, proto, declared)
            if fh is not None:
                raise Malformed("fragment header in a reassembled datagram")
        out.proto = proto
        inner = _transport(out, proto, p[x:], declared - x, teredo_any_port)
    except Exception:
        name = names.transport(out.proto)
        out.path = base_path + ("." + name if name else "")
        out.sport = out.dport = out.tcpflags = out.seq = out.ack = 0
        out.tunnel, out.tunnel_id, out.tunnel_space, out.payload = None, 0, 0, 0
        return [out]
    d = Decoded(IP, [out])
    _follow(d, inner, max_depth, teredo_any_port)
    return d.layers
