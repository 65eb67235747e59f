"""LDAP (RFC 4511): a BER SEQUENCE with a message id and an application-tagged
protocol operation, on the LDAP ports (elsewhere too common a shape to trust)."""
from . import ber
from .registry import NO, SURE, TCP, UDP, register

OPS = {0x60: "bind", 0x61: "bind-response", 0x42: "unbind", 0x63: "search", 0x64: "search-entry",
       0x65: "search-done", 0x66: "modify", 0x67: "modify-response", 0x68: "add", 0x69: "add-response",
       0x4a: "delete", 0x6b: "delete-response", 0x6c: "modify-dn", 0x6d: "modify-dn-response",
       0x6e: "compare", 0x6f: "compare-response", 0x50: "abandon", 0x73: "search-reference",
       0x77: "extended", 0x78: "extended-response", 0x79: "intermediate"}
PORTS = (389, 3268)


def _op(p):
    if len(p) < 7 or p[0] != 0x30:
        return None
    outer = ber.tlv(p, 0)
    if outer is None:
        return None
    mid = ber.small_int(p, outer[1])
    if mid is None or mid[0] < 0 or mid[1] >= len(p):
        return None
    return p[mid[1]] if p[mid[1]] in OPS else None


def match(p, from_client, state):
    if state.server_port not in PORTS and state.client_port not in PORTS:
        return NO
    op = _op(p)
    if op is None:
        return NO
    state.scratch["ldap"] = op
    return SURE


def parse(p, from_client, state, meta):
    op = state.scratch.pop("ldap", None) or _op(p)
    if op is not None:
        meta.setdefault("ldap.op", OPS[op])
    return True


register("ldap", (TCP, UDP), PORTS, match, parse, port_bound=True, first=(0x30,))
