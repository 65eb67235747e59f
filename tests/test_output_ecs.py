"""ECS lines: events from a real pipeline run's records carry the ECS fields, with
counters equal to the native records and Community IDs computed independently here."""
import base64
import hashlib
import ipaddress
import json
import os
import stat
from datetime import datetime, timezone

import pytest

from collector.outputs.ecs import EcsLines
from pipeline import tracegen
from contracts.record import NAMES
from tests import runner

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NAMES_OF = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """JSON-lines records of the real command on a generated trace (interim reports included)."""
    d = tmp_path_factory.mktemp("ecs")
    frames, _ = tracegen.build(seed=3, sessions=200)
    tracegen.write_pcap(str(d / "t.pcap"), frames)
    p, recs, _ = runner.run([d / "t.pcap"], d / "run", "--active-timeout", "60")
    assert p.returncode == 0, p.stderr
    assert any(not r["final"] for r in recs) and any(r["final"] for r in recs)
    return d / "t.pcap", recs


def expected_community_id(d):
    """Community ID v1 written out from the spec, independent of contracts/community_id.py.
    ICMP: the record's own (from its first message's type and code, which the record does not
    carry; tests/test_record_fields.py checks it against the spec's vectors)."""
    if d["transport"] in (1, 58):
        return d["community_id"]
    a = (ipaddress.ip_address(d["client_ip"]).packed, d["client_port"])
    b = (ipaddress.ip_address(d["server_ip"]).packed, d["server_port"])
    ports = a[1] is not None and b[1] is not None
    lo, hi = sorted([a, b], key=lambda e: (e[0], e[1] or 0))
    data = b"\0\0" + lo[0] + hi[0] + bytes([d["transport"], 0])
    if ports:
        data += lo[1].to_bytes(2, "big") + hi[1].to_bytes(2, "big")
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def us(text: str) -> int:
    """An ECS date as epoch microseconds (exact)."""
    assert text.endswith("Z") and len(text.split(".")[1]) == 7, text
    dt = datetime.fromisoformat(text)
    assert dt.utcoffset().total_seconds() == 0, text
    return (dt - EPOCH) // datetime.resolution


def dotted_keys(obj) -> list:
    if not isinstance(obj, dict):
        return []
    return [k for k in obj if "." in k] + [k for v in obj.values() for k in dotted_keys(v)]


def check_event(e: dict, d: dict) -> None:
    assert e["pipeline"] == d
    assert e["ecs"] == {"version": "8.11.0"}
    ev = e["event"]
    assert ev["kind"] == "event" and ev["category"] == ["network"]
    assert ev["type"] == (["connection", "end"] if d["final"] else ["connection", "info"])
    assert ev["reason"] == d["end_reason"]
    start, end = us(ev["start"]), us(ev["end"])
    assert start == round(d["start"] * 1e6) and end == round(d["end"] * 1e6)
    assert e["@timestamp"] == ev["end"]
    assert ev["duration"] == (end - start) * 1000 and isinstance(ev["duration"], int)
    assert abs(ev["duration"] - d["duration"] * 1e9) < 2000
    for side, other, ip, port, c in (("source", "client", "client_ip", "client_port", "ul"),
                                     ("destination", "server", "server_ip", "server_port", "dl")):
        s = e[side]
        assert s == e[other]
        assert s["ip"] == d[ip] and s.get("port") == d[port]
        assert s["bytes"] == d[f"{c}_byte_count"] and s["packets"] == d[f"{c}_packet_count"]
    n = e["network"]
    assert n["transport"] == NAMES_OF[d["transport"]]
    assert n["iana_number"] == str(d["transport"])
    assert n["type"] == {4: "ipv4", 6: "ipv6"}[d["ip_version"]]
    assert n["bytes"] == d["byte_count"] and n["packets"] == d["packet_count"]
    assert n.get("community_id") == expected_community_id(d)
    vlan = d["vlan"] or []
    assert n.get("vlan", {}).get("id") == (str(vlan[0]) if vlan else None)
    assert n.get("inner", {}).get("vlan", {}).get("id") == (str(vlan[1]) if len(vlan) > 1 else None)
    assert e["observer"] == {"name": d["sensor"]}
    assert dotted_keys({k: v for k, v in e.items() if k != "pipeline"}) == [], "nested objects, not dotted keys"


def read(path):
    return [json.loads(line) for line in open(path, "rb").read().splitlines()]


def test_events_from_pipeline_records(native, tmp_path):
    _, recs = native
    out = tmp_path / "e.json"
    o = EcsLines(str(out))
    wire = [runner.as_wire(d) for d in recs]
    for i in range(0, len(wire), 37):
        o.write(wire[i:i + 37])
    o.close()
    assert o.written == len(recs)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
    events = read(out)
    assert len(events) == len(recs)
    for e, d in zip(events, recs):
        check_event(e, d)
    assert sum("community_id" in e["network"] for e in events) == \
        sum(d["transport"] not in (1, 58) or d["community_id"] is not None for d in recs)
    assert any("inner" in e["network"] for e in events), "QinQ sessions expected in the trace"


def test_pipeline_writes_ecs_when_registered(native, tmp_path):
    from collector import outputs
    if "ecs" not in outputs.KINDS:
        pytest.skip("ecs kind not registered in collector/outputs/__init__.py yet")
    pcap, _ = native
    out = tmp_path / "e.json"
    p, recs, _ = runner.run([pcap], tmp_path, "--active-timeout", "60", "--output", f"ecs:{out}")
    assert p.returncode == 0, p.stderr
    events = read(out)
    assert len(events) == len(recs)
    key = lambda d: (d["session_id"], d["report_number"])   # noqa: E731
    by_key = {key(d): d for d in recs}
    for e in events:
        check_event(e, by_key[key(e["pipeline"])])


def record(**kw):
    d = {n: None for n in NAMES}
    d.update(type="session", final=True, end_reason="idle", session_id=256, sensor="s", worker=0,
             report_number=1, start=1.5, end=2.000001, duration=0.500001, ip_version=4, transport=6,
             client_ip="128.232.110.120", client_port=34855, server_ip="66.35.250.204", server_port=80,
             packet_count=3, ul_packet_count=2, dl_packet_count=1, byte_count=300, ul_byte_count=200,
             dl_byte_count=100)
    d.update(kw)
    return [d[n] for n in NAMES]


def one(tmp_path, r):
    o = EcsLines(str(tmp_path / "one.json"))
    o.write([r])
    o.close()
    (e,) = read(tmp_path / "one.json")
    return e


def test_spec_vector_times_and_portless(tmp_path):
    e = one(tmp_path, record())
    assert e["network"]["community_id"] == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="   # community-id-spec baseline
    assert e["event"]["start"] == "1970-01-01T00:00:01.500000Z"
    assert e["@timestamp"] == "1970-01-01T00:00:02.000001Z" and e["event"]["duration"] == 500001000
    e = one(tmp_path, record(transport=47, client_port=None, server_port=None, start=-0.25, end=-0.25))
    assert e["network"]["transport"] == "gre" and "port" not in e["source"] and "port" not in e["destination"]
    assert e["event"]["start"] == "1969-12-31T23:59:59.750000Z" and e["event"]["duration"] == 0
    assert e["network"]["community_id"] == expected_community_id(e["pipeline"])
    e = one(tmp_path, record(transport=253, client_port=None, server_port=None))
    assert e["network"]["transport"] == "253" and e["network"]["iana_number"] == "253"


def test_record_community_id_wins_and_plugin_fields_are_kept(tmp_path):
    e = one(tmp_path, record(community_id="1:fromrecord=") + [{"tls.sni": "example.com"}])
    assert e["network"]["community_id"] == "1:fromrecord="
    assert e["pipeline"]["tls.sni"] == "example.com"


def test_rotation_and_bad_target(tmp_path):
    o = EcsLines(f"{tmp_path}/e.json?rotate=2KB")
    for i in range(20):
        o.write([record(session_id=i)])
    o.close()
    files = sorted(p for p in os.listdir(tmp_path) if p.startswith("e.json"))
    assert len(files) > 2
    ids = sorted(e["pipeline"]["session_id"] for f in files for e in read(tmp_path / f))
    assert ids == list(range(20))
    with pytest.raises(ValueError):
        EcsLines.check(f"{tmp_path}/e.json?rotate=2XB")
