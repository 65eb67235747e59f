"""SSDP (UPnP discovery): HTTP-shaped messages over UDP, mostly to port 1900."""
from .registry import NO, SURE, UDP, register

_STARTS = (b"M-SEARCH * HTTP/1.", b"NOTIFY * HTTP/1.")


def match(p, from_client, state):
    if p.startswith(_STARTS):
        return SURE
    if p.startswith(b"HTTP/1.1 200"):
        if 1900 in (state.server_port, state.client_port):
            return SURE
        head = p[:1024].lower()
        if b"\r\nst:" in head and b"\r\nusn:" in head:
            return SURE  # a unicast answer to M-SEARCH
    return NO


def parse(p, from_client, state, meta):
    head = bytes(p[:1024]).split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    meta.setdefault("ssdp.method", head[0].split(b" ", 1)[0].decode("ascii", "replace"))
    for line in head[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k in (b"st", b"nt") and "ssdp.target" not in meta:
            meta["ssdp.target"] = v.strip().decode("ascii", "replace")
        elif k in (b"server", b"user-agent") and "ssdp.agent" not in meta:
            meta["ssdp.agent"] = v.strip().decode("ascii", "replace")
    return True


register("ssdp", (UDP,), (1900,), match, parse, first=b"MNH")
