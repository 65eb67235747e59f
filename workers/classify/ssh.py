"""SSH (RFC 4253): each side opens with an identification line "SSH-2.0-...";
those lines are the client and server banners."""
from .registry import NO, SURE, TCP, register


def match(p, from_client, state):
    if p.startswith((b"SSH-2.0-", b"SSH-1.99-", b"SSH-1.5-")):
        return SURE
    return NO


def parse(p, from_client, state, meta):
    key = "ssh.client" if from_client else "ssh.server"
    if key not in meta and p.startswith(b"SSH-"):
        line = bytes(p[:255]).split(b"\n", 1)[0].rstrip(b"\r")
        meta[key] = line.decode("ascii", "replace")
    return "ssh.client" in meta and "ssh.server" in meta


register("ssh", (TCP,), (22, 2222), match, parse, snap=256, first=b"S")
