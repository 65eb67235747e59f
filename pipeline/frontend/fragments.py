"""IPv4 / IPv6 fragment reassembly for the front-end: sans-IO, bounded, deterministic.

The slow-path decoder stops at a fragmented IP layer (`Layer.frag` set). The
front-end files each fragment under a key it builds (tunnel context, IP version,
src, dst, identification, protocol) and `Reassembler.add` returns a `Datagram`
once the fragment that completes it arrives. There are no clocks: time is the
packet time of the frames, passed in by the caller.

Counting (the product's rules): a reassembled datagram is one packet for its
session but carries every frame that brought a fragment of it (`Datagram.frames`,
duplicates included). Every frame handed to `add` comes back exactly once, by
exactly one of:
  * `add` returning the completed `Datagram` (its `frames`);
  * `take_malformed()` -- the datagram was impossible (counted frames_malformed);
  * `expire()` / `flush()` -- never completed: timed out, evicted to respect the
    bounds, or still pending at the end of the stream (counted frames_unassembled).

Choices:
  * Completion: the last fragment (more=False) has been seen, fixing the end,
    and the declared byte ranges [offset, offset + payload_len) of the fragments
    cover [0, end) with no gap.
  * Overlaps are accepted, not malformed: the first-arrived bytes win (as BSD and
    most stacks do; RFC 5722 would drop overlapping IPv6 fragments, but a
    monitor should see what the hosts most likely saw). Exact duplicates are
    accepted and their frame is counted with the datagram.
  * Impossible, the whole datagram is dropped and all its frames, the current
    one included, go to `malformed`: a negative or non-8-aligned offset; an end
    (offset + payload_len) beyond 65535 (IPv4 total length; for IPv6 the
    reassembled payload length, RFC 8200 -- jumbograms cannot be fragmented,
    RFC 2675); a non-last fragment whose payload_len is not a multiple of 8; two
    last fragments with different ends; data beyond the last fragment's end;
    more than MAX_FRAMES fragments (duplicates included) for one datagram.
  * An atomic fragment (offset 0, more=False; RFC 6946) completes at once, on its
    own: it neither joins nor disturbs a datagram pending under the same key.
  * Snaplen: a fragment whose captured payload is shorter than payload_len still
    covers its whole declared range. Only captured bytes are stored; at
    completion `payload` is the contiguous captured prefix [0, n) of the datagram
    and `truncated` is True when n < the declared length (`length`). Bytes first
    captured by a later (overlapping) fragment fill holes left by a truncated one.
  * Time: a datagram expires when its first fragment arrived more than `timeout`
    before `now`. Pending datagrams are kept in first-arrival order (an
    OrderedDict), so `expire` pops from the head: O(expired). Packet time that
    runs backwards only delays expiry of the datagrams behind (the bounds still
    hold). A fragment arriving for a datagram already older than `timeout` (the
    caller has not called expire yet) retires that one and starts a new one.
  * Bounds: at most `max_datagrams` pending and at most `max_bytes` of stored
    payload (`pending_bytes`, the sum of the reassembly buffers). Going over
    evicts the oldest pending datagram(s) -- the current one last, and only when
    it alone exceeds `max_bytes`. Evicted (and retired) datagrams' frames wait in
    `evicted`, which `expire()` and `flush()` drain first. A buffer never grows
    beyond the captured end of a validated fragment, so at most 65535 bytes per
    datagram whatever the length fields say.
  * A fragment that arrives after its datagram completed (late duplicate) or was
    dropped starts a new datagram, which will normally expire as unassembled.
"""
from collections import OrderedDict
from dataclasses import dataclass

MAX_DATAGRAM = 65535   # largest reassembled datagram payload end accepted
MAX_FRAMES = 8192      # fragments (duplicates included) one datagram may collect; more is an attack: malformed


@dataclass(slots=True)
class FrameMeta:
    fidx: int        # global frame index
    ts: float        # packet time (epoch seconds)
    wirelen: int
    caplen: int


@dataclass(slots=True)
class Datagram:
    """A completed datagram."""
    key: tuple                 # the reassembly key it was filed under
    proto: int
    payload: bytes             # the contiguous captured prefix of the transport payload
    truncated: bool            # payload is shorter than the declared length (snaplen)
    first_layer: object        # the Layer of the (first-arrived) fragment with offset 0
    frames: list[FrameMeta]    # FrameMeta of every frame that carried a fragment, arrival order
    length: int = 0            # declared length of the reassembled payload (the last fragment's end)


def _add_range(ranges: list, lo: int, hi: int) -> None:
    """Insert [lo, hi) into a sorted list of disjoint [a, b) ranges, merging touching ones."""
    if hi <= lo:
        return
    out = []
    i, n = 0, len(ranges)
    while i < n and ranges[i][1] < lo:
        out.append(ranges[i])
        i += 1
    while i < n and ranges[i][0] <= hi:
        lo = min(lo, ranges[i][0])
        hi = max(hi, ranges[i][1])
        i += 1
    out.append((lo, hi))
    out.extend(ranges[i:])
    ranges[:] = out


def _gaps(ranges: list, lo: int, hi: int) -> list:
    """The parts of [lo, hi) not covered by the sorted disjoint ranges."""
    out = []
    for a, b in ranges:
        if b <= lo:
            continue
        if a >= hi:
            break
        if a > lo:
            out.append((lo, a))
        lo = max(lo, b)
        if lo >= hi:
            break
    if lo < hi:
        out.append((lo, hi))
    return out


class _Pending:
    __slots__ = ("key", "proto", "first_ts", "buf", "declared", "captured", "end",
                 "first_layer", "frames")

    def __init__(self, key, proto, first_ts):
        self.key = key
        self.proto = proto
        self.first_ts = first_ts
        self.buf = bytearray()     # captured bytes, grown to the highest captured end
        self.declared = []         # ranges covered according to the IP lengths
        self.captured = []         # ranges actually filled in buf
        self.end = None            # the last fragment's end, once seen
        self.first_layer = None
        self.frames = []


class Reassembler:
    """Reassembles fragments filed by key; see the module docstring for the rules."""

    def __init__(self, timeout: float = 30.0, max_datagrams: int = 65536, max_bytes: int = 64 * 2**20,
                 partial: bool = False):
        """partial=True: a datagram never completed whose first fragment (offset 0) was
        seen comes back from expire()/flush() as a truncated `Datagram` (its first
        fragment has the transport header, so it can still be keyed and counted)
        instead of a bare list of frames."""
        self.partial = partial
        if max_datagrams < 1:
            raise ValueError("max_datagrams must be >= 1")
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self._pending: "OrderedDict[tuple, _Pending]" = OrderedDict()
        self.pending_bytes = 0
        self.malformed: list[list[FrameMeta]] = []   # frames of datagrams rejected as impossible, until take_malformed()
        self.evicted: list[list[FrameMeta]] = []     # frames of datagrams evicted / retired, until expire() or flush()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- public --------------------------------------------------------------
    def add(self, key: tuple, layer, frame: FrameMeta) -> "Datagram | None":
        """File one fragment (layer.frag) under key. Returns the completed Datagram
        when this fragment completes it, else None (pending, or rejected: see
        `malformed`, or evicted: see `evicted`)."""
        fr = layer.frag
        off, plen = fr.offset, fr.payload_len
        data = fr.payload
        if len(data) > plen:
            data = data[:plen]
        end = off + plen
        if off < 0 or plen < 0 or off % 8 or end > MAX_DATAGRAM or (fr.more and plen % 8):
            self._reject(key, frame)
            return None
        if off == 0 and not fr.more:   # atomic fragment: on its own
            return Datagram(key, fr.proto, bytes(data), len(data) < plen, layer, [frame], plen)
        p = self._pending_for(key, fr.proto, frame.ts)
        if not self._fits(p, fr.more, end):
            self._reject(key, frame)
            return None
        self._accept(p, layer, frame, off, end, data)
        if p.end is not None and p.declared == [(0, p.end)]:
            self._drop(p)
            n = p.captured[0][1] if p.captured and p.captured[0][0] == 0 else 0
            n = min(n, p.end)
            return Datagram(key, p.proto, bytes(p.buf[:n]), n < p.end, p.first_layer, p.frames, p.end)
        if self.pending_bytes > self.max_bytes:
            self._shed(p, key)
        return None

    def _pending_for(self, key, proto, ts) -> "_Pending":
        """The datagram a fragment under `key` belongs to: the pending one unless it timed
        out, else a new one (evicting the oldest while there are too many)."""
        p = self._pending.get(key)
        if p is not None and ts - p.first_ts > self.timeout:
            self._drop(p)
            self.evicted.append(self._leftover(p))
            p = None
        if p is None:
            while len(self._pending) >= self.max_datagrams:
                self._evict_oldest()
            p = _Pending(key, proto, ts)
            self._pending[key] = p
        return p

    @staticmethod
    def _fits(p, more: bool, end: int) -> bool:
        """Whether a fragment ending at `end` agrees with what the datagram has seen: one
        end, no data past it, and not too many frames."""
        if not more:
            if (p.end is not None and p.end != end) or (p.declared and p.declared[-1][1] > end):
                return False
        elif p.end is not None and end > p.end:
            return False
        return len(p.frames) < MAX_FRAMES

    def _accept(self, p, layer, frame, off: int, end: int, data) -> None:
        if not layer.frag.more:
            p.end = end
        p.frames.append(frame)
        if off == 0 and p.first_layer is None:
            p.first_layer = layer
        _add_range(p.declared, off, end)
        cend = off + len(data)
        if cend > off:
            grow = cend - len(p.buf)
            if grow > 0:
                p.buf.extend(bytes(grow))
                self.pending_bytes += grow
            for a, b in _gaps(p.captured, off, cend):
                p.buf[a:b] = data[a - off:b - off]
            _add_range(p.captured, off, cend)

    def _shed(self, p, key) -> None:
        """Over the byte bound: evict the oldest other datagrams, then this one if still over."""
        while self.pending_bytes > self.max_bytes and len(self._pending) > 1:
            self._evict_oldest(spare=key)
        if self.pending_bytes > self.max_bytes:
            self._drop(p)
            self.evicted.append(self._leftover(p))

    def expire(self, now: float) -> list[list[FrameMeta]]:
        """Drop datagrams whose first fragment arrived more than `timeout` before `now`.
        Returns the frames of those and of every datagram evicted since the last call,
        one list per datagram (to be counted as frames_unassembled)."""
        out, self.evicted = self.evicted, []
        limit = now - self.timeout
        od = self._pending
        while od:
            p = od[next(iter(od))]
            if not p.first_ts < limit:
                break
            self._drop(p)
            out.append(self._leftover(p))
        return out

    def flush(self) -> list[list[FrameMeta]]:
        """End of stream: the frames of every datagram evicted or still pending."""
        out, self.evicted = self.evicted, []
        out.extend(self._leftover(p) for p in self._pending.values())
        self._pending.clear()
        self.pending_bytes = 0
        return out

    def take_malformed(self) -> list[list[FrameMeta]]:
        out, self.malformed = self.malformed, []
        return out

    # -- internals -----------------------------------------------------------
    def _drop(self, p: _Pending) -> None:
        del self._pending[p.key]
        self.pending_bytes -= len(p.buf)

    def _reject(self, key, frame) -> None:
        p = self._pending.get(key)
        if p is None:
            self.malformed.append([frame])
        else:
            self._drop(p)
            p.frames.append(frame)
            self.malformed.append(p.frames)

    def _evict_oldest(self, spare=None) -> None:
        it = iter(self._pending)
        k = next(it)
        if k == spare:
            k = next(it)
        p = self._pending[k]
        self._drop(p)
        self.evicted.append(self._leftover(p))

    def _leftover(self, p: _Pending):
        """What a datagram never completed leaves: its frames, or (partial mode, first
        fragment seen) a truncated Datagram of the captured prefix."""
        if not self.partial or p.first_layer is None:
            return p.frames
        n = p.captured[0][1] if p.captured and p.captured[0][0] == 0 else 0
        length = p.end if p.end is not None else (p.declared[-1][1] if p.declared else n)
        return Datagram(p.key, p.proto, bytes(p.buf[:n]), True, p.first_layer, p.frames, length)
