"""K front-end processes on one stream (pipeline/frontend/ring.py), in one process: the
per-worker batches, in chunk order, must be one FrontEnd's, row for row (path ids
compared as the strings they stand for), and the summed statistics one FrontEnd's.
Messages are delivered in a random order that keeps each pipe's order (as ZeroMQ
does), so the turns, forwarded chunks and the end race as they may in a real run."""
import random
from collections import Counter

import numpy as np
import pytest

from contracts.timeouts import Timeouts
from pipeline.frontend import ring as ring_mod
from pipeline.frontend import sequencer
from pipeline.frontend.core import FrontEnd
from pipeline.frontend.readers import open_capture
from tests import scaletraces
from tests.shared import all_captures


def _norm(fe, parts):
    """A batch's per-worker parts, path ids as their strings (ids are each process's own)."""
    names = {v: k for k, v in fe.paths.ids.items()}
    out = []
    for ev, cuts, _ in parts:
        ev = ev.copy()
        paths = [names[int(p)] if p else "" for p in ev["path"]]
        ev["path"] = 0
        out.append((ev.tobytes(), paths, [list(c) for c in cuts]))
    return out


def reference(paths, chunk_frames, workers):
    fe = FrontEnd(workers, Timeouts())
    got = []
    for p in paths:
        for chunk in open_capture(p).chunks(chunk_frames):
            got.append(_norm(fe, fe.pack(fe.process(chunk), gather=False)))
    got.append(_norm(fe, fe.pack(fe.finish(), gather=False)))
    return got, fe


class _IO:
    def __init__(self, k, pipes, out):
        self.k, self.pipes, self.out = k, pipes, out

    def token(self, to, seq, pin, state):
        self.pipes[(self.k, to)].append(("T", seq, pin, state))

    def forward(self, to, seq, raw, now):
        self.pipes[(self.k, to)].append(("F", raw, now, seq))

    def batch(self, seq, head, base, batch):
        assert seq not in self.out, f"chunk {seq} sequenced twice"
        self.out[seq] = _norm(self.fe, self.fe.pack(batch, gather=False))


def ring_run(paths, chunk_frames, workers, K, seed=0):
    """The reader, K members and their pipes, run to the end in a random (per-pipe FIFO) order."""
    rnd = random.Random(seed)
    out, pipes = {}, {}
    for a in ["reader"] + list(range(K)):
        for b in range(K):
            pipes[(a, b)] = []
    numbering = FrontEnd(workers, Timeouts())
    j = 0
    for p in paths:
        for chunk in open_capture(p).chunks(chunk_frames):
            base, now = numbering.number(chunk)
            head = {"seq": j, "base": base, "now": now}
            pipes[("reader", j % K)].append(("K", head, chunk))
            j += 1
    for k in range(K):
        pipes[("reader", k)].append(("Z", j, numbering.now))
    members = []
    table = sequencer.shared_table()        # the payload budget's counts: one table for all
    for k in range(K):
        fe = FrontEnd(workers, Timeouts(), path_base=k, young_table=table)
        io = _IO(k, pipes, out)
        io.fe = fe
        members.append(ring_mod.RingMember(k, K, fe, io))
    steps = 0
    while not all(m.done for m in members):
        ready = [(a, b) for (a, b), q in pipes.items() if q and (a != "reader" or members[b].room()
                                                                    or q[0][0] == "Z")]
        assert ready, "stuck: no message can be delivered and the members are not done"
        a, b = rnd.choice(ready)
        m, msg = members[b], pipes[(a, b)].pop(0)
        if msg[0] == "K":
            m.own(msg[1], msg[2], ("raw", msg[1], msg[2]))
        elif msg[0] == "Z":
            m.end(msg[1], msg[2])
        elif msg[0] == "T":
            m.token(msg[1], msg[2], msg[3])
        elif msg[1] is None:
            m.forwarded({"seq": msg[3], "now": msg[2]}, None)
        else:
            m.forwarded(msg[1][1], msg[1][2])
        steps += 1
    assert not any(pipes.values()), "messages left over"
    assert sorted(out) == list(range(j + 1))
    return [out[s] for s in range(j + 1)], [m.fe for m in members], members


def _same(paths, chunk_frames, workers, K, seed=0):
    want, one = reference(paths, chunk_frames, workers)
    got, fes, members = ring_run(paths, chunk_frames, workers, K, seed)
    assert len(got) == len(want)
    for s, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"batch {s} of {len(want)} differs (K={K}, chunk {chunk_frames})"
    for key in FrontEnd.STAT_KEYS:
        if key != "frames_read":
            assert sum(fe.stats[key] for fe in fes) == one.stats[key], key
    assert sum((fe.extra for fe in fes), Counter()) == one.extra
    assert sum(m.frames for m in members) == one.stats["frames_read"]
    return members


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("ring")
    return {"stateful": scaletraces.write(d / "stateful.pcap", scaletraces.stateful(3)),
            "stateful2": scaletraces.write(d / "stateful2.pcap", scaletraces.stateful(4, datagrams=30)),
            "flood": scaletraces.write(d / "flood.pcap", scaletraces.flood(5))}


@pytest.mark.parametrize("K,chunk,workers", [(1, 7, 3), (2, 1, 2), (2, 5, 1), (3, 3, 3), (3, 8, 2), (4, 2, 3)])
def test_ring_gives_one_front_ends_batches(traces, K, chunk, workers):
    _same([traces["stateful"]], chunk, workers, K, seed=K * 100 + chunk)


def test_ring_over_several_files_as_one_stream(traces):
    _same([traces["stateful2"], traces["stateful"], traces["stateful2"]], 6, 3, 3, seed=7)


def test_fragment_flood_pins_the_state_and_lets_it_go(traces):
    """3000 pending datagrams (~60 ms a turn) are too heavy to pass on: the holder keeps
    them and the others forward their chunks; once they expire the state travels again.
    The batches stay one FrontEnd's."""
    members = _same([traces["flood"]], 64, 2, 3, seed=1)
    fes = [m.fe for m in members]
    # a chunk forwarded: the holder sequenced more chunks than it was given
    assert max(m.frames for m in members) > 0.6 * sum(m.frames for m in members)
    assert all(sequencer.light(fe) for fe in fes if fe.frags.pending)


@pytest.mark.parametrize("mode", ["always", "random"])
def test_pinning_at_any_chunk_gives_the_same_batches(traces, monkeypatch, mode):
    """Pinned from the first turn on, or pinned and released at random turns."""
    if mode == "always":
        monkeypatch.setattr(ring_mod, "heavy", lambda fe: True)
        monkeypatch.setattr(ring_mod, "light", lambda fe: False)
    else:
        rnd = random.Random(11)
        monkeypatch.setattr(ring_mod, "heavy", lambda fe: rnd.random() < 0.3)
        monkeypatch.setattr(ring_mod, "light", lambda fe: rnd.random() < 0.3)
    for K, chunk in ((2, 4), (3, 5), (4, 1)):
        _same([traces["stateful"]], chunk, 3, K, seed=K)


def test_empty_stream(tmp_path):
    """No frame at all: process 0 still ends the stream (batch 0) and everyone ends."""
    p = scaletraces.write(tmp_path / "empty.pcap", [])
    _same([p], 4, 2, 3)


def test_token_round_trip_keeps_pending_datagrams(traces):
    """The token's state, loaded into a fresh front-end, gives the same rows from there on."""
    fe = FrontEnd(2, Timeouts())
    chunks = list(open_capture(traces["stateful"]).chunks(50))
    for c in chunks[:len(chunks) // 2]:
        fe.process(c)
    assert fe.frags.pending or fe.inner_frags.pending or fe.parents.table
    # the payload budget's table is shared memory, not token: the other one gets a copy
    other = FrontEnd(2, Timeouts(), young_table=bytearray(fe.young.count.tobytes()))
    sequencer.load(other, sequencer.export(fe))
    other.stats["frames_read"], other.now = fe.stats["frames_read"], fe.now
    for c in chunks[len(chunks) // 2:]:
        a, b = fe.pack(fe.process(c), gather=False), other.pack(other.process(c), gather=False)
        assert _norm(fe, a) == _norm(other, b)
    assert _norm(fe, fe.pack(fe.finish(), gather=False)) == _norm(other, other.pack(other.finish(), gather=False))


def _shared_streams():
    caps = all_captures()
    return [caps[i:i + 40] for i in range(0, len(caps), 40)]


@pytest.mark.slow
@pytest.mark.parametrize("part", range(8))
def test_ring_on_shared_captures(part):
    """Every shared capture, 40 at a time as one stream, K=3, chunks of 5 frames."""
    streams = _shared_streams()
    if not streams:
        pytest.skip("../shared/pcaps absent")
    if part >= len(streams):
        pytest.skip("fewer shared captures")
    readable = []
    for p in streams[part]:
        try:
            open_capture(p)
            readable.append(p)
        except Exception:
            continue
    _same(readable, 5, 3, 3, seed=part)


def test_stateful_is_what_layers_reads():
    """`stateful` holds a frame back exactly when `_layers` would read or write the state:
    decoding a frame judged stateless leaves the state objects untouched."""
    import pipeline.frontend.core as core
    from pipeline.frontend import slowpath
    from pipeline.frontend.decoded import IP
    from pipeline.frontend.fragments import FrameMeta
    frames = scaletraces.stateful(9, datagrams=30)
    fe = FrontEnd(2, Timeouts())
    held = 0
    for i, (ts, frame) in enumerate(frames):
        d = slowpath.decode(1, frame)
        if d.kind != IP:
            continue
        if core.stateful(d.layers):
            held += 1
            fe._layers(d.layers, [FrameMeta(i + 1, ts, len(frame), len(frame))], [])
            continue
        before = (fe.frags.pending, fe.inner_frags.pending, dict(fe.parents.table), Counter(fe.extra))
        fe._layers(d.layers, [FrameMeta(i + 1, ts, len(frame), len(frame))], [])
        assert before == (fe.frags.pending, fe.inner_frags.pending, dict(fe.parents.table), Counter(fe.extra))
    assert held > 100
    assert np.isfinite(frames[-1][0])
