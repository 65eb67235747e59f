"""The batch plan's time rule (`plan.room` + `plan.outlasts`) against packet by packet.

`outlasts` claims, from a batch's cuts and a session's rows, that no advance of
the batch can end the session before its last row (after it, both paths hold
the same session: workers/plan.py), and that no gap after its first FIN/RST
splits it. Here a brute force walks the same rows and advances one at a time
with the idle rule (`contracts.timeouts.is_idle`) and the plan's own model of
the close (the linger from the first FIN/RST on): wherever the plan says
"outlasts", the walk must find no end and no split. Whether a group then takes
the batch path, and gives the per-packet path's records, is
tests/test_engine_bulk.py's question.
"""
import numpy as np
from hypothesis import example, given, settings, strategies as st

from contracts.timeouts import is_idle
from workers import plan
from workers.groups import Groups
from workers.tcp import ACK, FIN, RST, SYN
from tests.rows import rows

STEPS = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, -0.5, -2.0]
FLAGS = [ACK, ACK, ACK, SYN, FIN | ACK, RST]


def walk(ts, flags, cuts, clock, timeout, linger, closing):
    """Packet by packet: whether an advance ends the session before its last row, or a gap
    after its first FIN/RST splits it."""
    m = len(ts)
    nows = np.maximum.accumulate(np.maximum([t for _, t in cuts], clock)).tolist()
    fin = next((i for i, f in enumerate(flags) if f & (FIN | RST)), None) if closing else None
    lt = min(timeout, linger)
    last = float("-inf")
    for i in range(m + 1):
        t_now = lt if fin is not None and i - 1 >= fin else timeout
        if 0 < i < m:
            for (end, _), now in zip(cuts, nows):
                if end == i and is_idle(now, last, t_now):
                    return False
        if i < m:
            if fin is not None and i > fin and is_idle(ts[i], last, lt):
                return False
            last = max(last, ts[i])
    return True


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STEPS), st.sampled_from(FLAGS)), min_size=1, max_size=25),
       st.lists(st.integers(0, 25), max_size=6), st.sampled_from([0.0, -3.0, 0.5, 1.0, 4.0]),
       st.sampled_from([1.0, 2.0, 3.0]), st.sampled_from([0.5, 1.0, 5.0]), st.booleans())
@example([(0.0, FIN | ACK), (0.25, ACK), (0.25, ACK)], [1, 2], 1.0, 2.0, 0.5, True)   # the linger ends it mid-batch
def test_outlasts_means_no_advance_ends_it(steps, cut_at, ahead, timeout, linger, close_expiry):
    t, ts, flags = 100.0, [], []
    for dt, f in steps:
        t += dt
        ts.append(t)
        flags.append(f)
    m = len(ts)
    run = np.maximum.accumulate(ts)
    ends = sorted({min(e, m) for e in cut_at} | {m})
    cuts = [[e, float(run[e - 1]) if e else 99.0] for e in ends]        # as the front-end cuts: running max
    clock = 100.0 + ahead                                               # the engine's time before the batch
    ev = rows([dict(src="10.0.0.1", dst="10.0.0.2", sport=1000, dport=80, proto=6, ts=x, flags=f)
               for x, f in zip(ts, flags)])
    g = Groups(ev, False)
    r = plan.room(g, cuts, clock)
    closing = ((g.flags_or & (FIN | RST)) != 0) & close_expiry
    says = bool(plan.outlasts(np.array([timeout]), linger, closing, r)[0])
    if says:
        assert walk(ts, flags, cuts, clock, timeout, linger, bool(closing[0]))


def test_the_walk_can_say_no():
    """The brute force is not a yes-machine: with the engine's clock ahead (another
    capture process's batch came first), the advance after the first row ends the
    session; a row after a FIN as late as the linger splits it."""
    assert not walk([100.0, 101.5], [ACK, ACK], [[1, 100.0], [2, 101.5]], 102.5, 2.0, 1.0, False)
    assert walk([100.0, 101.5], [ACK, ACK], [[1, 100.0], [2, 101.5]], 101.0, 2.0, 1.0, False)
    assert not walk([100.0, 100.5, 101.5], [ACK, FIN, ACK], [[3, 101.5]], 100.0, 2.0, 1.0, True)
