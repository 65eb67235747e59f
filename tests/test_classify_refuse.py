"""The protocols' vectorised refusals (`refuse`, registry.Protocol) and the worker's
shortcut built on them: a session whose first payload every candidate protocol
refuses gets no Inspector, only the result an Inspector would have come to.

The promise checked: where a protocol's `refuse` says True, its `match` answers NO
(or fails, which the Inspector takes as NO). On crafted messages of each protocol
with a refuse, their cuts and mutations, random bytes, and every payload of the
shared captures; and the worker's records are the same with the shortcut and
without it (on the project's generated trace here, on every shared capture in
tests/test_engine_bulk.py's way).
"""
import random
import struct

import dpkt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.frontend.readers import CaptureError
from workers import classify
from workers.classify import Inspector, registry
from workers.classify.registry import NO, TCP, UDP
from contracts.timeouts import Timeouts
from tests.rows import run_engine
from tests.shared import all_captures, capture_ids, needs_shared
from tests.test_classify import RFC9001_CLIENT_INITIAL, client_hello, dns_pair
from tests.test_classify_dispatch import STARTS
from tests.test_engine_bulk import demo_trace, front_end_batches

def many_questions(n):
    q = dpkt.dns.DNS(id=7, op=dpkt.dns.DNS_RD)
    q.qd = [dpkt.dns.DNS.Q(name=f"h{i}", type=dpkt.dns.DNS_A) for i in range(n)]
    return bytes(q)


KERBEROS = b"\x6a\x10\x30\x0e\xa1\x03\x02\x01\x05\xa2\x03\x02\x01\x0a"
SEEDS = [
    *dns_pair(), *dns_pair("printer.local", 12), many_questions(64), many_questions(65), struct.pack("!H", len(dns_pair()[0])) + dns_pair()[0],
    KERBEROS, struct.pack("!I", len(KERBEROS)) + KERBEROS,
    b"a001 LOGIN user pass\r\n", b"A1 CAPABILITY\r\n", b"x.y CAPABILITY\r\n", b"* OK IMAP4rev1 ready\r\n",
    b"* PREAUTH ready\r\n", b"* BYE\r\n", b"12345678901234567890 NOOP\r\n", b"123456789012345678901 NOOP\r\n",
    RFC9001_CLIENT_INITIAL[:64], b"\x40" + bytes(30), b"\x71" * 40, b"\x09" + bytes(8) + b"Q043" + bytes(10),
    b"\xc0\x00\x00\x00\x01\x08" + bytes(30), b"\x80Q046" + bytes(20),
    client_hello([0x1301], [0, 16], [0x0403])[:64], b"GET / HTTP/1.1\r\n\r\n", b"x" * 100, b"q" * 7, b"q" * 6,
    bytes(14), b"\xff" * 24, *STARTS,
]
PORTS = [(40000, 53), (40000, 5353), (5353, 5353), (40000, 443), (443, 40000), (40000, 143), (40000, 88),
         (40000, 8080), (40000, 40001), (80, 4433)]


def check_promise(payloads, transports=(TCP, UDP), ports=PORTS):
    """Every refuse's True answers are its match's NO, for these payloads in every
    direction, transport and port pair. Returns how many refusals were checked."""
    cases = [(p, fc, t, cp, sp) for p in payloads if p for fc in (True, False) for t in transports
             for cp, sp in ports]
    if not cases:
        return 0
    buf = b"".join(c[0] for c in cases)
    offs = np.cumsum([0] + [len(c[0]) for c in cases[:-1]])
    bits = classify.refusals(buf, offs, np.array([len(c[0]) for c in cases]),
                             np.array([c[1] for c in cases]), np.array([c[2] for c in cases]),
                             np.array([c[3] for c in cases]), np.array([c[4] for c in cases]))
    checked = 0
    for (p, fc, t, cp, sp), b in zip(cases, bits.tolist()):
        for proto in registry.REFUSERS:
            if b & proto.bit:
                state = Inspector(t, cp, sp)
                fed = p[:classify.MAX_PAYLOAD]
                try:
                    said = proto.match(fed, fc, state)
                except Exception:       # the Inspector takes a failing match as NO
                    said = NO
                assert said == NO, (proto.name, fed[:32], fc, t, cp, sp)
                checked += 1
    return checked


def test_refusals_keep_their_promise_on_each_protocols_messages():
    assert check_promise(SEEDS) > 100
    # and they refuse what they should: plain text on an unknown port, by every candidate
    bits = classify.refusals(b"x" * 100, np.array([0]), np.array([100]), np.array([True]), np.array([TCP]),
                             np.array([40000]), np.array([40001]))
    need = registry.port_class(TCP, 40000, 40001).refusable(ord("x"), True)
    assert need > 0 and int(bits[0]) & need == need


def mutated(seed: bytes, rnd: random.Random) -> bytes:
    b = bytearray(seed)
    for _ in range(rnd.randint(0, 4)):
        if b:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    cut = rnd.choice([len(b), rnd.randint(0, len(b))])
    return bytes(b[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=40),
                          st.tuples(st.sampled_from(SEEDS), st.integers(0, 2 ** 32)).map(
                              lambda t: mutated(t[0], random.Random(t[1])))),
                min_size=1, max_size=12))
def test_refusals_keep_their_promise_on_cut_and_mutated_messages(payloads):
    check_promise(payloads)


def records(batches, paths, refuse_min, counted=None, bulk_min=None):
    def setup(eng):
        eng.refuse_min = refuse_min
        if bulk_min is not None:
            eng.bulk_min = bulk_min     # huge: every batch on the per-packet path, a session's rows together
    real = classify.Inspector
    made = []
    if counted is not None:
        import workers.inspection as inspection

        class Counted(real):
            __slots__ = ()

            def __init__(self, *a):
                made.append(1)
                super().__init__(*a)
        inspection.Inspector = Counted
    try:
        out, _ = run_engine(batches, Timeouts(), paths, setup)
    finally:
        if counted is not None:
            inspection.Inspector = real
    if counted is not None:
        counted.append(len(made))
    return sorted(map(repr, out))


def test_the_shortcut_changes_no_record_and_really_runs(tmp_path):
    trace = demo_trace(tmp_path)
    batches, paths = front_end_batches(trace, 4096, Timeouts())
    never, always = [], []
    ref = records(batches, paths, 1 << 60, never)
    assert records(batches, paths, 1, always) == ref and len(ref) > 50
    assert always[0] < never[0]         # first payloads every candidate refused made no Inspector
    never, always = [], []
    ref = records(batches, paths, 1 << 60, never, bulk_min=1 << 60)
    assert records(batches, paths, 1, always, bulk_min=1 << 60) == ref
    assert always[0] < never[0]


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("path", all_captures(), ids=capture_ids(all_captures()))
def test_shared_capture_refusals(path):
    try:
        batches, paths = front_end_batches(path, 4096, Timeouts())
    except CaptureError as e:
        pytest.skip(f"not a capture the reader takes: {e}")
    assert records(batches, paths, 1) == records(batches, paths, 1 << 60)
    payloads = []
    for ev, _, pay in batches:
        rows = ev[(ev["pllen"] > 0) & ((ev["proto"] == 6) | (ev["proto"] == 17))]
        payloads += [bytes(pay[o:o + n]) for o, n in zip(rows["ploff"].tolist(), rows["pllen"].tolist())]
    rnd = random.Random(7)
    check_promise(rnd.sample(payloads, min(len(payloads), 300)), ports=rnd.sample(PORTS, 4))


def test_refusals_of_nothing_refuse_nothing():
    """No bytes to read (a batch without payload bytes), or no payloads: no refusal, no error."""
    one = [np.array([v]) for v in (0, 5, True, TCP, 40000, 40001)]
    assert classify.refusals(b"", *one).tolist() == [0]
    none = [np.array([], dtype=np.int64)] * 6
    assert classify.refusals(b"abc", *none).tolist() == []


@pytest.mark.parametrize("bulk_min", [1 << 60, 1])
def test_a_session_is_refused_by_its_first_payload_only(bulk_min):
    """Several payload rows of one session in one call (the per-packet path holds them
    together): only the first decides the shortcut. Here a DNS query, then filler that
    every candidate refuses: the query makes an Inspector, which names DNS by payload."""
    from tests.rows import rows
    query = dns_pair()[0]
    pay = query + b"q" * 60
    specs = []
    for i in range(40):              # sessions enough for the vectorised refusal (refuse_min)
        c = f"10.0.{i // 200}.{i % 200 + 1}"
        specs.append(dict(src=c, dst="192.0.2.53", sport=40000 + i, dport=53, proto=17, ts=1.0 + i * 1e-3,
                          payload=len(query)))
        specs.append(dict(src=c, dst="192.0.2.53", sport=40000 + i, dport=53, proto=17, ts=1.0 + i * 1e-3 + 1e-4,
                          payload=60))
    ev = rows(specs)
    ev["ploff"] = [0 if j % 2 == 0 else len(query) for j in range(len(ev))]
    ev["pllen"] = ev["payload"]

    def setup(eng):
        eng.refuse_min = 1
        eng.bulk_min = bulk_min
    out, _ = run_engine([(ev, [[len(ev), 2.0]], pay)], Timeouts(), {1: "eth.ipv4.udp"}, setup)
    from contracts.record import INDEX
    assert len(out) == 40
    assert {(r[INDEX["app"]], (r[-1] or {}).get("dns.query") if isinstance(r[-1], dict) else None)
            for r in out} == {("dns", "www.example.com")}
