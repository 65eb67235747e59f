"""The front-end's sans-IO core: capture chunks in, keyed EVENT rows per worker out.

For each chunk of frames (a fixed number of frames of the input stream, so the
work split never depends on the number of workers) it
  1. decodes the common case with the vectorised fast path,
  2. decodes every other frame with the slow path (link types, tunnels, ...),
  3. reassembles fragments, names each tunnel's parent session,
  4. keys all rows in one vectorised pass and splits them by `key % workers`,
and accounts for every frame in exactly one class: frames_ip, frames_non_ip,
frames_malformed, frames_unassembled (frames_dropped is for live capture).
"""
import functools
import zlib
from collections import Counter
from itertools import starmap
from operator import itemgetter

import numpy as np

from contracts.timeouts import idle_limit, is_idle
from contracts.wire import EVENT, MAX_DEPTH, NO_ADVANCE, RAW_ROW, row_struct, session_id, take_rows
from . import slowpath
from .decoded import IP, NON_IP
from .fastpath import PAYLOAD_MAX, PathIds, decode_fast
from .fragments import FrameMeta, Reassembler
from .keying import key_one, key_rows, tunnel_scope
from .tunnels import IP_TUNNELS, SCOPES, UDP_TUNNEL_PORTS

_TUNNEL_PROTOS = frozenset(IP_TUNNELS)
# The EVENT fields a slow-path row sets, in the order `_row` lists their values (EVENT's
# order); the others stay 0 (key and dir are `key_rows`' work, ploff and pllen the young
# rows'). A plain tuple, packed by a struct derived from these names: built by keyword
# (a namedtuple), a row cost the slow path about a tenth more (docs/benchmarks.md).
_ROW_FIELDS = ("fidx", "ts", "wirelen", "caplen", "ncap", "ipver", "proto", "depth", "tcpflags", "nvlan",
               "sport", "dport", "payload", "iplen", "seq", "ack", "src_hi", "src_lo", "dst_hi", "dst_lo",
               "smac", "dmac", "vlan0", "vlan1", "path", "ctx", "parent")
_PACK_ROW = row_struct(*_ROW_FIELDS, whole=True).pack
# `key_one`'s arguments, from such a row
_KEY_PARTS = itemgetter(*map(_ROW_FIELDS.index, ("ipver", "proto", "nvlan", "sport", "dport", "src_hi", "src_lo",
                                                 "dst_hi", "dst_lo", "vlan0", "vlan1", "ctx")))


class TunnelParents:
    """Which session a tunnel's inner packets belong under.

    Session ids are derived from the frame that opens a session, so the
    front-end can name the outer session's id without asking the worker that
    owns it: it follows the outer session's idle expiry with the workers' own rule
    and timeouts (`contracts.timeouts`; outer sessions are never TCP, so close
    expiry does not apply). Every packet of a tunnel-capable session (an IP protocol or UDP
    port of the tunnel registry) takes the slow path, so this table sees all of
    them. Time is the workers' own: the latest advance the front-end's cuts have
    made them (`FrontEnd.segments`) as of the chunk's start, so a timestamp going
    backwards cannot revive an outer session that the workers have already
    expired, and the table never ends one they still hold (a chunk's end brings no
    advance; within one chunk the workers sweep each second, which this table
    does not follow exactly). An
    outer session seen one way only has the workers' unanswered timeout
    (`contracts.timeouts.idle_limit`; a non-TCP session is answered once both
    directions are seen); a worker in emergency mode cuts it shorter, which this
    table cannot know (docs/design.md, "Session ids").
    """

    def __init__(self, timeouts, proc: int = 0):
        self.timeouts = timeouts
        self.proc = proc
        self.table = {}  # outer key -> [session id, last ts, idle timeout, directions seen (bits)]
        self.swept = float("-inf")  # packet time the workers have swept to (set by the front-end per chunk)

    def _idle(self, now: float, e) -> bool:
        return is_idle(now, e[1], idle_limit(e[2], self.timeouts.unanswered, e[3] == 3))

    def touch(self, key: int, d: int, fidx: int, depth: int, ts: float, proto: int, sport: int, dport: int) -> int:
        """The id of the session a packet of the outer session `key` (canonical direction
        `d`) belongs to."""
        e = self.table.get(key)
        if e is None or self._idle(max(ts, self.swept), e):
            e = self.table[key] = [session_id(fidx, depth, self.proc), ts,
                                   self.timeouts.idle_for(proto, sport, dport), 1 << d]
        else:
            e[3] |= 1 << d
            if ts > e[1]:
                e[1] = ts
        return e[0]

    def expire(self, now: float) -> None:
        dead = [k for k, e in self.table.items() if self._idle(now, e)]
        for k in dead:
            del self.table[k]


_NO_PAYLOAD = b""
YOUNG_BUDGET = 10        # payload packets per session and direction shipped (workers.classify.BUDGET)
FULL_PACKETS = 2         # the first ones go whole (up to PAYLOAD_MAX: a TLS or QUIC hello) ...
LATER_BYTES = 128        # ... later ones only their start (a status line, a banner, a command)


def gather(data, starts, lens):
    """Concatenate data[starts[i]:starts[i]+lens[i]]: returns (bytes, where each piece
    starts in them). Slices and one join: memcpy speed, no index arrays."""
    lens = lens.astype(np.int64)
    offs = np.cumsum(lens) - lens
    mv = memoryview(data)
    return b"".join([mv[o:o + n] for o, n in zip(starts.tolist(), lens.tolist())]), offs


def _payloads(part, data):
    """One worker's payload bytes (rows with pllen), ploff rewritten to point into them."""
    if not len(data):
        return _NO_PAYLOAD
    sel = np.flatnonzero(part["pllen"])
    if not len(sel):
        return _NO_PAYLOAD
    pay, offs = gather(data, part["ploff"][sel], part["pllen"][sel])
    part["ploff"][sel] = offs
    return pay


def _shares(keys, workers: int):
    """Row indices (ascending) of each worker's share, worker = key % workers. Few workers:
    one comparison pass per worker beats a stable sort of the worker numbers."""
    if workers & (workers - 1) == 0:
        w = keys & np.uint64(workers - 1)
    else:
        w = keys % np.uint64(workers)
    if workers <= 8:
        if workers == 2:
            odd = w.astype(bool)
            return [np.flatnonzero(~odd), np.flatnonzero(odd)]
        return [np.flatnonzero(w == np.uint64(i)) for i in range(workers)]
    w = w.astype(np.int64)
    order = np.argsort(w, kind="stable")
    bounds = np.searchsorted(w[order], np.arange(workers + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(workers)]


def _stable_order(values, bits: int):
    """np.argsort(values, kind="stable") for non-negative int64 values below 2**bits: where
    value and position fit one int64 together, a plain sort of (value, position) pairs gives
    the same order several times faster (numpy sorts plain integers with SIMD)."""
    if bits > 31 or len(values) >= 1 << 32:
        return np.argsort(values, kind="stable")
    return np.sort((values << 32) | np.arange(len(values), dtype=np.int64)) & 0xFFFFFFFF


class Young:
    """Which payload rows are among the first `budget` of their session and direction.

    A table of saturating 8-bit counts indexed by (key + direction) hashed into
    2^bits slots, cleared every `reset_s` seconds of packet time (so it never fills
    up for good). Two sessions sharing a slot share the budget until the next
    clear: a few sessions may then be classified on fewer packets, never on more.
    Vectorised: a stable sort gives each row its rank among the chunk's rows of
    the same slot."""

    def __init__(self, budget: int = YOUNG_BUDGET, bits: int = 23, reset_s: float = 30.0, table=None):
        """`table`: a writable buffer of 2^bits bytes to count in (several front-end
        processes share one, made before the fork: `sequencer.shared_table`), else its own."""
        self.budget = budget
        self.count = np.zeros(1 << bits, np.uint8) if table is None else np.frombuffer(table, np.uint8)
        self.mask = np.uint64((1 << bits) - 1)
        self.bits = bits
        self.reset_s = reset_s
        self.reset_at = None

    def select(self, ev, now: float):
        cand = np.flatnonzero(ev["pllen"])
        if not len(cand) or self.budget <= 0:
            return cand[:0], cand[:0]
        if self.reset_at is None or now >= self.reset_at:
            if self.reset_at is not None:
                self.count[:] = 0
            self.reset_at = now + self.reset_s
        slot = ((ev["key"][cand] + ev["dir"][cand].astype(np.uint64)) & self.mask).astype(np.int64)
        order = _stable_order(slot, self.bits)
        ss = slot[order]
        first = np.r_[True, ss[1:] != ss[:-1]]
        pos = np.arange(len(ss))
        rank = np.empty(len(ss), np.int64)
        rank[order] = pos - np.maximum.accumulate(np.where(first, pos, 0))
        nth = self.count[slot].astype(np.int64) + rank      # 0 for the session's first payload packet
        keep = nth < self.budget
        starts = pos[first]
        sizes = np.diff(np.r_[starts, len(ss)])
        u = ss[starts]
        self.count[u] = np.minimum(self.count[u].astype(np.int64) + sizes, 255)
        return cand[keep], nth[keep]


@functools.lru_cache(maxsize=None)
def _tunnel_kind(name: str) -> int:
    """A tunnel name as a number for its context hash (stable across runs, unlike hash())."""
    return zlib.crc32(name.encode())


def tunnel_capable(proto: int, sport: int, dport: int) -> bool:
    return proto in _TUNNEL_PROTOS or (proto == 17 and (sport in UDP_TUNNEL_PORTS or dport in UDP_TUNNEL_PORTS))


def stateful(layers) -> bool:
    """Whether a frame's rows need the state earlier chunks left (`FrontEnd._layers` reads
    or writes it only for these): its first layer is a fragment (reassembly), names a
    tunnel or may carry one (tunnel parents). Any other frame gives one row of its own."""
    first = layers[0]
    return first.frag is not None or first.tunnel is not None or \
        tunnel_capable(first.proto, first.sport, first.dport)


def _frame_key(ev):
    """Each row's place in frame order: (frame number, depth), one row's alone."""
    return ev["fidx"] * np.uint64(16) + ev["depth"]


def _frame_order(ev):
    """Row order by (frame number, depth): a chunk's rows in frame order, a frame's
    outermost first."""
    return np.argsort(_frame_key(ev), kind="stable")


def merge_rows(a, b):
    """Rows `a` (frame order) and `b` (any order) as one array in frame order. `b`, the
    slow path's or the held frames' few rows, is sorted and put where it belongs in `a`
    (a chunk's 65,536 fast rows) without sorting `a` again: a sort of the whole chunk
    cost ~10 ms a chunk that had any such row, as a tunnel or fragment on most chunks has."""
    if not len(b):
        return a
    b = take_rows(b, _frame_order(b))
    if not len(a):
        return b
    # b's rows' places in the result: after any of a's with the same (frame, depth), as the
    # stable sort of a then b put them (the pair is one row's alone, but crafted input...)
    at = np.searchsorted(_frame_key(a), _frame_key(b), side="right") + np.arange(len(b))
    out = np.empty(len(a) + len(b), RAW_ROW)
    rest = np.ones(len(out), bool)
    rest[at] = False
    out[at] = b.view(RAW_ROW)
    out[rest] = a.view(RAW_ROW)
    return out.view(EVENT)


class Decoding:
    """A chunk after `FrontEnd.decode`: its keyed rows, the frames left for `sequence`
    ((Decoded, FrameMeta), frame order), where its bytes are, and its frames' classes
    (counts of FrontEnd.stats keys, `extra` breakdowns) not yet added to any front-end's."""
    __slots__ = ("rows", "held", "data", "data_base", "counts", "extra")

    def __init__(self, rows, held, data, data_base):
        self.rows, self.held, self.data, self.data_base = rows, held, data, data_base
        self.counts = dict.fromkeys(("frames_ip", "frames_non_ip", "frames_malformed"), 0)
        self.extra = Counter()


class FrontEnd:
    """Frames in, per-worker keyed event arrays out. Deterministic; no I/O."""

    STAT_KEYS = ("frames_read", "frames_ip", "frames_non_ip", "frames_malformed",
                 "frames_unassembled", "frames_dropped")

    def __init__(self, workers: int, timeouts, seed: int = 0, proc: int = 0,
                 frag_timeout: float = 30.0, max_depth: int = 8, classify_budget: int = YOUNG_BUDGET,
                 vlan_key: bool = True, teredo_any_port: bool = True, path_base: int | None = None,
                 young_table=None):
        """`proc`: the capture process whose number goes into session ids (live: each
        numbers its own frames; offline every decoder says 0, the frame numbers being the
        reader's). `path_base`: where its proto_path ids start (default `proc`): offline
        decoder k numbers its own from k, so that ids from several never clash."""
        self.workers = workers
        self.seed = seed
        self.vlan_key = vlan_key                # --no-vlan-key: VLAN ids stay in the rows, not in the key
        self.teredo_any_port = teredo_any_port  # --no-teredo-heuristic: Teredo on port 3544 only
        self.proc = proc
        self.paths = PathIds(proc if path_base is None else path_base)
        # top-level datagrams; one never completed but whose first fragment was seen is
        # still keyed (ports from that fragment) and counted as one packet of its session
        self.frags = Reassembler(timeout=frag_timeout, partial=True)
        self.inner_frags = Reassembler(timeout=frag_timeout)  # inside tunnels: their frames are counted by the outer layer
        self.parents = TunnelParents(timeouts, proc)
        self.max_depth = min(max_depth, MAX_DEPTH)
        self.now = float("-inf")
        self.stats = dict.fromkeys(self.STAT_KEYS, 0)
        self.extra = Counter()          # breakdowns: unsupported link types, inner packets lost, ...
        self._chunks = 0
        self.young = Young(classify_budget, table=young_table)
        self._seg_now = float("-inf")
        self._advanced = float("-inf")   # the latest time a cut advanced the workers to (`segments`)
        self.data_base = 0               # file offset the current chunk's ploff count from

    # -- per chunk -----------------------------------------------------------
    def process(self, chunk):
        """Decode one reader Chunk. Returns (rows, ends, nows, data): the keyed rows in
        frame order, cut in segments, one per second of packet time (segment k is rows
        [ends[k-1], ends[k]) and ends at time nows[k]), so that workers expire sessions
        and write interim reports on time however large the chunk; `data` is where the
        young rows' payload bytes are (see `_young_payloads`). `pack` splits it by worker.
        The three phases one process runs in turn; offline, K front-end processes run
        `number` (the reader), `decode` (in parallel) and `sequence` (one chunk at a
        time, in chunk order: pipeline/decoders.py) on the same chunks."""
        base, now = self.number(chunk)
        return self.sequence(self.decode(chunk, base), now)

    def number(self, chunk):
        """The reader's part: the chunk's frames get the next frame numbers (from 1, as in
        Wireshark) and time moves to the latest of them (every frame's, non-IP too).
        Returns (first frame number, time after the chunk)."""
        n = len(chunk.offsets)
        base = self.stats["frames_read"] + 1
        self.stats["frames_read"] += n
        if n:
            self.now = max(self.now, float(chunk.ts.max()))
        return base, self.now

    def decode(self, chunk, base: int) -> "Decoding":
        """Phase 1, reading and writing no state that later chunks depend on: the fast path,
        the slow path's decode, the rows of every frame but those whose first layer is a
        fragment or may carry a tunnel (`stateful`: they wait, decoded, for `sequence`),
        keyed. Frame numbers count from `base`. The chunk's frame classes are counted in
        the Decoding, and become this front-end's when it is sequenced (a chunk decoded
        but then handed to another process is not counted twice)."""
        n = len(chunk.offsets)
        data_base = self.data_base = int(chunk.offsets.min()) if n else 0
        fast, slow = decode_fast(chunk.data, chunk.offsets, chunk.caplen, chunk.wirelen,
                                 chunk.ts, chunk.linktype, self.paths, data_base, self.teredo_any_port)
        fast["fidx"] += np.uint64(base)
        dec = Decoding(fast, [], chunk.data, data_base)
        dec.counts["frames_ip"] = len(fast)
        out = []
        slow_idx = np.flatnonzero(slow)
        if len(slow_idx):
            self._slow(chunk, slow_idx, base, out, dec)
        dec.rows = self._rows(fast, out)
        return dec

    def sequence(self, dec: "Decoding", now: float):
        """Phase 2, on the state that passes from chunk to chunk (reassembly, tunnel
        parents, segment time, payload budget), at packet time `now`: the held frames'
        rows in frame order, expiry, the merge into the decoded rows, the segments and
        the young payloads. Returns what `process` returns."""
        self.now = now
        self.parents.swept = self._advanced      # no further than the workers have swept
        st = self.stats
        for k, v in dec.counts.items():
            st[k] += v
        if dec.extra:
            self.extra.update(dec.extra)
        out = []
        if dec.held:
            for d, frame in dec.held:
                if self._layers(d.layers, [frame], out):
                    st["frames_ip"] += 1
            self._take_frag_malformed()
        self._expire(out)
        ev = self._merge(dec.rows, out)
        ends, nows = self.segments(ev)
        return ev, ends, nows, self._young_payloads(ev, dec.data, dec.data_base)

    def _young_payloads(self, ev, data, base=0):
        """Mark the payload bytes of the rows of young sessions (their first BUDGET payload
        packets per direction: the first FULL_PACKETS whole, later ones LATER_BYTES) for
        classification in the workers; every other row's pllen becomes 0. Returns the
        chunk's data from its base (a view), which `pack` gathers from, per worker, or
        which workers read themselves when they share it (`pack(gather=False)`)."""
        keep, nth = self.young.select(ev, self.now)
        pllen = ev["pllen"]
        lens = np.minimum(pllen[keep], np.where(nth < FULL_PACKETS, PAYLOAD_MAX, LATER_BYTES))
        pllen[:] = 0
        if not len(keep):
            return _NO_PAYLOAD
        pllen[keep] = lens
        return memoryview(data)[base:]      # ploff counts from the chunk's base

    def _emit(self, fast, out):
        """Key all rows of a chunk at once and cut them by second (`pack` splits by worker)."""
        ev = self._rows(fast, out)
        ends, nows = self.segments(ev, advance_at_end=True)
        return ev, ends, nows, _NO_PAYLOAD

    def _rows(self, fast, out):
        """The fast path's rows and the slow path's (`out`) in frame order, keyed.
        (frame number, depth) is one row's alone, so the order is the same whichever
        rows come first."""
        ev = merge_rows(fast, np.frombuffer(b"".join(starmap(_PACK_ROW, out)), EVENT)) if out else fast
        key_rows(ev, self.seed, self.vlan_key)
        return ev

    def _merge(self, ev, out):
        """The rows of `sequence` (held frames, expired datagrams) into the decoded ones."""
        if not out:
            return ev
        return merge_rows(ev, self._rows(np.zeros(0, EVENT), out))

    def segments(self, ev, advance_at_end: bool = False):
        """Cut rows where packet time (its running maximum) enters a new second:
        (end row of each segment, its time), the stream's cuts whatever its chunks: a
        chunk whose first row enters a new second starts with an empty segment at the
        time the previous chunk left (the cut between the two), and its last segment
        ends with no advance (time -inf: the next chunk's first cut, or the end of the
        stream, makes it). So the workers sweep at the same times however the frames
        are chunked (--chunk-frames, K front-end processes), and their interim
        reports and expiries are the same. `advance_at_end`: the last cut advances to
        the front-end's time (an idle tick, the end of the stream)."""
        if len(ev) == 0:
            now = self.now if advance_at_end else NO_ADVANCE
            self._advanced = max(self._advanced, now)
            return np.zeros(1, np.int64), np.array([now])
        prev = self._seg_now
        run = np.maximum.accumulate(np.maximum(ev["ts"], prev))
        sec = np.floor(run)
        ends = np.r_[np.flatnonzero(sec[1:] != sec[:-1]) + 1, len(ev)]
        nows = run[ends - 1]
        nows[-1] = max(self.now, nows[-1]) if advance_at_end else NO_ADVANCE
        if prev > NO_ADVANCE and sec[0] != np.floor(prev):
            ends, nows = np.r_[0, ends], np.r_[prev, nows]
        self._seg_now = float(run[-1])
        self._advanced = max(self._advanced, float(nows.max()))
        return ends, nows

    def pack(self, batch, gather: bool = True):
        """One message per worker per chunk, however many seconds it spans:
        [(that worker's rows, [[end row, now] per segment], their payload bytes), ...].
        Every worker gets every segment's time, empty or not, so all workers sweep at
        the same times. `gather=False`: the payload bytes are left where they are (the
        workers see the input file themselves) and ploff keeps counting from the
        chunk's base."""
        if not gather:
            ev, ends, nows, _ = batch
            batch = ev, ends, nows, _NO_PAYLOAD
        ev, ends, nows, pay = batch
        nowl = nows.tolist()
        if self.workers == 1:
            return [(ev, [[e, t] for e, t in zip(ends.tolist(), nowl)], _payloads(ev, pay))]
        out = []
        for i, idx in enumerate(_shares(ev["key"], self.workers)):
            cut = np.searchsorted(idx, ends).tolist()
            part = take_rows(ev, idx)
            out.append((part, [[e, t] for e, t in zip(cut, nowl)], _payloads(part, pay)))
        return out

    def idle(self, now: float):
        """No frames lately (live capture): a batch with no rows that moves every
        worker's clock to `now` (wall clock), so sessions still expire on time."""
        if now > self.now:
            self.now = now
        out = []
        self._expire(out)          # fragments waiting too long become rows now, not later
        return self._emit(np.zeros(0, EVENT), out)

    def finish(self):
        """End of stream: datagrams never completed are counted, not lost. Returns the
        last rows (partial datagrams) like `process`."""
        out = []
        for left in self.frags.flush():
            self._leftover(left, out)
        self._take_frag_malformed()
        for frames in self.inner_frags.flush():
            self.extra["inner_unassembled"] += len(frames)
        return self._emit(np.zeros(0, EVENT), out)

    def take_paths(self) -> dict:
        return self.paths.take_new()

    # -- slow path -----------------------------------------------------------
    def _slow(self, chunk, idx, base, out, dec):
        """The slow path's frames of a chunk: the rows of the stateless ones into `out`,
        the stateful ones held in `dec`, every frame counted in `dec`."""
        data = memoryview(chunk.data)
        offs, caps, wires, tss, lts = (chunk.offsets[idx].tolist(), chunk.caplen[idx].tolist(),
                                       chunk.wirelen[idx].tolist(), chunk.ts[idx].tolist(),
                                       chunk.linktype[idx].tolist())
        st, extra, held = dec.counts, dec.extra, dec.held
        for i, off, cap, wire, ts, lt in zip(idx.tolist(), offs, caps, wires, tss, lts):
            d = slowpath.decode(lt, data[off:off + cap], self.max_depth, self.teredo_any_port)
            if d.kind != IP:
                if d.kind == NON_IP:
                    st["frames_non_ip"] += 1
                    if d.error:
                        extra["non_ip: " + d.error] += 1
                else:
                    st["frames_malformed"] += 1
                continue
            if d.inner_malformed:
                extra["inner_malformed"] += 1
            frame = FrameMeta(base + i, ts, wire, cap)
            if stateful(d.layers):
                held.append((d, frame))
            elif self._layers(d.layers, [frame], out):
                st["frames_ip"] += 1

    def _layers(self, layers, frames, out, ctx=0, parent=0, depth=0):
        """Rows for a frame's (or a reassembled datagram's) layers. Returns False
        when the top layer is a fragment still waiting for the rest of its datagram."""
        last = frames[-1]
        for i, layer in enumerate(layers):
            if layer.frag is not None:
                frags = self.frags if depth == 0 else self.inner_frags
                dg = frags.add((ctx, layer.ipver, layer.src, layer.dst, layer.frag.ident, layer.frag.proto),
                               layer, last)
                if dg is None:
                    return depth > 0
                if depth == 0:
                    self.stats["frames_ip"] += len(dg.frames) - 1  # the caller counts the last one
                rest = slowpath.decode_transport(dg.first_layer, dg.payload, self.max_depth - depth, dg.length,
                                                 self.teredo_any_port)
                self._layers(rest, dg.frames, out, ctx, parent, depth)
                return True
            row = self._row(layer, frames, ctx, parent, depth)
            out.append(row)
            if layer.tunnel is None and not tunnel_capable(layer.proto, layer.sport, layer.dport):
                break
            key, d = key_one(*_KEY_PARTS(row), self.seed, self.vlan_key)
            sid = self.parents.touch(key, d, last.fidx, depth, last.ts, layer.proto, layer.sport, layer.dport)
            if layer.tunnel is None:
                break
            parent, depth = sid, depth + 1
            ctx = self._scope(layer, layers[i + 1] if i + 1 < len(layers) else None, ctx)
            if depth > self.max_depth:
                self.extra["tunnel_too_deep"] += 1
                break
        return True

    def _scope(self, layer, inner, ctx) -> int:
        """The context of the sessions `layer`'s tunnel carries (`inner` is its first one):
        its scope (tunnels.SCOPES), never a field that differs between the two
        directions of a conversation."""
        a, b = SCOPES[layer.tunnel].ends(layer, inner)
        return tunnel_scope(ctx, _tunnel_kind(layer.tunnel), layer.tunnel_space, a, b,
                            layer.vlans if self.vlan_key else ())

    def _row(self, layer, frames, ctx, parent, depth):
        """The EVENT row of one layer: its `_ROW_FIELDS`' values, in that order."""
        src = layer.src.ljust(16, b"\0")
        dst = layer.dst.ljust(16, b"\0")
        vl = layer.vlans
        last = frames[-1]
        wire = sum(f.wirelen for f in frames) if len(frames) > 1 else last.wirelen
        cap = sum(f.caplen for f in frames) if len(frames) > 1 else last.caplen
        return (last.fidx, last.ts, min(wire, 0xFFFFFFFF), min(cap, 0xFFFFFFFF), min(len(frames), 0xFFFF),
                layer.ipver, layer.proto, depth, layer.tcpflags & 0xFF, min(len(vl), 255),
                layer.sport, layer.dport, min(layer.payload, 0xFFFFFFFF), min(layer.iplen, 0xFFFFFFFF),
                layer.seq & 0xFFFFFFFF, layer.ack & 0xFFFFFFFF, int.from_bytes(src[:8], "big"),
                int.from_bytes(src[8:], "big"), int.from_bytes(dst[:8], "big"), int.from_bytes(dst[8:], "big"),
                layer.smac, layer.dmac, vl[0] if len(vl) > 0 else 0, vl[1] if len(vl) > 1 else 0,
                self.paths.get(layer.path), ctx, parent)

    # -- accounting ----------------------------------------------------------
    def _expire(self, out):
        self._chunks += 1
        for left in self.frags.expire(self.now):
            self._leftover(left, out)
        for frames in self.inner_frags.expire(self.now):
            self.extra["inner_unassembled"] += len(frames)
        if self._chunks % 16 == 0:
            self.parents.expire(self._advanced)     # what the workers have let go of, no more

    def _leftover(self, left, out):
        """A datagram never completed: a partial Datagram (first fragment seen) becomes
        one packet of its session; bare frames are frames_unassembled."""
        if isinstance(left, list):
            self.stats["frames_unassembled"] += len(left)
            return
        self.stats["frames_ip"] += len(left.frames)
        self.extra["partial_datagrams"] += 1
        rest = slowpath.decode_transport(left.first_layer, left.payload, self.max_depth, left.length,
                                         self.teredo_any_port)
        if len(rest) > 1:   # a tunnel's far end never got the datagram whole: its inner packet never went on
            self.extra["partial_tunnel_inner"] += 1
        self._layers(rest[:1], left.frames, out)

    def _take_frag_malformed(self):
        for frames in self.frags.take_malformed():
            self.stats["frames_malformed"] += len(frames)
        for frames in self.inner_frags.take_malformed():
            self.extra["inner_malformed"] += len(frames)
