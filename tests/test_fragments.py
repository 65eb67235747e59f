"""Fragment reassembly: completion, overlaps, duplicates, expiry, bounds, impossible
fragments, truncated captures; every frame comes back exactly once."""
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

from pipeline.frontend.decoded import Frag
from pipeline.frontend.fragments import Datagram, FrameMeta, Reassembler

SRC, DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def key(ident=1, ipver=4, ctx=0, proto=17):
    return (ctx, ipver, SRC, DST, ident, proto)


class Feeder:
    """Builds fake layers and frames with increasing frame index."""

    def __init__(self, r: Reassembler, k=None, proto=17):
        self.r, self.k, self.proto = r, k or key(), proto
        self.fidx = 0

    def add(self, offset, data, more, ts=0.0, plen=None, k=None):
        plen = len(data) if plen is None else plen
        layer = SimpleNamespace(ipver=4, src=SRC, dst=DST, proto=self.proto, path="eth.ip", vlans=(),
                                frag=Frag(ident=1, offset=offset, more=more, proto=self.proto,
                                          payload=bytes(data), payload_len=plen))
        frame = FrameMeta(self.fidx, ts, 14 + 20 + plen, 14 + 20 + len(data))
        self.fidx += 1
        return self.r.add(self.k if k is None else k, layer, frame)


PAY = bytes(range(256)) * 2   # 512 bytes


def fidxs(frames):
    return [f.fidx for f in frames]


def test_in_order():
    r = Reassembler()
    f = Feeder(r)
    assert f.add(0, PAY[:200], True) is None
    assert r.pending == 1 and r.pending_bytes == 200
    assert f.add(200, PAY[200:400], True) is None
    dg = f.add(400, PAY[400:], False)
    assert isinstance(dg, Datagram)
    assert dg.payload == PAY and not dg.truncated and dg.length == len(PAY)
    assert dg.proto == 17 and dg.key == key()
    assert fidxs(dg.frames) == [0, 1, 2]
    assert dg.first_layer.frag.offset == 0
    assert sum(fr.wirelen for fr in dg.frames) == 3 * 34 + len(PAY)
    assert r.pending == 0 and r.pending_bytes == 0
    assert r.expire(1e9) == [] and r.flush() == [] and r.take_malformed() == []


def test_out_of_order_and_last_first():
    r = Reassembler()
    f = Feeder(r)
    assert f.add(400, PAY[400:], False) is None
    assert f.add(0, PAY[:200], True) is None
    dg = f.add(200, PAY[200:400], True)
    assert dg.payload == PAY and fidxs(dg.frames) == [0, 1, 2]
    assert dg.first_layer.frag.offset == 0


def test_exact_duplicate_is_a_frame_of_the_datagram():
    r = Reassembler()
    f = Feeder(r)
    f.add(0, PAY[:256], True)
    f.add(0, PAY[:256], True)
    dg = f.add(256, PAY[256:], False)
    assert dg.payload == PAY and fidxs(dg.frames) == [0, 1, 2]
    assert r.take_malformed() == []


def test_overlap_first_arrived_bytes_win():
    r = Reassembler()
    f = Feeder(r)
    first = b"A" * 16
    assert f.add(0, first, True) is None
    assert f.add(8, b"B" * 16, True) is None    # overlaps [8, 16)
    dg = f.add(24, b"C" * 8, False)
    assert dg.payload == b"A" * 16 + b"B" * 8 + b"C" * 8
    assert len(dg.frames) == 3 and r.take_malformed() == []


def test_never_completed_then_expire_returns_frames():
    r = Reassembler(timeout=30.0)
    f = Feeder(r)
    f.add(0, PAY[:64], True, ts=100.0)
    f.add(128, PAY[128:192], True, ts=101.0)
    g = Feeder(r, k=key(ident=2))
    g.fidx = 10
    g.add(0, PAY[:64], True, ts=120.0)
    assert r.expire(130.0) == []              # exactly 30 s: not more than timeout
    out = r.expire(131.0)
    assert [fidxs(x) for x in out] == [[0, 1]]
    assert r.pending == 1 and r.pending_bytes == 64
    assert [fidxs(x) for x in r.expire(200.0)] == [[10]]
    assert r.pending == 0 and r.pending_bytes == 0


def test_stale_datagram_retired_when_its_key_comes_back():
    r = Reassembler(timeout=30.0)
    f = Feeder(r)
    f.add(0, PAY[:64], True, ts=0.0)
    assert f.add(64, PAY[64:128], False, ts=100.0) is None   # a new datagram, the old one is stale
    assert [fidxs(x) for x in r.expire(100.0)] == [[0]]
    assert [fidxs(x) for x in r.flush()] == [[1]]


def test_flush_returns_everything_pending():
    r = Reassembler()
    for ident in (1, 2, 3):
        f = Feeder(r, k=key(ident=ident))
        f.fidx = ident * 10
        f.add(0, PAY[:8], True)
        f.add(16, PAY[16:24], True)
    out = r.flush()
    assert [fidxs(x) for x in out] == [[10, 11], [20, 21], [30, 31]]
    assert r.pending == 0 and r.pending_bytes == 0 and r.flush() == []


def _rejected(r, expect):
    got = r.take_malformed()
    assert [fidxs(x) for x in got] == expect
    assert r.take_malformed() == []
    assert r.pending == 0 and r.pending_bytes == 0


def test_impossible_end_beyond_65535():
    r = Reassembler()
    f = Feeder(r)
    f.add(0, PAY[:64], True)
    assert f.add(65528, b"x" * 16, False) is None
    _rejected(r, [[0, 1]])


def test_impossible_declared_length_not_allocated():
    r = Reassembler()
    f = Feeder(r)
    assert f.add(8, b"abc", True, plen=10**9) is None
    _rejected(r, [[0]])


def test_impossible_non_last_not_multiple_of_8():
    r = Reassembler()
    f = Feeder(r)
    f.add(0, PAY[:64], True)
    assert f.add(64, PAY[64:75], True) is None
    _rejected(r, [[0, 1]])


def test_impossible_two_different_last_fragments():
    r = Reassembler()
    f = Feeder(r)
    f.add(64, PAY[64:100], False)
    f.add(8, PAY[8:16], True)
    assert f.add(64, PAY[64:90], False) is None
    _rejected(r, [[0, 1, 2]])


def test_impossible_data_beyond_last_end():
    r = Reassembler()
    f = Feeder(r)
    f.add(64, PAY[64:100], False)       # end 100
    assert f.add(96, PAY[96:112], True) is None
    _rejected(r, [[0, 1]])
    # and the other order: the last fragment arrives after data beyond its end
    f.add(96, PAY[96:112], True)
    assert f.add(64, PAY[64:100], False) is None
    _rejected(r, [[2, 3]])


def test_impossible_unaligned_offset():
    r = Reassembler()
    f = Feeder(r)
    assert f.add(3, PAY[:8], False) is None
    _rejected(r, [[0]])


def test_malformed_does_not_disturb_other_datagrams():
    r = Reassembler()
    a, b = Feeder(r, k=key(ident=1)), Feeder(r, k=key(ident=2))
    b.fidx = 100
    a.add(0, PAY[:8], True)
    b.add(0, PAY[:8], True)
    b.add(8, PAY[8:13], True)            # impossible
    dg = a.add(8, PAY[8:16], False)
    assert dg.payload == PAY[:16]
    _rejected(r, [[100, 101]])


def test_bounds_max_datagrams_evicts_oldest():
    r = Reassembler(max_datagrams=2)
    for ident in (1, 2, 3):
        f = Feeder(r, k=key(ident=ident))
        f.fidx = ident
        f.add(0, PAY[:8], True, ts=float(ident))
    assert r.pending == 2 and r.pending_bytes == 16
    assert r.evicted == [[FrameMeta(1, 1.0, 42, 42)]]
    assert [fidxs(x) for x in r.expire(0.0)] == [[1]]   # drained though nothing timed out
    assert r.evicted == [] and r.pending == 2
    assert [fidxs(x) for x in r.flush()] == [[2], [3]]


def test_bounds_max_bytes_evicts_oldest_then_current():
    r = Reassembler(max_bytes=100)
    a, b = Feeder(r, k=key(ident=1)), Feeder(r, k=key(ident=2))
    b.fidx = 10
    a.add(0, PAY[:64], True)
    b.add(0, PAY[:32], True)
    assert r.pending == 2 and r.pending_bytes == 96
    b.add(32, PAY[32:64], True)          # 128 > 100: the oldest (a) goes
    assert r.pending == 1 and r.pending_bytes == 64
    b.add(64, PAY[64:128], True)         # alone over the bound: b goes too
    assert r.pending == 0 and r.pending_bytes == 0
    assert [fidxs(x) for x in r.flush()] == [[0], [10, 11, 12]]


def test_ipv6_atomic_fragment_completes_alone():
    r = Reassembler()
    f = Feeder(r, k=key(ipver=6))
    f.add(0, PAY[:64], True)             # a real datagram pending under the same key
    dg = f.add(0, PAY[:40], False)       # atomic: processed in isolation
    assert dg.payload == PAY[:40] and fidxs(dg.frames) == [1] and not dg.truncated
    assert r.pending == 1
    dg = f.add(64, PAY[64:80], False)
    assert dg.payload == PAY[:80] and fidxs(dg.frames) == [0, 2]


def test_truncated_capture():
    r = Reassembler()
    f = Feeder(r)
    f.add(0, PAY[:100], True, plen=200)          # captured 100 of 200
    dg = f.add(200, PAY[200:300], False)
    assert dg.truncated and dg.length == 300
    assert dg.payload == PAY[:100]               # the contiguous captured prefix
    assert [fr.caplen for fr in dg.frames] == [134, 134] and [fr.wirelen for fr in dg.frames] == [234, 134]


def test_truncated_hole_filled_by_later_overlap():
    r = Reassembler()
    f = Feeder(r)
    f.add(0, PAY[:50], True, plen=104)           # truncated
    f.add(48, PAY[48:104], True)                 # overlapping, full: fills [50, 104)
    dg = f.add(104, PAY[104:120], False)
    assert not dg.truncated and dg.payload == PAY[:120]


def test_truncated_last_fragment():
    r = Reassembler()
    f = Feeder(r)
    f.add(0, PAY[:64], True)
    dg = f.add(64, PAY[64:70], False, plen=36)
    assert dg.truncated and dg.length == 100 and dg.payload == PAY[:70]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_random_split_shuffle_duplicates(data):
    size = data.draw(st.integers(1, 3000), label="size")
    payload = data.draw(st.binary(min_size=size, max_size=size), label="payload")
    cuts = data.draw(st.sets(st.integers(1, (size - 1) // 8), max_size=12), label="cuts") if size > 8 else set()
    bounds = [0] + sorted(8 * c for c in cuts) + [size]
    pieces = list(zip(bounds, bounds[1:]))
    dups = data.draw(st.lists(st.sampled_from(pieces), max_size=4), label="duplicates")
    overlaps = data.draw(st.lists(st.tuples(st.integers(0, (size - 1) // 8), st.integers(1, 8)), max_size=2),
                         label="overlaps")
    extra = [(8 * a, min(size, 8 * (a + n))) for a, n in overlaps]
    extra = [(a, b) for a, b in extra if b < size]   # non-last overlapping fragments
    sends = data.draw(st.permutations(pieces + dups + extra), label="order")

    r = Reassembler()
    f = Feeder(r)
    dgs = [dg for a, b in sends if (dg := f.add(a, payload[a:b], b != size)) is not None]
    leftovers = r.flush()
    assert r.take_malformed() == []
    # the first completion has everything; a late fragment (after completion) starts a new
    # datagram, which completes only if the rest of it arrives again
    assert dgs and all(d.payload == payload and not d.truncated for d in dgs)
    if len(pieces) > 1 and not extra:
        assert len(dgs[0].frames) >= len(pieces)   # (an overlapping extra may complete it earlier)
    seen = [fr.fidx for d in dgs for fr in d.frames] + [fr.fidx for x in leftovers for fr in x]
    assert sorted(seen) == list(range(len(sends)))


_frag_op = st.tuples(st.integers(1, 3),                  # ident
                     st.integers(0, 12),                 # offset / 8 (some ends too far: see plen)
                     st.integers(0, 40),                 # payload_len
                     st.booleans(),                      # more
                     st.integers(0, 40),                 # captured bytes (capped at payload_len)
                     st.floats(0, 20))                   # time step


@settings(max_examples=150, deadline=None)
@given(st.lists(_frag_op, max_size=40), st.integers(1, 3), st.integers(0, 120))
def test_every_frame_accounted_once_within_bounds(ops, max_dg, max_bytes):
    r = Reassembler(timeout=15.0, max_datagrams=max_dg, max_bytes=max_bytes)
    seen, ts = [], 0.0
    for i, (ident, o8, plen, more, cap, step) in enumerate(ops):
        ts += step
        off = 8 * o8 if o8 < 12 else 65528      # o8 == 12: an end beyond 65535 when plen > 7
        layer = SimpleNamespace(frag=Frag(ident, off, more, 17, bytes(min(cap, plen)), plen))
        dg = r.add(key(ident=ident), layer, FrameMeta(i, ts, plen, min(cap, plen)))
        if dg is not None:
            assert len(dg.payload) <= dg.length and dg.truncated == (len(dg.payload) < dg.length)
            seen += dg.frames
        assert r.pending <= max_dg
        assert r.pending_bytes <= max(max_bytes, 0) and r.pending_bytes >= 0
        if i % 7 == 6:
            seen += [fr for x in r.expire(ts) for fr in x]
        seen += [fr for x in r.take_malformed() for fr in x]
    seen += [fr for x in r.flush() for fr in x]
    assert r.pending == 0 and r.pending_bytes == 0
    assert sorted(fr.fidx for fr in seen) == list(range(len(ops)))
