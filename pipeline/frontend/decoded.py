"""What the per-frame decoder (slow path) returns: plain data, no I/O.

A frame decodes to a `Decoded`: its class (IP, non-IP, malformed) and, for IP,
one `Layer` per IP header, outermost first. A tunnel adds a layer: the outer
layer names the tunnel (`tunnel`, `tunnel_id`, `tunnel_space`) that carries the next one.
A fragmented IP datagram stops the decode at that layer (`frag` set): the
front-end's reassembler collects the fragments' payloads and calls
`slowpath.decode_transport` on the whole datagram to finish the decode.
"""
from dataclasses import dataclass, field
from typing import Optional

IP = "ip"
NON_IP = "non_ip"
MALFORMED = "malformed"


@dataclass(slots=True)
class Frag:
    """One IPv4 or IPv6 fragment of a datagram."""
    ident: int            # IPv4 identification / IPv6 fragment header identification
    offset: int           # byte offset of this fragment's payload in the datagram payload
    more: bool            # more fragments follow
    proto: int            # transport protocol of the datagram (IPv6: next header after the fragment header)
    payload: bytes        # this fragment's captured payload (after the IP / fragment header)
    payload_len: int      # its length according to the IP header (may exceed the captured bytes)
    header: int = 0       # the IP header bytes the reassembled datagram keeps (IPv6: without the fragment header)


@dataclass(slots=True)
class Layer:
    """One IP header of a frame and the transport header right above it."""
    ipver: int                    # 4 or 6
    src: bytes                    # 4 or 16 bytes
    dst: bytes
    proto: int                    # transport protocol number (after IPv6 extension headers)
    path: str                     # dotted protocol names from the link layer up to this transport
    vlans: tuple = ()             # 802.1Q ids seen below this layer, outermost first (outer layer only)
    sport: int = 0                # 0 where the transport has no ports (ICMP, GRE, ...)
    dport: int = 0
    tcpflags: int = 0
    seq: int = 0
    ack: int = 0
    payload: int = 0              # transport payload length from the IP lengths
    iplen: int = 0                # IP length (IPv4 total length, IPv6 40 + payload length)
    smac: int = 0                 # Ethernet addresses of the header nearest this IP header (48 bits), 0: none
    dmac: int = 0
    frag: Optional[Frag] = None   # set when this datagram is a fragment: the decode stops here
    tunnel: Optional[str] = None  # the tunnel carrying the next layer: "gtp", "gre", "erspan", "ipip", "vxlan", "geneve", "teredo", "ayiya", ...
    tunnel_id: int = 0            # the tunnel header's id as seen: TEID, VNI, GRE key or call id, ERSPAN session
    tunnel_space: int = 0         # its address-space id (VNI, NVGRE VSID, ERSPAN session; tunnels.SCOPES), 0: none


@dataclass(slots=True)
class Decoded:
    kind: str                              # IP, NON_IP or MALFORMED
    layers: list = field(default_factory=list)
    error: str = ""                        # why MALFORMED, or why an inner layer was dropped
    inner_malformed: bool = False          # the outer layers decoded but a tunnel's inner packet did not
