"""The expiry wheel drops its dead entries (sessions filed again, or ended) once they
outnumber the live ones, without changing what it returns."""
import numpy as np
import pytest

from workers.engine import Engine
from workers.expiry import Wheel
from workers.session import Session
from workers.timeouts import Timeouts
from tests.test_engine_bulk import demo_trace, front_end_batches

NEVER = 1 << 60


def _session(i):
    return Session(i, i, 0, 0, 0, 0.0, 1.0, b"", "")


def _ids(sessions):
    return [s.id if s is not None else None for s in sessions]


@pytest.mark.parametrize("seed", range(5))
def test_compacting_changes_nothing_the_wheel_returns(seed):
    """The same random filings, refilings, ends, evictions and expiries on a wheel that
    compacts at every chance and on one that never does: the same sessions come due in
    the same order, the same oldest and neighbours, and the compacting one holds at
    most twice its live entries."""
    rng = np.random.default_rng(seed)
    made = [[_session(i) for i in range(400)] for _ in range(2)]
    eager, never = Wheel(compact_min=0), Wheel(compact_min=NEVER)
    ended = set()
    now = 0
    kept = 0                                        # most dead entries the other one held at once
    for _ in range(3000):
        op = rng.integers(0, 10)
        i = int(rng.integers(0, 400))
        if i in ended:
            continue
        if op < 6:                                  # file or file again
            when = now + float(rng.uniform(0, 30))
            for w, ss in ((eager, made[0]), (never, made[1])):
                w.file(ss[i], when)
        elif op < 8:                                # the session ends
            ended.add(i)
            for w, ss in ((eager, made[0]), (never, made[1])):
                ss[i].ended = True
                w.forget(ss[i])
        elif op < 9:                                # time passes
            now += int(rng.integers(0, 5))
            got = [_ids(w.due(now)) for w in (eager, never)]
            assert got[0] == got[1]
            for j in got[0]:                        # expired: ended here
                ended.add(j)
                for ss in made:
                    ss[j].ended = True
        else:
            assert _ids([eager.oldest()]) == _ids([never.oldest()])
            for step in (1, -1):
                assert _ids([eager.neighbour(made[0][i], step)]) == _ids([never.neighbour(made[1][i], step)])
        live = sum(1 for b in eager.buckets.values() for s in b if not s.ended)
        assert len(eager) <= 2 * live + 1
        kept = max(kept, len(never) - len(eager))
    assert kept > 10                                # the other one kept its dead


def test_an_engines_wheel_keeps_no_more_dead_than_live(tmp_path):
    """Over the generated trace (default timeouts: a closed TCP session is filed again at
    its close linger, its entry at the idle deadline left behind) the records are the
    same with and without compaction, and the compacting engine's wheel never holds
    more than twice its open sessions (plus one)."""
    batches, paths = front_end_batches(demo_trace(tmp_path), 256, Timeouts())

    def run(compact_min):
        eng = Engine(0, Timeouts(), "t")
        eng.wheel.compact_min = compact_min
        eng.add_paths(paths)
        out, sizes = [], []
        for ev, cuts, pay in batches:
            eng.feed_batch(ev, cuts, pay)
            out += eng.take_records()
            sizes.append((len(eng.wheel), len(eng.table)))
        eng.finish(eng.now)
        return out + eng.take_records(), sizes

    got, sizes = run(0)
    want, kept = run(NEVER)
    assert got == want
    assert all(n <= 2 * live + 1 for n, live in sizes)
    assert max(n - live for n, live in kept) > 50         # without it, the dead piled up


def test_default_engine_wheel_compacts(tmp_path):
    """An Engine's wheel compacts by default (a bounded count of dead entries)."""
    eng = Engine(0, Timeouts(), "t")
    assert eng.wheel.compact_min < NEVER
