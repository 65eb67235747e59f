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
from pipeline.frontend.core import FrontEnd
from pipeline.frontend.readers import open_capture
from tests import scaletraces
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
