"""TCP state in isolation: handshake RTT, close, retransmissions."""
from workers import tcp
from workers.tcp import ACK, FIN, RST, SYN, TcpState


def test_rtt_from_syn_to_completing_ack():
    st = TcpState()
    tcp.update(st, 0, True, SYN, 100, 0, 10.0)
    tcp.update(st, 1, False, SYN | ACK, 500, 0, 10.02)
    tcp.update(st, 0, True, ACK, 101, 0, 10.05)
    assert abs(st.rtt - 0.05) < 1e-9


def test_rtt_counts_from_last_retransmitted_syn():
    st = TcpState()
    tcp.update(st, 0, True, SYN, 100, 0, 10.0)
    tcp.update(st, 0, True, SYN, 100, 0, 11.0)
    tcp.update(st, 1, False, SYN | ACK, 500, 0, 11.01)
    tcp.update(st, 0, True, ACK, 101, 0, 11.02)
    assert abs(st.rtt - 0.02) < 1e-9


def test_no_rtt_without_syn():
    st = TcpState()
    tcp.update(st, 1, False, SYN | ACK, 500, 0, 1.0)
    tcp.update(st, 0, True, ACK, 101, 0, 1.1)
    assert st.rtt is None


def test_fin_both_ways_closes_rst_closes():
    st = TcpState()
    assert not tcp.update(st, 0, True, FIN | ACK, 1, 0, 1.0)
    assert not tcp.update(st, 0, True, FIN | ACK, 1, 0, 1.1)   # same side again: still half closed
    assert tcp.update(st, 1, False, FIN | ACK, 1, 0, 1.2)
    assert st.closed
    st2 = TcpState()
    assert tcp.update(st2, 1, False, RST, 1, 0, 1.0) and st2.closed


def test_retransmission_is_a_range_already_seen():
    st = TcpState()
    tcp.update(st, 0, True, ACK, 1000, 100, 1.0)
    tcp.update(st, 0, True, ACK, 1100, 100, 1.1)
    tcp.update(st, 0, True, ACK, 1000, 100, 1.2)   # retransmitted
    tcp.update(st, 0, True, ACK, 1050, 50, 1.3)    # inside what was seen
    tcp.update(st, 0, True, ACK, 1150, 100, 1.4)   # partly new: not a retransmission
    tcp.update(st, 1, False, ACK, 1000, 100, 1.5)  # other direction has its own space
    assert st.retrans == 2


def test_retransmission_across_sequence_wrap():
    st = TcpState()
    tcp.update(st, 0, True, ACK, 0xFFFFFF00, 0x200, 1.0)   # wraps past 2**32
    tcp.update(st, 0, True, ACK, 0x00000050, 0x50, 1.1)    # inside the wrapped range
    assert st.retrans == 1


# -- the vectorised rules (the batch path) against the one-segment ones ------------------
import copy  # noqa: E402

import numpy as np  # noqa: E402
from hypothesis import example, given, settings, strategies as st  # noqa: E402

PSH = 0x08
FLAGS = [0, SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, FIN, RST, RST | ACK, SYN | FIN, PSH]
TIMES = [0.0, 0.5, 1.0, 1.0, 2.5, 7.0, -3.0, float("inf"), float("-inf")]

segment = st.tuples(st.integers(0, 3), st.integers(0, 1), st.sampled_from(FLAGS), st.sampled_from(TIMES))
NO_PREFIX, CLIENT_0 = [[], [], [], []], [0, 0, 0, 1]
# a handshake, a simultaneous open, and a session closing after more than ROUNDS segments
HANDSHAKES = [(0, 0, SYN, 1.0), (0, 1, SYN | ACK, 2.0), (0, 1, ACK, 2.2), (0, 0, ACK | PSH, 2.5),
              (1, 0, SYN, 1.0), (1, 1, SYN | ACK, 2.0), (1, 0, SYN | ACK, 2.5), (1, 0, ACK, 3.0)]
LATE_CLOSE = [(2, 0, SYN, float(i)) for i in range(12)] + [(2, 1, SYN | ACK, 13.0), (2, 0, ACK, 14.0),
                                                           (2, 0, FIN | ACK, 15.0), (2, 1, FIN | ACK, 16.0)]


def _fields(s):
    return (s.hs, s.syn_ts, s.rtt, s.close, s.flags, s.lo0, s.hi0, s.lo1, s.hi1, s.retrans)


def _states(prefixes, client_dirs):
    """A TcpState per session, brought to a random state by `control` (the realistic ones)."""
    out = []
    for segs, cd in zip(prefixes, client_dirs):
        s = TcpState()
        for d, f, t in segs:
            tcp.control(s, d, d == cd, f, t)
        out.append(s)
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 1), st.sampled_from(FLAGS), st.sampled_from(TIMES)), max_size=4),
                min_size=4, max_size=4),
       st.lists(st.integers(0, 1), min_size=4, max_size=4), st.lists(segment, max_size=60))
@example(NO_PREFIX, CLIENT_0, HANDSHAKES + LATE_CLOSE)
def test_control_many_is_control_one_by_one(prefixes, client_dirs, segments):
    """Segments of four sessions, some with more than `tcp.ROUNDS` (the rest go one by
    one), from random start states: the same states and the same closing segments."""
    ref = _states(prefixes, client_dirs)
    got = copy.deepcopy(ref)
    closed = [i for i, (u, d, f, t) in enumerate(segments) if tcp.control(ref[u], d, d == client_dirs[u], f, t)]
    cols = [np.array(c, dt) for c, dt in zip(zip(*segments), (np.intp, np.uint8, np.uint8, np.float64))] \
        if segments else [np.zeros(0, dt) for dt in (np.intp, np.uint8, np.uint8, np.float64)]
    u, d, f, t = cols
    for uu, ff in zip(u.tolist(), f.tolist()):
        got[uu].flags |= ff                                    # the caller's part
    assert tcp.control_many(got, np.array(client_dirs, np.int8), u, d, f, t) == closed
    assert [_fields(s) for s in got] == [_fields(s) for s in ref]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 1), st.sampled_from(FLAGS), st.sampled_from(TIMES)), max_size=4),
                min_size=4, max_size=4),
       st.lists(st.integers(0, 1), min_size=4, max_size=4), st.lists(segment, max_size=40),
       st.lists(st.booleans(), min_size=4, max_size=4))
@example(NO_PREFIX, CLIENT_0, HANDSHAKES + LATE_CLOSE, [True] * 4)
def test_control_segments_are_all_that_change_state(prefixes, client_dirs, segments, chosen):
    """Every segment through `control`, or the flags of all and `control_many` over only
    the ones `control_segments` picks: the same states. Not from a state waiting for the
    handshake's last ACK (a SYN-ACK in an earlier batch): the batch path leaves such a
    session to the per-packet path."""
    ref = _states(prefixes, client_dirs)
    for s in ref:
        if s.hs == tcp.HS_SYNACK:
            s.hs = tcp.HS_SYN
    got = copy.deepcopy(ref)
    segments = sorted(segments, key=lambda x: x[0])            # grouped order, frame order inside a group
    for u, d, f, t in segments:
        if chosen[u]:
            tcp.control(ref[u], d, d == client_dirs[u], f, t)
    if not segments:
        return
    gs, ds, fs, ts = (np.array(c, dt) for c, dt in zip(zip(*segments), (np.intp, np.uint8, np.uint8, np.float64)))
    pick = tcp.control_segments(gs, ds, fs, np.array(chosen)[gs])
    for u, d, f, t, p in zip(gs.tolist(), ds.tolist(), fs.tolist(), ts.tolist(), pick.tolist()):
        if chosen[u]:
            got[u].flags |= f
    tcp.control_many(got, np.array(client_dirs, np.int8), gs[pick], ds[pick], fs[pick], ts[pick])
    assert [_fields(s) for s in got] == [_fields(s) for s in ref]
    assert not (pick & ~np.array(chosen)[gs]).any()


STEPS = [0, 1, 100, 1448, -1448, -100, 1 << 31, (1 << 31) + 5, (1 << 30) - 10, (1 << 32) - 10, 3 << 29]
data_segment = st.tuples(st.integers(0, 3), st.integers(0, 1), st.sampled_from(STEPS), st.sampled_from([1, 50, 100, 1448]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 1), st.sampled_from(STEPS), st.sampled_from([1, 100, 1448])),
                         max_size=3), min_size=4, max_size=4),
       st.lists(data_segment, max_size=60), st.integers(0, (1 << 32) - 1))
def test_data_many_is_data_one_by_one(prefixes, segments, start):
    """Data segments of four sessions from random start states, sequence numbers that wrap,
    step back, or jump by 2^30 and 2^31 (out of the window: segment by segment): the same
    ranges and retransmission counts."""
    seq = {}
    ref = []
    for segs in prefixes:
        s = TcpState()
        for d, step, n in segs:
            q = seq[(len(ref), d)] = (seq.get((len(ref), d), start) + step) & tcp.MASK
            tcp.data(s, d, q, n)
        ref.append(s)
    got = copy.deepcopy(ref)
    rows = []
    for u, d, step, n in segments:
        q = seq[(u, d)] = (seq.get((u, d), start) + step) & tcp.MASK
        tcp.data(ref[u], d, q, n)
        rows.append((u, d, q, n))
    if rows:
        u, d, q, n = (np.array(c, dt) for c, dt in zip(zip(*rows), (np.intp, np.uint8, np.uint32, np.uint32)))
        tcp.data_many(got, u, d, q, n)
    assert [_fields(s) for s in got] == [_fields(s) for s in ref]


def test_the_state_tables_are_the_rules():
    """The numpy lookups hold HANDSHAKE and CLOSE, and nothing else."""
    assert {(a, e): int(tcp.HS_NEXT[a, e]) for a in range(4) for e in range(3) if tcp.HS_NEXT[a, e] >= 0} == \
        tcp.HANDSHAKE
    assert {k: int(tcp.CLOSE_NEXT[k]) for k in tcp.CLOSE} == tcp.CLOSE
