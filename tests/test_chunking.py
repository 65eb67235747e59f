"""How the frames are chunked (--chunk-frames; a short file's last chunk shared out) does
not move the workers' sweeps: they advance their clocks at the stream's cuts, where
packet time enters a new second, not at chunk ends, so interim reports and expiries
fall on the same packets (sans-IO: FrontEnd and Engine in this process). Fragments
are the exception: a datagram's row comes with the chunk that completes it, so its
place among the rows depends on the chunks (K front-end processes share the reader's
chunks, which depend on the file alone, and give K=1's records:
tests/test_capture_procs.py)."""
import json

import numpy as np
import pytest

from contracts.record import INTERIM, WIRE_NAMES
from contracts.timeouts import Timeouts
from contracts.wire import NO_ADVANCE
from pipeline.frontend import readers
from pipeline.frontend.core import FrontEnd
from pipeline.frontend.readers import open_capture
from pipeline.tracegen import UDP, ether, ip, ipv4, udp
from tests import scaletraces
from tests.scaletraces import MAC_A, MAC_B, vxlan
from workers.engine import Engine

SIZES = (1, 7, 64, 1000, 1 << 20)
ACTIVE = 1.0              # interim reports every second of a session


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return scaletraces.write(tmp_path_factory.mktemp("chunking") / "stateful.pcap", scaletraces.stateful(5))


@pytest.fixture(scope="module")
def talkative(tmp_path_factory):
    return scaletraces.write(tmp_path_factory.mktemp("chunking") / "talkative.pcap", scaletraces.talkative(3))


def _batches(path, size):
    fe = FrontEnd(1, Timeouts.make(active_timeout=ACTIVE))
    out = [fe.process(c) for c in open_capture(path).chunks(size)]
    out.append(fe.finish())
    return fe, out


def _advances(batches):
    """The (row of the stream, time) of every cut that advances a worker's clock."""
    seen, base = [], 0
    for ev, ends, nows, _ in batches:
        seen += [(base + int(e), float(t)) for e, t in zip(ends, nows) if t != NO_ADVANCE]
        base += len(ev)
    return seen


def _independent(rows):
    """The cuts the stream's rows call for, found from their times alone: one before each
    row whose second (of packet time's running maximum) is not its predecessor's, at
    that predecessor's running maximum."""
    run = np.maximum.accumulate(rows["ts"])
    sec = np.floor(run)
    return [(int(i), float(run[i - 1])) for i in np.flatnonzero(sec[1:] != sec[:-1]) + 1]


@pytest.mark.parametrize("size", SIZES)
def test_the_cuts_are_the_streams_whatever_the_chunks(trace, size):
    _, batches = _batches(trace, size)
    got = _advances(batches)
    want = _independent(np.concatenate([b[0] for b in batches]))
    assert len(want) > 20
    assert got[:-1] == want                     # the last: the end of the stream's advance
    assert got[-1][0] == sum(len(b[0]) for b in batches)


def _records(path, size):
    """The records, each a JSON line, sorted; and how many are interim reports."""
    fe, batches = _batches(path, size)
    eng = Engine(0, Timeouts.make(active_timeout=ACTIVE), "t")
    eng.slice_rows = 0
    recs = []
    for ev, cuts, pay in (p for b in batches for p in fe.pack(b)):
        eng.add_paths({v: k for k, v in fe.paths.ids.items()})
        eng.feed_batch(ev, cuts, pay)
        recs += eng.take_records()
    eng.finish(fe.now)
    recs += eng.take_records()
    reason = WIRE_NAMES.index("end_reason")
    return sorted(json.dumps(r, default=str) for r in recs), sum(r[reason] == INTERIM for r in recs)


def test_records_are_the_same_whatever_the_chunks(talkative):
    """Interim reports included: each chunk size gives the one-chunk records."""
    want, interim = _records(talkative, 1 << 20)
    assert interim > 10
    for size in SIZES[:-1]:
        assert _records(talkative, size)[0] == want, size


def test_a_tunnel_keeps_its_parent_across_a_chunk_edge(tmp_path, monkeypatch):
    """The front-end names a tunnel's outer session as the workers will have swept it
    (`TunnelParents.swept`): no further than their last advance. A chunk that ends inside
    a second brings no advance, so an outer packet just behind packet time (out of
    order) at the next chunk's start still belongs to the outer session the workers
    hold, as without the chunk edge. Every chunk size gives the one-chunk records, and
    the inner session's parent is an outer session that has a record."""
    o1, o2 = ip("172.17.0.1"), ip("172.17.0.2")
    a, b = ip("10.20.0.1"), ip("10.20.0.2")

    def tunnelled(ident):
        inner = ether(MAC_B, MAC_A, 0x0800, ipv4(a, b, UDP, udp(a, b, 5000, 53, b"in"), ident, 64))
        return ether(MAC_A, MAC_B, 0x0800, ipv4(o1, o2, UDP, udp(o1, o2, 49152, 4789, vxlan(7, inner)), ident, 64))

    def plain(n):
        c = ip(f"192.0.2.{n}")
        return ether(MAC_A, MAC_B, 0x0800, ipv4(c, b, UDP, udp(c, b, 7, 9, b"x"), n, 64))

    t0 = 1_700_000_100.0                # outer session last seen here, unanswered: 30 s timeout
    frames = [(t0, tunnelled(1)), (t0 + 29.5, plain(2)), (t0 + 30.1, plain(3)), (t0 + 30.9, plain(4)),
              (t0 + 29.95, tunnelled(5)),     # 29.95 s after the last: not idle, though time is at 30.9
              (t0 + 31.2, plain(6))]
    path = scaletraces.write(tmp_path / "edge.pcap", frames)
    monkeypatch.setattr(readers, "MIN_CHUNKS", 1)      # the reference: the file in one chunk
    want, _ = _records(path, 1 << 20)
    sid, parent = WIRE_NAMES.index("session_id"), WIRE_NAMES.index("parent_session_id")
    recs = [json.loads(r) for r in want]
    outer = {r[sid] for r in recs if r[parent] is None}
    inner = [r for r in recs if r[parent] is not None]
    assert inner and all(r[parent] in outer for r in inner)
    for size in (1, 2, 3, 4, 5):
        assert _records(path, size)[0] == want, size
    monkeypatch.setattr(readers, "MIN_CHUNKS", 8)      # the default: this file comes in 6 chunks
    assert _records(path, 1 << 20)[0] == want

