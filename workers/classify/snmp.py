"""SNMP (RFC 3416) on ports 161/162: a BER SEQUENCE holding version 0, 1 or 3,
then a community string (v1/v2c) or the v3 header."""
from . import ber
from .registry import NO, SURE, TCP, UDP, register

_VERSIONS = {0: "1", 1: "2c", 3: "3"}


def match(p, from_client, state):
    if not ({161, 162} & {state.server_port, state.client_port}) or len(p) < 8 or p[0] != 0x30:
        return NO
    outer = ber.tlv(p, 0)
    if outer is None:
        return NO
    v = ber.small_int(p, outer[1])
    if v is None or v[0] not in _VERSIONS:
        return NO
    nxt = p[v[1]] if v[1] < len(p) else None
    if v[0] in (0, 1) and nxt == 0x04 or v[0] == 3 and nxt == 0x30:
        state.scratch["snmp"] = (v[0], v[1])
        return SURE
    return NO


def parse(p, from_client, state, meta):
    got = state.scratch.pop("snmp", None)
    if got:
        version, i = got
        meta["snmp.version"] = _VERSIONS[version]
        if version in (0, 1):
            t = ber.tlv(p, i)
            if t:
                meta["snmp.community"] = bytes(p[t[1]:t[2]]).decode("ascii", "replace")
    return True


register("snmp", (UDP, TCP), (161, 162), match, parse, port_bound=True, first=(0x30,))
