"""DHCPv6 (RFC 8415): a known message type on the DHCPv6 ports."""
from .registry import NO, SURE, UDP, register

_TYPES = {1: "solicit", 2: "advertise", 3: "request", 4: "confirm", 5: "renew", 6: "rebind", 7: "reply",
          8: "release", 9: "decline", 10: "reconfigure", 11: "information-request", 12: "relay-forw",
          13: "relay-repl"}


def match(p, from_client, state):
    if 547 in (state.server_port, state.client_port) and len(p) >= 4 and p[0] in _TYPES:
        return SURE
    return NO


def parse(p, from_client, state, meta):
    meta["dhcpv6.type"] = _TYPES[p[0]]
    return True


register("dhcpv6", (UDP,), (547, 546), match, parse, port_bound=True, first=_TYPES)
