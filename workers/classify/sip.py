"""SIP (RFC 3261): a request line "METHOD sip:... SIP/2.0" or "SIP/2.0 code"."""
from .registry import NO, SURE, TCP, UDP, register

METHODS = (b"INVITE ", b"REGISTER ", b"OPTIONS ", b"ACK ", b"BYE ", b"CANCEL ", b"SUBSCRIBE ", b"NOTIFY ",
           b"MESSAGE ", b"INFO ", b"PRACK ", b"UPDATE ", b"REFER ", b"PUBLISH ")


def match(p, from_client, state):
    if p.startswith(b"SIP/2.0 "):
        return SURE
    if p.startswith(METHODS):
        eol = p.find(b"\r\n", 0, 1024)
        if eol > 0 and p[:eol].endswith(b"SIP/2.0"):
            return SURE
    return NO


def parse(p, from_client, state, meta):
    head = bytes(p[:1500]).split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    first = head[0].split(b" ")
    if first[0] == b"SIP/2.0":
        if len(first) > 1 and first[1].isdigit():
            meta.setdefault("sip.status", int(first[1]))
    else:
        meta.setdefault("sip.method", first[0].decode("ascii", "replace"))
    for line in head[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"user-agent":
            meta.setdefault("sip.user_agent", v.strip().decode("ascii", "replace"))
    return "sip.method" in meta and "sip.status" in meta


register("sip", (UDP, TCP), (5060,), match, parse, first=bytes({m[0] for m in METHODS}) + b"S")
