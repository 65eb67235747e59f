"""Capture file readers: classic pcap and pcapng, walked over an mmap.

The front-end decodes frames in numpy batches, so a reader hands out columns
(where each frame's bytes start in the mapped file, its lengths, time and link
type) rather than one object per frame; frame bytes are never copied.

Real captures are often damaged (fuzzed, cut short). Damage inside a file is
never raised: it is skipped, counted and reported as one warning per damaged
region, and the reader resynchronises on the next plausible record. No length
read from the file is ever used to allocate anything: lengths only index into
the map, after being checked against what remains of the file.
"""
from __future__ import annotations

import mmap
import stat
import os
import struct
from dataclasses import dataclass
from itertools import pairwise
from typing import Iterator

import numpy as np

__all__ = ["CaptureError", "Chunk", "CaptureReader", "open_capture"]

MAX_CAPLEN = 262144          # libpcap's largest snapshot length for ordinary link types
MAX_SNAPLEN_TRUSTED = 1 << 27  # a larger declared snaplen (some link types) is honoured up to this
RESYNC_WINDOW = 1 << 20      # how far past a damaged record we look for the next good one
MAX_WARNINGS = 100           # a shredded file should not flood the log; `damage` keeps counting
DAY = 86400

_PCAP_MAGICS = {             # first four bytes -> (byte order, fraction-of-second units, record header size)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1_000_000, 24),   # Kuznetzov's "modified" pcap: 8 more bytes per record
    b"\xa1\xb2\xcd\x34": (">", 1_000_000, 24),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
               b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4", b"PK\x03\x04": "zip"}

# pcapng block types
SHB, IDB, PB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6
_KNOWN_BLOCKS = (SHB, IDB, PB, SPB, NRB, ISB, EPB, 9, 10, 0xBAD, 0x40000BAD)
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
OPT_TSRESOL, OPT_TSOFFSET = 9, 14


class CaptureError(Exception):
    """A file that cannot be read at all. str(e) is one line naming the file and the problem."""


@dataclass
class Chunk:
    """Up to max_frames frames as columns; frame i is data[offsets[i]:offsets[i] + caplen[i]]."""
    data: object          # the mmap (or bytes) the offsets index into
    offsets: np.ndarray   # int64: absolute start of each frame's captured bytes
    caplen: np.ndarray    # uint32: bytes captured (all present in data)
    wirelen: np.ndarray   # uint32: length on the wire, as recorded (fuzzed files may have < caplen)
    ts: np.ndarray        # float64: epoch seconds
    linktype: np.ndarray  # uint16: LINKTYPE_* of the frame (pcapng: of its interface)

    def __len__(self):
        return len(self.offsets)

    def parts(self, n: int) -> list:
        """This chunk as n chunks of consecutive frames (as even as can be, none empty while
        frames last): the last chunk of a short file, shared out (`CaptureReader.chunks`)."""
        cuts = np.linspace(0, len(self), max(1, min(n, len(self))) + 1).astype(np.int64).tolist()
        return [Chunk(self.data, self.offsets[a:b], self.caplen[a:b], self.wirelen[a:b], self.ts[a:b],
                      self.linktype[a:b]) for a, b in pairwise(cuts)]


def _name(path) -> str:
    """The path as it goes into a one-line message."""
    s = os.fsdecode(path)
    return s if s.isprintable() else repr(s)


def _load(path: str):
    """Map the file read-only; read it into bytes where it cannot be mapped (empty, pipe)."""
    name = _name(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CaptureError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{name}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{name}: permission denied") from None
    except OSError as e:
        raise CaptureError(f"{name}: cannot open ({e.strerror or e})") from None
    with f:
        if stat.S_ISCHR(os.fstat(f.fileno()).st_mode) or stat.S_ISBLK(os.fstat(f.fileno()).st_mode):
            raise CaptureError(f"{name}: is a device, not a capture file")
        try:
            try:
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):
                return f.read()
            if hasattr(buf, "madvise"):
                buf.madvise(mmap.MADV_SEQUENTIAL)
            return buf
        except OSError as e:
            raise CaptureError(f"{name}: cannot read ({e.strerror or e})") from None


def open_capture(path) -> "CaptureReader":
    """Open a pcap or pcapng file, telling which from its magic; CaptureError if it is neither."""
    path = os.fspath(path)
    buf = _load(path)
    name = _name(path)
    try:
        size = len(buf)
        head = bytes(buf[:8])
        if size == 0:
            raise CaptureError(f"{name}: empty file")
        for magic, kind in _COMPRESSED.items():
            if head.startswith(magic):
                raise CaptureError(f"{name}: compressed captures are not supported ({kind}); decompress it first")
        if size < 4:
            raise CaptureError(f"{name}: not a pcap or pcapng file (only {size} bytes)")
        if head[:4] in _PCAP_MAGICS:
            return _PcapReader(path, buf, *_PCAP_MAGICS[head[:4]])
        if head[:4] == _PCAPNG_MAGIC:
            return _PcapngReader(path, buf)
        raise CaptureError(f"{name}: not a pcap or pcapng file (magic 0x{head[:4].hex()})")
    except BaseException:
        if isinstance(buf, mmap.mmap):
            buf.close()
        raise


FIRST_CHUNK = 4096       # frames of a file's first chunk; the next ones double up to the chunk size
MIN_CHUNKS = 8           # chunks a short file is cut into at least (`chunks`): one for each of up to 8 front-ends


class CaptureReader:
    """Walks one capture file in chunks of frames. Subclasses know the format."""

    def __init__(self, path: str, buf):
        self.path = path
        self.name = _name(path)
        self.size = len(buf)
        self.bytes_done = 0
        self.warnings: list[str] = []
        self.damage = 0
        self._buf = buf
        self._pos = 0

    @property
    def data(self):
        """The mapped file (or its bytes): what every chunk's offsets index into."""
        return self._buf

    def chunks(self, max_frames: int = 65536) -> Iterator[Chunk]:
        """Yield chunks of at most max_frames frames (never an empty one) until the file ends.
        The first ones are smaller (FIRST_CHUNK frames, doubling up to max_frames): the
        workers start while the front-end reads on, instead of waiting idle for a whole
        chunk's decoding at the start of a run. A short file's last chunk is shared out
        so that the file comes in at least MIN_CHUNKS chunks (while it has the frames):
        K front-end processes each get some of it. The chunks are a function of the file
        and max_frames alone, the same whatever K, and so are the records."""
        max_frames = max(1, int(max_frames))
        size = min(max_frames, FIRST_CHUNK) if FIRST_CHUNK > 0 else max_frames
        made, held, held_end = 0, None, 0   # held: the last chunk read, yielded once the next one is
        while self._pos < self.size:
            chunk = self._next_chunk(size)
            size = min(max_frames, 2 * size)
            if len(chunk):
                if held is not None:
                    made += 1
                    self.bytes_done = held_end      # progress: up to the chunk handed over
                    yield held
                held, held_end = chunk, min(self._pos, self.size)
        self.bytes_done = self.size
        if held is not None:
            short = MIN_CHUNKS - made
            yield from held.parts(short) if short > 1 else (held,)

    def close(self) -> None:
        """Unmap the file. Chunks still in use keep the map alive until they are dropped."""
        self._headers = self._epb_heads = self._words = None
        buf, self._buf = self._buf, None
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:
                pass    # a caller still holds a view of a chunk; the map goes when that view does

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- damage ---------------------------------------------------------------
    def _warn(self, msg: str) -> None:
        self.damage += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{self.name}: {msg}")
        elif len(self.warnings) == MAX_WARNINGS:
            self.warnings.append(f"{self.name}: more damaged regions; further warnings suppressed")

    def _damaged(self, off: int, why: str, new: int | None) -> None:
        if new is None:
            self._warn(f"damaged record at offset {off}: {why}; nothing readable after it")
        else:
            self._warn(f"damaged record at offset {off}: {why}; skipped to offset {new}")

    def _cut_short(self, off: int) -> None:
        self._warn(f"file cut short at offset {off}")

    def _resync(self, start: int, stop: int) -> int | None:
        """First resynchronisation point in [start, stop), searched in windows growing from 4 KiB:
        a short damaged region costs little, a long one at most RESYNC_WINDOW bytes of search."""
        stop = min(stop, start + RESYNC_WINDOW)
        lo, step = start, 4096
        while lo < stop:
            hi = min(lo + step, stop)
            found = self._resync_in(lo, hi)
            if found is not None:
                return found
            lo, step = hi, step * 16
        return None

    def _resync_in(self, lo: int, hi: int) -> int | None:
        raise NotImplementedError

    def _next_chunk(self, max_frames: int) -> Chunk:
        raise NotImplementedError


class _PcapReader(CaptureReader):
    """Classic libpcap format: a 24-byte file header, then (header, frame) records."""

    def __init__(self, path, buf, order, frac_units, hdr_len):
        super().__init__(path, buf)
        if self.size < 24:
            raise CaptureError(f"{self.name}: truncated pcap file header ({self.size} of 24 bytes)")
        major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "HHiIII", buf, 4)
        if major != 2:
            raise CaptureError(f"{self.name}: unsupported pcap version {major}.{minor}")
        self.linktype = network & 0xFFFF    # the upper bits may carry FCS information
        self.snaplen = snaplen
        self._order = order
        self._frac_units = frac_units
        self._hl = hdr_len
        self._limit = snaplen if MAX_CAPLEN < snaplen <= MAX_SNAPLEN_TRUSTED else MAX_CAPLEN
        self._hdr = struct.Struct(order + "IIII")
        self._cap_at = struct.Struct(order + "8xI").unpack_from
        self._last_rec = None    # offset of the last good record header: the time reference on resync
        self._pos = 24
        # the 16 header bytes at every byte offset of the file, as a zero-copy numpy view: a list of
        # record offsets becomes header columns with one gather
        self._headers = np.ndarray((max(self.size - 15, 0),), "V16", buffer=buf, strides=(1,))
        self._u4 = np.dtype(order + "u4")

    def _walk(self, offs: list, pos: int, room: int) -> int:
        """The hot loop: append record offsets from pos until room is full or a record runs past
        the end of the file; return where it stopped. caplen is checked afterwards, in bulk.
        The loop itself does not compare with the end of the file: a record that runs past it
        leaves pos past the end, where the next caplen cannot be read (struct.error), or the
        room is full; either way the record is taken back below."""
        buf, hl, cap_at, add = self._buf, self._hl, self._cap_at, offs.append
        try:
            for _ in range(room):
                add(pos)
                pos += hl + cap_at(buf, pos)[0]
        except struct.error:     # not even a caplen left: a cut-short header (or the exact end)
            pos = offs.pop()
        if pos > self.size:      # the last record runs past the end: it starts where reading stops
            pos = offs.pop()
        return pos

    def _next_chunk(self, max_frames):
        parts, n = [], 0
        pos, end = self._pos, self.size
        while n < max_frames and pos < end:
            offs: list[int] = []
            stop = self._walk(offs, pos, max_frames - n)
            rec = np.array(offs, dtype=np.int64)
            hdr = self._headers[rec].view(self._u4).reshape(-1, 4)   # sec, frac, caplen, wirelen
            bad = np.flatnonzero(hdr[:, 2] > self._limit)
            if len(bad):     # records walked after an absurd caplen are garbage: dropped with it
                i = int(bad[0])
                stop, rec, hdr = int(rec[i]), rec[:i], hdr[:i]
            if len(rec):
                parts.append((rec, hdr))
                n += len(rec)
                self._last_rec = int(rec[-1])
            pos = stop
            if n < max_frames and pos < end:
                pos = self._recover(pos)
        self._pos = pos
        return self._columns(parts)

    def _columns(self, parts: list) -> Chunk:
        if len(parts) == 1:
            rec, hdr = parts[0]
        elif parts:
            rec, hdr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        else:
            rec, hdr = np.empty(0, np.int64), np.empty((0, 4), self._u4)
        ts = hdr[:, 0].astype(np.float64) + hdr[:, 1].astype(np.float64) / self._frac_units
        return Chunk(data=self._buf, offsets=rec + self._hl, caplen=hdr[:, 2].astype(np.uint32),
                     wirelen=hdr[:, 3].astype(np.uint32), ts=ts,
                     linktype=np.full(len(rec), self.linktype, np.uint16))

    # -- damage ---------------------------------------------------------------
    def _recover(self, pos: int) -> int:
        """pos holds an implausible or cut-short record: report it, return where reading resumes."""
        end, hl = self.size, self._hl
        if pos + hl > end:
            self._cut_short(pos)
            return end
        cap, = self._cap_at(self._buf, pos)
        new = self._resync(pos + 1, end - hl + 1)
        if new is not None:
            why = f"caplen {cap} exceeds {self._limit}" if cap > self._limit else \
                f"caplen {cap} runs past the end of the file"
            self._damaged(pos, why, new)
            return new
        if cap <= self._limit:
            self._cut_short(pos)
        else:
            self._damaged(pos, f"caplen {cap} exceeds {self._limit}", None)
        return end

    def _plausible(self, off: int, ref_sec: int | None):
        """The record header at off looks genuine: return its end offset, else None."""
        if off + self._hl > self.size:
            return None
        sec, frac, cap, wire = self._hdr.unpack_from(self._buf, off)
        nxt = off + self._hl + cap
        if cap > self._limit or nxt > self.size or frac >= self._frac_units or not 0 < wire <= self._limit:
            return None
        if ref_sec is not None and abs(sec - ref_sec) > DAY:
            return None
        return nxt

    def _u32_everywhere(self, start: int, count: int) -> np.ndarray:
        """The 32-bit value at every byte offset start..start+count-1 (all four bytes must exist)."""
        out = np.empty(count, np.uint32)
        for r in range(4):
            k = (count - r + 3) // 4
            if k > 0:
                out[r::4] = np.frombuffer(self._buf, self._u4, count=k, offset=start + r)
        return out

    def _resync_in(self, lo: int, hi: int) -> int | None:
        """First offset in [lo, hi) where a plausible record begins and is followed by another
        plausible record or by the end of the file."""
        count = hi - lo
        # vectorised first pass over every byte offset; the survivors are checked one by one
        u = self._u32_everywhere(lo, count + 12)
        sec, frac, cap, wire = u[0:count], u[4:count + 4], u[8:count + 8], u[12:count + 12]
        room = self.size - self._hl - lo - np.arange(count, dtype=np.int64)
        ok = (cap <= self._limit) & (cap <= room) & (frac < self._frac_units) & (wire > 0) & (wire <= self._limit)
        ref = None
        if self._last_rec is not None:
            ref = self._hdr.unpack_from(self._buf, self._last_rec)[0]
            ok &= np.abs(sec.astype(np.int64) - ref) <= DAY
        for i in np.flatnonzero(ok):
            off = lo + int(i)
            nxt = self._plausible(off, ref)
            if nxt is None:
                continue
            if nxt == self.size or self._plausible(nxt, int(sec[i])) is not None:
                return off
        return None


class _PcapngReader(CaptureReader):
    """pcapng: blocks of self-describing length; sections (each with its own byte order) hold
    interfaces, and each packet names its interface, which gives its link type and clock."""

    def __init__(self, path, buf):
        super().__init__(path, buf)
        if self.size < 28:
            raise CaptureError(f"{self.name}: truncated pcapng section header ({self.size} of 28 bytes)")
        order = _BOM.get(bytes(buf[8:12]))
        if order is None:
            raise CaptureError(f"{self.name}: bad pcapng byte-order magic 0x{bytes(buf[8:12]).hex()}")
        major, minor = struct.unpack_from(order + "HH", buf, 12)
        if major != 1:
            raise CaptureError(f"{self.name}: unsupported pcapng version {major}.{minor}")
        # every interface of every section, by a file-wide index
        self._if_linktype: list[int] = []
        self._if_units: list[int] = []      # clock ticks per second
        self._if_offset: list[int] = []     # seconds added to every timestamp (if_tsoffset)
        self._if_snaplen: list[int] = []
        self._section: list[int] = []       # file-wide indices of the current section's interfaces
        self._skip_section = False          # inside a section of an unsupported version
        self._last_ts = 0.0                 # for Simple Packet Blocks, which carry no time
        self._set_order(order)

    def _set_order(self, order):
        self._order = order
        self._bh = struct.Struct(order + "II").unpack_from
        self._u32 = struct.Struct(order + "I").unpack_from
        self._epb = struct.Struct(order + "IIIII").unpack_from
        self._pb = struct.Struct(order + "HHIIII").unpack_from
        self._idb = struct.Struct(order + "HHI").unpack_from
        self._opt = struct.Struct(order + "HH").unpack_from
        self._i64 = struct.Struct(order + "q").unpack_from
        # zero-copy views at every byte offset: the 28-byte head of an Enhanced Packet Block, and
        # a 32-bit word (for trailing lengths), so that a run of packet blocks is checked in bulk
        self._u4 = np.dtype(order + "u4")
        self._epb_heads = np.ndarray((max(self.size - 27, 0),), "V28", buffer=self._buf, strides=(1,))
        self._words = np.ndarray((max(self.size - 3, 0),), self._u4, buffer=self._buf, strides=(1,))

    def _next_chunk(self, max_frames):
        pieces: list[np.ndarray] = []   # int64 (n, 7) arrays in file order, columns as in _block
        rows: list[tuple] = []          # frames met by the block-by-block path, not yet in pieces
        n, pos, end = 0, self._pos, self.size
        while n < max_frames and pos < end:
            if self._section and not self._skip_section:
                offs: list[int] = []
                stop = self._walk(offs, pos, max_frames - n)
                if offs:
                    piece, stop = self._epb_columns(offs, stop)
                    if len(piece):
                        if rows:
                            pieces.append(np.array(rows, np.int64).reshape(-1, 7))
                            rows = []
                        pieces.append(piece)
                        n += len(piece)
                pos = stop
                if n >= max_frames or pos >= end:
                    break
            before = len(rows)
            pos = self._block(pos, rows.append)
            n += len(rows) - before
        if rows:
            pieces.append(np.array(rows, np.int64).reshape(-1, 7))
        self._pos = pos
        return self._columns(pieces)

    def _walk(self, offs: list, pos: int, room: int) -> int:
        """The hot loop: offsets of consecutive Enhanced Packet Blocks from pos, until room is full or
        another kind of block, or one that cannot fit in the file; the rest is checked in bulk."""
        buf, end, bh, add = self._buf, self.size, self._bh, offs.append
        try:
            for _ in range(room):
                btype, blen = bh(buf, pos)
                if btype != EPB or blen < 32 or blen & 3 or pos + blen > end:
                    break
                add(pos)
                pos += blen
        except struct.error:
            pass
        return pos

    def _epb_columns(self, offs: list, stop: int):
        """Columns of the walked packet blocks, up to the first one that fails a check (trailing
        length, interface, caplen); return them and where the block-by-block path takes over."""
        rec = np.array(offs, np.int64)
        h = self._epb_heads[rec].view(self._u4).reshape(-1, 7)   # type, length, iface, hi, lo, cap, wire
        blen = h[:, 1].astype(np.int64)
        bad = (self._words[rec + blen - 4] != blen) | (h[:, 2] >= len(self._section)) | (h[:, 5] > blen - 32)
        first = np.flatnonzero(bad)
        if len(first):
            i = int(first[0])
            stop, rec, h = int(rec[i]), rec[:i], h[:i]
        piece = np.empty((len(rec), 7), np.int64)
        piece[:, 0] = rec + 28
        piece[:, 1:5] = h[:, [5, 6, 3, 4]]
        piece[:, 5] = np.array(self._section, np.int64)[h[:, 2]]
        piece[:, 6] = 1
        return piece, stop

    def _block(self, pos: int, add) -> int:
        """Read one block of any kind the careful way; frames go to add() as (data offset, caplen,
        wirelen, ts high, ts low, file-wide interface, has a time). Return the next block's offset."""
        buf, end = self._buf, self.size
        if pos + 12 > end:
            self._cut_short(pos)
            return end
        btype, blen = self._bh(buf, pos)
        if btype == SHB:
            order = _BOM.get(bytes(buf[pos + 8:pos + 12]))
            if order is None:
                return self._bad_block(pos, "section header with a bad byte-order magic")
            self._set_order(order)
            btype, blen = self._bh(buf, pos)
        if blen < 12 or blen % 4 or pos + blen > end or self._u32(buf, pos + blen - 4)[0] != blen:
            return self._bad_block(pos, self._framing_problem(pos, blen))
        nxt = pos + blen
        if btype == SHB:
            self._new_section(pos, blen)
        elif self._skip_section:
            pass
        elif btype == EPB or btype == PB:
            if blen < 32:
                self._damaged(pos, f"packet block of {blen} bytes", nxt)
                return nxt
            if btype == EPB:
                ifc, hi, lo, cap, wire = self._epb(buf, pos + 8)
            else:
                ifc, _drops, hi, lo, cap, wire = self._pb(buf, pos + 8)
            if ifc >= len(self._section):
                self._damaged(pos, f"packet names interface {ifc}, the section has {len(self._section)}", nxt)
            elif cap > blen - 32:
                self._damaged(pos, f"caplen {cap} exceeds its block of {blen} bytes", nxt)
            else:
                add((pos + 28, cap, wire, hi, lo, self._section[ifc], 1))
        elif btype == SPB:
            if not self._section or blen < 16:
                self._damaged(pos, "simple packet block without an interface" if blen >= 16
                              else f"simple packet block of {blen} bytes", nxt)
            else:
                wire, = self._u32(buf, pos + 8)
                g = self._section[0]
                cap = min(wire, blen - 16, self._if_snaplen[g] or wire)
                add((pos + 12, cap, wire, 0, 0, g, 0))
        elif btype == IDB:
            self._interface(pos, blen)
        return nxt

    def _columns(self, pieces: list) -> Chunk:
        a = np.concatenate(pieces) if len(pieces) > 1 else pieces[0] if pieces else np.empty((0, 7), np.int64)
        n = len(a)
        g = a[:, 5]
        units = np.array(self._if_units, np.uint64)[g]
        ticks = (a[:, 3].astype(np.uint64) << np.uint64(32)) | a[:, 4].astype(np.uint64)
        sec = ticks // units
        frac = ticks - sec * units
        ts = sec.astype(np.float64) + frac.astype(np.float64) / units.astype(np.float64)
        ts += np.array(self._if_offset, np.float64)[g]
        timed = a[:, 6].astype(bool)
        if not timed.all():
            # a Simple Packet Block carries no time: it takes the time of the packet before it
            last = np.maximum.accumulate(np.where(timed, np.arange(n), -1))
            ts = np.where(last >= 0, ts[np.maximum(last, 0)], self._last_ts)
        if n:
            self._last_ts = float(ts[-1])
        return Chunk(data=self._buf, offsets=a[:, 0].copy(), caplen=a[:, 1].astype(np.uint32),
                     wirelen=a[:, 2].astype(np.uint32), ts=ts,
                     linktype=np.array(self._if_linktype, np.uint16)[g])

    # -- non-packet blocks ------------------------------------------------------
    def _new_section(self, pos, blen):
        """A new section: interfaces are numbered afresh; one we cannot read is skipped whole."""
        self._section = []
        if blen < 28:
            self._skip_section = True
            self._damaged(pos, f"section header block of {blen} bytes; its section is skipped", pos + blen)
            return
        major, minor = struct.unpack_from(self._order + "HH", self._buf, pos + 12)
        self._skip_section = major != 1
        if self._skip_section:
            self._warn(f"section at offset {pos} has unsupported pcapng version {major}.{minor}; section skipped")

    def _interface(self, pos, blen):
        """Interface Description Block: link type, snaplen, clock resolution and offset."""
        if blen < 20:
            self._damaged(pos, f"interface description block of {blen} bytes", pos + blen)
            return
        linktype, _reserved, snaplen = self._idb(self._buf, pos + 8)
        units, offset = 1_000_000, 0
        p, stop = pos + 16, pos + blen - 4
        while p + 4 <= stop:
            code, olen = self._opt(self._buf, p)
            if code == 0 or p + 4 + olen > stop:
                break
            if code == OPT_TSRESOL and olen >= 1:
                r = self._buf[p + 4]
                exp = r & 0x7F
                if r & 0x80 and exp <= 63:
                    units = 1 << exp
                elif not r & 0x80 and exp <= 19:
                    units = 10 ** exp
                else:
                    self._warn(f"interface at offset {pos} has an impossible if_tsresol 0x{r:02x}; "
                               f"microseconds assumed")
            elif code == OPT_TSOFFSET and olen >= 8:
                offset, = self._i64(self._buf, p + 4)
            p += 4 + ((olen + 3) & ~3)
        self._section.append(len(self._if_linktype))
        self._if_linktype.append(linktype)
        self._if_units.append(units)
        self._if_offset.append(offset)
        self._if_snaplen.append(snaplen)

    # -- damage ---------------------------------------------------------------
    def _framing_problem(self, pos, blen):
        if blen < 12:
            return f"block length {blen} is too small"
        if blen % 4:
            return f"block length {blen} is not a multiple of 4"
        if pos + blen > self.size:
            return f"block length {blen} runs past the end of the file"
        return f"block length {blen} does not match its trailing length"

    def _bad_block(self, pos, why) -> int:
        """pos holds a block whose framing is broken: report it, return where reading resumes."""
        new = self._resync(pos + 4, self.size - 11)
        if new is not None:
            self._damaged(pos, why, new)
            return new
        blen = self._bh(self._buf, pos)[1]
        # a sane-looking length that runs past the end: the file was cut short, not scrambled
        if 12 <= blen <= MAX_SNAPLEN_TRUSTED and blen % 4 == 0 and pos + blen > self.size:
            self._cut_short(pos)
        else:
            self._damaged(pos, why, None)
        return self.size

    def _resync_in(self, lo: int, hi: int) -> int | None:
        """First 4-byte-aligned offset in [lo, hi) holding a block of a known type whose leading
        and trailing lengths agree."""
        end = self.size
        count = (hi - lo + 3) // 4
        w = np.frombuffer(self._buf, np.dtype(self._order + "u4"), count=count + 1, offset=lo)
        btype, blen = w[:-1], w[1:].astype(np.int64)
        room = end - lo - 4 * np.arange(count, dtype=np.int64)
        ok = np.isin(btype, _KNOWN_BLOCKS) & (blen >= 12) & (blen % 4 == 0) & (blen <= room)
        ok |= btype == SHB     # its length is in the byte order that it declares itself
        for i in np.flatnonzero(ok):
            off = lo + 4 * int(i)
            u32 = self._u32
            if int(btype[i]) == SHB:
                order = _BOM.get(bytes(self._buf[off + 8:off + 12]))
                if order is None:
                    continue
                u32 = struct.Struct(order + "I").unpack_from
            n, = u32(self._buf, off + 4)
            if n >= 12 and n % 4 == 0 and off + n <= end and u32(self._buf, off + n - 4)[0] == n:
                return off
        return None
