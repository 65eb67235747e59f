"""Every output writes every record the collector's checks let through (issue 25).

A capture whose timestamps say year ~150,000 made the ECS output raise, which
killed a standalone collector for every sensor, again after each restart. Here
hypothesis draws records over the record schema's FULL value ranges, derived
from each field's declaration in contracts/record.py (kind, null, bounds: a
field added there is fuzzed with no change here), with extension dicts of any
plain values (the classifiers' names among them), keeps those
collector.checks.check_record accepts, and writes them through one Sink into
every output: JSON lines, ECS, CSV, IPFIX (UDP), syslog in each body format
(UDP, to a socket of ours), and Kafka's encoding (key and value). Properties,
for every batch:
  * no exception, and no output counts a record it could not write;
  * each output wrote each record (syslog: but a message over 65000 bytes, counted);
  * JSON lines read back as the records' values; ECS lines are JSON with RFC 3339
    times of four-digit years and a duration a long can hold; CSV rows have every
    column; syslog messages are RFC 5424 with a TIMESTAMP receivers take, or "-".
"""
import csv
import io
import json
import os
import re
import socket

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from collector import checks
from collector.outputs import syslog as syslog_output
from collector.outputs.kafka import message_key
from collector.outputs.jsonl import as_json
from collector.sink import Sink
from contracts.record import FIELDS, INDEX, N_WIRE, NAMES
from tests import ecs_schema

# examples per run; a long hunt: PIPELINE_FUZZ_EXAMPLES=20000 pytest tests/test_outputs_fuzz.py
EXAMPLES = int(os.environ.get("PIPELINE_FUZZ_EXAMPLES", "300"))
U64 = (1 << 64) - 1
# the classifiers' names the CSV and CEF outputs map (docs/classification.md), and record
# names (an extension field named like a record field must not replace it)
APP_KEYS = ("tls.sni", "quic.sni", "dns.query", "http.host", "http.uri", "http.user_agent", "http.method",
            "http.status", "tls.ja3", "app_guess")
NUMBERS = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(),
                    st.integers(-(1 << 63), U64))
PLAIN = st.recursive(st.none() | st.booleans() | NUMBERS | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                     max_leaves=12)
ADDRESS = st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: a.exploded),
                    st.tuples(st.ip_addresses(v=6), st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1,
                                                            max_size=8)).map(lambda t: f"{t[0]}%{t[1]}"))


def values_of(kind):
    """Every value a field of this kind may hold, as contracts.record declares it."""
    name = kind.name
    if name == "text":
        return st.text()
    if name == "bool":
        return st.booleans()
    if name == "enum":
        return st.sampled_from(kind.values)
    if name == "int":
        return st.integers(kind.lo, kind.hi)
    if name == "time":
        return NUMBERS
    if name == "seconds":
        return st.one_of(st.floats(min_value=0, allow_nan=False, allow_infinity=False), st.integers(min_value=0))
    if name == "ip":
        return ADDRESS
    if name == "vlans":
        return st.lists(st.integers(0, 4095), max_size=8)
    if name == "ids":
        return st.lists(st.integers(0, U64), max_size=8)
    if name == "plain":
        return PLAIN
    if name == "geo":
        return st.fixed_dictionaries({"lat": st.one_of(st.floats(-90, 90), st.integers(-90, 90)),
                                      "lon": st.one_of(st.floats(-180, 180), st.integers(-180, 180))})
    raise AssertionError(f"field kind {name!r} has no strategy here: add one")


FIELD_VALUES = [st.one_of(st.none(), values_of(f.kind)) if f.null else values_of(f.kind) for f in FIELDS]
EXTENSION = st.dictionaries(st.one_of(st.sampled_from(APP_KEYS + NAMES), st.text()),
                            st.one_of(st.text(), PLAIN), max_size=6)


@st.composite
def record(draw):
    """A record with every field, collector fields too (the Sink leaves them as they are),
    or as a sensor sends it: the worker fields only (the Sink appends the collector's)."""
    r = list(draw(st.tuples(*FIELD_VALUES)))
    if draw(st.booleans()):
        r = r[:N_WIRE]
    if draw(st.booleans()):
        r.append(draw(EXTENSION))
    return r


def wire_part(r) -> list:
    """What a sensor would have sent of a record: its worker fields, then its dict."""
    return r[:N_WIRE] + r[len(NAMES):] if len(r) > N_WIRE + 1 else list(r)


def accepted(records) -> list:
    """Those the collector's checks let through, as a standalone collector would write them."""
    out = []
    for r in records:
        try:
            checks.check_record(wire_part(r))
        except ValueError:
            continue
        out.append(r)
    return out


def sample(**values):
    """A valid record with some fields set: the explicit examples."""
    r = [None] * len(NAMES)
    base = dict(type="session", final=True, end_reason="idle", session_id=256, sensor="s", worker=0,
                report_number=1, start=1.7e9, end=1.7e9, duration=0.0, ip_version=4, transport=17,
                client_ip="10.0.0.1", server_ip="10.0.0.2", proto_path="eth.ipv4.udp", retransmission_count=0,
                tcp_flags=0, event_id="0" * 32)
    base.update(values)
    for n, f in zip(NAMES, FIELDS):
        r[INDEX[n]] = base.get(n, None if f.null else 0)
    return r


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
SYSLOG = re.compile(rb"<134>1 (-|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) \S+ pipeline \d+ session - ")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    port = rx.getsockname()[1]
    specs = [f"jsonl:{d / 's.jsonl'}", f"ecs:{d / 's.ecs'}", f"csv:{d / 's.csv'}", f"ipfix:udp://127.0.0.1:{port}"]
    specs += [f"syslog:udp://127.0.0.1:{port}?format={f}&app=pipeline" for f in syslog_output.FORMATS]
    sink = Sink(specs, aggregate_interval=1.0)
    files = {o.kind: open(o.file.path, "rb") for o in sink.outs if hasattr(o, "file")}
    files["csv"].readline()             # the header
    yield sink, files, rx
    for f in files.values():
        f.close()
    sink.close()
    rx.close()


def datagrams(rx) -> list:
    got = []
    while True:
        try:
            got.append(rx.recv(1 << 17))
        except BlockingIOError:
            return got


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(st.lists(record(), min_size=1, max_size=4))
@example([sample(start=4734231571822.834, end=4734231571822.834)])      # the odd capture's times
@example([sample(start=-1.7976931348623157e308, end=1.7976931348623157e308, duration=1e308)])
@example([sample(start=-(1 << 63), end=U64), sample(start=10 ** 30, end=-(10 ** 30))])
@example([sample(start=253402300799.9999999, end=4102444800.0, rtt=0.0)])   # the edges of dates
@example([sample(ip_version=6, client_ip="10.0.0.1", server_ip="fe80::1%eth0", client_port=0)])
@example([sample(sensor="a\nb\0c", app="x|y=z\\", vlan=[4095] * 8) + [{"http.uri": "/a b", "type": {}}]])
def test_every_output_writes_every_checked_record(outputs, records):
    sink, files, rx = outputs
    records = accepted(records)
    before = {o.kind + o.target: o.written for o in sink.outs}
    oversize = {o.target: o.issues.get("records_oversize", 0) for o in sink.outs}
    sink.write(records)
    sink.flush()
    for o in sink.outs:
        assert o.issues["records_unwritable"] == 0, (o.kind, o.issues)
        skipped = o.issues.get("records_oversize", 0) - oversize[o.target]
        assert o.written - before[o.kind + o.target] == len(records) - skipped, o.kind
    for r in records:                   # Kafka's message: key and value
        assert message_key(r) and json.loads(as_json(r))["session_id"] == r[INDEX["session_id"]]

    lines = [json.loads(x) for x in files["jsonl"].read().splitlines()]
    sessions = [x for x in lines if x["type"] == "session"]
    assert len(sessions) == len(records)
    for x, r in zip(sessions, records):
        assert [x[n] for n in NAMES] == r[:len(NAMES)]

    for line in files["ecs"].read().splitlines():
        e = json.loads(line)
        assert ISO.fullmatch(e["@timestamp"]) and ISO.fullmatch(e["event"]["start"])
        assert -(1 << 63) <= e["event"]["duration"] < 1 << 63
        assert e["pipeline"]["session_id"] in {r[INDEX["session_id"]] for r in records}
        assert not ecs_schema.problems(e), ecs_schema.problems(e)

    header = len(next(csv.reader(io.StringIO(open(files["csv"].name).readline()))))
    rows = list(csv.reader(io.StringIO(files["csv"].read().decode())))
    assert len(rows) == len(records) and all(len(row) == header for row in rows)

    syslog = [m for m in datagrams(rx) if m.startswith(b"<")]
    sent = len(records) * len(syslog_output.FORMATS) - sum(
        o.issues.get("records_oversize", 0) - oversize[o.target] for o in sink.outs)
    assert len(syslog) == sent
    assert all(SYSLOG.match(m) for m in syslog), syslog[:2]


def test_the_strategies_cover_every_kind_and_its_bounds():
    """Every kind declared in contracts/record.py has values here, and values at its bounds
    pass the checks (the fuzzing reaches the full ranges, not a corner)."""
    for f in FIELDS:
        values_of(f.kind)               # raises for a kind it does not know
        if f.kind.name == "int" and f.origin == "worker":      # what the checks see (the collector's: its own)
            for v in (f.kind.lo, f.kind.hi):
                checks.check_record(wire_part(sample(**{f.name: v})))
    for t in (4734231571822.834, -1.7976931348623157e308, 10 ** 30, -(1 << 63)):
        checks.check_record(wire_part(sample(start=t, end=t)))
