"""ECS lines: events from a real pipeline run's records carry the ECS fields, with
counters equal to the native records and Community IDs computed independently here;
every field outside `pipeline` is in Elastic's ECS field list with a value of its type
(tests/ecs_schema.py, tests/data/ecs_fields_9.4.0.json)."""
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
from tests import ecs_schema, runner

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
LOCAL_NETS = "10.0.0.0/8,2001:db8:0:1::/64"        # tracegen's clients
NAMES_OF = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """JSON-lines records of the real command on a generated trace (interim reports included)."""
    d = tmp_path_factory.mktemp("ecs")
    frames, _ = tracegen.build(seed=3, sessions=200)
    tracegen.write_pcap(str(d / "t.pcap"), frames)
    p, recs, _ = runner.run([d / "t.pcap"], d / "run", "--active-timeout", "60", "--local-nets", LOCAL_NETS)
    assert p.returncode == 0, p.stderr
    assert any(not r["final"] for r in recs) and any(r["final"] for r in recs)
    return d / "t.pcap", recs


def expected_community_id(d):
    """Community ID v1 written out from the spec, independent of contracts/community_id.py."""
    if d["transport"] in (1, 58):
        return None
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


def expected_direction(d):
    """ECS network.direction as Elastic's network_direction processor works it out."""
    nets = [ipaddress.ip_network(n) for n in LOCAL_NETS.split(",")]
    inside = [any(ipaddress.ip_address(d[k]) in n for n in nets) for k in ("client_ip", "server_ip")]
    return {(True, True): "internal", (True, False): "outbound", (False, True): "inbound",
            (False, False): "external"}[tuple(inside)]


def check_event(e: dict, d: dict) -> None:
    assert e["pipeline"] == d
    assert not ecs_schema.problems(e), ecs_schema.problems(e)
    assert e["ecs"] == {"version": ecs_schema.VERSION}
    ev = e["event"]
    assert ev["kind"] == "event" and ev["category"] == ["network"]
    identified = d["app"] is not None and not d.get("app_guess")
    assert ev["type"] == (["connection", "end"] if d["final"] else ["connection", "info"]) + ["protocol"] * identified
    assert e["network"].get("protocol") == (d["app"] if identified else None)
    assert ev["id"] == d["event_id"]
    assert e["network"]["direction"] == expected_direction(d)
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
    assert sum("community_id" in e["network"] for e in events) == sum(d["transport"] not in (1, 58) for d in recs)
    assert any("inner" in e["network"] for e in events), "QinQ sessions expected in the trace"
    assert len({e["event"]["id"] for e in events}) == len(events), "event ids are unique"
    assert len({e["network"]["direction"] for e in events}) > 1


def test_pipeline_writes_ecs_when_registered(native, tmp_path):
    from collector import outputs
    if "ecs" not in outputs.KINDS:
        pytest.skip("ecs kind not registered in collector/outputs/__init__.py yet")
    pcap, _ = native
    out = tmp_path / "e.json"
    p, recs, _ = runner.run([pcap], tmp_path, "--active-timeout", "60", "--output", f"ecs:{out}",
                            "--local-nets", LOCAL_NETS)
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


def test_application_metadata_in_ecs_fields(tmp_path):
    """The classifiers' metadata (docs/classification.md names) lands in ECS's own fields."""
    e = one(tmp_path, record(app="tls", server_port=443) + [{
        "tls.sni": "www.example.com", "tls.ja3": "d4e5b18d6b55c71272893221c96ba240", "tls.ja4": "t13d1516h2_x_y",
        "tls.version": "1.3", "tls.alpn": ["h2", "http/1.1"], "tls.alpn_selected": "h2"}])
    assert e["tls"] == {"client": {"server_name": "www.example.com", "ja3": "d4e5b18d6b55c71272893221c96ba240"},
                        "version": "1.3", "version_protocol": "tls", "next_protocol": "h2"}
    assert e["destination"]["domain"] == "www.example.com" and e["server"]["domain"] == "www.example.com"
    assert e["network"]["protocol"] == "tls" and e["event"]["type"] == ["connection", "end", "protocol"]
    assert e["pipeline"]["tls.ja4"] == "t13d1516h2_x_y"            # no ECS field for JA4: ours only
    assert e["related"]["hosts"] == ["www.example.com"]
    assert not ecs_schema.problems(e)

    e = one(tmp_path, record(app="dns", transport=17, server_port=53) + [{
        "dns.query": "example.org", "dns.qtype": "AAAA", "dns.rcode": "NOERROR",
        "dns.answers": ["alias.example.org", "2001:db8::7", "192.0.2.9"]}])
    assert e["dns"] == {"question": {"name": "example.org", "type": "AAAA"}, "type": "answer",
                        "response_code": "NOERROR",
                        "answers": [{"data": "alias.example.org"}, {"data": "2001:db8::7"}, {"data": "192.0.2.9"}],
                        "resolved_ip": ["2001:db8::7", "192.0.2.9"]}
    assert "domain" not in e["destination"]                        # the query names another host
    e = one(tmp_path, record(app="mdns", transport=17) + [{"mdns.query": "printer.local", "mdns.qtype": "A"}])
    assert e["dns"] == {"question": {"name": "printer.local", "type": "A"}, "type": "query"}

    e = one(tmp_path, record(app="http") + [{
        "http.method": "GET", "http.host": "example.com:8080", "http.uri": "/a/b?q=1&r=2",
        "http.user_agent": "curl/8.5.0", "http.status": 404}])
    assert e["http"] == {"request": {"method": "GET"}, "response": {"status_code": 404}}
    assert e["url"] == {"domain": "example.com", "port": 8080, "original": "/a/b?q=1&r=2", "path": "/a/b",
                        "query": "q=1&r=2"}
    assert e["user_agent"] == {"original": "curl/8.5.0"} and e["destination"]["domain"] == "example.com"
    assert not ecs_schema.problems(e)
    e = one(tmp_path, record(app="http") + [{"http.host": "[2001:db8::1]:81", "http.uri": "*"}])
    assert e["url"] == {"domain": "2001:db8::1", "port": 81, "original": "*"}
    for host in ("example.com:²", "example.com:0", "example.com:65536", "example.com:0000080000"):
        e = one(tmp_path, record(app="http") + [{"http.host": host}])     # no port ECS can take
        assert e["url"] == {"domain": "example.com"}, host

    # a port guess names no protocol; values of the wrong type are left out of ECS
    e = one(tmp_path, record(app="tls") + [{"app_guess": True, "tls.sni": 7, "http.status": "200",
                                            "dns.query": ["x"], "tls.version": "0x7f1c"}])
    assert "protocol" not in e["network"] and e["event"]["type"] == ["connection", "end"]
    assert not {"tls", "http", "dns"} & set(e) and not ecs_schema.problems(e)
    assert e["pipeline"]["tls.sni"] == 7


def test_collector_fields_macs_and_event_id(tmp_path):
    e = one(tmp_path, record(event_id="0123456789abcdef0123456789abcdef", direction="inbound", local_orig=False,
                             local_resp=True, client_country="SE", client_city="Linköping",
                             client_geo={"lat": 58.4167, "lon": 15.6167}, client_asn=29518,
                             client_as_org="Bredband2 AB", server_asn=209)
            + [{"client_mac": "00:1b:21:3a:4f:0c", "server_mac": "zz:zz"}])
    assert e["event"]["id"] == "0123456789abcdef0123456789abcdef"
    assert e["network"]["direction"] == "inbound"
    assert e["source"]["geo"] == {"country_iso_code": "SE", "city_name": "Linköping",
                                  "location": {"lat": 58.4167, "lon": 15.6167}}
    assert e["source"]["as"] == {"number": 29518, "organization": {"name": "Bredband2 AB"}}
    assert e["destination"]["as"] == {"number": 209} and "geo" not in e["destination"]
    assert e["source"]["mac"] == "00-1B-21-3A-4F-0C"                # RFC 7042, as ECS asks
    assert "mac" not in e["destination"]                            # not a MAC address: left out
    assert e["client"] == e["source"]
    assert not ecs_schema.problems(e)


def test_counters_beyond_a_long_are_clamped_and_counted(tmp_path):
    big = (1 << 64) - 1
    o = EcsLines(str(tmp_path / "c.json"))
    o.write([record(), record(byte_count=big, ul_byte_count=big, session_id=512)])
    o.close()
    a, b = read(tmp_path / "c.json")
    assert a["network"]["bytes"] == 300
    assert b["network"]["bytes"] == b["source"]["bytes"] == (1 << 63) - 1 and b["destination"]["bytes"] == 100
    assert b["pipeline"]["byte_count"] == big
    assert o.issues["counters_clamped"] == 1 and o.written == 2
    assert not ecs_schema.problems(a) and not ecs_schema.problems(b)


def test_the_schema_check_can_fail():
    """tests/ecs_schema.py finds what is not ECS: names, types, arrays, patterns, values."""
    bad = {"source": {"ip": "10.0.0.1%eth0", "port": "80", "mac": "00:11:22:33:44:55", "colour": "red"},
           "event": {"type": "connection", "kind": "signals", "duration": 1 << 63},
           "network": {"direction": "sideways"}, "dns": {"answers": [{"data": 5}]},
           "destination": {"geo": {"location": {"lat": 91, "lon": 0}}}, "pipeline": {"anything": object()}}
    found = ecs_schema.problems(bad)
    for name in ("source.ip", "source.port", "source.mac", "source.colour", "event.type", "event.kind",
                 "event.duration", "network.direction", "dns.answers.data", "destination.geo.location"):
        assert any(p.startswith(name + ":") for p in found), (name, found)
    assert not any(p.startswith("pipeline") for p in found)


# -- what lands: the real pipeline over shared captures ----------------------------------------------

@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    """ECS events of a real run over captures with TLS, DNS, HTTP and ICMP sessions
    (runner.APP_CAPTURES, in ../shared), with --local-nets."""
    from tests.shared import PCAPS
    reads = [PCAPS / "nfstream" / n for n in runner.APP_CAPTURES]
    if not all(p.is_file() for p in reads):
        pytest.skip(f"../shared/pcaps/nfstream/{{{','.join(runner.APP_CAPTURES)}}} absent")
    d = tmp_path_factory.mktemp("landed")
    out = d / "e.json"
    p, recs, _ = runner.run(reads, d, "--output", f"ecs:{out}", "--local-nets", "private")
    assert p.returncode == 0, p.stderr
    events = read(out)
    assert len(events) == len(recs) > 0
    return events


@pytest.mark.slow
def test_landed_events_are_ecs(landed):
    for e in landed:
        assert not ecs_schema.problems(e), ecs_schema.problems(e)
    assert len({e["event"]["id"] for e in landed}) == len(landed), "event.id unique"
    assert all(e["network"]["direction"] in ("inbound", "outbound", "internal", "external") for e in landed)
    fields = set().union(*map(ecs_schema.fields_of, landed))
    for name in ("network.direction", "event.id", "network.protocol", "tls.client.server_name",
                 "dns.question.name", "url.domain", "http.request.method", "user_agent.original"):
        assert name in fields, name
    assert any(e["network"]["transport"] in ("icmp", "ipv6-icmp") for e in landed)


@pytest.mark.slow
@pytest.mark.xfail("client_mac" not in NAMES, strict=True,
                   reason="the worker's client_mac/server_mac record fields (first frame's Ethernet addresses)")
def test_landed_events_have_macs(landed):
    assert all(e["source"].get("mac") and e["destination"].get("mac") for e in landed)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the worker's community_id for ICMP (first message's type and code, "
                                       "contracts.community_id.community_id_packed)")
def test_landed_icmp_events_have_a_community_id(landed):
    icmp = [e for e in landed if e["network"]["transport"] in ("icmp", "ipv6-icmp")]
    assert icmp and all(e["network"].get("community_id", "").startswith("1:") for e in icmp)
