"""JSON lines: one session record per line, the native format (`jsonl:PATH` or `jsonl:-`).

Lines are written whole (records are serialised first, then written in one
call per batch), so a reader tailing the file never sees half a line from us.
Files are created 0640: session records reveal who talked to whom.
orjson serialises (about 1.5 µs a record against 20 µs for the stdlib).
"""
import os
import stat
import sys

import orjson

from pipeline.record import as_dict


def open_private(path: str, mode: str = "a"):
    """Create (or append to) a binary file readable by its owner and group only."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, 0o640)
    return os.fdopen(fd, "wb", buffering=1 << 20)


def as_json(r) -> bytes:
    return orjson.dumps(as_dict(r), default=str)


class JsonLines:
    kind = "jsonl"

    def __init__(self, target: str):
        self.target = target
        self.fh = sys.stdout.buffer if target == "-" else open_private(target, "w")
        self.written = 0

    def write(self, records) -> None:
        if not records:
            return
        self.fh.write(b"\n".join([as_json(r) for r in records]) + b"\n")
        self.written += len(records)

    def close(self) -> None:
        self.fh.flush()
        if self.fh is not sys.stdout.buffer:
            if stat.S_ISREG(os.fstat(self.fh.fileno()).st_mode):
                os.fsync(self.fh.fileno())   # on disk before the run reports success
            self.fh.close()
