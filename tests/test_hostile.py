"""Hostile traffic: sessions classed by state, eviction order, emergency mode, and
legitimate sessions that come out of floods and scans as they come out of quiet traffic.

The unit tests drive the sans-IO engine with hand-made rows; the end-to-end ones run
the real `pipeline start` (worker and collector processes, ZeroMQ) over traces from
`pipeline.hostile`, each attack beside the quiet trace with the same legitimate frames.
"""
import pytest

from contracts.record import as_dict
from contracts.timeouts import Timeouts
from pipeline import hostile, tracegen
from tests.rows import rows
from tests.runner import run as run_pipeline
from workers.engine import Engine
from workers.tcp import ACK, FIN, SYN

SERVER = "10.9.9.9"


def opened(host, ts, kind):
    """Rows of one TCP session from `host`:1000 to SERVER:80 starting at `ts`: "unanswered"
    (a SYN), "established" (the handshake) or "closing" (the handshake, then a FIN each way:
    closed, in its linger)."""
    up = dict(src=host, dst=SERVER, sport=1000, dport=80, proto=6)
    down = dict(src=SERVER, dst=host, sport=80, dport=1000, proto=6)
    out = [dict(up, ts=ts, flags=SYN)]
    if kind != "unanswered":
        out += [dict(down, ts=ts + 0.01, flags=SYN | ACK), dict(up, ts=ts + 0.02, flags=ACK)]
    if kind == "closing":
        out += [dict(up, ts=ts + 0.03, flags=FIN | ACK), dict(down, ts=ts + 0.04, flags=FIN | ACK)]
    return out


def feed(eng, specs, fidx):
    """The rows of `specs`, frame numbers from `fidx` on, as one batch; the records it ended."""
    ev = rows([dict(s, fidx=fidx + i) for i, s in enumerate(specs)])
    eng.feed(ev)
    return [as_dict(r) for r in eng.take_records()]


def evicted(recs):
    return [r["client_ip"] for r in recs if r["end_reason"] == "evicted"]


def test_eviction_order_unanswered_then_closing_then_established_idlest_first():
    """A full table gives up its unanswered sessions first (the idlest first), then closing
    ones, and established ones only when no other is left, the idlest first; each evicted
    session's final record says `evicted` and has its counters so far."""
    eng = Engine(0, Timeouts(), "t", max_sessions=3)
    specs = (opened("10.0.0.1", 0.0, "unanswered") + opened("10.0.0.2", 0.1, "established")
             + opened("10.0.0.3", 0.2, "closing") + opened("10.0.0.4", 1.0, "unanswered")
             + opened("10.0.0.5", 1.2, "established"))
    recs = feed(eng, sorted(specs, key=lambda s: s["ts"]), 0)
    assert evicted(recs) == ["10.0.0.1", "10.0.0.4"]              # unanswered, idlest first
    assert all(r["packet_count"] == 1 and r["final"] for r in recs)
    # the newest session is unanswered: it goes, not an older answered one
    assert evicted(feed(eng, opened("10.0.0.6", 2.0, "unanswered"), 100)) == ["10.0.0.6"]
    # no unanswered session left: the closing one goes before the established ones
    assert evicted(feed(eng, opened("10.0.0.7", 3.0, "established"), 200)) == ["10.0.0.3"]
    # then the idlest established one (10.0.0.2's last packet is older than 10.0.0.5's)
    assert evicted(feed(eng, opened("10.0.0.8", 4.0, "established"), 300)) == ["10.0.0.2"]
    st = eng.stats
    assert (st["evicted_unanswered"], st["evicted_closing"], st["evicted_established"]) == (3, 1, 1)
    assert st["evicted"] == 5 and len(eng.table) == 3


def test_an_answered_session_is_not_evicted_for_an_older_unanswered_one():
    """Idleness orders sessions inside a class only: an established session idle far longer
    stays while an unanswered one just opened is evicted."""
    eng = Engine(0, Timeouts(), "t", max_sessions=2)
    feed(eng, opened("10.0.0.1", 0.0, "established") + opened("10.0.0.2", 0.5, "established"), 0)
    assert evicted(feed(eng, opened("10.0.0.3", 50.0, "unanswered"), 10)) == ["10.0.0.3"]


def test_emergency_mode_in_and_out():
    """Above the high mark (90%) the table enters emergency mode: unanswered sessions end
    after the emergency timeout, not the unanswered one; under the recovery mark (70%) it
    leaves it. Each episode is counted once."""
    t = Timeouts.make(unanswered_timeout=30, emergency_timeout=5)
    eng = Engine(0, t, "t", max_sessions=10)
    specs = [s for i in range(9) for s in opened(f"10.0.1.{i}", i * 0.1, "unanswered")]
    specs += [s for i in range(2) for s in opened(f"10.0.2.{i}", 1 + i * 0.1, "established")]
    assert evicted(feed(eng, specs, 0)) == ["10.0.1.0"]   # 11 sessions: 1 evicted, 10 left (100%)
    assert eng.emergency and eng.stats["emergency_episodes"] == 1
    eng.advance(4.0)                                      # under 5 s idle: nothing ends
    assert len(eng.table) == 10 and eng.emergency
    eng.advance(7.0)                                      # unanswered past 5 s: they end (idle), 2 left
    recs = [as_dict(r) for r in eng.take_records()]
    assert [r["end_reason"] for r in recs] == ["idle"] * 8
    assert len(eng.table) == 2 and not eng.emergency
    # out of emergency mode the unanswered timeout is 30 s again
    feed(eng, opened("10.0.3.1", 8.0, "unanswered"), 100)
    eng.advance(20.0)
    assert "10.0.3.1" not in [r["client_ip"] for r in map(as_dict, eng.take_records())]
    eng.advance(38.5)
    assert [r["client_ip"] for r in map(as_dict, eng.take_records())] == ["10.0.3.1"]
    # a second episode is counted as such
    feed(eng, [s for i in range(9) for s in opened(f"10.0.4.{i}", 40 + i * 0.1, "unanswered")], 200)
    assert eng.emergency and eng.stats["emergency_episodes"] == 2


def test_each_episode_is_said_once_even_inside_one_batch(capsys):
    """The worker's log (workers.process.Emergency): one line on entering, one on leaving;
    an episode begun and ended between two looks (one batch) still gets its line."""
    from workers.process import Emergency
    t = Timeouts.make(unanswered_timeout=30, emergency_timeout=5)
    eng = Engine(0, t, "t", max_sessions=10)
    said = Emergency(3, eng)
    specs = [s for i in range(10) for s in opened(f"10.0.1.{i}", i * 0.1, "unanswered")]
    feed(eng, specs, 0)
    said.check()
    eng.advance(7.0)                                      # the unanswered end: out of it
    said.check()
    said.check()                                          # nothing new: nothing said
    feed(eng, [s for i in range(10) for s in opened(f"10.0.2.{i}", 8 + i * 0.1, "unanswered")], 100)
    eng.advance(20.0)                                     # in and out again before the next look
    said.check()
    lines = capsys.readouterr().err.splitlines()
    assert eng.stats["emergency_episodes"] == 2 and len(lines) == 3, lines
    assert "emergency mode, " in lines[0] and "(episode 1)" in lines[0]
    assert "emergency mode over" in lines[1]
    assert "within one batch (episode 2)" in lines[2]
    assert all(line.startswith("pipeline: worker 3: ") for line in lines)


def test_unanswered_sessions_end_sooner_than_answered_ones():
    """A SYN with no answer ends after the unanswered timeout, an established session of
    the same class after its class's idle timeout."""
    t = Timeouts.make(idle_timeout=100, unanswered_timeout=10)
    eng = Engine(0, t, "t")
    feed(eng, opened("10.0.0.1", 0.0, "unanswered") + opened("10.0.0.2", 0.0, "established"), 0)
    eng.advance(50.0)
    assert [as_dict(r)["client_ip"] for r in eng.take_records()] == ["10.0.0.1"]
    eng.advance(150.0)
    assert [as_dict(r)["client_ip"] for r in eng.take_records()] == ["10.0.0.2"]


def test_one_idle_timeout_given_is_every_sessions_timeout():
    """--idle-timeout S without --unanswered-timeout: one timeout for every session (NFStream's
    model, `make compat`): the SYN without an answer outlives 30 s, ends at S as the rest."""
    t = Timeouts.make(idle_timeout=100)
    assert t.unanswered == 100.0 and Timeouts.make().unanswered == 30.0
    eng = Engine(0, t, "t")
    feed(eng, opened("10.0.0.1", 0.0, "unanswered") + opened("10.0.0.2", 0.0, "established"), 0)
    eng.advance(50.0)
    assert eng.take_records() == []
    eng.advance(150.0)
    assert sorted(as_dict(r)["client_ip"] for r in eng.take_records()) == ["10.0.0.1", "10.0.0.2"]


# -- end to end: legitimate sessions under attack ------------------------------------
SCALE = 0.05        # 170 legitimate sessions; the flood 30k SYNs, the scan 3.3k ports, udp 15k datagrams
CAPACITY = 600      # per worker: far under what the attacks open in a timeout, far over the legitimate load
IGNORED = ("session_id", "parent_session_id", "event_id")   # numbered by frame: the attack's frames move them


def by_session(recs):
    """The records per session (5-tuple), each without the fields numbered by frame."""
    out = {}
    for r in recs:
        k = (r["client_ip"], r["client_port"], r["server_ip"], r["server_port"], r["transport"])
        out.setdefault(k, []).append(sorted((f, repr(v)) for f, v in r.items() if f not in IGNORED))
    return {k: sorted(v) for k, v in out.items()}


def hostile_run(tmp_path_factory, attack):
    d = tmp_path_factory.mktemp(attack)
    frames, legit = hostile.build(seed=3, attack=attack, scale=SCALE)
    trace = d / "t.pcap"
    tracegen.write_pcap(str(trace), frames)
    p, recs, stats = run_pipeline([trace], d, "--max-sessions", str(CAPACITY), workers=2)
    assert p.returncode == 0, p.stderr
    return recs, stats, legit


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    recs, stats, legit = hostile_run(tmp_path_factory, "none")
    assert stats["evicted"] == 0
    return by_session(recs), legit


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["flood", "scan", "udp", "mix"])
def test_legitimate_sessions_come_out_of_an_attack_as_out_of_quiet_traffic(quiet, tmp_path_factory, attack):
    """Every legitimate session's records under the attack equal those of the quiet run,
    while the floods fill the workers' tables (evictions, emergency mode); every session
    still has its final record."""
    want, legit = quiet
    assert len(want) == len(legit)          # the quiet run's sessions are the legitimate ones, all of them
    recs, stats, _ = hostile_run(tmp_path_factory, attack)
    got = by_session(recs)
    broken = [k for k in want if got.get(k) != want[k]]
    assert not broken, f"{len(broken)} of {len(want)} legitimate sessions differ, e.g. {broken[:3]}"
    assert stats["evicted"] == stats["evicted_unanswered"]      # no answered session had to go
    if attack != "scan":            # the scan's sessions end as soon as they are answered (RST): no pressure
        assert stats["evicted"] > 0 and stats["emergency_episodes"] >= 1
    finals = sum(1 for r in recs if r["final"])
    assert finals == stats["sessions"]
