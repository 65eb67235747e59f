"""STUN (RFC 5389/8489, and classic RFC 3489 on its port): 20-byte header with
the message length and, since RFC 5389, the magic cookie 0x2112A442."""
from .registry import NO, SURE, TCP, UDP, register

_COOKIE = b"\x21\x12\xa4\x42"
_PORTS = (3478, 3479, 5349, 19302)
_CLASSIC = (0x0001, 0x0101, 0x0111, 0x0002, 0x0102, 0x0112)


def _stun(p):
    if len(p) < 20 or p[0] & 0xc0:
        return False
    ln = (p[2] << 8) | p[3]
    if ln + 20 > len(p):
        return False
    if p[4:8] == _COOKIE:
        return True  # (some clients, WhatsApp's, send lengths that are not multiples of 4)
    return None if not ln & 3 else False  # header shape right, no cookie: classic STUN if on its port


def match(p, from_client, state):
    if state.transport == TCP and len(p) > 22 and int.from_bytes(p[:2], "big") == len(p) - 2:
        p = p[2:]  # RFC 4571 framing
    got = _stun(p)
    if got:
        return SURE
    if got is None and (state.server_port in _PORTS or state.client_port in _PORTS) and ((p[0] << 8) | p[1]) in _CLASSIC:
        return SURE
    return NO


def parse(p, from_client, state, meta):
    if len(p) >= 2:
        meta.setdefault("stun.type", "0x%04x" % ((p[0] << 8) | p[1]))
    return True


# the two top bits of the message type are zero (over TCP, RFC 4571's length is below 0x4000 too)
register("stun", (UDP, TCP), _PORTS, match, parse, first=range(0x40))
