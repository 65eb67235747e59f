"""The worker's batched record writer (`RecordWriter.many`) against `RecordWriter.one`.

An expiry sweep writes its records together: endpoints, counters and community
ids come from numpy columns. The records must be exactly those `one` writes
one session at a time. Both engines are fed the same batches; one writes every
sweep record by record (`report_min` huge), the other in bulk (`report_min` 1).
Inputs: random rows (key collisions, idle gaps, interim reports), the project's
generated trace, a plugin that adds fields and app values, and every shared
capture (IPv6, VLANs, ICMP, port-less transports, tunnels).
"""
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from contracts.community_id import community_ids_ported, hash_packed
from contracts.record import INDEX
from workers.records import address_texts, round6
from workers.plugins import _Adapter
from contracts.timeouts import Timeouts
from tests.rows import run_engine
from tests.shared import all_captures, capture_ids, needs_shared
from tests.test_engine_bulk import SHORT, build, cut, demo_trace, front_end_batches, packet

ONE_BY_ONE, BATCHED = 1 << 60, 1


def records(batches, timeouts, report_min, paths=None, plugins=(), **kw):
    out, eng = run_engine(batches, timeouts, paths, lambda e: setattr(e, "report_min", report_min),
                          plugins=[_Adapter(p) for p in plugins], **kw)
    return out, eng.stats


def same(batches, timeouts, paths=None, make_plugins=lambda: (), **kw):
    ref, ref_stats = records(batches, timeouts, ONE_BY_ONE, paths, make_plugins(), **kw)
    got, got_stats = records(batches, timeouts, BATCHED, paths, make_plugins(), **kw)
    assert got == ref               # same records, same order
    assert orjson.dumps(got) == orjson.dumps(ref)   # and the same types (1, True, 1.0 and numpy ints compare equal)
    assert got_stats == ref_stats
    return ref


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, min_size=1, max_size=150), st.sampled_from([7, 40, 1000]),
       st.sampled_from([SHORT, Timeouts()]))
def test_random_rows_same_records(specs, chunk, timeouts):
    ev = build(specs)
    batches = [(ev[i:i + chunk], cut(ev[i:i + chunk]), None) for i in range(0, len(ev), chunk)]
    same(batches, timeouts)


@pytest.mark.parametrize("timeouts", [Timeouts(), SHORT], ids=["default", "short"])
def test_generated_trace_same_records(tmp_path, timeouts):
    batches, paths = front_end_batches(demo_trace(tmp_path), 512, timeouts)
    assert len(same(batches, timeouts, paths)) > 50
    same(batches, timeouts, paths, classify=0)


class Tagger:
    """Sets an app, a content class and extra fields on every other session."""

    def __init__(self):
        self.n = 0

    def on_expire(self, s):
        self.n += 1
        if self.n % 2:
            s.app = "custom"
            s.content_class = "text"
            s.extra = {"seen": self.n}


def test_plugin_fields_same_records(tmp_path):
    batches, paths = front_end_batches(demo_trace(tmp_path), 512, SHORT)
    recs = same(batches, SHORT, paths, make_plugins=lambda: [Tagger()])
    tagged = [r for r in recs if isinstance(r[-1], dict) and "seen" in r[-1]]
    assert tagged and all(r[INDEX["app"]] == "custom" for r in tagged)


def test_batched_community_ids_match_the_spec_function():
    """Addresses equal up to the last byte, equal addresses ordered by port, both widths."""
    cases = [(b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 1000, 80), (b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x01", 1000, 80),
             (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x01", 9, 8), (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x01", 8, 9),
             (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", 65535, 0)]
    a, b = b"".join(c[0] for c in cases), b"".join(c[1] for c in cases)
    got = community_ids_ported(a, b, 4, [6, 17, 132, 6, 17], [c[2] for c in cases], [c[3] for c in cases])
    assert got == [hash_packed(p, c[0], c[1], c[2], c[3]) for p, c in zip([6, 17, 132, 6, 17], cases)]
    six = [bytes(15) + b"\x01", bytes(15) + b"\x02"]
    got = community_ids_ported(six[1] + six[0], six[0] + six[0], 16, [6, 6], [5, 7], [6, 3])
    assert got == [hash_packed(6, six[1], six[0], 5, 6), hash_packed(6, six[0], six[0], 7, 3)]


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("path", all_captures(), ids=capture_ids(all_captures()))
def test_shared_capture_same_records(path):
    from pipeline.frontend.readers import CaptureError
    try:
        batches, paths = front_end_batches(path, 1024, SHORT)
    except CaptureError as e:
        pytest.skip(f"not a capture the reader takes: {e}")
    same(batches, SHORT, paths)


finite = st.floats(allow_nan=False, allow_infinity=False)
epoch_us = st.integers(0, 4_000_000_000 * 10**6).map(lambda u: u / 1e6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(finite, epoch_us, st.tuples(epoch_us, epoch_us).map(lambda p: p[0] - p[1]),
                          st.integers(-10**9, 10**9).map(lambda k: k / 1e6 + 5e-7),       # near ties
                          st.sampled_from([0.0, -0.0, 5e-7, -2.5e-6, 2.0 ** 52, float("inf"), float("nan")])),
                max_size=50))
def test_round6_is_pythons_round(values):
    import math
    got = round6(np.array(values, np.float64))
    exp = [round(v, 6) for v in values]
    assert [math.copysign(1, g) if g == 0 else g for g in got if g == g] == \
        [math.copysign(1, e) if e == 0 else e for e in exp if e == e]
    assert [g != g for g in got] == [e != e for e in exp]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)), max_size=40))
def test_address_texts_are_inet_ntops(addresses):
    """`address_texts` (IPv4 from an octet table) writes what socket.inet_ntop writes."""
    import socket
    raw = b"".join(a.ljust(16, b"\0") for a in addresses)
    words = np.frombuffer(raw, ">u8").reshape(-1, 2)[:, 0] if addresses else np.zeros(0, ">u8")
    v4 = np.array([len(a) == 4 for a in addresses], bool)
    exp = [socket.inet_ntop(socket.AF_INET if len(a) == 4 else socket.AF_INET6, a) for a in addresses]
    assert address_texts(words, v4, raw) == exp


def test_a_schema_field_the_column_builder_lacks_fails(tmp_path, monkeypatch):
    """The column builder files each column under its field's name and orders them by the
    schema: a field the schema gains and the builder does not fill is an error, not a
    shifted record."""
    import workers.records as records
    batches, paths = front_end_batches(demo_trace(tmp_path), 512, SHORT)
    monkeypatch.setattr(records, "WIRE_NAMES", records.WIRE_NAMES + ("mac_address",))
    with pytest.raises(KeyError, match="mac_address"):
        run_engine(batches, SHORT, paths, lambda e: setattr(e, "report_min", BATCHED))
