"""SMTP (RFC 5321): the server's "220" greeting naming (E)SMTP, or the client's
EHLO/HELO. A bare "220" (FTP says it too) is only a hint."""
from .registry import NO, SURE, TCP, WEAK, register
from .textproto import banner, first_line

PORTS = (25, 587, 2525)


def match(p, from_client, state):
    if from_client:
        return SURE if p[:5].upper() in (b"EHLO ", b"HELO ") else NO
    if not p.startswith((b"220 ", b"220-")):
        return NO
    line = first_line(p).upper()
    if b"FTP" in line:
        return NO
    if b"SMTP" in line or state.server_port in PORTS:
        return SURE
    return WEAK


def parse(p, from_client, state, meta):
    if from_client and "smtp.helo" not in meta and p[:5].upper() in (b"EHLO ", b"HELO "):
        meta["smtp.helo"] = first_line(p)[5:].decode("ascii", "replace")
    return banner(p, from_client, meta, "smtp.banner") and "smtp.helo" in meta


register("smtp", (TCP,), PORTS, match, parse, first=b"EeHh2")
