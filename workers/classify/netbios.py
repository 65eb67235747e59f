"""NetBIOS over TCP/IP (RFC 1001/1002): name service (UDP 137, parsed with
dpkt.netbios), datagram service (UDP 138) and session service (TCP 139)."""
import struct

from .registry import NO, SURE, TCP, UDP, register

_SESSION_TYPES = (0x00, 0x81, 0x82, 0x83, 0x84, 0x85)


def _ns(p):
    if len(p) < 12 + 34:
        return None
    qd, an = struct.unpack("!HH", p[4:8])
    if qd + an == 0 or qd > 1 or an > 1:
        return None
    if p[12] != 0x20:  # first-level encoded names are 32 characters
        return None
    return p


def _name(encoded):
    """First-level decoded NetBIOS name without its padding and suffix byte."""
    import dpkt.netbios      # here, not at the top: see workers/classify/__init__.py
    return dpkt.netbios.decode_name(encoded)[:15].rstrip("\x00 ")


def match(p, from_client, state):
    ports = (state.server_port, state.client_port)
    if state.transport == UDP:
        if 137 in ports and _ns(p) is not None:
            return SURE
        if 138 in ports and len(p) >= 14 and 0x10 <= p[0] <= 0x16:
            return SURE
        return NO
    if 445 in ports and len(p) >= 8 and p[0] == 0 and p[4:8] in (b"\xffSMB", b"\xfeSMB"):
        return SURE  # SMB over TCP keeps the session service's framing
    if 139 in ports and len(p) >= 4 and p[0] in _SESSION_TYPES:
        ln = ((p[1] & 1) << 16) | (p[2] << 8) | p[3]
        if p[0] == 0x81 and ln == 68 or p[0] != 0x00 and ln <= 68 or p[0] == 0 and p[4:8] in (b"\xffSMB", b"\xfeSMB"):
            return SURE
    return NO


def parse(p, from_client, state, meta):
    import dpkt.netbios
    if state.transport == UDP and 137 in (state.server_port, state.client_port):
        try:
            ns = dpkt.netbios.NS(bytes(p))
            if ns.qd:
                meta["netbios.name"] = _name(ns.qd[0].name.split(".", 1)[0])
        except Exception:
            pass
    elif state.transport == UDP and len(p) >= 82 and p[14] == 0x20:
        try:
            meta["netbios.name"] = _name(bytes(p[15:47]).decode("ascii"))
        except Exception:
            pass
    return True


# TCP: the session service's message type first; UDP: the name service's transaction id (any byte)
register("netbios", (UDP, TCP), (137, 138, 139, 445), match, parse, port_bound=True,
         first=lambda b, from_client, transport: transport == UDP or b in _SESSION_TYPES)
