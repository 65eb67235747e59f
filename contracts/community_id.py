"""Community ID v1 flow hashes, so analysts can join our sessions with Zeek, Suricata, Elastic.

The Community ID (https://github.com/corelight/community-id-spec) is a
direction-free string for a flow's 5-tuple that other monitors compute the
same way: "1:" + base64(sha1(seed . addr_lo . addr_hi . proto . 0 . port_lo . port_hi)),
all in network byte order, the numerically smaller (address, port) endpoint
first. Transports without ports hash the addresses and protocol only.

ICMP and ICMPv6 hash the message's type and code in place of the ports,
mapped as the spec says (`icmp_ports`): a type with a counterpart (echo
request and reply, ...) hashes as (type, counterpart), ordered like ports, so
a request and its reply share the id; any other type hashes as (type, code)
and is "one-way": the endpoints are taken as given, never swapped. A session
record gets the id of its first ICMP message (the worker knows it).

It runs once per session record, so it is a few calls into C
(socket.inet_pton, hashlib.sha1, base64) and keeps no state.
"""
import base64
import hashlib
import socket
import struct

try:    # CPython's own SHA-1: the same digests, without OpenSSL's per-call set-up on such short inputs
    from _sha1 import sha1 as _sha1
except ImportError:     # a Python built without it
    _sha1 = hashlib.sha1

ICMP, ICMP6 = 1, 58

_HEAD = struct.Struct("!H")       # seed
_TAIL = struct.Struct("!BxHH")    # proto, padding byte, src port, dst port
_PROTO = struct.Struct("!Bx")     # proto, padding byte (port-less transports)


def _packed(ip: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except (OSError, TypeError):
        raise ValueError(f"community id: not an IP address: {ip!r}") from None


def hash_tuple(transport: int, src_ip: str, dst_ip: str, src_port, dst_port, seed: int = 0,
               one_way: bool = False) -> str:
    """The spec's community_id_v1 over a tuple exactly as given.

    Ports are hashed when both are given (for ICMP the caller passes the
    type/code mapped to ports as the spec's ICMP rules say); with either one
    None the hash covers the addresses and transport only."""
    if not 0 <= seed <= 0xFFFF:
        raise ValueError(f"community id: seed {seed} outside 0..65535")
    if not 0 <= transport <= 0xFF:
        raise ValueError(f"community id: transport {transport} outside 0..255")
    return hash_packed(transport, _packed(src_ip), _packed(dst_ip), src_port, dst_port, seed, one_way)


def hash_packed(transport: int, a: bytes, b: bytes, src_port, dst_port, seed: int = 0,
                one_way: bool = False) -> str:
    """`hash_tuple` from addresses already in network byte order (4 or 16 bytes): what
    the worker has, so no text is parsed back. `one_way`: the tuple is hashed as given,
    endpoints never swapped (the spec's ICMP messages without a counterpart)."""
    if src_port is None or dst_port is None:
        if a > b:
            a, b = b, a
        tail = _PROTO.pack(transport)
    else:
        if not one_way and (a > b or (a == b and src_port > dst_port)):
            a, b, src_port, dst_port = b, a, dst_port, src_port
        try:
            tail = _TAIL.pack(transport, src_port, dst_port)
        except struct.error:
            raise ValueError(f"community id: ports {src_port}, {dst_port} outside 0..65535") from None
    digest = _sha1(_HEAD.pack(seed) + a + b + tail).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")


# The spec's ICMP request/reply pairs (Zeek's ICMP4_counterpart and ICMP6_counterpart):
# type -> its counterpart. Every other type is one-way.
ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_PAIRS = {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
               139: 140, 140: 139, 144: 145, 145: 144}


def icmp_ports(transport: int, icmp_type: int, icmp_code: int) -> tuple:
    """(src port, dst port, one_way) the spec hashes for an ICMP (1) or ICMPv6 (58)
    message: (type, counterpart, False) for a type with a counterpart, its code
    ignored; (type, code, True) for any other."""
    if not (0 <= icmp_type <= 0xFF and 0 <= icmp_code <= 0xFF):
        raise ValueError(f"community id: ICMP type {icmp_type}, code {icmp_code} outside 0..255")
    pairs = ICMP4_PAIRS if transport == ICMP else ICMP6_PAIRS
    other = pairs.get(icmp_type)
    if other is None:
        return icmp_type, icmp_code, True
    return icmp_type, other, False


def community_id(transport: int, src_ip: str, dst_ip: str, src_port, dst_port, seed: int = 0,
                 icmp_type=None, icmp_code=None):
    """Community ID v1 of a session, `src` its client.

    ICMP (1) and ICMPv6 (58) hash the type and code of the session's first message
    (`icmp_type`, `icmp_code`; the ports are not used): our ICMP session holds every
    message between two hosts, and its first one is what other monitors key the flow
    by. Without them (a record that does not say) the id is None: a made-up one would
    join unrelated flows. Every other transport hashes as the spec says: with ports
    when the record has them (TCP, UDP, SCTP, ...), else addresses and protocol only.
    """
    if transport == ICMP or transport == ICMP6:
        if icmp_type is None or icmp_code is None:
            return None
        sport, dport, one_way = icmp_ports(transport, icmp_type, icmp_code)
        return hash_tuple(transport, src_ip, dst_ip, sport, dport, seed, one_way)
    return hash_tuple(transport, src_ip, dst_ip, src_port, dst_port, seed)


def community_id_packed(transport: int, a: bytes, b: bytes, src_port, dst_port, icmp_type=None, icmp_code=None):
    """`community_id` (seed 0) from addresses in network byte order: what the worker calls,
    with the session's first ICMP message's type and code for ICMP and ICMPv6."""
    if transport == ICMP or transport == ICMP6:
        if icmp_type is None or icmp_code is None:
            return None
        sport, dport, one_way = icmp_ports(transport, icmp_type, icmp_code)
        return hash_packed(transport, a, b, sport, dport, 0, one_way)
    return hash_packed(transport, a, b, src_port, dst_port)


_PORTED_LEN = {4: 16, 16: 40}      # hashed bytes: seed, two addresses, proto, pad, two ports


def community_ids_ported(a: bytes, b: bytes, width: int, transport, src_port, dst_port) -> list:
    """`hash_packed` (seed 0) for many transports with ports at once: the records of one
    expiry sweep. `a`, `b`: the addresses, `width` (4 or 16) bytes each, concatenated;
    `transport`, `src_port`, `dst_port`: numpy integer columns. The bytes to hash are
    laid out with numpy; Python only calls sha1 and cuts the base64 of all digests
    (each padded to 21 bytes, so each one's text starts on a base64 group boundary)."""
    import numpy as np
    n = len(transport)
    if n == 0:
        return []
    av = np.frombuffer(a, np.uint8).reshape(n, width)
    bv = np.frombuffer(b, np.uint8).reshape(n, width)
    sp = np.asarray(src_port, np.int64)
    dp = np.asarray(dst_port, np.int64)
    # the lower (address, port) endpoint first: compare the addresses as byte strings
    diff = av != bv
    anyd = diff.any(axis=1)
    at = diff.argmax(axis=1)
    rows = np.arange(n)
    swap = np.where(anyd, av[rows, at] > bv[rows, at], sp > dp)
    msg = np.zeros((n, _PORTED_LEN[width]), np.uint8)
    msg[:, 2:2 + width] = np.where(swap[:, None], bv, av)
    msg[:, 2 + width:2 + 2 * width] = np.where(swap[:, None], av, bv)
    o = 2 + 2 * width
    msg[:, o] = np.asarray(transport, np.uint8)
    p1 = np.where(swap, dp, sp)
    p2 = np.where(swap, sp, dp)
    msg[:, o + 2] = p1 >> 8
    msg[:, o + 3] = p1 & 0xFF
    msg[:, o + 4] = p2 >> 8
    msg[:, o + 5] = p2 & 0xFF
    view = memoryview(msg.tobytes())
    w = msg.shape[1]
    sha1 = _sha1
    text = base64.b64encode(b"\0".join([sha1(view[i:i + w]).digest() for i in range(0, n * w, w)]) + b"\0")
    text = text.decode("ascii")
    return ["1:" + text[i:i + 27] + "=" for i in range(0, 28 * n, 28)]
