"""Zeek logs (`--output zeek:DIR`, collector/outputs/zeek.py) read back by real readers of
Zeek logs from PyPI (zat, parsezeeklogs) and compared with the native records of the same
run, by expectations written out here (Zeek's rules, the uid derivation, the service
names) rather than taken from the code under test."""
import hashlib
import os
import re
import stat

import pytest
from parsezeeklogs.reader import ZeekLog
from zat.json_log_to_dataframe import JSONLogToDataFrame
from zat.log_to_dataframe import LogToDataFrame
from zat.zeek_log_reader import ZeekLogReader

from collector import outputs
from collector.journal import Journal
from collector.outputs import zeek
from collector.outputs.zeek import ZeekLogs
from collector.outputs.zeek_uid import uid, uids
from contracts.record import NAMES, as_dict
from pipeline import tracegen
from tests import runner
from tests.shared import all_captures, needs_shared

HEADER = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-"]
STAMP = re.compile(r"\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d")
UID = re.compile(r"C[0-9A-Za-z]{1,17}")
LIMIT = 9223372036.0            # what pandas can hold as int64 ns, in whole seconds


# -- the expectations, written out from Zeek's rules and docs/outputs.md ----------------------------

def expected_uid(sensor: str, session_id: int) -> str:
    """Zeek's uid shape (src/UID.cc) over the derivation docs/outputs.md gives."""
    key = hashlib.blake2b(sensor.encode(), digest_size=16, key=b"session-pipeline zeek uid v1").digest()
    k1, k2 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    mask = 2 ** 64 - 1

    def splitmix(z):
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) % 2 ** 64
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) % 2 ** 64
        return z ^ (z >> 31)

    def base62(v):
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        digits = [alphabet[v % 62]]
        while v >= 62:
            v //= 62
            digits.append(alphabet[v % 62])
        return "".join(digits)

    sid = session_id & mask
    return "C" + base62(splitmix(sid ^ k2) >> 32) + base62(splitmix(sid ^ k1))


SERVICE = {"tls": "ssl", "imaps": "ssl", "smtps": "ssl", "pop3s": "ssl", "mdns": "dns", "llmnr": "dns",
           "icmp": None, "icmpv6": None, "igmp": None}


def expected_service(d):
    if d.get("app") is None or d.get("app_guess"):
        return None
    app = d["app"]
    if app == "kerberos":
        return "krb_tcp" if d["transport"] == 6 else "krb"
    if app == "ldap":
        return "ldap_tcp" if d["transport"] == 6 else "ldap_udp"
    if app == "quic":
        return "quic,ssl" if d.get("quic.tls_version") else "quic"
    return SERVICE.get(app, app)


def expected_conn(d):
    """conn.log's row of a native record (dict), as parsezeeklogs gives it back."""
    t = d["transport"]
    udp, tcp = t == 17, t == 6
    up, down = d["ul_packet_count"] > 0, d["dl_packet_count"] > 0
    positive = d["duration"] > 0
    vlan = d["vlan"] or []
    parents = d.get("tunnel_parents") or ([d["parent_session_id"]] if d["parent_session_id"] is not None else None)
    seq = {"ul": d.get("ul_seq_byte_count"), "dl": d.get("dl_seq_byte_count")}
    if not tcp:
        seq = {k: (v if v is not None else d[f"{k}_data_byte_count"]) if t in (17, 1, 58) else v
               for k, v in seq.items()}
    state = d.get("conn_state")
    if state is None and not tcp:
        state = ("SF" if down else "S0") if up and udp else ("SHR" if down else "OTH") if udp else "OTH"
    history = d.get("history")
    if history is None and udp:
        history = ("D" if up else "") + ("d" if down else "") or None
    missed = d.get("missed_bytes")
    if missed is None and not tcp:
        missed = 0
    return {
        "ts": held(d["start"]), "uid": expected_uid(d["sensor"], d["session_id"]),
        "id.orig_h": d["client_ip"], "id.orig_p": d["client_port"],
        "id.resp_h": d["server_ip"], "id.resp_p": d["server_port"],
        "proto": {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}.get(t, "unknown_transport"),
        "service": expected_service(d),
        "duration": held(d["duration"]) if positive else None,
        "orig_bytes": seq["ul"] if positive else None, "resp_bytes": seq["dl"] if positive else None,
        "conn_state": state, "local_orig": d.get("local_orig"), "local_resp": d.get("local_resp"),
        "missed_bytes": missed, "history": history,
        "orig_pkts": d["ul_packet_count"], "orig_ip_bytes": d.get("ul_ip_byte_count"),
        "resp_pkts": d["dl_packet_count"], "resp_ip_bytes": d.get("dl_ip_byte_count"),
        "tunnel_parents": [expected_uid(d["sensor"], p) for p in parents] if parents else None,
        "ip_proto": t, "community_id": d["community_id"],
        "vlan": vlan[0] if vlan else None, "inner_vlan": vlan[1] if len(vlan) > 1 else None,
        "orig_l2_addr": d.get("client_mac"), "resp_l2_addr": d.get("server_mac"),
        "sensor": d["sensor"], "session_id": d["session_id"], "end_reason": d["end_reason"], "app": d["app"],
        "proto_path": d["proto_path"], "rtt": held(d["rtt"]), "retransmissions": d["retransmission_count"],
        "orig_l2_bytes": d["ul_byte_count"], "resp_l2_bytes": d["dl_byte_count"],
        "orig_payload_pkts": d["ul_data_packet_count"], "resp_payload_pkts": d["dl_data_packet_count"],
        "orig_payload_bytes": d["ul_data_byte_count"], "resp_payload_bytes": d["dl_data_byte_count"],
        "tcp_flags": d["tcp_flags"],
    }


def held(t):
    """A time as the logs write it: within what pandas holds (docs/outputs.md)."""
    return t if t is None else max(-LIMIT, min(LIMIT, t))


def meta(d, key):
    for prefix in ("dns", "mdns", "llmnr"):
        if d.get(f"{prefix}.{key}") is not None:
            return d[f"{prefix}.{key}"]
    return None


QTYPE = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
         "HTTPS": 65, "ANY": 255}
RCODE = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}


def has_dns(d):
    return any(meta(d, k) is not None for k in ("query", "qtype", "rcode", "answers"))


def has_ssl(d):
    return any(d.get(k) is not None for k in ("tls.version", "tls.sni", "tls.ja3", "tls.ja4", "quic.sni",
                                              "quic.tls_version", "quic.ja4"))


def has_http(d):
    return any(d.get(f"http.{k}") is not None for k in ("method", "host", "uri", "user_agent", "status"))


def close_enough(got, want, field):
    if isinstance(want, float) and got is not None:
        assert abs(got - want) < 1e-6, (field, got, want)
    else:
        assert got == want, (field, got, want)


# -- reading -------------------------------------------------------------------------------------

def read(path) -> list:
    """A log through parsezeeklogs, checked against zat's readers: the same rows, none skipped."""
    path = str(path)
    with ZeekLog(path) as log:
        rows = list(log)
        assert log.skipped == 0, path
    if log.is_json:
        assert len(JSONLogToDataFrame().create_dataframe(path)) == len(rows)
        return rows
    zrows = list(ZeekLogReader(path, strict=True).readrows())
    assert len(zrows) == len(rows), path
    df = LogToDataFrame().create_dataframe(path, ts_index=False)
    assert len(df) == len(rows), path
    if rows:
        assert list(df["uid"]) == [r["uid"] for r in rows], path
        for name in df.columns:         # no line cut short (a '#') or run on (a quote) in pandas
            assert df[name].notna().sum() == sum(r[name] is not None for r in rows), (path, name)
    return rows


def lines_of(path) -> list:
    data = open(path, "rb").read()
    assert data.endswith(b"\n"), f"{path} ends with half a line"
    return data.decode().split("\n")[:-1]


def check_layout(path, name) -> None:
    """Zeek's header block at the top, #close at the end, no other # line."""
    lines = lines_of(path)
    assert lines[:4] == HEADER, path
    assert lines[4] == f"#path\t{name}"
    assert lines[5].startswith("#open\t") and STAMP.fullmatch(lines[5].split("\t")[1])
    fields, types = lines[6].split("\t"), lines[7].split("\t")
    assert fields[0] == "#fields" and types[0] == "#types" and len(fields) == len(types)
    assert lines[-1].startswith("#close\t") and STAMP.fullmatch(lines[-1].split("\t")[1])
    body = lines[8:-1]
    assert not any(line.startswith("#") for line in body)
    assert all(line.count("\t") == len(fields) - 2 for line in body), path


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A real `pipeline start` on a generated trace, writing JSON lines (runner) and the zeek
    output in both formats in the same run."""
    d = tmp_path_factory.mktemp("zeek")
    frames, _ = tracegen.build(seed=5, sessions=300)
    tracegen.write_pcap(str(d / "t.pcap"), frames)
    p, recs, _ = runner.run([d / "t.pcap"], d / "run", "--active-timeout", "60",
                            "--output", f"zeek:{d / 'tsv'}", "--output", f"zeek:{d / 'json'}?format=json")
    assert p.returncode == 0, p.stderr
    assert any(not r["final"] for r in recs) and any(has_dns(r) for r in recs)
    assert any(r["parent_session_id"] is not None for r in recs) and any(r["vlan"] for r in recs)
    return d, recs


# -- uids ----------------------------------------------------------------------------------------

def test_uids_have_zeeks_shape_and_follow_the_documented_derivation():
    import random
    rng = random.Random(1)
    ids = [0, 1, 61, 62, 62 ** 5, 62 ** 10, 2 ** 63, 2 ** 64 - 1] + [rng.getrandbits(64) for _ in range(3000)]
    got = uids(["dc1-tap3"] * len(ids), ids)
    assert got == [expected_uid("dc1-tap3", i) for i in ids]
    assert got == [uid("dc1-tap3", i) for i in ids]
    assert all(UID.fullmatch(u) for u in got)
    assert len(set(got)) == len(ids)
    assert uid("a", 256) != uid("b", 256)
    sensors = [rng.choice(["a", "b", "c"]) for _ in ids]
    assert uids(sensors, ids) == [expected_uid(s, i) for s, i in zip(sensors, ids)]
    assert 17 <= sum(map(len, got)) / len(got) <= 18      # Zeek's are usually 18 characters


# -- a real run --------------------------------------------------------------------------------

def test_conn_log_holds_every_final_record_with_zeeks_meanings(native):
    d, recs = native
    check_layout(d / "tsv" / "conn.log", "conn")
    rows = read(d / "tsv" / "conn.log")
    finals = [r for r in recs if r["final"]]
    assert len(rows) == len(finals)
    by_uid = {expected_uid(r["sensor"], r["session_id"]): r for r in finals}
    assert len(by_uid) == len(finals)
    for row in rows:
        want = expected_conn(by_uid[row["uid"]])
        assert list(row) == list(want)
        for k, v in want.items():
            close_enough(row[k], v, k)
    assert {r["service"] for r in rows} >= {"dns", None}
    assert any(r["tunnel_parents"] for r in rows) and any(r["inner_vlan"] for r in rows)


def test_the_same_records_written_here_give_the_same_logs_by_the_fast_ways(native, tmp_path):
    """The run's collector process wrote the logs; here the same records, in batches of
    another size: the same lines (but #open and #close), and never the slow ways."""
    d, recs = native
    zeek.SLOW.update(values=0, lines=0)
    o = ZeekLogs(str(tmp_path))
    wire = [runner.as_wire(r) for r in recs]
    for i in range(0, len(wire), 97):
        o.write(wire[i:i + 97])
    o.close()
    assert zeek.SLOW == {"values": 0, "lines": 0}, "records as declared must take the fast ways"
    for name in ("conn", "open_conn", "dns"):
        mine, theirs = (lines_of(f / f"{name}.log") for f in (tmp_path, d / "tsv"))
        assert len(mine) > 10
        assert [x for x in mine if not x.startswith(("#open", "#close"))] == \
               [x for x in theirs if not x.startswith(("#open", "#close"))]


def test_open_conn_log_has_the_interim_records_under_the_sessions_uid(native):
    d, recs = native
    check_layout(d / "tsv" / "open_conn.log", "open_conn")
    rows = read(d / "tsv" / "open_conn.log")
    interim = [r for r in recs if not r["final"]]
    assert sorted((r["uid"], r["orig_pkts"]) for r in rows) == sorted(
        (expected_uid(r["sensor"], r["session_id"]), r["ul_packet_count"]) for r in interim)
    final_uids = {r["uid"] for r in read(d / "tsv" / "conn.log")}
    assert {r["uid"] for r in rows} <= final_uids       # the same session, the same uid


def test_dns_log_rows_join_conn_log_by_uid(native):
    d, recs = native
    check_layout(d / "tsv" / "dns.log", "dns")
    rows = read(d / "tsv" / "dns.log")
    want = {expected_uid(r["sensor"], r["session_id"]): r for r in recs if r["final"] and has_dns(r)}
    assert sorted(r["uid"] for r in rows) == sorted(want)
    conn = {r["uid"]: r for r in read(d / "tsv" / "conn.log")}
    for row in rows:
        r = want[row["uid"]]
        assert conn[row["uid"]]["service"] == "dns"
        assert (row["id.orig_h"], row["id.resp_p"], row["proto"]) == (r["client_ip"], r["server_port"], "udp")
        assert row["query"] == meta(r, "query") and row["answers"] == meta(r, "answers")
        assert row["qtype_name"] == meta(r, "qtype") and row["qtype"] == QTYPE[meta(r, "qtype")]
        assert row["rcode_name"] == meta(r, "rcode") and row["rcode"] == RCODE[meta(r, "rcode")]
        assert row["trans_id"] is None and row["AA"] is None and row["TTLs"] is None   # never invented


def test_json_variant_has_the_same_values_and_leaves_unset_fields_out(native):
    d, _ = native
    for name in ("conn", "open_conn", "dns"):
        tsv = read(d / "tsv" / f"{name}.log")
        js = read(d / "json" / f"{name}.log")
        text = (d / "json" / f"{name}.log").read_text()
        assert not text.startswith("#") and "#close" not in text
        assert len(js) == len(tsv)
        for a, b in zip(tsv, js):
            set_fields = {k: v for k, v in a.items() if v is not None}
            assert list(b) == list(set_fields)          # Zeek's column order, unset ones left out
            for k, v in set_fields.items():
                close_enough(b[k], v, k)


def test_files_are_private(native):
    d, _ = native
    assert stat.S_IMODE(os.stat(d / "tsv").st_mode) == 0o750
    for name in os.listdir(d / "tsv"):
        assert stat.S_IMODE(os.stat(d / "tsv" / name).st_mode) == 0o640


# -- records built here: the fields the engine will add, hostile text, absurd times -------------

def record(extra=None, **kw):
    d = {n: None for n in NAMES}
    d.update(type="session", final=True, end_reason="closed", session_id=256, sensor="s", worker=0,
             report_number=1, start=1700000000.5, end=1700000002.25, duration=1.75, ip_version=4,
             transport=6, client_ip="10.0.0.1", client_port=40000, server_ip="192.0.2.1", server_port=80,
             proto_path="eth.ipv4.tcp", packet_count=10, ul_packet_count=6, dl_packet_count=4,
             byte_count=5000, ul_byte_count=1000, dl_byte_count=4000, cap_packet_count=10,
             ul_cap_packet_count=6, dl_cap_packet_count=4, cap_byte_count=5000, ul_cap_byte_count=1000,
             dl_cap_byte_count=4000, data_packet_count=5, ul_data_packet_count=2, dl_data_packet_count=3,
             data_byte_count=3000, ul_data_byte_count=400, dl_data_byte_count=2600, retransmission_count=0,
             tcp_flags=27, app="http", community_id="1:abc=")
    d.update(kw)
    return [d[n] for n in NAMES] + ([extra] if extra is not None else [])


def write(folder, records, fmt="", **kw):
    o = ZeekLogs(str(folder) + (f"?format={fmt}" if fmt else ""), **kw)
    o.write(records)
    o.close()
    return o


ENGINE_FIELDS = {"conn_state": "RSTO", "history": "ShADadR", "ul_ip_byte_count": 1500, "dl_ip_byte_count": 4200,
                 "ul_seq_byte_count": 410, "dl_seq_byte_count": 2599, "missed_bytes": 7,
                 "tunnel_parents": [1234, 5678], "client_mac": "aa:bb:cc:dd:ee:01",
                 "server_mac": "aa:bb:cc:dd:ee:02"}


@pytest.mark.parametrize("fmt", ["", "json"])
def test_fields_the_engine_will_add_are_read_by_name(tmp_path, fmt):
    recs = [record(dict(ENGINE_FIELDS, app_guess=True), local_orig=True, local_resp=False),   # the collector's
            record(dict(ENGINE_FIELDS, conn_state="S0", history="S"), session_id=512, duration=0.0,
                   end=1700000000.5, local_orig=True, local_resp=False),
            record({"ul_seq_byte_count": 11, "dl_seq_byte_count": 22}, session_id=768, transport=17, app="dns"),
            record(None, session_id=1024, transport=17, app="dns", ul_data_byte_count=29, dl_data_byte_count=45)]
    write(tmp_path, recs, fmt)
    rows = read(tmp_path / "conn.log")
    for row, r in zip(rows, recs):
        want = expected_conn(as_dict(r))
        if fmt:
            want = {k: v for k, v in want.items() if v is not None}
        assert list(row) == list(want)
        for k, v in want.items():
            close_enough(row[k], v, k)
    first, zero, udp, plain_udp = rows
    assert (first["orig_bytes"], first["resp_ip_bytes"], first["conn_state"]) == (410, 4200, "RSTO")
    assert first["tunnel_parents"] == [uid("s", 1234), uid("s", 5678)] and first["local_orig"] is True
    assert first.get("service") is None                 # a port guess: Zeek names no service
    assert "orig_bytes" not in zero if fmt else zero["orig_bytes"] is None   # duration 0: Zeek leaves it out
    assert udp["orig_bytes"] == 11 and plain_udp["orig_bytes"] == 29 and plain_udp["conn_state"] == "SF"


def test_service_names_as_zeek_names_its_analyzers(tmp_path):
    cases = [("tls", 6, {}), ("imaps", 6, {}), ("quic", 17, {}), ("quic", 17, {"quic.tls_version": "1.3"}),
             ("mdns", 17, {}), ("llmnr", 17, {}), ("kerberos", 6, {}), ("kerberos", 17, {}), ("ldap", 6, {}),
             ("ldap", 17, {}), ("icmp", 1, {}), ("ssh", 6, {}), ("ssh", 6, {"app_guess": True}), (None, 6, {}),
             ("rtp", 17, {})]
    recs = [record(extra or None, session_id=256 * (i + 1), app=app, transport=t)
            for i, (app, t, extra) in enumerate(cases)]
    write(tmp_path, recs)
    got = [r["service"] for r in read(tmp_path / "conn.log")]
    assert got == [expected_service(as_dict(r)) for r in recs]
    assert got[:4] == ["ssl", "ssl", "quic", "quic,ssl"] and got[10:13] == [None, "ssh", None]


HOSTILE = ["a\tb\nc\rd\\e#f", "-", "(empty)", "", "é ü \u2028 \x85 \x01\x7f", "%s %d %%", "x,y", "\"quoted\"",
           '"unbalanced', "\\x41 is not A"]


@pytest.mark.parametrize("fmt", ["", "json"])
def test_hostile_text_comes_back_as_it_was(tmp_path, fmt):
    recs = []
    for i, s in enumerate(HOSTILE):
        recs.append(record({"http.user_agent": s, "http.uri": s, "http.host": s, "http.method": "GET",
                            "dns.query": s, "dns.answers": [s, "ok"], "tls.sni": s},
                           session_id=256 * (i + 1), sensor="s\t1" if i == 0 else "s", proto_path=s))
    write(tmp_path, recs, fmt)
    for name in ("conn", "dns", "ssl", "http"):
        rows = read(tmp_path / f"{name}.log")
        assert len(rows) == len(HOSTILE)
        if not fmt:
            check_layout(tmp_path / f"{name}.log", name)
    http, dns, ssl = (read(tmp_path / f"{n}.log") for n in ("http", "dns", "ssl"))
    for s, h, q, t in zip(HOSTILE, http, dns, ssl):
        assert h["user_agent"] == s and h["uri"] == s and h["host"] == s
        assert q["query"] == s and q["answers"] == [s, "ok"] and t["server_name"] == s
    conn = read(tmp_path / "conn.log")
    assert [r["proto_path"] for r in conn] == HOSTILE and conn[0]["sensor"] == "s\t1"
    assert conn[0]["uid"] == expected_uid("s\t1", 256)


def test_a_byte_that_is_not_utf8_is_written_as_zeek_does(tmp_path):
    write(tmp_path, [record({"http.user_agent": "ab\udcffc", "http.method": "GET"})])
    (line,) = [x for x in lines_of(tmp_path / "http.log") if not x.startswith("#")]
    assert "ab\\xffc" in line.split("\t")
    write(tmp_path / "j", [record({"http.user_agent": "ab\udcffc", "http.method": "GET"})], "json")
    (row,) = read(tmp_path / "j" / "http.log")
    assert row["user_agent"] == "ab\udcffc"


@pytest.mark.parametrize("fmt", ["", "json"])
def test_absurd_times_are_clamped_and_counted_never_fatal(tmp_path, fmt, capsys):
    year_150000 = 4.7e12
    recs = [record(start=year_150000, end=year_150000 + 1, duration=1.0),
            record(session_id=512, start=-0.25, end=0.5, duration=0.75),
            record(session_id=768, start=1.5, end=year_150000, duration=year_150000 - 1.5),
            record(session_id=1024, start=1e300, end=1e300, duration=0.0, rtt=float("nan")),
            record(session_id=1280, rtt="soon"),         # not a number at all (not from checked records)
            record(session_id=1536)]
    o = write(tmp_path, recs, fmt)
    rows = read(tmp_path / "conn.log")
    assert [r["ts"] for r in rows] == [LIMIT, -0.25, 1.5, LIMIT, 1700000000.5, 1700000000.5]
    assert rows[2]["duration"] == LIMIT and rows[1]["duration"] == 0.75
    assert rows[3].get("rtt") is None and rows[4].get("rtt") is None
    assert o.issues["times_clamped"] == 3
    err = capsys.readouterr().err
    assert err.count("times_clamped") == 1 and "Traceback" not in err


# -- files ---------------------------------------------------------------------------------------

class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def many(n, start_id=1):
    return [record({"dns.query": f"q{i}.example"} if i % 3 == 0 else None, session_id=i * 256,
                   final=i % 4 != 0, end_reason="closed" if i % 4 else "active")
            for i in range(start_id, start_id + n)]


def session_ids(folder, name) -> list:
    def stamp(p):
        when, _, n = p.split(".log.")[1].partition(".")
        return when, int(n or 0)
    paths = sorted((p for p in os.listdir(folder) if p.startswith(f"{name}.log.")), key=stamp) + [f"{name}.log"]
    ids = []
    for p in paths:
        check_layout(os.path.join(folder, p), name)
        ids += [r.get("session_id") or r["uid"] for r in read(os.path.join(folder, p))]
    return ids


def test_size_rotation_gives_every_file_its_header_and_close(tmp_path):
    clock = Clock(1.7e9)
    o = ZeekLogs(f"{tmp_path}?rotate=4KB", clock=clock)
    recs = many(120)
    for i in range(0, len(recs), 7):
        o.write(recs[i:i + 7])
        clock.t += 0.4
    o.close()
    conn = [p for p in os.listdir(tmp_path) if p.startswith("conn.log")]
    assert len(conn) > 5
    for p in os.listdir(tmp_path):
        assert os.path.getsize(tmp_path / p) <= 4000, p        # the #close line within the size too
    finals = [r[NAMES.index("session_id")] for r in recs if r[NAMES.index("final")]]
    assert session_ids(tmp_path, "conn") == finals
    assert len(session_ids(tmp_path, "dns")) == sum(1 for r in recs if len(r) > len(NAMES) and r[1])


def test_time_rotation_and_keep(tmp_path):
    t0 = 1_700_000_000 // 3600 * 3600
    clock = Clock(t0 + 10)
    o = ZeekLogs(f"{tmp_path}?rotate_every=1h&keep=2", clock=clock)
    for h in range(5):
        clock.t = t0 + h * 3600 + 10
        o.write(many(4, start_id=1 + 10 * h))
    o.close()
    rotated = sorted(p for p in os.listdir(tmp_path) if p.startswith("conn.log."))
    assert len(rotated) == 2                                   # keep=2: the older ones deleted
    assert len(session_ids(tmp_path, "conn")) == 3 * 3         # three hours kept, 3 finals each


def test_append_continues_the_log_under_one_header(tmp_path):
    write(tmp_path, many(8))
    o = ZeekLogs(str(tmp_path), append=True)
    o.write(many(8, start_id=100))
    o.close()
    lines = lines_of(tmp_path / "conn.log")
    assert sum(x.startswith("#fields") for x in lines) == 1 and sum(x.startswith("#close") for x in lines) == 1
    check_layout(tmp_path / "conn.log", "conn")
    ids = [r["session_id"] for r in read(tmp_path / "conn.log")]
    assert ids == [i * 256 for i in list(range(1, 9)) + list(range(100, 108)) if i % 4]


def test_append_sets_aside_a_log_of_other_columns(tmp_path):
    old = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n" \
          "#open\t2020-01-01-00-00-00\n#fields\tts\tuid\n#types\ttime\tstring\n1.000000\tCabc\n"
    (tmp_path / "conn.log").write_text(old)
    o = ZeekLogs(str(tmp_path), append=True)
    o.write(many(4))
    o.close()
    aside = [p for p in os.listdir(tmp_path) if p.startswith("conn.log.")]
    assert len(aside) == 1 and (tmp_path / aside[0]).read_text() == old
    check_layout(tmp_path / "conn.log", "conn")


def test_a_new_run_leaves_no_stale_rows_of_the_last(tmp_path):
    write(tmp_path, many(9))
    assert read(tmp_path / "dns.log")
    write(tmp_path, [record(session_id=5)])                    # no DNS this time
    assert read(tmp_path / "dns.log") == []
    check_layout(tmp_path / "dns.log", "dns")


@pytest.mark.parametrize("fmt", ["", "json"])
def test_the_journal_cuts_back_an_unfinished_batch_in_every_log(tmp_path, fmt):
    """The collector killed between writing a batch and committing it: the restarted one cuts
    each log back (dns.log, which the batch created, goes) and the re-sent batch is written once."""
    state, out = tmp_path / "state", tmp_path / "logs"
    target = str(out) + (f"?format={fmt}" if fmt else "")
    first = [record(session_id=i * 256) for i in range(1, 4)]
    second = many(9, start_id=10)
    j = Journal(str(state))
    o = ZeekLogs(target, append=True)
    assert j.truncate_outputs([o]) == []       # as collector/server.py does at start
    j.begin("s", "run", 1, [o])
    o.write(first)
    j.commit()
    j.begin("s", "run", 2, [o])
    o.write(second)
    before = {p: os.path.getsize(out / p) for p in os.listdir(out)}
    j.close()                                  # killed: no commit, no close of the outputs
    for log in o.logs.values():
        if log.file is not None:
            log.file.fh.close()
    j = Journal(str(state))
    o = ZeekLogs(target, append=True)
    cut = j.truncate_outputs([o])
    assert cut == [(str(out), sum(before.values()) - os.path.getsize(out / "conn.log") -
                    (os.path.getsize(out / "open_conn.log") if (out / "open_conn.log").exists() else 0))]
    assert not (out / "dns.log").exists() and not (out / "open_conn.log").exists()
    assert not j.seen("s", "run", 2) and j.seen("s", "run", 1)
    j.begin("s", "run", 2, [o])                 # the sensor sends it again
    o.write(second)
    j.commit()
    o.close()
    j.close(clean=True)
    conn = read(out / "conn.log")
    assert [r["session_id"] for r in conn] == [r[NAMES.index("session_id")] for r in first + second
                                               if r[NAMES.index("final")]]
    assert len(read(out / "dns.log")) == sum(1 for i in range(10, 19) if i % 3 == 0 and i % 4)
    if not fmt:
        for name in ("conn", "open_conn", "dns"):
            check_layout(out / f"{name}.log", name)


def test_bad_targets_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    for spec in ("zeek:-", f"zeek:{tmp_path}/no/such/dir", f"zeek:{tmp_path}?format=xml",
                 f"zeek:{tmp_path}?rotate=2XB", f"zeek:{tmp_path}/file", f"zeek:{tmp_path}?keep=3",
                 f"zeek:{tmp_path}?colour=red", f"zeek:{tmp_path}?format=json&format=tsv"):
        with pytest.raises(outputs.OutputError) as e:
            outputs.parse(spec)
        assert "\n" not in str(e.value) and spec in str(e.value)
    assert outputs.parse(f"zeek:{tmp_path}/new?format=json&rotate=1MB") == ("zeek", f"{tmp_path}/new?format=json&rotate=1MB")
    o = outputs.make(f"zeek:{tmp_path}/new")
    o.close()
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o750
    assert os.listdir(tmp_path / "new") == []                  # no lines, no files (as Zeek)


# -- end to end: the standalone collector, killed and restarted; the shared captures -------------

def check_against(folder, recs) -> None:
    """Every log in `folder` against the native records of the same run."""
    finals = {expected_uid(r["sensor"], r["session_id"]): r for r in recs if r["final"]}
    conn = read(folder / "conn.log")
    assert sorted(r["uid"] for r in conn) == sorted(finals)
    for row in conn:
        for k, v in expected_conn(finals[row["uid"]]).items():
            close_enough(row.get(k), v, k)          # .get: JSON leaves unset fields out
    interim = [r for r in recs if not r["final"]]
    if interim:
        assert sorted(r["uid"] for r in read(folder / "open_conn.log")) == sorted(
            expected_uid(r["sensor"], r["session_id"]) for r in interim)
    for name, has in (("dns", has_dns), ("ssl", has_ssl), ("http", has_http)):
        want = sorted(u for u, r in finals.items() if has(r))
        got = sorted(r["uid"] for r in read(folder / f"{name}.log")) if want else []
        assert got == want, name
        if want and not folder.name == "json":
            check_layout(folder / f"{name}.log", name)


@pytest.mark.slow
def test_standalone_collector_killed_mid_run_writes_each_session_once(tmp_path):
    """`pipeline collector --output zeek:DIR` SIGKILLed right after writing its third batch and
    before committing it (the test hook of collector/server.py), then restarted: the journal cuts
    every log back, the sensor's re-sent batch is written once, one header, one #close."""
    import signal
    from tests.test_collector import Collector, end_group, free_port, make_trace, read_lines, start_sensor
    trace = make_trace(tmp_path, "t", 1500, 22)
    logs = tmp_path / "z"
    col = Collector(tmp_path, free_port(), "--output", f"zeek:{logs}")
    col.start(env={"PIPELINE_TEST_KILL_AFTER_BATCHES": "3"})
    sensor = start_sensor(trace, col.addr, "sensor-z", tmp_path / "s.json", "--chunk-frames", "256",
                          "--active-timeout", "60")
    try:
        assert col.proc.wait(60) == -signal.SIGKILL
        col.start()
        assert sensor.wait(120) == 0
        assert col.stop() == 0, col.stderr()
    finally:
        end_group(sensor)
        col.kill_if_running()
    assert "cut" in col.stderr()
    recs = runner.sessions(read_lines(col.out))
    assert recs and any(not r["final"] for r in recs)
    check_against(logs, recs)
    check_layout(logs / "conn.log", "conn")



@needs_shared
@pytest.mark.slow
def test_every_shared_capture_through_pipeline_start(tmp_path):
    """One run over every shared capture (tunnels, VLANs, fuzzed files whose times say year
    151,991, real DNS, TLS, QUIC and HTTP): every log readable by zat and parsezeeklogs, and
    each row as the native records say."""
    p, recs, _ = runner.run(all_captures(), tmp_path, "--output", f"zeek:{tmp_path / 'tsv'}",
                            "--output", f"zeek:{tmp_path / 'json'}?format=json", timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    for fmt in ("tsv", "json"):
        check_against(tmp_path / fmt, recs)
    assert any(r["start"] > LIMIT for r in recs), "the fuzzed capture with year-151991 times is gone?"
    assert any(has_ssl(r) for r in recs) and any(has_http(r) for r in recs)
    assert {r["service"] for r in read(tmp_path / "tsv" / "conn.log")} >= {"ssl", "http", "dns", "quic,ssl"}
    ssl = {r["uid"]: r for r in read(tmp_path / "tsv" / "ssl.log")}
    for r in recs:
        if r["final"] and (r.get("tls.sni") or r.get("quic.sni")):
            assert ssl[expected_uid(r["sensor"], r["session_id"])]["server_name"] == (r.get("tls.sni") or r.get("quic.sni"))
