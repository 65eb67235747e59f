"""Syslog output against a real rsyslogd (our own instance on loopback), plus plain
sockets for framing, reconnect and failure cases."""
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from collector.outputs.syslog import SyslogSender
from pipeline import tracegen
from contracts.record import NAMES
from tests import runner
from tests.test_output_ipfix import drain

RSYSLOGD = shutil.which("rsyslogd") or next(
    (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None)
needs_rsyslog = pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd not installed (Debian rsyslog)")
DEADLINE = 30.0


@pytest.fixture(scope="module")
def run_records(tmp_path_factory):
    """The records of a real run, as dicts and as wire lists."""
    d = tmp_path_factory.mktemp("run")
    frames, _ = tracegen.build(seed=11, sessions=200)
    tracegen.write_pcap(str(d / "t.pcap"), frames)
    p, recs, _ = runner.run([d / "t.pcap"], d / "out", workers=2)
    assert p.returncode == 0, p.stderr
    assert recs
    return recs, [runner.as_wire(r) for r in recs]


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """\
global(workDirectory="{d}" maxMessageSize="64k")
module(load="imudp")
input(type="imudp" port="{udp}" address="127.0.0.1" rcvbufSize="4m")
module(load="imtcp")
input(type="imtcp" port="{tcp}" address="127.0.0.1")
template(name="fields" type="string"
         string="%PRI%|%TIMESTAMP:::date-rfc3339%|%HOSTNAME%|%APP-NAME%|%PROCID%|%MSGID%|%STRUCTURED-DATA%|%msg%\\n")
template(name="byapp" type="string" string="{d}/out-%APP-NAME%.log")
action(type="omfile" dynaFile="byapp" template="fields")
"""


class Rsyslog:
    def __init__(self, d):
        self.dir = d
        self.udp, self.tcp = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        conf = d / "rsyslog.conf"
        conf.write_text(CONF.format(d=d, udp=self.udp, tcp=self.tcp))
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._wait_ready()

    def lines(self, app):
        p = self.dir / f"out-{app}.log"
        return p.read_text().splitlines() if p.exists() else []

    def wait_lines(self, app, n):
        """Poll until the receiver wrote n lines for app (or the deadline passed)."""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            got = self.lines(app)
            if len(got) >= n:
                time.sleep(0.3)           # anything beyond n would be a duplicate: let it land
                return self.lines(app)
            time.sleep(0.05)
        return self.lines(app)

    def _wait_ready(self):
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.proc.stdout.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.tcp), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"<134>1 2024-01-01T00:00:00Z probe probe - probe - ready", ("127.0.0.1", self.udp))
            if self.lines("probe"):
                return
            time.sleep(0.05)
        raise RuntimeError("rsyslogd did not start listening")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory):
    if RSYSLOGD is None:
        pytest.skip("rsyslogd not installed (Debian rsyslog)")
    r = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    yield r
    r.stop()


def parse_line(line):
    pri, ts, host, app, procid, msgid, sd, msg = line.split("|", 7)
    return {"pri": int(pri), "ts": ts, "host": host, "app": app, "procid": procid, "msgid": msgid,
            "sd": sd, "msg": msg}


def epoch(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# --- an independent CEF reader (header by unescaped pipes, extension by key=value) ------

def parse_cef(text):
    fields, cur, i = [], [], 0
    while len(fields) < 7:
        c = text[i]
        if c == "\\":
            cur.append(text[i + 1])
            i += 2
            continue
        if c == "|":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    ext = text[i:]
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=", ext))
    values = {}
    for k, nxt in zip(keys, keys[1:] + [None]):
        raw = ext[k.end(): nxt.start() if nxt else len(ext)]
        values[k.group(1)] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), raw)
    return fields, values


def test_cef_reader_reads_the_spec_example():
    # the escaping examples of the ArcSight CEF specification
    f, v = parse_cef(r"CEF:0|security|threatmanager|1.0|100|detected a \| in message|10|"
                     r"src=10.0.0.1 act=blocked a \= dst=1.1.1.1 msg=line1\nline2 path=c:\\dir")
    assert f == ["CEF:0", "security", "threatmanager", "1.0", "100", "detected a | in message", "10"]
    assert v == {"src": "10.0.0.1", "act": "blocked a =", "dst": "1.1.1.1", "msg": "line1\nline2",
                 "path": "c:\\dir"}


PROTO = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}


def expected_cef(r):
    exp = {"src": r["client_ip"], "dst": r["server_ip"], "in": str(r["dl_byte_count"]),
           "out": str(r["ul_byte_count"]), "start": str(round(r["start"] * 1000)),
           "end": str(round(r["end"] * 1000)), "app": r["app"] or r["proto_path"],
           "proto": PROTO.get(r["transport"], str(r["transport"])),
           "cs1Label": "session_id", "cs1": str(r["session_id"])}
    if r["client_port"] is not None:
        exp["spt"], exp["dpt"] = str(r["client_port"]), str(r["server_port"])
    return exp


def expected_cef_application(r):
    """The CEF spec's keys for a record's application fields: dhost (destinationHostName,
    the host asked for), request (requestUrl, with its scheme), requestMethod,
    requestClientApplication (the User-Agent); a DNS query has no key of its own."""
    exp = {}
    host = r.get("http.host") or r.get("tls.sni") or r.get("quic.sni")
    if host:
        exp["dhost"] = host
    if r.get("http.uri"):
        exp["request"] = f"http://{r['http.host']}{r['http.uri']}" if r.get("http.host") else r["http.uri"]
    if r.get("http.method"):
        exp["requestMethod"] = r["http.method"]
    if r.get("http.user_agent"):
        exp["requestClientApplication"] = r["http.user_agent"]
    if r.get("dns.query"):
        exp["cs3Label"], exp["cs3"] = "dns.query", r["dns.query"]
    return exp


@pytest.fixture(scope="module")
def app_records(tmp_path_factory):
    return runner.app_records(tmp_path_factory.mktemp("app"))


# --- real rsyslogd ----------------------------------------------------------------

@needs_rsyslog
def test_cef_carries_the_application_fields(rsyslog, app_records):
    out = SyslogSender(f"tcp://127.0.0.1:{rsyslog.tcp}?format=cef&app=cefapp")
    out.write([runner.as_wire(r) for r in app_records])
    out.close()
    lines = [parse_line(x) for x in rsyslog.wait_lines("cefapp", len(app_records))]
    assert len(lines) == len(app_records)
    got = {}
    for x in lines:
        _, ext = parse_cef(x["msg"])
        got[tuple(ext.get(k) for k in ("src", "spt", "dst", "dpt", "cs1", "cn1"))] = ext
    assert len(got) == len(app_records)     # each record once (runs of several captures)
    keys = set()
    for r in app_records:
        ext = got[tuple(None if v is None else str(v) for v in (
            r["client_ip"], r["client_port"], r["server_ip"], r["server_port"], r["session_id"],
            r["report_number"]))]
        exp = expected_cef_application(r)
        assert {k: ext.get(k) for k in exp} == exp
        keys |= set(exp)
    # the captures have each: the host asked for, an HTTP request, a user agent, a DNS query
    assert {"dhost", "request", "requestMethod", "requestClientApplication", "cs3"} <= keys


@needs_rsyslog
def test_udp_json_one_message_per_record(rsyslog, run_records):
    recs, wire = run_records
    out = SyslogSender(f"udp://127.0.0.1:{rsyslog.udp}?app=udpjson")
    for i in range(0, len(wire), 50):
        out.write(wire[i:i + 50])
    out.close()
    assert out.written == len(wire)
    lines = [parse_line(x) for x in rsyslog.wait_lines("udpjson", len(wire))]
    assert len(lines) == len(recs)
    assert sorted(json.dumps(json.loads(x["msg"]), sort_keys=True) for x in lines) == \
        sorted(json.dumps(r, sort_keys=True) for r in recs)
    for x in lines:
        body = json.loads(x["msg"])
        assert x["pri"] == 16 * 8 + 6                      # local0.info
        assert x["host"] == body["sensor"] and x["msgid"] == "session" and x["sd"] == "-"
        assert x["procid"] == str(os.getpid())
        assert abs(epoch(x["ts"]) - body["end"]) < 1e-6
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", x["ts"])


@needs_rsyslog
def test_tcp_cef_one_message_per_record(rsyslog, run_records):
    recs, wire = run_records
    out = SyslogSender(f"tcp://127.0.0.1:{rsyslog.tcp}?format=cef&facility=local3&severity=notice&app=tcpcef")
    out.write(wire[:7])
    out.write(wire[7:])
    out.close()
    assert out.written == len(wire)
    lines = [parse_line(x) for x in rsyslog.wait_lines("tcpcef", len(wire))]
    assert len(lines) == len(recs)
    by_id = {}
    for x in lines:
        assert x["pri"] == 19 * 8 + 5
        assert x["msgid"] == "session"
        head, ext = parse_cef(x["msg"])
        assert head[:3] == ["CEF:0", "pipeline", "pipeline"] and head[4] == "session" and head[6] == "3"
        by_id.setdefault((x["host"], ext["cs1"]), []).append((head, ext))
    for r in recs:
        got = by_id[(r["sensor"], str(r["session_id"]))]
        head, ext = got.pop(0) if len(got) == 1 else next(
            (g for g in got if g[1]["cn1"] == str(r["report_number"])))
        assert head[5] == ("Session ended" if r["final"] else "Session update")
        exp = expected_cef(r)
        assert {k: ext.get(k) for k in exp} == exp


@needs_rsyslog
def test_cef_escaping_survives_a_real_receiver(rsyslog, run_records):
    _, wire = run_records
    r = list(wire[0])
    odd = "we\\ird x=app|y\nline two = end"
    r[NAMES.index("app")] = odd
    r[NAMES.index("sensor")] = "sensor one"
    out = SyslogSender(f"tcp://127.0.0.1:{rsyslog.tcp}?format=cef&app=odd")
    out.write([r])
    out.close()
    (line,) = rsyslog.wait_lines("odd", 1)
    x = parse_line(line)
    assert x["host"] == "sensor_one"           # HOSTNAME is PRINTUSASCII: no spaces
    head, ext = parse_cef(x["msg"])
    assert len(head) == 7 and ext["app"] == odd and ext["dvchost"] == "sensor one"


def test_cef_header_escaping(run_records, monkeypatch):
    from collector.outputs import syslog
    recs, wire = run_records
    monkeypatch.setattr(syslog, "VERSION", "1.0|beta\\2")
    head, ext = parse_cef(syslog.as_cef(wire[0]).decode())
    assert head[3] == "1.0|beta\\2" and head[6] == "3"
    assert ext["cs1"] == str(recs[0]["session_id"])


# --- plain sockets: framing, limits, failures ------------------------------------------

def read_octet_counted(data: bytes, whole=True):
    """RFC 6587 3.4.1 frames: "LEN SP MSG"; whole=False stops at an incomplete frame."""
    msgs = []
    while data:
        n, sp, rest = data.partition(b" ")
        if not sp or len(rest) < int(n):
            assert not whole, data[:40]
            break
        msgs.append(rest[:int(n)])
        data = rest[int(n):]
    return msgs


class Server(threading.Thread):
    """Accepts connections one after the other; closes the first after `first` messages."""

    def __init__(self, first=None):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.first, self.conns = first, []
        self.first_closed = threading.Event()

    def run(self):
        for n in range(2):
            c, _ = self.sock.accept()
            buf = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if n == 0 and self.first is not None and len(read_octet_counted(buf, whole=False)) >= self.first:
                    break
            self.conns.append(buf)
            c.close()
            if n == 0:
                self.first_closed.set()
                if self.first is None:
                    return


def test_tcp_octet_counting_frames(run_records):
    recs, wire = run_records
    srv = Server()
    srv.start()
    out = SyslogSender(f"tcp://127.0.0.1:{srv.port}")
    out.write(wire[:3])
    out.write(wire[3:10])
    out.close()
    srv.join(10)
    msgs = read_octet_counted(srv.conns[0])
    assert len(msgs) == 10 == out.written
    for m, r in zip(msgs, recs):
        assert re.fullmatch(rb"<134>1 \S+ \S+ pipeline \d+ session - \{.*\}", m, re.S)
        assert json.loads(m.split(b" - ", 1)[1]) == r


def test_tcp_reconnects_once_after_the_receiver_closed(run_records):
    recs, wire = run_records
    srv = Server(first=5)
    srv.start()
    out = SyslogSender(f"tcp://127.0.0.1:{srv.port}")
    out.write(wire[:5])
    assert srv.first_closed.wait(10)
    out.write(wire[5:12])
    out.close()
    srv.join(10)
    assert [len(read_octet_counted(c)) for c in srv.conns] == [5, 7]
    assert out.written == 12


def test_tcp_receiver_gone_for_good_names_the_batch(run_records):
    _, wire = run_records
    lsn = socket.create_server(("127.0.0.1", 0))
    out = SyslogSender(f"tcp://127.0.0.1:{lsn.getsockname()[1]}")
    conn, _ = lsn.accept()
    conn.close()
    lsn.close()                          # nobody listens any more: the one reconnect fails
    with pytest.raises(OSError, match="3 records not sent") as e:
        out.write(wire[:3])
    assert "\n" not in str(e.value)
    assert out.written == 0


def test_tcp_receiver_unreachable_is_one_line():
    port = free_port(socket.SOCK_STREAM)
    with pytest.raises(OSError) as e:
        SyslogSender(f"tcp://127.0.0.1:{port}")
    assert "cannot be reached" in str(e.value) and "\n" not in str(e.value)


def test_udp_oversize_is_counted_not_truncated(run_records, capsys):
    _, wire = run_records
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    big = list(wire[0][:len(NAMES)]) + [{"blob": "x" * 70000}]
    out = SyslogSender(f"udp://127.0.0.1:{rx.getsockname()[1]}")
    out.write([wire[1], big, wire[2], big])
    out.close()                         # not fatal: counted, said once
    assert out.issues["records_oversize"] == 2 and out.written == 2
    got = [rx.recv(70000) for _ in range(2)]
    assert all(len(g) < 65000 for g in got)
    rx.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "records_oversize" in err[0] and "over 65000" in err[0]


def test_udp_port_unreachable_is_counted_and_goes_on(run_records, capsys):
    _, wire = run_records
    port = free_port(socket.SOCK_DGRAM)
    out = SyslogSender(f"udp://127.0.0.1:{port}")
    out.write(wire[:5])
    out.write(wire[5:10])
    out.close()                         # fire-and-forget: never fatal
    assert out.written + out.issues["datagrams_refused"] == 10 and out.issues["datagrams_refused"] >= 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err           # one line when refusals start, one at the end with the count
    assert "datagrams refused" in err[0] and "sending on" in err[0]
    assert f"{out.issues['datagrams_refused']} datagrams refused until the end" in err[1]


def test_udp_refusal_episode_ends_when_the_receiver_is_back(run_records, capsys):
    _, wire = run_records
    port = free_port(socket.SOCK_DGRAM)
    out = SyslogSender(f"udp://127.0.0.1:{port}")
    out.write(wire[:5])                 # nobody there
    refused = out.issues["datagrams_refused"]
    assert refused >= 1
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))        # the receiver is back
    rx.settimeout(5)
    out.write(wire[5:8])                # may still meet the refusal of the first batch's last datagram
    out.write(wire[8:12])
    out.close()
    got = drain(rx)
    assert len(got) == 7                # every datagram of the last two batches arrived
    assert out.written == 7 and out.issues["datagrams_refused"] in (refused, refused + 1)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert "datagrams refused" in err[0]
    assert f"takes datagrams again ({out.issues['datagrams_refused']} refused meanwhile)" in err[1]


@needs_rsyslog
def test_odd_times_reach_a_real_receiver_whole(rsyslog, run_records):
    """Year ~150,000 (a capture read with the wrong byte order), year 2150, +-1e300: rsyslog
    takes no TIMESTAMP after 2099 (it then reads the header as the message, and the
    body's parser fails), so those go as the NILVALUE and are counted; CEF's start and
    end (milliseconds) keep what a long can say. Every message arrives parsed."""
    _, wire = run_records
    odd = []
    for start, end in ((4734231571822.834, 4734231571822.834), (-1e300, 1e300), (5680281600.5, 5680281601.0)):
        r = list(wire[len(odd)][:len(NAMES)])
        r[NAMES.index("start")], r[NAMES.index("end")] = start, end
        odd.append(r)
    out = SyslogSender(f"tcp://127.0.0.1:{rsyslog.tcp}?format=cef&app=clamp")
    out.write(odd + [wire[3]])
    out.close()
    assert out.written == 4 and out.issues["times_clamped"] == 3
    lines = [parse_line(x) for x in rsyslog.wait_lines("clamp", 4)]
    sensors = {w[NAMES.index("sensor")] for w in wire[:4]}
    assert len(lines) == 4 and all(x["host"] in sensors and x["msg"].startswith("CEF:0|") for x in lines)
    assert abs(epoch(lines[3]["ts"]) - wire[3][NAMES.index("end")]) < 1e-6
    ext = [parse_cef(x["msg"])[1] for x in lines]
    assert ext[0]["start"] == ext[0]["end"] == str(4734231571822834)     # milliseconds say it: kept
    assert (ext[1]["start"], ext[1]["end"]) == (str(-(1 << 63)), str((1 << 63) - 1))   # a long's ends
    assert ext[2]["end"] == str(5680281601000)


@pytest.mark.parametrize("target, why", [
    ("127.0.0.1:514", "expected udp://HOST:PORT"),
    ("http://h:514", "expected udp://HOST:PORT"),
    ("udp://h", "port 1-65535"),
    ("udp://h:0", "port 1-65535"),
    ("tcp://h:99999", "port 1-65535"),
    ("udp://h:514?format=xml", "format must be json or cef"),
    ("udp://h:514?facility=local9", "unknown facility"),
    ("udp://h:514?severity=loud", "unknown severity"),
    ("udp://h:514?app=has%20space", "app must be"),
    ("udp://h:514?colour=red", "unknown option"),
])
def test_check_rejects_bad_targets(target, why):
    with pytest.raises(ValueError, match=why) as e:
        SyslogSender.check(target)
    assert "\n" not in str(e.value)


def test_check_accepts_good_targets():
    for t in ("udp://127.0.0.1:514", "tcp://[::1]:6514?format=cef&facility=3&severity=warning&app=x",
              "tcp://siem.example:514?facility=LOCAL7"):
        SyslogSender.check(t)
