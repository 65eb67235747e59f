"""The front-end's copy of the workers' idle expiry (`TunnelParents`), against the workers.

The front-end names a tunnel's outer session (`parent_session_id`) without asking
the worker that owns it: it follows the outer session's idle expiry by the same
rule (`contracts.timeouts.is_idle`) and timeouts. Here both follow the same
outer packets, one chunk each (the front-end's `swept` is then the workers' last
advance): every packet must get the id of the session the worker's engine puts
it in. The time steps hit the edges: gaps of exactly a class's timeout, a hair
below, time going back across a timeout; packets go either way, so that a
session seen one way only has the unanswered timeout (30 s) until its answer.
"""
import pytest
from hypothesis import given, settings, strategies as st

from contracts.timeouts import Timeouts, is_idle
from pipeline.frontend.core import TunnelParents
from workers.engine import Engine
from workers.plugins import _Adapter
from tests.rows import rows

# outer sessions of three timeout classes: VXLAN (UDP 60 s), GRE (other 60 s with idle 30), DNS-port UDP (15 s)
FLOWS = [dict(src="192.0.2.1", dst="192.0.2.2", sport=40000, dport=4789, proto=17),
         dict(src="192.0.2.3", dst="192.0.2.4", proto=47),
         dict(src="192.0.2.5", dst="192.0.2.6", sport=53, dport=40001, proto=17)]
TIMEOUTS = Timeouts(udp=60.0, other=30.0, dns=15.0)
STEPS = [0.0, 1e-6, 0.5, 14.999999, 15.0, 29.999999, 30.0, 45.0, 60.0, 61.0, -1.0, -20.0, -60.0]


class _Sessions:
    """A plugin noting the session id of every packet."""
    per_packet = True

    def __init__(self):
        self.ids = []

    def on_packet(self, s, row):
        self.ids.append(s.id)


def _way(spec, up):
    if up:
        return spec
    return dict(spec, src=spec["dst"], dst=spec["src"], sport=spec.get("dport", 0), dport=spec.get("sport", 0))


def both(packets, proc=3):
    """The id each packet ((flow, time[, from the flow's first sender])) gets from
    TunnelParents and from the engine, fed alike."""
    packets = [p if len(p) == 3 else (*p, True) for p in packets]
    ev = rows([dict(_way(FLOWS[f], up), ts=t, fidx=i + 1, depth=1, path=1) for i, (f, t, up) in enumerate(packets)])
    parents = TunnelParents(TIMEOUTS, proc)
    seen = _Sessions()
    eng = Engine(0, TIMEOUTS, "t", proc=proc, plugins=[_Adapter(seen)])
    eng.add_paths({1: "eth.ipv4.udp"})
    clock = float("-inf")
    ours = []
    for i, (f, t, up) in enumerate(packets):
        parents.swept = clock                   # as FrontEnd.process: the workers' time as of the last chunk
        spec = _way(FLOWS[f], up)
        ours.append(parents.touch(int(ev["key"][i]), int(ev["dir"][i]), i + 1, 1, t, spec["proto"],
                                  spec.get("sport", 0), spec.get("dport", 0)))
        eng.feed(ev[i:i + 1])
        clock = max(clock, t)
        eng.advance(clock)                      # the chunk's one segment ends at its packet time
    return ours, seen.ids


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(FLOWS) - 1), st.sampled_from(STEPS), st.booleans()), min_size=1,
                max_size=40))
def test_parent_ids_are_the_workers_session_ids(steps):
    t, packets = 1000.0, []
    for f, dt, up in steps:
        t += dt
        packets.append((f, t, up))
    ours, theirs = both(packets)
    assert ours == theirs


def test_an_idle_gap_of_exactly_the_timeout_opens_a_new_session():
    ours, theirs = both([(2, 1000.0), (2, 1014.5), (2, 1029.5), (1, 1029.5), (1, 1059.5)])
    assert ours == theirs and len(theirs) == 5
    assert len(set(ours[:3])) == 2 and ours[0] == ours[1]       # DNS class: 15 s
    assert ours[3] != ours[4]                                   # other class: 30 s


def test_one_way_outer_sessions_have_the_unanswered_timeout():
    """VXLAN (UDP, 60 s) seen one way ends after 30 s of silence; answered, it lasts 60 s."""
    ours, theirs = both([(0, 1000.0), (0, 1030.0), (0, 1040.0, False), (0, 1095.0)])
    assert ours == theirs
    assert ours[0] != ours[1] and ours[1] == ours[2] == ours[3]


def test_time_going_back_does_not_revive_an_expired_parent():
    p = TunnelParents(TIMEOUTS)
    first = p.touch(7, 0, 1, 0, 100.0, 17, 4789, 4789)
    p.swept = 200.0                   # the workers have swept past its idle deadline (130 s: one way)
    again = p.touch(7, 1, 2, 0, 120.0, 17, 4789, 4789)   # an older timestamp arrives
    assert again != first and not is_idle(120.0, 100.0, 60.0)


@pytest.mark.parametrize("now, kept", [(159.0, True), (159.999999, True), (160.0, False), (1e9, False)])
def test_expire_drops_exactly_the_idle_entries(now, kept):
    p = TunnelParents(TIMEOUTS)
    p.touch(7, 0, 1, 0, 100.0, 17, 4789, 4789)
    p.touch(7, 1, 2, 0, 100.0, 17, 4789, 4789)        # answered: the UDP class's 60 s
    p.expire(now)
    assert (7 in p.table) == kept


@pytest.mark.parametrize("now, kept", [(129.999999, True), (130.0, False)])
def test_expire_one_way_entries_at_the_unanswered_timeout(now, kept):
    p = TunnelParents(TIMEOUTS)
    p.touch(7, 0, 1, 0, 100.0, 17, 4789, 4789)
    p.expire(now)
    assert (7 in p.table) == kept
