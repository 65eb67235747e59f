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
import pytest  # noqa: E402
from hypothesis import example, given, settings, strategies as st  # noqa: E402

PSH = 0x08
FLAGS = [0, SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, FIN, RST, RST | ACK, SYN | FIN, PSH]
TIMES = [0.0, 0.5, 1.0, 1.0, 2.5, 7.0, -3.0, float("inf"), float("-inf")]

segment = st.tuples(st.integers(0, 3), st.integers(0, 1), st.sampled_from(FLAGS), st.sampled_from(TIMES),
                    st.booleans())     # the last: its peer had sent nothing before it
NO_PREFIX, CLIENT_0 = [[], [], [], []], [0, 0, 0, 1]
# a handshake, a simultaneous open, and a session closing after more than ROUNDS segments
HANDSHAKES = [(0, 0, SYN, 1.0, False), (0, 1, SYN | ACK, 2.0, False), (0, 1, ACK, 2.2, False),
              (0, 0, ACK | PSH, 2.5, False), (1, 0, SYN, 1.0, True), (1, 1, SYN | ACK, 2.0, False),
              (1, 0, SYN | ACK, 2.5, False), (1, 0, ACK, 3.0, False)]
LATE_CLOSE = [(2, 0, SYN, float(i), True) for i in range(12)] + [
    (2, 1, SYN | ACK, 13.0, False), (2, 0, ACK, 14.0, False), (2, 0, FIN | ACK, 15.0, False),
    (2, 1, FIN | ACK, 16.0, False), (3, 1, FIN | ACK, 17.0, True)]      # a FIN while the peer is silent


def _fields(s):
    return (s.hs, s.syn_ts, s.rtt, s.close, s.flags, s.lo0, s.hi0, s.lo1, s.hi1, s.retrans, s.rt1, s.gap, s.hist,
            s.banked, tcp.seq_bytes(s, 0), tcp.seq_bytes(s, 1))


def _states(prefixes, client_dirs):
    """A TcpState per session, brought to a random state by `control` (the realistic ones)."""
    out = []
    for segs, cd in zip(prefixes, client_dirs):
        s = TcpState()
        for d, f, t in segs:
            tcp.control(s, d, d == cd, f, t, f == FIN)
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
    closed = [i for i, (u, d, f, t, q) in enumerate(segments)
              if tcp.control(ref[u], d, d == client_dirs[u], f, t, q)]
    types = (np.intp, np.uint8, np.uint8, np.float64, bool)
    cols = [np.array(c, dt) for c, dt in zip(zip(*segments), types)] if segments else \
        [np.zeros(0, dt) for dt in types]
    u, d, f, t, q = cols
    for uu, ff in zip(u.tolist(), f.tolist()):
        got[uu].flags |= ff                                    # the caller's part
    assert tcp.control_many(got, np.array(client_dirs, np.int8), u, d, f, t, q) == closed
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
    segments = sorted([x[:4] for x in segments], key=lambda x: x[0])   # grouped order, frame order inside a group
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
    scaled = []
    for u, d, step, n in segments:
        q = seq[(u, d)] = (seq.get((u, d), start) + step) & tcp.MASK
        if tcp.data(ref[u], d, q, n):
            scaled.append(len(rows))
        rows.append((u, d, q, n))
    if rows:
        u, d, q, n = (np.array(c, dt) for c, dt in zip(zip(*rows), (np.intp, np.uint8, np.uint32, np.uint32)))
        assert tcp.data_many(got, u, d, q, n).tolist() == scaled
    assert [_fields(s) for s in got] == [_fields(s) for s in ref]


def test_the_state_tables_are_the_rules():
    """The numpy lookups hold HANDSHAKE and CLOSE, and nothing else."""
    assert {(a, e): int(tcp.HS_NEXT[a, e]) for a in range(4) for e in range(3) if tcp.HS_NEXT[a, e] >= 0} == \
        tcp.HANDSHAKE
    assert {k: int(tcp.CLOSE_NEXT[k]) for k in tcp.CLOSE} == tcp.CLOSE


# -- sequence space, gaps, history, conn_state -------------------------------------------------

def test_sequence_space_gaps_and_scaled_retransmissions():
    """Each direction's sequence space, worked out by hand: new bytes and jumped gaps count,
    retransmissions add nothing (T at a direction's 1st and 10th), bytes before the lowest
    seq count; across the 2^32 wrap and past 2 GiB a side (the range starts again: what
    left it is banked) the sum goes on."""
    s = TcpState()
    assert not tcp.data(s, 0, 1000, 100) and not tcp.data(s, 0, 1100, 100)
    assert tcp.seq_bytes(s, 0) == 200
    assert tcp.data(s, 0, 1000, 100)                                  # the 1st retransmission
    assert [tcp.data(s, 0, 1050, 50) for _ in range(9)] == [False] * 8 + [True]   # the 10th
    assert not tcp.data(s, 1, 7, 10) and tcp.data(s, 1, 7, 10)        # direction 1: its own 1st
    assert (s.retrans, s.rt1, tcp.seq_bytes(s, 0), tcp.seq_bytes(s, 1)) == (11, 1, 200, 10)
    tcp.data(s, 0, 1300, 100)
    assert (tcp.seq_bytes(s, 0), s.gap) == (400, 100)                 # 1200-1300 never seen
    tcp.data(s, 0, 900, 50)
    assert (tcp.seq_bytes(s, 0), s.gap, s.lo0, s.hi0) == (500, 100, 900, 1400)   # 900-1000: before the lowest
    w = TcpState()                                                    # across the 2^32 wrap
    tcp.data(w, 0, 0xFFFFFF00, 0x100)
    tcp.data(w, 0, 0x40, 0x10)
    assert (tcp.seq_bytes(w, 0), w.gap) == (0x150, 0x40)
    big = TcpState()                                                  # 3 GiB one way, 64 KiB segments
    for k in range(3 << 14):
        tcp.data(big, 1, (5 + (k << 16)) & tcp.MASK, 1 << 16)
    assert (tcp.seq_bytes(big, 1), big.retrans, big.gap) == (3 << 30, 0, 0)


def test_history_of_a_whole_connection():
    """Zeek's letters for a handshake, data both ways and a close from both sides, direction
    0 the client: ShADadFf; a retransmission of each side adds T and t."""
    s = TcpState()
    for d, f, seq, n in [(0, SYN, 100, 0), (1, SYN | ACK, 500, 0), (0, ACK, 101, 0), (0, ACK | PSH, 101, 10),
                         (1, ACK, 501, 0), (1, ACK | PSH, 501, 20), (0, ACK | PSH, 101, 10), (1, ACK | PSH, 501, 20),
                         (0, ACK, 111, 0), (1, ACK | PSH, 521, 5), (0, FIN | ACK, 111, 0), (1, FIN | ACK, 526, 0)]:
        tcp.update(s, d, d == 0, f, seq, n, 1.0)
    assert tcp.history_text(s.hist) == "ShADadTtFf"
    assert tcp.conn_state("ShADadTtFf") == "SF"


def test_history_letters_of_odd_segments():
    """I (FIN+RST), Q (SYN with FIN), a flagless segment adds nothing, PSH with data is D,
    and each kind once per direction (S and H one kind)."""
    s = TcpState()
    for d, f, q, n in [(0, 0, 1, 5), (0, FIN | RST, 1, 0), (1, SYN | FIN, 1, 0), (0, SYN, 1, 0), (0, SYN | ACK, 1, 0),
                       (1, PSH, 1, 3), (1, PSH, 4, 3), (0, RST, 1, 0), (1, PSH, 4, 3)]:
        tcp.update(s, d, d == 0, f, q, n, 1.0)
    assert tcp.history_text(s.hist) == "IqSdRt"                     # the last: a retransmission


def test_note_many_is_note_one_by_one():
    """The batch path's `note_many` keeps what the per-packet check before `note` keeps: the
    first entry of each kind a state has not seen, every T, in order; more than an int64's
    worth of entries at once too."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        states = [TcpState() for _ in range(4)]
        for st_ in states:
            for e in rng.integers(0, 32, rng.integers(0, 5)).tolist():
                if e & 15 and e & 15 <= tcp.L_T and (e & 15 == tcp.L_T or not st_.hist & tcp.ENTRY_BIT[e]):
                    tcp.note(st_, e)
        got = copy.deepcopy(states)
        events = sorted((int(u), int(k), int(e)) for k, (u, e) in enumerate(
            zip(rng.integers(0, 4, 40), rng.choice([x for x in range(32) if x & 15 and x & 15 <= tcp.L_T], 40))))
        for u, _, e in events:
            if tcp.ENTRY_BIT[e] == 0 or not states[u].hist & tcp.ENTRY_BIT[e]:
                tcp.note(states[u], e)
        tcp.note_many(got, np.array([u for u, _, _ in events], np.intp), np.array([e for _, _, e in events], np.int64))
        assert [s.hist for s in got] == [s.hist for s in states]


@pytest.mark.parametrize("history,state", [
    # Zeek's baselines (testing/btest/Baseline: conn_state-RST-behavior, core.connection_flipped, ...) and
    # the research table (zeek_semantics.md 2.3)
    ("ShADadFf", "SF"), ("S", "S0"), ("SAD", "S0"), ("Sr", "REJ"), ("SR", "RSTOS0"), ("SaR", "RSTOS0"),
    ("SaFR", "OTH"), ("R", "OTH"), ("Hs^ADadFf", "SF"), ("ShI", "RSTO"), ("ShADadR", "RSTO"),
    ("ShADadr", "RSTR"), ("^r", "RSTRH"), ("^fA", "SHR"), ("Fa", "SH"), ("Q", "SH"), ("DdF", "SH"),
    ("FfA", "SF"), ("Dd", "OTH"), ("H", "OTH"), ("ShADadf", "S3"), ("ShADadF", "S2"), ("Sh", "S1"),
    ("^hAD", "S1"), ("ShADdtaTTtFf", "SF"), ("ShAdDaGg", "S1")])
def test_conn_state_from_history(history, state):
    assert tcp.conn_state(history.replace("G", "").replace("g", "")) == state


def test_kinds_possible_is_every_kind_a_segment_within_the_or_brings():
    """`tcp.KINDS_POSSIBLE` (made with numpy) against its definition, segment by segment:
    every flags byte within the OR, with payload only where some segment has data."""
    for i in range(512):
        f, data = i & 0xFF, i >> 8
        want = 0
        for flags in range(256):
            if flags & f == flags:
                for p in range(data + 1):
                    want |= tcp._KIND.get(tcp.letter(flags, p), 0)
        assert int(tcp.KINDS_POSSIBLE[i]) == want, i
