"""Files for line outputs (JSON lines, ECS, CSV): private, whole lines, rotated on request.

Every line output writes the same way, so the rules live here once:

* `PATH` is created 0640 (session records reveal who talked to whom); `-` is
  standard output.
* A batch is written with one write call of whole lines, so a reader tailing
  the file never sees half a line from us; when a write fails (the disk is
  full), the file is cut back to where the batch began before the error is
  raised, so no half line or half batch stays behind for Filebeat to ship.
* `PATH?rotate=100MB` and/or `PATH?rotate_every=1h` rotate the file: it is
  fsynced, closed and renamed (os.rename, atomic) to `PATH.YYYYmmddTHHMMSS`
  (UTC time of the rotation; `.1`, `.2`, ... if that name is taken), then a
  fresh PATH is opened. `keep=N` deletes the oldest rotated files beyond N.
  Sizes: B, KB, MB, GB (powers of 1000), KiB, MiB, GiB (powers of 1024); a
  file is rotated before a line would take it past the size, so it stays
  within it unless one line alone is larger. Intervals: s, m, h, d, aligned on
  multiples of the interval since the epoch (1h rotates on the hour, 1d at
  midnight UTC), at the first write after the boundary; a file holding no
  records is never rotated. With rotation on, a non-empty PATH left by an
  earlier run is rotated aside at start instead of truncated.
* Regular files are fsynced on close, so a run reports success only once
  its records are on disk.
"""
import os
import re
import stat
import sys
import time
from dataclasses import dataclass

from . import limits

STDOUT = "-"
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
              "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}
TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
OPTIONS = ("rotate", "rotate_every", "keep")
STAMP = "%Y%m%dT%H%M%S"


def open_private(path: str, mode: str = "a", buffering: int = 1 << 20):
    """Create (or append to) a binary file readable by its owner and group only."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, 0o640)
    return os.fdopen(fd, "wb", buffering=buffering)


@dataclass(frozen=True)
class Target:
    """An output target: a path (or '-') and its rotation options."""
    path: str
    rotate_bytes: int | None = None
    rotate_every: int | None = None      # seconds
    keep: int | None = None

    @property
    def rotates(self) -> bool:
        return self.rotate_bytes is not None or self.rotate_every is not None


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    if not m or m.group(2).lower() not in SIZE_UNITS:
        raise ValueError(f"rotate={text}: expected a size like 100MB (units B, KB, MB, GB, KiB, MiB, GiB)")
    n = int(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])
    if n < 1:
        raise ValueError(f"rotate={text}: size must be at least 1 byte")
    return n


def _interval(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", text)
    if not m or m.group(2).lower() not in TIME_UNITS:
        raise ValueError(f"rotate_every={text}: expected an interval like 1h (units s, m, h, d)")
    n = int(m.group(1)) * TIME_UNITS[m.group(2).lower()]
    if n < 1:
        raise ValueError(f"rotate_every={text}: interval must be at least 1s")
    return n


def _keep(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise ValueError(f"keep={text}: expected a number of rotated files, at least 1")
    return int(text)


def parse_target(target: str) -> Target:
    """`PATH[?rotate=SIZE][&rotate_every=INTERVAL][&keep=N]` -> Target; ValueError (one line) if bad."""
    path, sep, query = target.partition("?")
    if not path:
        raise ValueError(f"{target!r}: no path (use - for standard output)")
    opts = {}
    if sep:
        for part in query.split("&"):
            key, eq, value = part.partition("=")
            if not eq or not key or not value:
                raise ValueError(f"{target!r}: {part!r} is not KEY=VALUE")
            if key not in OPTIONS:
                raise ValueError(f"{target!r}: unknown option {key!r} (known: {', '.join(OPTIONS)})")
            if key in opts:
                raise ValueError(f"{target!r}: option {key!r} given twice")
            opts[key] = value
    t = Target(path,
               _size(opts["rotate"]) if "rotate" in opts else None,
               _interval(opts["rotate_every"]) if "rotate_every" in opts else None,
               _keep(opts["keep"]) if "keep" in opts else None)
    if t.keep is not None and not t.rotates:
        raise ValueError(f"{target!r}: keep needs rotate or rotate_every")
    if t.rotates and path == STDOUT:
        raise ValueError(f"{target!r}: standard output cannot be rotated")
    return t


def check_target(target: str) -> Target:
    """parse_target, then whether PATH can be written; ValueError (one line) if not."""
    t = parse_target(target)
    if t.path == STDOUT:
        return t
    folder = os.path.dirname(os.path.abspath(t.path))
    if not os.path.isdir(folder):
        raise ValueError(f"{t.path}: no such directory {folder}")
    if os.path.isdir(t.path):
        raise ValueError(f"{t.path}: is a directory")
    exists = os.path.exists(t.path)
    if exists and not os.access(t.path, os.W_OK):
        raise ValueError(f"{t.path}: not writable")
    if (t.rotates or not exists) and not os.access(folder, os.W_OK):
        raise ValueError(f"{t.path}: directory {folder} not writable")
    if exists and t.rotates and not stat.S_ISREG(os.stat(t.path).st_mode):
        raise ValueError(f"{t.path}: not a regular file, cannot be rotated")
    return t


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LineFile:
    """PATH or standard output, written a batch of whole lines at a time, rotated as its target says.

    `clock` (epoch seconds) decides time rotation and rotated names; tests pass their own.
    """

    def __init__(self, target, header: bytes = b"", clock=time.time, append: bool = False):
        self.target = target if isinstance(target, Target) else parse_target(target)
        self.path = self.target.path
        self.header = header
        self.clock = clock
        self.rotated = []             # names this object rotated to, oldest first
        self.size = 0                 # bytes in the current file, header included
        self.due = None               # clock time of the next time rotation
        self.fh = None
        if self.path == STDOUT:
            self.fh = sys.stdout.buffer
            self._put(header)
            return
        self.repaired = 0             # bytes of a half line cut from the end of a file appended to
        if append and self.path != STDOUT and os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
            self._reopen()
            return
        if self.target.rotates:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0:
                self._move_aside()
        self._open()

    # -- writing

    def write(self, lines) -> None:
        """Write whole lines (bytes, each ending with its newline), rotating where due.
        All of them or, OSError, none: the file is cut back to where the batch began
        (to its last whole write, if it was rotated meanwhile)."""
        if not lines:
            return
        fh, size = self.fh, self.size
        try:
            self._write(lines)
        except OSError:
            self._cut_back(size if self.fh is fh else self.size)
            raise

    def _cut_back(self, size: int) -> None:
        if self.fh is None or self.fh is sys.stdout.buffer:
            return
        try:
            os.ftruncate(self.fh.fileno(), size)
            self.size = size
        except OSError:
            pass            # the write's own error is the one to report

    def _write(self, lines) -> None:
        t = self.target
        if t.rotate_every is not None:
            now = self.clock()
            if now >= self.due:
                if self.size > len(self.header):
                    self._rotate()
                self.due = self._next_due(now)
        blob = b"".join(lines)
        if t.rotate_bytes is None or self.size + len(blob) <= t.rotate_bytes:
            self._put(blob)
            return
        chunk, n = [], self.size       # split the batch where the size limit falls
        for line in lines:
            if n + len(line) > t.rotate_bytes and n > len(self.header):
                if chunk:
                    self._put(b"".join(chunk))
                    chunk = []
                self._rotate()
                n = self.size
            chunk.append(line)
            n += len(line)
        if chunk:
            self._put(b"".join(chunk))

    def write_blocks(self, blocks) -> None:
        """Like write, for blocks of several whole lines each (bytes): a size rotation
        still falls between two lines."""
        if self.target.rotate_bytes is not None:
            lines = []
            for block in blocks:
                parts = block.split(b"\n")
                lines += [p + b"\n" for p in parts[:-1]]
                if parts[-1]:
                    lines.append(parts[-1])
            blocks = lines
        self.write(blocks)

    def _put(self, data: bytes) -> None:
        if not data:
            return
        if self.fh is sys.stdout.buffer:
            self.fh.write(data)
            self.fh.flush()
        else:
            view = memoryview(data)
            while view:                 # unbuffered: one write call per batch (a short write resumes)
                view = view[self.fh.write(view):]
        self.size += len(data)

    # -- files

    def _open(self) -> None:
        self.fh = open_private(self.path, "w", buffering=0)
        self.size = 0
        if self.target.rotate_every is not None:
            self.due = self._next_due(self.clock())
        self._put(self.header)

    def _reopen(self) -> None:
        """Append to what an earlier collector wrote; a half line it left (killed mid-write
        by something that is not us) is cut off, never continued."""
        self.fh = open_private(self.path, "a", buffering=0)
        size = os.fstat(self.fh.fileno()).st_size
        with open(self.path, "rb") as fh:
            fh.seek(max(0, size - (1 << 20)))
            tail = fh.read()
        end = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        if end < size:
            os.truncate(self.path, end)
            self.repaired = size - end
        self.size = end
        if self.target.rotate_every is not None:
            self.due = self._next_due(self.clock())

    def tell(self):
        """(path, bytes written) of the current file; None for standard output."""
        return None if self.fh is None or self.fh is sys.stdout.buffer else (self.path, self.size)

    def truncate(self, size: int) -> None:
        """Cut the current file back to `size` bytes (the journal undoing a batch)."""
        os.truncate(self.path, size)
        self.size = size

    def _next_due(self, now: float) -> float:
        every = self.target.rotate_every
        return (now // every + 1) * every

    def _finish(self) -> None:
        """fsync (regular files) and close the current file."""
        fh, self.fh = self.fh, None
        try:
            if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                os.fsync(fh.fileno())   # on disk before the run reports success
        finally:
            fh.close()

    def _move_aside(self) -> None:
        stamp = time.strftime(STAMP, time.gmtime(self.clock()))
        name = f"{self.path}.{stamp}"
        n = 0
        while os.path.lexists(name):
            n += 1
            name = f"{self.path}.{stamp}.{n}"
        os.rename(self.path, name)
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        self.rotated.append(name)
        if self.target.keep is not None:
            self._prune()

    def _rotate(self) -> None:
        self._finish()
        self._move_aside()
        self._open()

    def rotated_files(self) -> list:
        """PATH's rotated files on disk, oldest first."""
        folder = os.path.dirname(os.path.abspath(self.path))
        pat = re.compile(re.escape(os.path.basename(self.path)) + r"\.(\d{8}T\d{6})(?:\.(\d+))?")
        found = []
        for name in os.listdir(folder):
            m = pat.fullmatch(name)
            if m:
                found.append((m.group(1), int(m.group(2) or 0), os.path.join(folder, name)))
        return [p for _, _, p in sorted(found)]

    def _prune(self) -> None:
        old = self.rotated_files()
        for p in old[:max(0, len(old) - self.target.keep)]:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Flush and, for a regular file, fsync and close; OSError if that fails."""
        if self.fh is None:
            return
        if self.fh is sys.stdout.buffer:
            self.fh.flush()
            self.fh = None
            return
        self._finish()


class LineOutput:
    """What the line outputs (jsonl, ecs, csv) share: their file, their issue counters
    (limits.py; ISSUES: those besides records_unwritable), and the hooks the
    collector's journal uses to cut back a batch that was never acknowledged."""
    header = b""
    ISSUES = ()

    def __init__(self, target: str, clock=time.time, append: bool = False):
        self.target = target
        self.issues = limits.counters(*self.ISSUES)
        self.file = LineFile(target, header=self.header, clock=clock, append=append)
        self.written = 0

    @staticmethod
    def check(target: str) -> None:
        check_target(target)

    def tell(self):
        return self.file.tell()

    def truncate(self, size: int) -> None:
        self.file.truncate(size)

    def close(self) -> None:
        self.file.close()
