"""POP3 (RFC 1939): the server's "+OK" greeting, or a POP3-only client command."""
from .registry import NO, SURE, TCP, WEAK, register
from .textproto import banner, first_line


def match(p, from_client, state):
    if from_client:
        head = p[:5].upper()
        if head.startswith((b"CAPA", b"APOP ", b"STLS", b"AUTH ", b"USER ")):
            return SURE if state.server_port == 110 else WEAK
        return NO
    if p.startswith(b"+OK"):
        if b"POP" in first_line(p).upper() or state.server_port == 110:
            return SURE
        return WEAK
    return NO


def parse(p, from_client, state, meta):
    return banner(p, from_client, meta, "pop3.banner")


register("pop3", (TCP,), (110,), match, parse, first=b"CcAaSsUu+")
