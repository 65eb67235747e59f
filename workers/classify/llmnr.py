"""Link-Local Multicast Name Resolution (RFC 4795): DNS format on port 5355."""
from . import dns
from .registry import NO, SURE, TCP, UDP, register


def match(p, from_client, state):
    if 5355 not in (state.server_port, state.client_port):
        return NO
    msg = dns.header_ok(p, state.transport == TCP)
    return SURE if msg is not None and dns.decode(msg) is not None else NO


def parse(p, from_client, state, meta):
    return dns.parse(p, from_client, state, meta, "llmnr") or not from_client


register("llmnr", (UDP, TCP), (5355,), match, parse, snap=1500, port_bound=True)
