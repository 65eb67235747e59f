"""The worker core, fed rows and time, no processes: sessions, expiry, records."""
import numpy as np
import pytest

from contracts.record import NAMES, as_dict
from workers.engine import Engine
from workers.tcp import ACK, FIN, RST, SYN
from contracts.timeouts import Timeouts
from tests.rows import rows

C, S = "10.0.0.1", "10.0.0.2"


def pkt(ts, up=True, **kw):
    d = dict(src=C, dst=S, sport=40000, dport=80) if up else dict(src=S, dst=C, sport=80, dport=40000)
    d.update(ts=ts, proto=kw.pop("proto", 6))
    d.update(kw)
    return d


def run(specs, timeouts=Timeouts(), end=None, **kw):
    eng = Engine(0, timeouts, "t", **kw)
    eng.add_paths({1: "eth.ipv4.tcp"})
    ev = rows(specs)
    for i in range(len(ev)):                  # one packet per batch: time advances with each
        eng.feed(ev[i:i + 1])
        eng.advance(float(ev["ts"][i]))
    eng.finish(end if end is not None else max(s["ts"] for s in specs))
    return [as_dict(r) for r in eng.take_records()]


def finals(recs):
    return [r for r in recs if r["final"]]


def test_record_has_every_field_in_order():
    r = run([pkt(1.0)])[0]
    assert tuple(r.keys())[:len(NAMES)] == NAMES      # declared fields first, in order; extensions after


def test_handshake_data_and_directions():
    recs = run([
        pkt(1.0, flags=SYN, wirelen=74),
        pkt(1.01, up=False, flags=SYN | ACK, wirelen=74),
        pkt(1.02, flags=ACK, wirelen=66),
        pkt(1.03, flags=ACK, payload=100, seq=1, wirelen=166),
        pkt(1.04, up=False, flags=ACK, payload=1000, seq=1, wirelen=1066),
    ])
    (r,) = recs
    assert (r["client_ip"], r["client_port"], r["server_ip"], r["server_port"]) == (C, 40000, S, 80)
    assert (r["packet_count"], r["ul_packet_count"], r["dl_packet_count"]) == (5, 3, 2)
    assert (r["byte_count"], r["ul_byte_count"], r["dl_byte_count"]) == (74 + 74 + 66 + 166 + 1066, 306, 1140)
    assert (r["data_packet_count"], r["ul_data_byte_count"], r["dl_data_byte_count"]) == (2, 100, 1000)
    assert abs(r["rtt"] - 0.02) < 1e-9
    assert r["end_reason"] == "shutdown" and r["final"] and r["report_number"] == 1
    assert r["start"] == 1.0 and r["end"] == 1.04 and abs(r["duration"] - 0.04) < 1e-9


def test_client_corrected_when_capture_starts_at_syn_ack():
    (r,) = run([pkt(1.0, up=False, flags=SYN | ACK), pkt(1.1, flags=ACK)])
    assert r["client_ip"] == C and r["ul_packet_count"] == 1 and r["dl_packet_count"] == 1


def test_idle_timeout_splits_sessions():
    recs = run([pkt(0.0, proto=17), pkt(0.1, up=False, proto=17), pkt(59.0, proto=17), pkt(120.0, proto=17)])
    f = finals(recs)
    assert [r["packet_count"] for r in f] == [3, 1]
    assert [r["end_reason"] for r in f] == ["idle", "shutdown"]
    assert f[0]["session_id"] != f[1]["session_id"]


def test_idle_timeout_is_inclusive():
    f = finals(run([pkt(0.0, proto=17), pkt(0.0, up=False, proto=17), pkt(60.0, proto=17)],
                   Timeouts.make(active_timeout=0)))
    assert [r["packet_count"] for r in f] == [2, 1]


def test_dns_has_a_shorter_timeout():
    f = finals(run([pkt(0.0, proto=17, dport=53), pkt(20.0, proto=17, dport=53)]))
    assert len(f) == 2


def test_global_idle_timeout():
    f = finals(run([pkt(0.0, proto=17), pkt(0.1, up=False, proto=17), pkt(100.0, proto=17)],
                   Timeouts.make(idle_timeout=120)))
    assert len(f) == 1


def test_fin_both_ways_closes_after_linger_and_trailing_ack_stays_inside():
    specs = [pkt(0.0, flags=SYN), pkt(0.1, up=False, flags=SYN | ACK), pkt(0.2, flags=ACK),
             pkt(1.0, flags=FIN | ACK), pkt(1.1, up=False, flags=FIN | ACK), pkt(1.2, flags=ACK),
             pkt(100.0, proto=17, sport=1, dport=2)]   # another session moves time on
    f = finals(run(specs))
    tcp = [r for r in f if r["transport"] == 6]
    assert len(tcp) == 1 and tcp[0]["end_reason"] == "closed" and tcp[0]["packet_count"] == 6


def test_rst_then_new_syn_on_same_tuple_is_a_new_session():
    specs = [pkt(0.0, flags=SYN), pkt(0.1, up=False, flags=RST | ACK), pkt(0.5, flags=SYN)]
    f = finals(run(specs))
    assert [(r["packet_count"], r["end_reason"]) for r in f] == [(2, "closed"), (1, "shutdown")]


def test_no_close_expiry_keeps_closed_sessions_open():
    specs = [pkt(0.0, flags=SYN), pkt(0.1, up=False, flags=RST | ACK), pkt(10.0, flags=ACK)]
    f = finals(run(specs, Timeouts.make(close_expiry=False)))
    assert [r["packet_count"] for r in f] == [3]


def test_active_timeout_sends_cumulative_interim_reports_without_splitting():
    specs = [pkt(float(t), proto=17) for t in range(0, 50, 5)]
    recs = run(specs, Timeouts.make(idle_timeout=100, active_timeout=10))
    interim = [r for r in recs if not r["final"]]
    assert len(interim) >= 3 and all(r["end_reason"] == "active" for r in interim)
    counts = [r["packet_count"] for r in recs]
    assert counts == sorted(counts) and counts[-1] == 10
    assert [r["report_number"] for r in recs] == list(range(1, len(recs) + 1))
    assert len({r["session_id"] for r in recs}) == 1


def test_interim_report_waits_for_the_next_packet():
    """An interim report falls due every 300 s of a session's life (the defaults) and is
    written at the session's next packet, with the counters as they were when it fell due.
    Offline, time moves with the packets: packets every 45 s from 0 to 675 s (time advanced
    after each) find the report due at 300 s at the sweep after the packet of 315 s, and the
    one due at 600 s after 630 s: interims of 8 packets (0-315 s, written at 360 s) and 15
    (0-630 s, written at 675 s), then the final record of 16 (the
    unanswered timeout as long as the idle one: this one-way traffic would end at 30 s)."""
    recs = run([pkt(45.0 * i, proto=17) for i in range(16)], Timeouts.make(unanswered_timeout=300))
    assert [(r["final"], r["packet_count"], r["end"]) for r in recs] == \
        [(False, 8, 315.0), (False, 15, 630.0), (True, 16, 675.0)]


def test_no_interim_report_repeats_the_final_one():
    """A TCP session that goes quiet and ends idle (defaults: idle 300 s, interim every
    300 s): its interim report fell due with nothing new after it, so only the final
    record is written; before, an `active` record with the same counters came first."""
    specs = [pkt(0.0, flags=SYN), pkt(0.1, up=False, flags=SYN | ACK), pkt(0.2, flags=ACK),
             pkt(100.0, flags=ACK | 0x08, payload=10, seq=1)]
    eng = Engine(0, Timeouts(), "t")
    eng.feed(rows(specs))
    for now in range(101, 1000, 7):
        eng.advance(float(now))
    recs = [as_dict(r) for r in eng.take_records()]
    assert [(r["final"], r["end_reason"], r["packet_count"]) for r in recs] == [(True, "idle", 4)]


def test_consecutive_records_of_a_session_differ(tmp_path):
    """On the generated trace, with interim reports every 10 s and every 300 s: no record of
    a session repeats the counters of the one before it, and each session's last record is
    its final one."""
    from pipeline import tracegen
    from tests.test_engine_bulk import front_end_batches
    from tests.rows import run_engine
    frames, _ = tracegen.build(seed=9, sessions=300)
    p = tmp_path / "t.pcap"
    tracegen.write_pcap(str(p), frames)
    for timeouts in (Timeouts(), Timeouts.make(active_timeout=10)):
        batches, paths = front_end_batches(p, 512, timeouts)
        got, _ = run_engine(batches, timeouts, paths)
        by = {}
        for r in map(as_dict, got):
            by.setdefault(r["session_id"], []).append(r)
        interims = 0
        for recs in by.values():
            recs.sort(key=lambda r: r["report_number"])
            assert recs[-1]["final"] and not any(r["final"] for r in recs[:-1])
            for a, b in zip(recs, recs[1:]):
                interims += 1
                assert (a["packet_count"], a["end"]) != (b["packet_count"], b["end"])
        assert interims > 20 or timeouts.active == 300          # the trace is short: no 300 s interim


def test_fragmented_datagram_counts_once_but_frames_per_fragment():
    (r,) = run([pkt(1.0, proto=17, ncap=3, wirelen=3000, caplen=3000, payload=2900)])
    assert r["packet_count"] == 1 and r["cap_packet_count"] == 3 and r["byte_count"] == 3000


def test_retransmissions_counted():
    specs = [pkt(1.0, flags=ACK, seq=10, payload=100), pkt(1.1, flags=ACK, seq=10, payload=100)]
    assert run(specs)[0]["retransmission_count"] == 1


def test_icmp_has_no_ports():
    (r,) = run([pkt(1.0, proto=1, sport=0, dport=0), pkt(1.1, up=False, proto=1, sport=0, dport=0)])
    assert r["client_port"] is None and r["server_port"] is None and r["packet_count"] == 2


def test_eviction_when_table_is_full():
    specs = [pkt(float(i), proto=17, sport=1000 + i) for i in range(5)]
    recs = run(specs, max_sessions=2)
    reasons = sorted(r["end_reason"] for r in finals(recs))
    assert reasons.count("evicted") == 3 and len(finals(recs)) == 5


def test_session_id_names_the_opening_frame_and_parent_is_kept():
    (r,) = run([pkt(1.0, fidx=42, depth=1, parent=77)])
    assert r["session_id"] == (42 << 8) | 1 and r["parent_session_id"] == 77


def test_same_final_records_whatever_the_number_of_engines():
    rng = np.random.default_rng(3)
    specs = []
    for i in range(2000):
        h = int(rng.integers(1, 40))
        up = bool(rng.integers(0, 2))
        specs.append(pkt(i * 0.5, up=up, proto=17, sport=1000 + h, payload=int(rng.integers(0, 50))))
    ev = rows(specs)

    def finals_with(n):
        out = []
        engines = [Engine(w, Timeouts(), "t") for w in range(n)]
        for lo in range(0, len(ev), 300):                   # chunks, as the front-end sends them
            part = ev[lo:lo + 300]
            now = float(part["ts"].max())
            for w, e in enumerate(engines):
                e.feed(part[part["key"] % np.uint64(n) == w])
                e.advance(now)
        for e in engines:
            e.finish(float(ev["ts"].max()))
            out += [as_dict(r) for r in e.take_records() if r[1]]
        return sorted(tuple(v for k, v in r.items() if k != "worker") for r in out)

    one = finals_with(1)
    assert len(one) > 40 and one == finals_with(3)


def test_plugin_sees_start_packets_and_expiry_and_adds_fields():
    class P:
        per_packet = True

        def __init__(self):
            self.started = self.packets = 0

        def on_start(self, s):
            self.started += 1
            s.user_data = "ctx"

        def on_packet(self, s, p):
            self.packets += 1

        def on_expire(self, s):
            s.extra = {"plugin_packets": self.packets, "user": s.user_data}

    from workers.plugins import _Adapter
    p = P()
    eng = Engine(0, Timeouts(), "t", plugins=[_Adapter(p)])
    eng.feed(rows([pkt(1.0), pkt(1.1)]))
    eng.finish(2.0)
    (r,) = [as_dict(x) for x in eng.take_records()]
    assert p.started == 1 and r["plugin_packets"] == 2 and r["user"] == "ctx"


def test_session_accessors():
    eng = Engine(0, Timeouts(), "t")
    eng.add_paths({1: "eth.ipv4.tcp"})
    eng.feed(rows([pkt(1.0, flags=SYN), pkt(1.5, up=False, flags=SYN | ACK), pkt(2.0, flags=ACK),
                   pkt(2.0, sport=40001)]))
    s = next(x for x in eng.table.values() if x.client == (C, 40000))
    assert s.protocol_hierarchy == ("eth", "ipv4", "tcp") and s.protocol_index == "tcp"
    assert s.init_time == 1.0 and s.last_activity_time == 2.0 and s.rtt == 1.0
    assert s.ul_packet_count == 2 and s.dl_packet_count == 1 and s.parent is None
    other = next(x for x in eng.table.values() if x is not s)
    assert {s.next, s.previous} - {None} <= {other}
    s.set_session_data("http", {"host": "x"})
    assert s.session_data("http") == {"host": "x"}


def test_interim_reports_after_a_long_silence_cost_no_loop():
    """A session idle for a huge time (but not expired) gets one interim report, not one per period
    (written at its next packet: an interim report waits for one)."""
    t = Timeouts.make(idle_timeout=1e9, active_timeout=1, unanswered_timeout=1e9)
    eng = Engine(0, t, "t")
    eng.feed(rows([pkt(0.0, proto=17)]))
    eng.advance(1e7)
    assert eng.take_records() == []
    eng.feed(rows([pkt(1e7 + 0.25, proto=17)]))
    recs = eng.take_records()
    assert len(recs) == 1 and not recs[0][1]
    eng.advance(1e7 + 0.5)
    assert eng.take_records() == []


def test_no_close_expiry_keeps_syn_after_rst_in_the_same_session():
    specs = [pkt(0.0, flags=SYN), pkt(0.01, up=False, flags=RST | ACK), pkt(1.0, flags=SYN),
             pkt(1.01, up=False, flags=RST | ACK)]
    f = finals(run(specs, Timeouts.make(close_expiry=False)))
    assert [(r["packet_count"], r["end_reason"]) for r in f] == [(4, "shutdown")]


def test_sessions_at_negative_times_expire_too():
    f = finals(run([pkt(-200.0, proto=17), pkt(-100.0, proto=17, sport=1)]))
    assert [r["end_reason"] for r in f] == ["idle", "shutdown"]


@pytest.mark.parametrize("size", [1, 7, 1024, 0])
def test_finishing_in_slices_gives_finish_records_in_order(tmp_path, size):
    """The worker ends the stream a slice at a time (`finishing`), sending each slice as it
    comes: together the slices are finish()'s records, in its order, and each slice
    holds at most `size` sessions' last records (after the due expiries' first)."""
    from tests.test_engine_bulk import demo_trace, front_end_batches
    batches, paths = front_end_batches(demo_trace(tmp_path), 512, Timeouts())
    cut = len(batches) // 2             # stop mid-stream: many sessions still open

    def fed():
        eng = Engine(0, Timeouts(), "t")
        eng.add_paths(paths)
        for ev, cuts, pay in batches[:cut]:
            eng.feed_batch(ev, cuts, pay)
        eng.feed_batch(*batches[cut])   # its records left untaken: finish() returns them too
        return eng

    ref = fed()
    end = ref.now + 100                 # past UDP's idle timeout: the advance ends some first
    open_before = len(ref.table)
    ref.finish(end)
    want = ref.take_records()
    eng = fed()
    parts = list(eng.finishing(end, size))
    assert [r for p in parts for r in p] == want
    assert open_before > 20 and not eng.table and eng.stats == ref.stats
    assert any(r[2] == "idle" for r in parts[0])
    shut = [sum(1 for r in p if r[2] == "shutdown") for p in parts[1:]]
    assert sum(shut) == sum(1 for r in want if r[2] == "shutdown") > 5
    if size:
        assert max(shut) <= size and len(parts) == 1 + -(-sum(shut) // size)
