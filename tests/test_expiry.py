"""The expiry wheel drops the entries of ended sessions (`Wheel.compact`) without
changing what it returns: a live session's old entry stays, since the session may be
filed in that second again and the entry then counts, in its place."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from workers.engine import Engine
from workers.expiry import Wheel
from workers.tcp import ACK, FIN, SYN
from contracts.timeouts import Timeouts
from tests.rows import rows, run_engine, session
from tests.test_engine_bulk import TIMEOUTS, build, cut, demo_trace, front_end_batches, packet

NEVER = 1 << 60


def _session(i):
    return session(i)


class Counting(Wheel):
    __slots__ = ("compactions",)

    def compact(self):
        self.compactions = getattr(self, "compactions", 0) + 1
        super().compact()
        assert not any(s.ended for b in self.buckets.values() for s in b)


def _compacting(m):
    """An engine set-up: its wheel compacts from m entries on (0: at every chance)."""
    def setup(eng):
        eng.wheel.compact_min = eng.wheel.limit = m
    return setup


def _ids(sessions):
    """The sessions' numbers (`_session(i)`: frame i)."""
    return [s.id >> 8 if s is not None else None for s in sessions]


def test_a_live_sessions_old_entry_counts_again_in_its_place():
    """Filed in second 300, moved to 5, filed in 300 again: its first entry (before b's)
    is where it comes due. Compacting in between must keep that entry."""
    for w in (Wheel(compact_min=NEVER), Wheel(compact_min=0)):
        a, b = _session(1), _session(2)
        w.file(a, 300.5)
        w.file(b, 300.2)
        w.file(a, 5.0)
        w.compact()
        w.file(a, 300.9)
        assert _ids(w.due(300)) == [1, 2]


@pytest.mark.parametrize("seed", range(20))
def test_compacting_changes_nothing_the_wheel_returns(seed):
    """The same random filings, ends, evictions and expiries on a wheel that compacts at
    every chance and on one that never does. As in the engine, a session that comes due
    is ended or filed again, and few sessions over a few seconds meet their old entries.
    The same sessions come due in the same order, the same neighbours; after
    each compaction no ended session is left."""
    rng = np.random.default_rng(seed)
    n = 50
    made = [[_session(i) for i in range(n)] for _ in range(2)]
    eager, never = Counting(compact_min=0), Wheel(compact_min=NEVER)
    now = 0

    def end(i):
        for ss in made:
            ss[i].ended = True

    for _ in range(3000):
        op = int(rng.integers(0, 13))
        i = int(rng.integers(0, n))
        if op < 6:                                  # file, or file again (a live session)
            if made[0][i].ended:
                continue
            when = now + float(rng.uniform(0, 8))
            for w, ss in ((eager, made[0]), (never, made[1])):
                w.file(ss[i], when)
        elif op < 7:                                # the session ends (a close, an eviction)
            end(i)
        elif op < 9:                                # time passes: each due one ends or is filed again
            now += int(rng.integers(0, 3))
            got = [_ids(w.due(now)) for w in (eager, never)]
            assert got[0] == got[1]
            for j in got[0]:
                if rng.random() < 0.3:
                    end(j)
                else:
                    when = now + float(rng.uniform(0, 8))
                    for w, ss in ((eager, made[0]), (never, made[1])):
                        w.file(ss[j], when)
        elif op < 10:                               # a compaction now, whatever the count
            eager.compact()
        else:
            for step in (1, -1):
                assert _ids([eager.neighbour(made[0][i], step)]) == _ids([never.neighbour(made[1][i], step)])
        if all(s.ended for s in made[0]):              # all gone: start over with fresh sessions
            made = [[_session(i) for i in range(n)] for _ in range(2)]
        assert eager.entries == sum(map(len, eager.buckets.values())) <= eager.limit
    assert eager.compactions > 100                     # it really compacted, often


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, min_size=1, max_size=120), st.sampled_from([1, 7, 40, 1000]), st.sampled_from(TIMEOUTS),
       st.sampled_from([0, 2, 3]))
def test_random_rows_same_records_compacting_or_not(specs, chunk, timeouts, max_sessions):
    """Random rows (few endpoints, idle gaps, closes, reopens; a tiny table so that the
    oldest session is evicted): the same records with a wheel that compacts at every
    chance and with one that never does."""
    ev = build(specs)
    batches = [(ev[i:i + chunk], cut(ev[i:i + chunk]), None) for i in range(0, len(ev), chunk)]
    out = [run_engine(batches, timeouts, setup=_compacting(m), max_sessions=max_sessions)[0] for m in (0, NEVER)]
    assert out[0] == out[1]


def test_the_generated_trace_same_records_compacting_or_not(tmp_path):
    batches, paths = front_end_batches(demo_trace(tmp_path), 256, Timeouts())
    out = [run_engine(batches, Timeouts(), paths, setup=_compacting(m))[0] for m in (0, NEVER)]
    assert out[0] == out[1]


def _short_tcp_sessions(n, every=0.05):
    """n TCP sessions, one every `every` seconds, each SYN, SYN-ACK, then FIN both ways."""
    specs = []
    for i in range(n):
        t, cli = 1000.0 + i * every, f"10.1.{i // 250}.{i % 250 + 1}"
        for dt, up, fl in ((0, True, SYN), (0.001, False, SYN | ACK), (0.002, True, FIN | ACK),
                           (0.003, False, FIN | ACK)):
            a, b = (cli, "10.9.9.9") if up else ("10.9.9.9", cli)
            specs.append(dict(src=a, dst=b, sport=40000 if up else 443, dport=443 if up else 40000,
                              ts=t + dt, flags=fl))
    return rows(specs)


def test_closed_sessions_do_not_pile_up_in_the_wheel():
    """2,000 short TCP sessions over 100 s, TCP's idle timeout: each is filed at its idle
    deadline (300 s; the unanswered timeout set as long, as they open unanswered), then at
    its close linger (5 s), and ends there, before its first entry comes due. Without compaction the wheel ends up holding ~1,900 ended sessions;
    with it, no more than about twice its live entries (~100 sessions lingering at a
    time, two entries each) and compact_min."""
    ev = _short_tcp_sessions(2000)
    batches = [(ev[i:i + 200], cut(ev[i:i + 200]), None) for i in range(0, len(ev), 200)]

    def dead_entries(compact_min):
        eng = Engine(0, Timeouts.make(unanswered_timeout=300), "t")
        _compacting(compact_min)(eng)
        eng.add_paths({1: "eth.ipv4.tcp"})
        most = 0
        for part, cuts, pay in batches:
            eng.feed_batch(part, cuts, pay)
            eng.take_records()
            most = max(most, sum(1 for b in eng.wheel.buckets.values() for s in b if s.ended))
        return most

    assert dead_entries(NEVER) > 1800
    assert dead_entries(64) <= 2 * 2 * 110 + 64


def test_default_engine_wheel_compacts():
    eng = Engine(0, Timeouts(), "t")
    assert eng.wheel.compact_min < NEVER
