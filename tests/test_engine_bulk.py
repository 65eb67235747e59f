"""The worker's batch path (`Engine._bulk`) against its per-packet path (`_feed_rows`).

The bulk path sums counters per session with numpy and runs Python only for the
segments that change TCP state; it must give exactly the records the per-packet
reference gives. Both are fed the same batches (same cuts, same advances): once
with `bulk_min` so high that every batch goes packet by packet, once with 1 so
that every batch goes through the bulk path. Inputs: random rows built to hit
the edges (key collisions, idle gaps, clocks going back, SYN after a close,
sequence numbers that wrap or jump by 2^31, expiry and interim reports inside a
batch), the project's own generated trace, and every shared capture.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.frontend.core import FrontEnd
from pipeline.frontend.readers import CaptureError, open_capture
from pipeline import tracegen
from workers import inspection
from workers.engine import Engine
from workers.session import N_COUNTERS
from workers.tcp import ACK, FIN, RST, SYN
from contracts.timeouts import Timeouts
from tests.rows import rows, run_engine
from tests.shared import all_captures, capture_ids, needs_shared

PER_PACKET, BULK = 1 << 60, 1
SHORT = Timeouts.make(idle_timeout=2, active_timeout=3, close_linger=1)
# the bulk path's per-row check (`plan.room`) against every timeout shape: idle shorter
# than the interim report period, a linger longer than the idle timeout, no close expiry,
# an unanswered timeout shorter than the idle one (sessions answered inside a batch, or
# never), and shorter than the linger too
TIMEOUTS = [SHORT, Timeouts(), Timeouts.make(idle_timeout=2, active_timeout=300, close_linger=1),
            Timeouts.make(idle_timeout=1, active_timeout=300, close_linger=3),
            Timeouts.make(idle_timeout=2, active_timeout=3, close_linger=1, close_expiry=False),
            Timeouts.make(idle_timeout=4, active_timeout=300, close_linger=1, unanswered_timeout=1.5,
                          emergency_timeout=0.5),
            Timeouts.make(idle_timeout=3, active_timeout=5, close_linger=2, unanswered_timeout=1,
                          emergency_timeout=0.3)]


def records(batches, timeouts, bulk_min, paths=None, slice_rows=None, **kw):
    def setup(e):
        e.bulk_min = bulk_min
        if slice_rows is not None:
            e.slice_rows = slice_rows
    out, eng = run_engine(batches, timeouts, paths, setup, **kw)
    return sorted(map(repr, out)), eng


def cut(ev):
    """Segments as the front-end cuts them: where the running maximum of packet time
    enters a new second."""
    run = np.maximum.accumulate(ev["ts"])
    sec = np.floor(run)
    ends = np.r_[np.flatnonzero(sec[1:] != sec[:-1]) + 1, len(ev)]
    return [[int(e), float(run[e - 1])] for e in ends]


PSH = 0x08
FLAGS = [0, SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN | FIN, PSH]
HOSTS = [("10.0.0.1", 40000), ("10.0.0.2", 80), ("10.0.0.3", 443), ("10.0.0.1", 40001)]

packet = st.tuples(
    st.integers(0, len(HOSTS) - 1), st.integers(0, len(HOSTS) - 1),    # endpoints: few, so keys collide
    st.sampled_from([6, 6, 6, 17]),
    st.sampled_from([0.0, 0.001, 0.3, 0.9, 1.5, 2.5, 4.0, -0.5, -3.0]),  # time steps: gaps past every timeout, and back
    st.sampled_from(FLAGS),
    st.sampled_from([0, 0, 1, 100, 1448]),                              # payload
    st.sampled_from([0, 1, 1000, 1448, -1448, 1 << 31, (1 << 32) - 10]),  # sequence step
)


def build(specs):
    out, t, seq = [], 1000.0, {}
    for a, b, proto, dt, fl, pl, step in specs:
        if a == b:
            b = (a + 1) % len(HOSTS)
        (src, sp), (dst, dp) = HOSTS[a], HOSTS[b]
        t = max(0.0, t + dt)
        s = seq[(a, b)] = (seq.get((a, b), 7) + step) & 0xFFFFFFFF
        out.append(dict(src=src, dst=dst, sport=sp, dport=dp, proto=proto, ts=t,
                        flags=fl if proto == 6 else 0, payload=pl, seq=s, wirelen=60 + pl))
    return rows(out)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, min_size=1, max_size=120), st.sampled_from([1, 7, 40, 1000]), st.sampled_from(TIMEOUTS),
       st.sampled_from([0, 0, 1, 2, 3, 5]), st.sampled_from([0, 0, 3, 16]))
def test_random_rows_same_records(specs, chunk, timeouts, capacity, slice_rows):
    """Random rows, both paths, the same records; with a tiny table (`capacity`) too, so
    that batches end over capacity (evictions by class and idleness) and the table goes
    in and out of emergency mode; and with batches fed in slices (`slice_rows`), each
    settled at its end, as a flood's are."""
    ev = build(specs)
    batches = [(ev[i:i + chunk], cut(ev[i:i + chunk]), None) for i in range(0, len(ev), chunk)]
    kw = dict(max_sessions=capacity, slice_rows=slice_rows)
    ref, a = records(batches, timeouts, PER_PACKET, **kw)
    got, b = records(batches, timeouts, BULK, **kw)
    assert got == ref
    assert a.stats == b.stats


def test_cut_times_behind_the_engines_clock():
    """A batch whose cut times lie behind the engine's clock (another capture process's
    batch, an idle tick came first): its advances happen at the clock, so a new session
    whose rows are older splits on every idle gap, in bulk as packet by packet."""
    to = Timeouts.make(idle_timeout=2, active_timeout=300, close_linger=1)
    ahead = rows([dict(src="10.0.0.9", dst="10.0.0.8", sport=1, dport=2, proto=17, ts=1010.0)])
    ts = [1000.0 + 1.5 * i for i in range(7)] + [1010.0]
    late = rows([dict(src="10.0.0.1", dst="10.0.0.2", sport=5000, dport=6000, proto=17, ts=t) for t in ts])
    batches = [(ahead, [[1, 1010.0]], None), (late, [[i + 1, t] for i, t in enumerate(ts)], None)]
    ref, _ = records(batches, to, PER_PACKET)
    got, _ = records(batches, to, BULK)
    assert got == ref and len(ref) == 8          # 7 pieces of the late flow, and the other flow


def front_end_batches(path, chunk, timeouts):
    fe = FrontEnd(1, timeouts)
    r = open_capture(str(path))
    batches = [fe.pack(fe.process(c))[0] for c in r.chunks(chunk)]
    return batches, {v: k for k, v in fe.paths.ids.items()}


def demo_trace(tmp_path):
    frames, _ = tracegen.build(seed=5, sessions=300)
    trace = tmp_path / "demo.pcap"
    tracegen.write_pcap(str(trace), frames)
    return trace


@pytest.mark.parametrize("timeouts", [Timeouts(), SHORT], ids=["default", "short"])
def test_generated_trace_same_records(tmp_path, timeouts):
    trace = demo_trace(tmp_path)
    batches, paths = front_end_batches(trace, 512, timeouts)
    ref, _ = records(batches, timeouts, PER_PACKET, paths)
    got, eng = records(batches, timeouts, BULK, paths)
    assert got == ref and len(ref) > 50


def test_bulk_path_really_runs(tmp_path):
    """The comparison above is worth something only if bulk groups exist: count the rows
    the per-packet path still sees."""
    trace = demo_trace(tmp_path)
    batches, paths = front_end_batches(trace, 256, Timeouts())
    eng = Engine(0, Timeouts(), "t")
    eng.bulk_min = 1
    eng.add_paths(paths)
    seen = []
    real = eng._feed_rows
    eng._feed_rows = lambda ev, idx: (seen.append(len(ev) if idx is None else len(idx)), real(ev, idx))
    total = 0
    for ev, cuts, pay in batches:
        eng.feed_batch(ev, cuts, pay)
        total += len(ev)
    assert sum(seen) < total / 2


def test_inspection_rounds_really_run(tmp_path, monkeypatch):
    """The bulk path feeds a batch's payload rows to the classifier in rounds (a session's
    k-th row in round k, only while it is undecided). The records must be the per-packet
    path's, and some batch must have needed more than one round for that to mean much."""
    trace = demo_trace(tmp_path)
    batches, paths = front_end_batches(trace, 1024, Timeouts())
    rounds = []
    inside = []

    groups, rows_ = inspection.inspect_groups, inspection.inspect_rows

    def counted_groups(*a):
        rounds.append(0)
        inside.append(1)
        try:
            groups(*a)
        finally:
            inside.pop()

    def counted_rows(*a):
        if inside:                   # the rounds of `inspect_groups`, not the per-packet path's calls
            rounds[-1] += 1
        rows_(*a)
    monkeypatch.setattr(inspection, "inspect_groups", counted_groups)
    monkeypatch.setattr(inspection, "inspect_rows", counted_rows)
    got, _ = run_engine(batches, Timeouts(), paths, lambda eng: setattr(eng, "bulk_min", 1))
    monkeypatch.undo()
    ref, _ = records(batches, Timeouts(), PER_PACKET, paths)
    assert sorted(map(repr, got)) == ref
    assert max(rounds) > 1


CLIENT, SERVER = ("10.1.0.1", 50000), ("10.1.0.2", 443)


def tcp_segment(t, up, flags, payload=0):
    """A row spec of one TCP segment between CLIENT and SERVER (`up`: from the client)."""
    (a, pa), (b, pb) = (CLIENT, SERVER) if up else (SERVER, CLIENT)
    return dict(src=a, dst=b, sport=pa, dport=pb, proto=6, ts=t, flags=flags, payload=payload)


def test_many_control_segments_in_one_batch():
    """The bulk path applies a batch's SYN/FIN/RST segments in vectorised rounds, a
    session's k-th in round k, and the ones past its last round one by one. Twelve
    SYNs (retransmitted: the RTT counts from the last), the SYN-ACK, the handshake's
    last ACK, data, FIN both ways and the last ACK, all in one batch, plus a session
    that is reset: the records must be the per-packet path's, with the RTT and close
    worked out by hand."""
    seg = tcp_segment
    specs = [seg(100.0 + 0.5 * i, True, SYN) for i in range(12)]
    specs += [seg(106.0, False, SYN | ACK), seg(106.25, True, ACK), seg(106.5, True, ACK | PSH, 100),
              seg(107.0, True, FIN | ACK), seg(107.5, False, FIN | ACK), seg(107.75, True, ACK)]
    specs += [dict(seg(101.0 + i, True, f), sport=50001) for i, f in enumerate((SYN, RST))]
    specs.sort(key=lambda d: d["ts"])
    ev = rows(specs)
    batches = [(ev, [[len(ev), 120.0]], None)]             # both past their close linger by then
    to = Timeouts()
    ref, _ = records(batches, to, PER_PACKET)
    got, _ = records(batches, to, BULK)
    assert got == ref
    out, _ = run_engine(batches, to, None, lambda e: setattr(e, "bulk_min", 1))
    from contracts.record import INDEX
    by_port = {r[INDEX["client_port"]]: r for r in out}
    assert by_port[50000][INDEX["rtt"]] == 0.75          # the handshake's ACK (106.25) - the last SYN (105.5)
    assert [by_port[p][INDEX["end_reason"]] for p in (50000, 50001)] == ["closed", "closed"]


def test_handshake_ack_after_the_clients_own_syn_ack():
    """Simultaneous open: the client answers the server's SYN-ACK with a SYN-ACK of its
    own, then the ACK that completes the handshake. The RTT counts to that ACK (2.0 s),
    on the bulk path as packet by packet: a SYN-ACK is no handshake ACK."""
    seg = tcp_segment
    ev = rows([seg(100.0, True, SYN), seg(101.0, False, SYN | ACK), seg(101.5, True, SYN | ACK),
               seg(102.0, True, ACK)])
    from contracts.record import INDEX
    for bulk_min in (PER_PACKET, BULK):
        out, _ = run_engine([(ev, [[len(ev), 102.0]], None)], Timeouts(), None,
                            lambda e, b=bulk_min: setattr(e, "bulk_min", b))
        assert [r[INDEX["rtt"]] for r in out] == [2.0]


class _Starts:
    """A plugin that notes each session as it starts: its id, counters and TCP state."""

    def __init__(self):
        self.seen = []

    def on_start(self, s):
        self.seen.append((s.id, list(s.c), s.tcp))

    def on_expire(self, s):
        pass


def test_plugins_see_new_sessions_before_their_first_packet(tmp_path):
    """`on_start` sees a session before its first packet is counted, on both paths (the
    bulk path opens a batch's new sessions together, with their counters)."""
    from workers.plugins import _Adapter
    trace = demo_trace(tmp_path)
    batches, paths = front_end_batches(trace, 512, Timeouts())
    seen = {}
    for name, bulk_min in (("ref", PER_PACKET), ("bulk", BULK)):
        p = _Starts()
        records(batches, Timeouts(), bulk_min, paths, plugins=[_Adapter(p)])
        seen[name] = p.seen
    assert len(seen["ref"]) > 50
    assert sorted(seen["bulk"]) == sorted(seen["ref"])
    assert all(c == [0] * N_COUNTERS and st is None for _, c, st in seen["bulk"])


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("path", all_captures(), ids=capture_ids(all_captures()))
def test_shared_capture_same_records(path):
    for chunk, timeouts in ((256, Timeouts()), (4096, SHORT)):
        try:
            batches, paths = front_end_batches(path, chunk, timeouts)
        except CaptureError as e:
            pytest.skip(f"not a capture the reader takes: {e}")
        ref, _ = records(batches, timeouts, PER_PACKET, paths)
        got, _ = records(batches, timeouts, BULK, paths)
        assert got == ref


def test_running_max_per_group():
    """`rounds.running_max` against a brute force, time in order (its shortcut) and not."""
    from workers.rounds import running_max
    rng = np.random.default_rng(3)
    for trial in range(500):
        n = int(rng.integers(1, 40))
        gs = np.sort(rng.integers(0, 5, n))
        tss = rng.integers(0, 6, n).astype(float)
        if trial % 2:
            tss = np.sort(tss)
        exp = [max(tss[j] for j in range(i + 1) if gs[j] == gs[i]) for i in range(n)]
        assert running_max(tss, gs).tolist() == exp


@pytest.mark.parametrize("timeouts", TIMEOUTS + [Timeouts(tcp=2.5, udp=60, icmp=60, other=60, dns=15)])
def test_idle_many_is_idle_for(timeouts):
    """The bulk path decides its new sessions' idle timeouts a column at a time (Timeouts
    given whole seconds as ints too)."""
    proto = np.array([6, 17, 17, 17, 1, 58, 132, 47, 6, 0], np.uint8)
    sport = np.array([53, 53, 1000, 5353, 0, 0, 53, 0, 80, 0], np.uint16)
    dport = np.array([80, 1000, 53, 53, 0, 0, 9, 0, 53, 0], np.uint16)
    want = [timeouts.idle_for(p, s, d) for p, s, d in zip(proto.tolist(), sport.tolist(), dport.tolist())]
    assert timeouts.idle_many(proto, sport, dport).tolist() == want
    assert len(set(want)) > 1 or timeouts.tcp == timeouts.udp == timeouts.dns
    ev = build([(0, 1, p, 0.5, 0, 10, 1) for p in (6, 17)] * 40)
    batches = [(ev, cut(ev), None)]
    assert records(batches, timeouts, BULK)[0] == records(batches, timeouts, PER_PACKET)[0]


def test_wheel_file_new_is_file():
    """A batch's new sessions are filed in the expiry wheel at once (`Wheel.file_new`):
    the same buckets, each in the same order, as filing them one by one."""
    from workers.expiry import Wheel
    from tests.rows import session
    rng = np.random.default_rng(7)
    whens = np.r_[rng.uniform(-5.0, 50.0, 300).round(1), [1e16, float("inf"), -0.5, 0.0, 9e15, 3.999]]
    made = [[session(i) for i in range(len(whens))] for _ in range(2)]
    one, many = Wheel(), Wheel()
    for s, w in zip(made[0], whens.tolist()):
        one.file(s, w)
    many.file_new(made[1], whens)
    assert sorted(one.heap) == sorted(many.heap) and len(one.buckets) > 40
    assert {k: [s.id for s in b] for k, b in one.buckets.items()} == \
        {k: [s.id for s in b] for k, b in many.buckets.items()}
    assert [s.slot for s in made[0]] == [s.slot for s in made[1]]
    assert [s.id for s in one.due(20.0)] == [s.id for s in many.due(20.0)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 9), min_size=1, max_size=12), st.integers(1, 12))
def test_slices_cover_the_batch_and_keep_its_cuts(steps, size):
    """`slices`: contiguous, none longer than `size`, and the batch's cuts all there, in
    place and with their times; the only other cuts are `NO_ADVANCE` ones."""
    from contracts.wire import NO_ADVANCE
    from workers.engine import slices
    ends = np.cumsum(steps).tolist()
    cuts = [[e, float(i)] for i, e in enumerate(ends)]
    got = list(slices(cuts, size))
    assert [lo for lo, _, _ in got] == [0] + [hi for _, hi, _ in got][:-1]
    assert got[-1][1] == ends[-1]
    seen = []
    for lo, hi, part in got:
        assert hi - lo <= size and part[-1][0] == hi - lo
        seen += [[lo + e, t] for e, t in part if t != NO_ADVANCE]
    assert seen == cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, min_size=1, max_size=120), st.sampled_from([1, 3, 10, 50]), st.sampled_from(TIMEOUTS))
def test_a_batch_in_slices_gives_the_same_records(specs, size, timeouts):
    """Without a capacity, a batch fed in slices (`Engine.slice_rows`, and
    `slice_always`: no table to fill; records handed to the sink between slices)
    writes the same records as whole (in an order that may differ inside one advance,
    as between the two paths: `records`)."""
    ev = build(specs)
    batches = [(ev, cut(ev), None)]
    ref, _ = run_engine(batches, timeouts, None, lambda e: setattr(e, "bulk_min", BULK))
    sunk = []

    def setup(e):
        e.bulk_min, e.slice_rows, e.slice_always, e.sink = BULK, size, True, sunk.extend
    got, eng = run_engine(batches, timeouts, None, setup)
    assert sorted(map(repr, sunk + got)) == sorted(map(repr, ref))
    assert eng.stats["events"] == len(ev)
