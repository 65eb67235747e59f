"""IPFIX output against real receivers: nfcapd/nfdump (Debian nfdump) and tshark (Debian tshark).

The records come from the real pipeline run on a generated trace with an
active timeout short enough for interim reports. Expected values are computed
here from the JSON lines (deltas per session from the cumulative counters),
and the wire is read back by tools that know nothing of our encoder, plus a
small decoder written in this file for the TCP stream.
"""
import collections
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from collector.outputs.ipfix import IpfixExporter
from contracts.record import NAMES
from tests import runner

ROOT = Path(__file__).resolve().parents[1]
REVERSE_PEN = 29305
ACTIVE_TIMEOUT = 30          # the trace's sessions last up to minutes: interim reports appear


def needs(binary, package):
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} not installed (Debian {package})")


# -- the records: real pipeline run ---------------------------------------------------------------

@pytest.fixture(scope="module")
def records(tmp_path_factory):
    d = tmp_path_factory.mktemp("ipfix")
    trace = d / "t.pcap"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "pipeline.tracegen", str(trace), "--sessions", "300",
                    "--truth", str(d / "truth.json")], check=True, env=env, cwd=ROOT, capture_output=True)
    p, recs, _ = runner.run([trace], d / "run", "--active-timeout", str(ACTIVE_TIMEOUT), "--quiet")
    assert p.returncode == 0, p.stderr
    interim = [r for r in recs if not r["final"]]
    assert interim and any(r["report_number"] > 2 for r in interim), "no interim records: lower the active timeout"
    assert any(r["ip_version"] == 6 for r in recs) and any(r["vlan"] for r in recs)
    return recs


def wire(recs):
    return [runner.as_wire(d) for d in recs]


def expected_flows(recs):
    """One tuple per record, with the per-direction DELTAS computed from the cumulative counters."""
    last = {}
    out = []
    for r in sorted(recs, key=lambda r: (r["sensor"], r["session_id"], r["report_number"])):
        key = (r["sensor"], r["session_id"])
        now = (r["ul_packet_count"], r["ul_byte_count"], r["dl_packet_count"], r["dl_byte_count"])
        prev = last.get(key, (0, 0, 0, 0))
        last[key] = now
        out.append((str(ipaddress.ip_address(r["client_ip"])), str(ipaddress.ip_address(r["server_ip"])),
                    r["client_port"] or 0, r["server_port"] or 0, r["transport"],
                    *(n - p for n, p in zip(now, prev)), (r["vlan"] or [0])[0]))
    return out


def finals_sum(recs, field):
    return sum(r[field] for r in recs if r["final"])


# -- a small independent IPFIX decoder ----------------------------------------------------------

def split_messages(stream: bytes):
    msgs, off = [], 0
    while off < len(stream):
        version, length = struct.unpack_from("!HH", stream, off)
        assert version == 10 and 16 <= length <= 65535 and off + length <= len(stream)
        msgs.append(stream[off:off + length])
        off += length
    return msgs


def decode(messages, templates=None):
    """-> (headers, records): headers are dicts of each message, records dicts keyed by
    (element id, enterprise number) for unsigned fields and addresses."""
    templates = {} if templates is None else templates
    headers, records = [], []
    for m in messages:
        version, length, export_time, seq, domain = struct.unpack_from("!HHIII", m, 0)
        assert version == 10 and length == len(m)
        h = {"seq": seq, "domain": domain, "sets": [], "records": 0, "export_time": export_time}
        off = 16
        while off < length:
            set_id, set_len = struct.unpack_from("!HH", m, off)
            assert set_len >= 4 and off + set_len <= length
            h["sets"].append(set_id)
            body, pos = m[off + 4:off + set_len], 0
            if set_id == 2:
                while pos + 4 <= len(body):
                    tid, count = struct.unpack_from("!HH", body, pos)
                    pos += 4
                    fields = []
                    for _ in range(count):
                        ie, flen = struct.unpack_from("!HH", body, pos)
                        pos += 4
                        pen = 0
                        if ie & 0x8000:
                            pen, = struct.unpack_from("!I", body, pos)
                            pos += 4
                        fields.append((ie & 0x7FFF, pen, flen))
                    templates[(domain, tid)] = fields
            elif set_id >= 256:
                fields = templates[(domain, set_id)]
                size = sum(f[2] for f in fields)
                while pos + size <= len(body):
                    rec = {}
                    for ie, pen, flen in fields:
                        raw = body[pos:pos + flen]
                        pos += flen
                        is_address = ie in (8, 12, 27, 28)
                        rec[(ie, pen)] = raw if is_address else int.from_bytes(raw, "big")
                    records.append(rec)
                    h["records"] += 1
            off += set_len
        headers.append(h)
    return headers, records


def decoded_flows(records):
    out = []
    for rec in records:
        v6 = (27, 0) in rec
        src, dst = (rec[(27, 0)], rec[(28, 0)]) if v6 else (rec[(8, 0)], rec[(12, 0)])
        out.append((str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), rec[(7, 0)], rec[(11, 0)],
                    rec[(4, 0)], rec[(2, 0)], rec[(1, 0)], rec[(2, REVERSE_PEN)], rec[(1, REVERSE_PEN)],
                    rec[(58, 0)]))
    return out


def iana_biflow(records):
    """(initiatorOctets, responderOctets, initiatorPackets, responderPackets, biflowDirection)."""
    return [(r[(231, 0)], r[(232, 0)], r[(298, 0)], r[(299, 0)], r[(239, 0)]) for r in records]


def udp_receiver():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rx.bind(("127.0.0.1", 0))
    return rx


def drain(rx):
    rx.settimeout(0.3)
    out = []
    try:
        while True:
            out.append(rx.recv(65535))
    except socket.timeout:
        pass
    rx.close()
    return out


def write_pcap(path, datagrams, dport):
    """The messages as IPv4/UDP frames on Ethernet, as a capture on the wire would show them."""
    def checksum(hdr):
        s = sum(struct.unpack("!10H", hdr))
        s = (s & 0xFFFF) + (s >> 16)
        return ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i, d in enumerate(datagrams):
            udp = struct.pack("!HHHH", 40000, dport, 8 + len(d), 0) + d
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                             bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            frame = b"\0" * 12 + b"\x08\x00" + ip + udp
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(frame), len(frame)) + frame)


def export_udp(recs, query="", batch=500):
    rx = udp_receiver()
    port = rx.getsockname()[1]
    e = IpfixExporter(f"udp://127.0.0.1:{port}{query}")
    w = wire(recs)
    for i in range(0, len(w), batch):
        e.write(w[i:i + batch])
    e.close()
    assert e.written == len(recs) and e.send_errors == 0
    return drain(rx), port


# -- wire format, our decoder ---------------------------------------------------------------------

def test_udp_messages_headers_and_sizes(records):
    dgs, _ = export_udp(records, "?domain=7")
    assert all(len(d) <= 1400 for d in dgs)
    headers, recs = decode(dgs)
    assert len(recs) == len(records)
    assert all(h["domain"] == 7 for h in headers)
    assert headers[0]["sets"][0] == 2                            # templates first
    assert all(2 not in h["sets"] for h in headers[1:])          # not due again within 60 s
    seq = 0
    for h in headers:                                            # records sent before each message
        assert h["seq"] == seq
        seq += h["records"]
    assert abs(headers[0]["export_time"] - time.time()) < 3600
    assert sorted(decoded_flows(recs)) == sorted(expected_flows(records))
    # biflow sums: every packet of the final records, exactly once
    assert sum(r[(2, 0)] + r[(2, REVERSE_PEN)] for r in recs) == finals_sum(records, "packet_count")
    assert sum(r[(1, 0)] + r[(1, REVERSE_PEN)] for r in recs) == finals_sum(records, "byte_count")
    # IANA's biflow elements beside RFC 5103's reverse ones, for collectors that skip enterprise elements
    assert sorted(iana_biflow(recs)) == sorted((f[6], f[8], f[5], f[7], 1) for f in expected_flows(records))


def test_template_every_zero_repeats_templates(records):
    dgs, _ = export_udp(records[:200], "?template_every=0")
    headers, recs = decode(dgs)
    assert len(headers) > 1 and all(h["sets"][0] == 2 for h in headers)
    assert len(recs) == 200


def test_session_fields_and_deltas():
    def rec(report, final, reason, ulp, dlp, ulb, dlb):
        d = {n: None for n in NAMES}
        d.update(type="session", final=final, end_reason=reason, session_id=(1 << 40) | 0x123, sensor="s1",
                 report_number=report, start=1700000000.1234, end=1700000010.5, ip_version=6, transport=17,
                 client_ip="2001:db8::1", client_port=None, server_ip="2001:db8::2", server_port=53,
                 vlan=[1000, 20], tcp_flags=0, ul_packet_count=ulp, dl_packet_count=dlp,
                 ul_byte_count=ulb, dl_byte_count=dlb, packet_count=ulp + dlp, byte_count=ulb + dlb)
        return [d[n] for n in NAMES] + [{"plugin": 1}]
    rx = udp_receiver()
    e = IpfixExporter(f"udp://127.0.0.1:{rx.getsockname()[1]}")
    e.write([rec(1, False, "active", 3, 1, 300, 100), rec(2, False, "active", 5, 2, 500, 250)])
    e.write([rec(3, True, "evicted", 9, 2, 900, 250)])
    assert not e.counters                                        # forgotten at the final record
    e.write([rec(1, True, "idle", 1, 1, 10, 10)])                # same key again: a fresh session
    e.close()
    _, recs = decode(drain(rx))
    got = [(r[(2, 0)], r[(2, REVERSE_PEN)], r[(1, 0)], r[(1, REVERSE_PEN)], r[(136, 0)]) for r in recs]
    assert got == [(3, 1, 300, 100, 2), (2, 1, 200, 150, 2), (4, 0, 400, 0, 5), (1, 1, 10, 10, 1)]
    assert iana_biflow(recs) == [(300, 100, 3, 1, 1), (200, 150, 2, 1, 1), (400, 0, 4, 0, 1), (10, 10, 1, 1, 1)]
    r = recs[0]
    assert (r[(152, 0)], r[(153, 0)]) == (1700000000123, 1700000010500)
    assert (r[(7, 0)], r[(11, 0)], r[(4, 0)], r[(58, 0)], r[(148, 0)]) == (0, 53, 17, 1000, (1 << 40) | 0x123)


# -- nfcapd / nfdump ------------------------------------------------------------------------------

def udp_queue(port):
    """(rx_queue bytes, drops) of the UDP socket bound to 127.0.0.1:port, from /proc/net/udp."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == f"0100007F:{port:04X}":
            return int(f[4].split(":")[1], 16), int(f[-1])
    return None


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_nfcapd_reads_back_every_flow(records, tmp_path):
    needs("nfcapd", "nfdump")
    needs("nfdump", "nfdump")
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    port = free_udp_port()
    log = open(tmp_path / "nfcapd.log", "w+")
    nfcapd = subprocess.Popen(["nfcapd", "-w", str(flows_dir), "-p", str(port), "-b", "127.0.0.1",
                               "-I", "test", "-B", "4000000"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while udp_queue(port) is None:                       # listening
            assert nfcapd.poll() is None, (tmp_path / "nfcapd.log").read_text()
            assert time.monotonic() < deadline, "nfcapd did not bind"
            time.sleep(0.05)
        e = IpfixExporter(f"udp://127.0.0.1:{port}")
        w = wire(records)
        for i in range(0, len(w), 200):
            e.write(w[i:i + 200])
        e.close()
        assert e.written == len(records)
        while udp_queue(port)[0]:                            # nfcapd has read every datagram
            assert time.monotonic() < deadline + 15, "nfcapd does not read"
            time.sleep(0.05)
        assert udp_queue(port)[1] == 0, "datagrams dropped by the receiving socket"
    finally:
        nfcapd.send_signal(signal.SIGTERM)                   # flushes and closes its file
        try:
            nfcapd.wait(timeout=20)
        except subprocess.TimeoutExpired:
            nfcapd.kill()
            nfcapd.wait()
    log.seek(0)
    text = log.read()
    log.close()
    env = dict(os.environ, TZ="UTC")
    info = subprocess.run(["nfdump", "-R", str(flows_dir), "-I"], capture_output=True, text=True, env=env).stdout
    # nfcapd's summary ("Sequence Errors: N", nfdump 1.7) and the file's ("Sequence failures: N")
    seq_errors = re.findall(r"Sequence (?:Errors|failures): (\d+)", text + info)
    assert seq_errors and set(seq_errors) == {"0"}, text + info
    out = subprocess.run(["nfdump", "-R", str(flows_dir), "-o", "json"], capture_output=True, text=True,
                         env=env, check=True).stdout
    flows = json.loads(out)
    assert len(flows) == len(records)
    assert sum(f["in_packets"] + f["out_packets"] for f in flows) == finals_sum(records, "packet_count")
    assert sum(f["in_bytes"] + f["out_bytes"] for f in flows) == finals_sum(records, "byte_count")
    got = []
    for f in flows:
        src = f.get("src4_addr") or f.get("src6_addr")
        dst = f.get("dst4_addr") or f.get("dst6_addr")
        got.append((str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), f.get("src_port", 0),
                    f.get("dst_port", 0), f["proto"], f["in_packets"], f["in_bytes"], f["out_packets"],
                    f["out_bytes"], f.get("src_vlan", 0)))
    assert sorted(got) == sorted(expected_flows(records))
    # first/last seen, millisecond precision
    def ms(text):
        return round(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)
    times = collections.Counter((ms(f["first"]), ms(f["last"])) for f in flows)
    assert times == collections.Counter((round(r["start"] * 1000), round(r["end"] * 1000)) for r in records)


# -- tshark ----------------------------------------------------------------------------------------

def tshark(pcap, port, *args):
    p = subprocess.run(["tshark", "-r", str(pcap), "-d", f"udp.port=={port},cflow", *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def tshark_problems(pcap, port):
    verbose = tshark(pcap, port, "-V")
    expert = tshark(pcap, port, "-q", "-z", "expert,note")
    problems = [ln for ln in verbose.splitlines() if "Malformed" in ln or "Expert Info" in ln]
    problems += [ln for ln in expert.splitlines() if ln.strip().startswith(("Errors", "Warns", "Notes"))]
    return problems, verbose


def tshark_flows(pcap, port):
    """Per-flow tuples and per-message (domain, sequence, records) from tshark's fields.
    tshark lists a message's occurrences in wire order; the forward and reverse counters
    of a flow alternate; IPv4 and IPv6 addresses are separate fields, and each message holds
    at most one data set per template."""
    out = tshark(pcap, port, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
                 "-e", "cflow.srcaddr", "-e", "cflow.srcaddrv6", "-e", "cflow.dstaddr", "-e", "cflow.dstaddrv6",
                 "-e", "cflow.srcport", "-e", "cflow.dstport", "-e", "cflow.protocol", "-e", "cflow.packets",
                 "-e", "cflow.octets", "-e", "cflow.vlanid", "-e", "cflow.flowset_id", "-e", "cflow.od_id",
                 "-e", "cflow.sequence")
    flows, headers = [], []
    for line in out.splitlines():
        s4, s6, d4, d6, sp, dp, proto, pkts, octs, vlan, sets, od, seq = (c.split(",") if c else []
                                                                          for c in line.split("\t"))
        data_sets = [int(x) for x in sets if int(x) >= 256]
        assert len(data_sets) == len(set(data_sets))
        addrs = []
        for set_id in data_sets:
            addrs += list(zip(s4, d4)) if set_id == 256 else list(zip(s6, d6))
        assert len(addrs) == len(sp) == len(pkts) // 2
        for i, (src, dst) in enumerate(addrs):
            flows.append((str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), int(sp[i]), int(dp[i]),
                          int(proto[i]), int(pkts[2 * i]), int(octs[2 * i]), int(pkts[2 * i + 1]),
                          int(octs[2 * i + 1]), int(vlan[i])))
        headers.append((int(od[0]), int(seq[0]), len(addrs)))
    return flows, headers


def test_tshark_decodes_udp_export(records, tmp_path):
    needs("tshark", "tshark")
    dgs, port = export_udp(records, "?domain=9")
    pcap = tmp_path / "ipfix.pcap"
    write_pcap(pcap, dgs, port)
    problems, verbose = tshark_problems(pcap, port)
    assert not problems, problems[:5]
    assert "PEN: IPFIX Reverse Information Element Private Enterprise (29305)" in verbose
    assert "Flow End Reason: End of Flow detected (3)" in verbose
    flows, headers = tshark_flows(pcap, port)
    assert sorted(flows) == sorted(expected_flows(records))
    assert sum(f[5] + f[7] for f in flows) == finals_sum(records, "packet_count")
    out = tshark(pcap, port, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
                 "-e", "cflow.initiator_octets", "-e", "cflow.responder_octets", "-e", "cflow.initiator_packets",
                 "-e", "cflow.responder_packets", "-e", "cflow.biflow_direction")
    biflow = []
    for line in out.splitlines():
        columns = [[int(x) for x in c.split(",")] if c else [] for c in line.split("\t")]
        biflow += list(zip(*columns))
    assert sorted(biflow) == sorted((f[6], f[8], f[5], f[7], 1) for f in expected_flows(records))
    assert "Biflow Direction: Initiator (1)" in verbose
    assert all(od == 9 for od, *_ in headers)
    seq = 0
    for _, s, n in headers:
        assert s == seq
        seq += n


def test_tshark_flags_a_damaged_message(records, tmp_path):
    """The check above can fail: a message whose data set overruns it is reported."""
    needs("tshark", "tshark")
    dgs, port = export_udp(records[:100])
    bad = bytearray(dgs[0])
    off = 16 + struct.unpack_from("!H", bad, 18)[0]          # after the template set
    struct.pack_into("!H", bad, off + 2, len(bad))           # data set longer than the message
    pcap = tmp_path / "bad.pcap"
    write_pcap(pcap, [bytes(bad)] + dgs[1:], port)
    problems, _ = tshark_problems(pcap, port)
    assert problems


# -- TCP: our receiver, our decoder, and tshark on the same messages ---------------------------------

def read_all(conn):
    conn.settimeout(10)
    chunks = []
    while True:
        b = conn.recv(1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def read_messages(conn, nrecords, templates):
    """Read from conn until `nrecords` data records have arrived (whole messages)."""
    buf, msgs, got = b"", [], 0
    conn.settimeout(10)
    while got < nrecords:
        buf += conn.recv(1 << 16)
        while len(buf) >= 4 and len(buf) >= struct.unpack_from("!H", buf, 2)[0]:
            n = struct.unpack_from("!H", buf, 2)[0]
            msgs.append(buf[:n])
            got += decode([buf[:n]], templates)[0][0]["records"]
            buf = buf[n:]
    return msgs


def test_tcp_export_and_reconnect(records, tmp_path):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    w = wire(records)
    half = len(w) // 2
    e = IpfixExporter(f"tcp://127.0.0.1:{port}")
    conn1, _ = lsock.accept()
    e.write(w[:300])
    e.write(w[300:half])
    first = read_messages(conn1, half, {})
    conn1.close()                                            # the collector restarts
    e.write(w[half:])
    conn2, _ = lsock.accept()
    e.close()
    second = split_messages(read_all(conn2))
    conn2.close()
    lsock.close()
    assert e.written == len(records) and e.send_errors == 0
    for msgs in (first, second):
        headers, _ = decode(msgs)
        assert headers[0]["sets"][0] == 2                    # templates at each connection start
        assert all(2 not in h["sets"] for h in headers[1:])
        seq = 0
        for h in headers:                                    # each connection counts from 0
            assert h["seq"] == seq
            seq += h["records"]
    assert max(len(m) for m in first + second) > 1400         # TCP packs more than a datagram
    _, recs = decode(first)
    _, recs2 = decode(second)
    assert sorted(decoded_flows(recs + recs2)) == sorted(expected_flows(records))
    if shutil.which("tshark"):                               # the same messages through tshark
        for i, msgs in enumerate((first, second)):
            pcap = tmp_path / f"tcp{i}.pcap"
            write_pcap(pcap, msgs, 4739)
            problems, _ = tshark_problems(pcap, 4739)
            assert not problems, problems[:5]


def test_tcp_connection_refused_is_one_line():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))                                 # bound, not listening: refused
    port = s.getsockname()[1]
    with pytest.raises(OSError) as err:
        IpfixExporter(f"tcp://127.0.0.1:{port}")
    s.close()
    assert "cannot connect" in str(err.value) and "\n" not in str(err.value)


def test_udp_refusals_are_counted_and_the_run_goes_on(records, capsys):
    port = free_udp_port()                                   # nobody listens: port unreachable
    e = IpfixExporter(f"udp://127.0.0.1:{port}")
    for i in range(0, 200, 20):
        e.write(wire(records[i:i + 20]))
    e.close()                                                # fire-and-forget: never fatal
    assert e.issues["datagrams_refused"] > 0 and e.send_errors == 0
    assert 0 <= e.written < 200                              # the refused datagrams' records are not
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err                                # refusals started; their count at the end
    assert "datagrams refused" in err[0]
    assert f"{e.issues['datagrams_refused']} datagrams refused until the end" in err[1]


def test_records_ipfix_cannot_say_as_they_are(records, capsys):
    """Times before 1970 or past 2^64 ms, an address not of the record's ip_version, a
    zone: written (times clamped and counted, IPv4 mapped into the IPv6 template),
    read back by our decoder."""
    w = wire(records[:4])
    i = {n: NAMES.index(n) for n in ("start", "end", "ip_version", "client_ip", "server_ip")}
    odd = [list(r[:len(NAMES)]) for r in w]
    odd[0][i["start"]], odd[0][i["end"]] = -5.0, 1e300
    odd[1][i["ip_version"]], odd[1][i["client_ip"]], odd[1][i["server_ip"]] = 4, "fe80::1%eth0", "10.0.0.2"
    odd[2][i["ip_version"]], odd[2][i["client_ip"]], odd[2][i["server_ip"]] = 6, "10.0.0.1", "10.0.0.2"
    odd[3][i["start"]] = odd[3][i["end"]] = 4734231571822.834                # fits: kept
    rx = udp_receiver()
    e = IpfixExporter(f"udp://127.0.0.1:{rx.getsockname()[1]}")
    e.write(odd)
    e.close()
    assert e.written == 4 and e.issues == {"records_unwritable": 0, "times_clamped": 1, "datagrams_refused": 0}
    _, got = decode(drain(rx))
    assert len(got) == 4
    by_id = {rec[(148, 0)]: rec for rec in got}                  # flowId = session_id
    recs = [by_id[r[NAMES.index("session_id")]] for r in odd]
    assert (recs[0][(152, 0)], recs[0][(153, 0)]) == (0, (1 << 64) - 1)
    assert (recs[1][(27, 0)], recs[1][(28, 0)]) == (ipaddress.ip_address("fe80::1").packed,
                                                    ipaddress.ip_address("::ffff:10.0.0.2").packed)
    assert (recs[2][(8, 0)], recs[2][(12, 0)]) == (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    assert recs[3][(153, 0)] == 4734231571822834
    assert "times_clamped" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["http://h:1", "udp://:4739", "udp://h:99999", "udp://h:x",
                                    "udp://h:1?template_every=-1", "udp://h:1?domain=x",
                                    "udp://h:1?domain=4294967296", "udp://h:1?colour=red", "tcp://h:1/x"])
def test_check_rejects_bad_targets(target):
    with pytest.raises(ValueError) as err:
        IpfixExporter.check(target)
    assert "\n" not in str(err.value)


def test_check_accepts_good_targets():
    for t in ("udp://127.0.0.1:4739", "tcp://[::1]:4739?domain=3", "udp://collector?template_every=0.5&domain=0"):
        IpfixExporter.check(t)
