"""The collector's enrichment (collector/enrich.py, collector/geoip.py): event ids, --local-nets
(local_orig, local_resp, direction), GeoIP and ASN from MaxMind's own test databases
(tests/data/mmdb, fake data), in the collector a sensor runs and in the standalone one.

Expected values come from elsewhere than the code under test: the event id's formula as
docs/outputs.md states it, Elastic's network_direction rules written out with ipaddress,
and the networks of MaxMind's source-data/*.json the test databases were made from.
"""
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys

import dpkt
import pytest

from collector.enrich import DIRECTION, EnrichError, Enricher, LocalNets, parse_local_nets
from collector.geoip import GeoError, Lookup, open_db
from collector.sink import Sink
from contracts.record import COLLECTOR_NAMES, INDEX, N_WIRE, NAMES, WIRE_NAMES
from tests import runner

DATA = runner.ROOT / "tests" / "data" / "mmdb"
CITY, COUNTRY, ASN = (str(DATA / f) for f in ("GeoIP2-City-Test.mmdb", "GeoIP2-Country-Test.mmdb",
                                               "GeoLite2-ASN-Test.mmdb"))
# MaxMind-DB test-data/source-data: GeoIP2-City-Test.json and GeoLite2-ASN-Test.json
# address -> (country, city, (lat, lon), asn, as_org)
EXPECTED = {
    "89.160.20.112": ("SE", "Linköping", (58.4167, 15.6167), 29518, "Bredband2 AB"),
    "81.2.69.142": ("GB", "London", (51.5142, -0.0931), None, None),
    "216.160.83.56": ("US", "Milton", (47.2513, -122.3149), 209, None),
    "2001:480:10::1": ("US", "San Diego", (32.7203, -117.1552), None, None),
    "2a02:cf40::1": ("NO", None, (62.0, 10.0), None, None),
    "2600:7000::1": (None, None, None, 6939, "Hurricane Electric, Inc."),
    "10.0.0.1": (None, None, None, None, None),
}


def wire_record(sensor="s", sid=256, rn=1, start=1700000000.25, client="10.0.0.1", server="192.0.2.1", **kw):
    d = dict.fromkeys(WIRE_NAMES)
    d.update(type="session", final=True, end_reason="idle", session_id=sid, sensor=sensor, worker=0,
             report_number=rn, start=start, end=start + 1, duration=1.0, ip_version=6 if ":" in client else 4,
             transport=17, client_ip=client, client_port=1234, server_ip=server, server_port=53,
             proto_path="eth.ipv4.udp", retransmission_count=0, tcp_flags=0)
    for n in WIRE_NAMES:
        if n.endswith("_count") and d[n] is None:
            d[n] = 1
    d.update(kw)
    return [d[n] for n in WIRE_NAMES]


def field(r, name):
    return r[INDEX[name]]


# -- event ids --------------------------------------------------------------------------------------

def documented_event_id(sensor, session_id, start, report_number):
    """docs/outputs.md: BLAKE2b, 16 bytes, personalization "pipeline-evid-v1", over the sensor's
    UTF-8 length (4 bytes, big-endian) and bytes, then session_id (u64), start (IEEE double)
    and report_number (u32), big-endian; 32 hex digits."""
    raw = sensor.encode()
    msg = len(raw).to_bytes(4, "big") + raw + struct.pack(">QdI", session_id, start, report_number)
    return hashlib.blake2b(msg, digest_size=16, person=b"pipeline-evid-v1").hexdigest()


def test_event_ids_are_the_documented_hash_and_tell_records_apart():
    recs = [wire_record(), wire_record(rn=2), wire_record(sid=512), wire_record(sensor="t"),
            wire_record(start=1800000000.25), wire_record(sensor="sensör-ü")]
    again = [list(r) for r in recs]
    Enricher().apply(recs)
    ids = [field(r, "event_id") for r in recs]
    assert ids == [documented_event_id(field(r, "sensor"), field(r, "session_id"), field(r, "start"),
                                       field(r, "report_number")) for r in recs]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    Enricher().apply(again)                              # the same records sent again: the same ids
    assert [field(r, "event_id") for r in again] == ids


def test_event_id_of_values_beyond_a_struct_is_still_made():
    recs = [wire_record(start=10 ** 400), wire_record(sid=1 << 70), wire_record()]
    Enricher().apply(recs)
    ids = [field(r, "event_id") for r in recs]
    assert len(set(ids)) == 3 and ids[2] == documented_event_id("s", 256, 1700000000.25, 1)


# -- records: where the collector fields go ---------------------------------------------------------

def test_fields_go_after_the_worker_fields_and_before_the_plugin_dict():
    plain, with_dict = wire_record(), wire_record(sid=512) + [{"tls.sni": "example.com"}]
    full = wire_record(sid=768)
    full[N_WIRE:N_WIRE] = ["f" * 32] + [None] * (len(COLLECTOR_NAMES) - 1)    # an embedder's full record
    before = list(full)
    Enricher().apply([plain, with_dict, full])
    assert len(plain) == len(NAMES) and len(with_dict) == len(NAMES) + 1
    assert with_dict[-1] == {"tls.sni": "example.com"} and with_dict[:N_WIRE] == wire_record(sid=512)
    assert full == before
    for r in (plain, with_dict):
        assert [field(r, n) for n in COLLECTOR_NAMES[1:]] == [None] * (len(COLLECTOR_NAMES) - 1)


def test_sink_enriches_before_outputs_and_aggregates(tmp_path):
    out = tmp_path / "s.jsonl"
    sink = Sink([f"jsonl:{out}"], aggregate_interval=60,
                enricher=Enricher(parse_local_nets("10.0.0.0/8"), CITY, ASN))
    sink.write([wire_record(client="10.0.0.1", server="89.160.20.112"),
                tuple(wire_record(sid=512, client="81.2.69.142", server="10.0.0.9"))])   # an embedder's tuple
    sink.close()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    a, b = [x for x in lines if x["type"] == "session"]
    assert (a["direction"], a["local_orig"], a["local_resp"]) == ("outbound", True, False)
    assert (a["server_country"], a["server_asn"], a["server_geo"]) == ("SE", 29518, {"lat": 58.4167, "lon": 15.6167})
    assert (b["direction"], b["client_city"], b["client_asn"]) == ("inbound", "London", None)
    assert any(x["type"] == "aggregate" for x in lines)


# -- local networks and direction -------------------------------------------------------------------

def test_local_nets_parse_cidrs_and_elastics_names():
    nets = parse_local_nets("10.0.0.0/8, 2001:db8::/32,192.0.2.7")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]
    assert [str(n) for n in parse_local_nets("private")] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                             "fd00::/8"]
    assert "ff12::/16" in {str(n) for n in parse_local_nets("link_local_multicast")}
    for bad in ("10.0.0.0/33", "ten", "", " , ", "private,nope"):
        with pytest.raises(EnrichError) as err:
            parse_local_nets(bad)
        assert "\n" not in str(err.value) and str(err.value).startswith("--local-nets")


@pytest.mark.parametrize("client,server", [("10.1.2.3", "10.9.9.9"), ("10.1.2.3", "8.8.8.8"),
                                           ("8.8.8.8", "192.168.1.1"), ("8.8.8.8", "1.1.1.1"),
                                           ("fd00::1", "2001:db8::1"), ("2001:db8::1", "fd12::5"),
                                           ("::ffff:10.0.0.1", "8.8.8.8"), ("fe80::1%eth0", "fd00::2")])
def test_direction_is_elastics(client, server):
    """network_direction: source and destination in internal_networks or not (here `private`
    plus fe80::/10); an IPv4-mapped IPv6 address is its IPv4 address, a zone is no part of it."""
    import ipaddress
    nets = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8",
                                              "fe80::/10")]

    def inside(text):
        a = ipaddress.ip_address(text.split("%")[0])
        a = a.ipv4_mapped or a if a.version == 6 else a
        return any(a in n for n in nets if n.version == a.version)
    want = {(True, True): "internal", (True, False): "outbound", (False, True): "inbound",
            (False, False): "external"}[(inside(client), inside(server))]
    r = wire_record(client=client, server=server)
    Enricher(parse_local_nets("private,fe80::/10")).apply([r])
    assert (field(r, "direction"), field(r, "local_orig"), field(r, "local_resp")) == \
        (want, inside(client), inside(server))
    assert DIRECTION[(inside(client), inside(server))] == want


def test_many_networks_by_bisection():
    nets = parse_local_nets(",".join(f"10.{i}.0.0/16" for i in range(0, 256, 2)) + ",10.1.0.0/16,2001:db8::/48")
    inside = LocalNets(nets)
    assert "10.0.255.255" in inside and "10.1.0.1" in inside and "10.3.0.1" not in inside
    assert "10.254.1.1" in inside and "11.0.0.0" not in inside and "9.255.255.255" not in inside
    assert "2001:db8:0:ffff::1" in inside and "2001:db8:1::" not in inside


# -- GeoIP and ASN --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ip", list(EXPECTED))
def test_lookups_in_maxminds_test_databases(ip):
    country, city, geo, asn, org = EXPECTED[ip]
    look = Lookup(CITY, ASN)
    got = look(ip)
    look.close()
    assert got == (country, city, {"lat": geo[0], "lon": geo[1]} if geo else None, asn, org)


def test_enricher_fills_both_sides_and_caches_per_address():
    e = Enricher(parse_local_nets("10.0.0.0/8"), CITY, ASN, cache=8)
    recs = [wire_record(sid=256 * i, client=c, server=s)
            for i, (c, s) in enumerate([("89.160.20.112", "2600:7000::1"), ("2001:480:10::1", "10.0.0.1"),
                                        ("89.160.20.112", "81.2.69.142")] * 3)]
    e.apply(recs)
    for r in recs:
        for side in ("client", "server"):
            country, city, geo, asn, org = EXPECTED[field(r, f"{side}_ip")]
            assert (field(r, f"{side}_country"), field(r, f"{side}_city"), field(r, f"{side}_asn"),
                    field(r, f"{side}_as_org")) == (country, city, asn, org)
            assert field(r, f"{side}_geo") == ({"lat": geo[0], "lon": geo[1]} if geo else None)
    info = e.side.cache_info()
    assert info.misses == 5 and info.hits == len(recs) * 2 - 5         # each address looked up once
    e.close()
    small = Enricher(parse_local_nets("10.0.0.0/8"), CITY, ASN, cache=2)   # bounded: answers the same
    again = [wire_record(sid=field(r, "session_id"), client=field(r, "client_ip"), server=field(r, "server_ip"))
             for r in recs]
    small.apply(again)
    assert again == recs and small.side.cache_info().currsize == 2
    small.close()


def test_country_database_and_one_database_alone():
    look = Lookup(COUNTRY, None)
    assert look("89.160.20.112") == ("SE", None, None, None, None)
    look.close()
    look = Lookup(None, ASN)
    assert look("89.160.20.112") == (None, None, None, 29518, "Bredband2 AB")
    look.close()


def test_bad_databases_are_one_line(tmp_path):
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a database" * 100)
    cases = [(lambda: open_db(ASN, "--geoip-db"), "give it as --asn-db"),
             (lambda: open_db(CITY, "--asn-db"), "give it as --geoip-db"),
             (lambda: open_db(str(junk), "--geoip-db"), "not a MaxMind DB file"),
             (lambda: open_db(str(tmp_path / "none.mmdb"), "--asn-db"), "No such file"),
             (lambda: Enricher(geoip_db=str(junk)), "not a MaxMind DB file")]
    for make, said in cases:
        with pytest.raises((GeoError, EnrichError)) as err:
            make()
        assert said in str(err.value) and "\n" not in str(err.value)
        assert str(err.value).startswith(("--geoip-db", "--asn-db"))


def test_without_the_package_the_error_says_what_to_install():
    code = ("import sys; sys.modules['maxminddb'] = None\n"
            "from collector.geoip import open_db, GeoError\n"
            "try:\n    open_db('x.mmdb', '--geoip-db')\n"
            "except GeoError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=runner.ROOT)
    assert p.stdout.strip() == "--geoip-db needs the maxminddb package (pip install maxminddb)", p.stderr


def test_no_database_no_import():
    """A run without --geoip-db/--asn-db never imports maxminddb."""
    code = ("import sys\nfrom collector.sink import Sink\nfrom collector.enrich import Enricher, parse_local_nets\n"
            "Enricher(parse_local_nets('10.0.0.0/8'))\nprint('maxminddb' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=runner.ROOT)
    assert p.stdout.strip() == "False", p.stderr


# -- the real commands: a sensor's own collector and the standalone one ------------------------------

def flows_pcap(path):
    """UDP exchanges between the test databases' addresses (both ways each)."""
    pairs = [("10.0.0.1", "89.160.20.112"), ("81.2.69.142", "10.0.0.9"), ("216.160.83.56", "81.2.69.142"),
             ("2001:480:10::1", "2600:7000::1"), ("10.0.0.1", "10.0.0.2")]
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f)
        t = 1700000000.0
        for i, (a, b) in enumerate(pairs):
            for src, dst, sport, dport in ((a, b, 40000 + i, 53), (b, a, 53, 40000 + i)):
                udp = dpkt.udp.UDP(sport=sport, dport=dport, data=b"x" * 20)
                udp.ulen = 8 + len(udp.data)
                if ":" in src:
                    ip = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(
                        socket.AF_INET6, dst), nxt=17, hlim=64, data=udp, plen=len(bytes(udp)))
                    et = dpkt.ethernet.ETH_TYPE_IP6
                else:
                    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, ttl=64, data=udp)
                    ip.len = 20 + len(bytes(udp))
                    et = dpkt.ethernet.ETH_TYPE_IP
                eth = dpkt.ethernet.Ethernet(src=b"\x00\x1b\x21\x3a\x4f\x0c", dst=b"\x00\x1b\x21\x3a\x4f\x0d",
                                             type=et, data=ip)
                t += 0.01
                w.writepkt(bytes(eth), ts=t)
    return pairs


def check_enriched(recs, pairs):
    by_ends = {(r["client_ip"], r["server_ip"]): r for r in recs}
    assert len(recs) == len(pairs)
    for a, b in pairs:
        r = by_ends[a, b]
        local = (a.startswith("10."), b.startswith("10."))
        assert (r["local_orig"], r["local_resp"], r["direction"]) == (*local, DIRECTION[local])
        for side, ip in (("client", a), ("server", b)):
            country, city, geo, asn, org = EXPECTED.get(ip, (None,) * 5)
            assert (r[f"{side}_country"], r[f"{side}_city"], r[f"{side}_asn"], r[f"{side}_as_org"]) == \
                (country, city, asn, org), (side, ip)
            assert r[f"{side}_geo"] == ({"lat": geo[0], "lon": geo[1]} if geo else None)
        assert r["event_id"] == documented_event_id(r["sensor"], r["session_id"], r["start"], r["report_number"])


def test_pipeline_start_enriches_with_flags_and_config_file(tmp_path):
    pairs = flows_pcap(tmp_path / "f.pcap")
    p, recs, _ = runner.run([tmp_path / "f.pcap"], tmp_path / "flags", "--local-nets", "10.0.0.0/8",
                            "--geoip-db", CITY, "--asn-db", ASN, "--output", f"zeek:{tmp_path}/zeek?format=json")
    assert p.returncode == 0, p.stderr
    check_enriched(recs, pairs)
    conn = [json.loads(x) for x in (tmp_path / "zeek" / "conn.log").read_text().splitlines()]
    assert sorted((c["id.orig_h"], c["local_orig"], c["local_resp"]) for c in conn) == \
        sorted((a, a.startswith("10."), b.startswith("10.")) for a, b in pairs)     # Zeek's Site::local_nets
    conf = tmp_path / "p.toml"
    conf.write_text(f'[sensor]\nlocal-nets = ["10.0.0.0/8"]\ngeoip-db = "{CITY}"\n')
    env_before = os.environ.get("PIPELINE_ASN_DB")
    os.environ["PIPELINE_ASN_DB"] = ASN
    try:
        p, recs2, _ = runner.run([tmp_path / "f.pcap"], tmp_path / "conf", "--config", str(conf))
    finally:
        if env_before is None:
            del os.environ["PIPELINE_ASN_DB"]
        else:
            os.environ["PIPELINE_ASN_DB"] = env_before
    assert p.returncode == 0, p.stderr
    assert runner.comparable(recs2) == runner.comparable(recs)


def test_bad_enrichment_flags_are_one_line(tmp_path):
    flows_pcap(tmp_path / "f.pcap")
    for extra, said in ((["--local-nets", "10.0.0.0/99"], "is not a network"),
                        (["--geoip-db", ASN], "give it as --asn-db"),
                        (["--asn-db", str(tmp_path / "none.mmdb")], "No such file"),
                        (["--local-nets", "private", "--collector", "tcp://127.0.0.1:9"], "pipeline collector")):
        p, recs, _ = runner.run([tmp_path / "f.pcap"], tmp_path / "bad", *extra)
        assert p.returncode == 2 and said in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.slow
def test_standalone_collector_enriches_what_remote_sensors_send(tmp_path):
    from tests.test_collector import Collector, free_port, read_lines, run_sensor, sessions_of
    pairs = flows_pcap(tmp_path / "f.pcap")
    col = Collector(tmp_path, free_port(), "--local-nets", "10.0.0.0/8", "--geoip-db", CITY,
                    "--asn-db", ASN).start()
    try:
        p = run_sensor(tmp_path / "f.pcap", col.addr, "remote-1", tmp_path / "s.json")
        assert p.returncode == 0, p.stderr
        assert col.stop() == 0, col.stderr()
    finally:
        col.kill_if_running()
    recs = sessions_of(read_lines(col.out))
    assert {r["sensor"] for r in recs} == {"remote-1"}
    check_enriched(recs, pairs)
    bad = subprocess.run(runner.pipeline_cmd() + ["collector", "--listen", f"tcp://127.0.0.1:{free_port()}",
                                                  "--geoip-db", ASN], capture_output=True, text=True,
                         cwd=runner.ROOT, timeout=60)
    assert bad.returncode == 2 and "give it as --asn-db" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_a_record_given_twice_in_a_batch_is_enriched_once(tmp_path):
    """The collector fields go into the records in place: the same list twice in one batch
    (an embedder's) must not get them twice."""
    out = tmp_path / "s.jsonl"
    r = wire_record()
    sink = Sink([f"jsonl:{out}"], aggregate_interval=0)
    sink.write([r, r])
    sink.close()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 2 and lines[0] == lines[1] and list(lines[0]) == list(NAMES)
