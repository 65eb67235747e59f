"""DHCP (RFC 2131) by its BOOTP header and magic cookie, parsed with dpkt.dhcp."""
from .registry import NO, SURE, UDP, register

_COOKIE = b"\x63\x82\x53\x63"
_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak", 7: "release", 8: "inform"}


def match(p, from_client, state):
    if len(p) >= 240 and p[0] in (1, 2) and p[236:240] == _COOKIE:
        return SURE
    return NO


def parse(p, from_client, state, meta):
    import dpkt.dhcp         # here, not at the top: see workers/classify/__init__.py
    try:
        d = dpkt.dhcp.DHCP(bytes(p))
    except Exception:
        return True
    for code, val in d.opts:
        if code == dpkt.dhcp.DHCP_OPT_MSGTYPE and val:
            meta["dhcp.type"] = _TYPES.get(val[0], str(val[0]))
        elif code == dpkt.dhcp.DHCP_OPT_HOSTNAME and val:
            meta["dhcp.hostname"] = val.decode("ascii", "replace")
        elif code == 60 and val:  # vendor class identifier
            meta["dhcp.vendor_class"] = val.decode("ascii", "replace")
    return True


register("dhcp", (UDP,), (67, 68), match, parse, first=(1, 2))
