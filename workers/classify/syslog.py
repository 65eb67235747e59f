"""Syslog (RFC 3164/5424) on port 514: a message opening with <PRI>."""
from .registry import NO, SURE, TCP, UDP, WEAK, register

_SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def _pri(p):
    if len(p) < 4 or p[0] != 0x3c:
        return None
    end = p.find(b">", 1, 5)
    if end < 2 or not p[1:end].isdigit():
        return None
    v = int(p[1:end])
    return v if v <= 191 else None


def match(p, from_client, state):
    if state.transport == TCP and p[:1].isdigit():  # RFC 6587 octet counting
        sp = p.find(b" ", 0, 6)
        if sp > 0:
            p = p[sp + 1:]
    if _pri(p) is None:
        return NO
    return SURE if 514 in (state.server_port, state.client_port) or 601 in (state.server_port, state.client_port) \
        else WEAK


def parse(p, from_client, state, meta):
    v = _pri(p)
    if v is not None:
        meta["syslog.facility"] = v >> 3
        meta["syslog.severity"] = _SEVERITIES[v & 7]
    return True


register("syslog", (UDP, TCP), (514, 601, 6514), match, parse, first=b"<0123456789")  # <PRI>, or a length
