"""Helpers for the line-based mail and file-transfer protocols."""


def first_line(p, limit=200):
    eol = p.find(b"\n", 0, limit)
    return bytes(p[:eol if eol >= 0 else limit]).rstrip(b"\r")


def banner(p, from_client, meta, key):
    """Record the server's greeting line; True once it is there."""
    if not from_client and key not in meta:
        meta[key] = first_line(p).decode("ascii", "replace")
    return key in meta
