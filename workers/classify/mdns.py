"""Multicast DNS (RFC 6762): DNS messages on UDP port 5353."""
from . import dns
from .registry import NO, SURE, UDP, register


def match(p, from_client, state):
    if 5353 not in (state.server_port, state.client_port):
        return NO
    return SURE if dns.header_ok(p) is not None else NO


def refuse(x):
    """Off port 5353, or where the (UDP) DNS header check fails: NO."""
    return dns.header_refused(x, False) | ((x.client_port != 5353) & (x.server_port != 5353))


def parse(p, from_client, state, meta):
    msg = dns.header_ok(p)
    d = dns.decode(msg) if msg is not None else None
    if d is not None:
        dns.describe(d, meta, "mdns")
    return True


register("mdns", (UDP,), (5353,), match, parse, snap=1500, port_bound=True, refuse=refuse)
