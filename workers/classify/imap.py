"""IMAP (RFC 9051): the server's "* OK" greeting, or a tagged client command."""
import re

import numpy as np

from .registry import NO, SURE, TCP, WEAK, register
from .textproto import banner, first_line

_COMMAND = re.compile(rb"[A-Za-z0-9.]{1,20} (CAPABILITY|LOGIN|AUTHENTICATE|STARTTLS|ID|NOOP|LOGOUT|SELECT)\b", re.I)

# a tag (letters, digits, dots) from the client, "*" from the server
_FIRST = b"*." + bytes(c for c in range(0x30, 0x7b) if chr(c).isalnum())


def match(p, from_client, state):
    if from_client:
        return SURE if _COMMAND.match(p[:64]) else NO
    if p.startswith((b"* OK", b"* PREAUTH", b"* BYE")):
        if b"IMAP" in first_line(p).upper() or state.server_port == 143:
            return SURE
        return WEAK
    return NO


def refuse(x):
    """From the client: no space after a tag of 1 to 20 characters can be where none is in
    bytes 1-20; from the server: no "* " to start a greeting."""
    spaced = (x.h[:, 1:21] == 0x20).any(axis=1)
    greets = (x.n >= 4) & (x.h[:, 0] == 0x2a) & (x.h[:, 1] == 0x20)
    return np.where(x.from_client, ~spaced, ~greets)


def parse(p, from_client, state, meta):
    return banner(p, from_client, meta, "imap.banner")


register("imap", (TCP,), (143,), match, parse, first=_FIRST, refuse=refuse)
