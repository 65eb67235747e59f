"""FTP control connection (RFC 959): the server's "220" greeting naming FTP (or
on port 21), or FTP-only client commands."""
from .registry import NO, SURE, TCP, WEAK, register
from .textproto import banner, first_line

_COMMANDS = (b"USER ", b"PASS ", b"SYST", b"FEAT", b"AUTH TLS", b"AUTH SSL", b"OPTS ", b"PASV", b"EPSV",
             b"PORT ", b"TYPE ", b"PWD", b"CWD ")

_FIRST = bytes({c[0] for c in _COMMANDS} | {c[0] | 0x20 for c in _COMMANDS}) + b"2"  # any case; "220"


def match(p, from_client, state):
    if from_client:
        if p[:8].upper().startswith(_COMMANDS):
            return SURE if state.server_port == 21 else WEAK
        return NO
    if p.startswith((b"220 ", b"220-")):
        line = first_line(p).upper()
        if b"FTP" in line or state.server_port == 21:
            return SURE
        return NO if b"SMTP" in line else WEAK
    return NO


def parse(p, from_client, state, meta):
    return banner(p, from_client, meta, "ftp.banner")


register("ftp", (TCP,), (21,), match, parse, first=_FIRST)
