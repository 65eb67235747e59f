"""The trace generator: its pcap, read back with dpkt and aggregated independently, has exactly the
sessions its ground truth announces; headers and checksums are right; output is deterministic."""
import json
import socket
import struct
from collections import Counter

import dpkt
import pytest

from pipeline import tracegen

TIMEOUT = {6: 300.0, 17: 60.0, 1: 60.0, 58: 60.0}     # the pipeline's default idle timeouts
DNS_TIMEOUT = 15.0
COUNTED = ("packet_count", "byte_count", "cap_packet_count", "cap_byte_count", "data_packet_count", "data_byte_count")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    frames, truth = tracegen.build()
    path = tmp_path_factory.mktemp("tg") / "t.pcap"
    tracegen.write_pcap(str(path), frames)
    return path, frames, truth


def ones_sum(data):
    """One's complement sum of 16-bit words, in native byte order (RFC 1071: a sum that verifies is
    0xFFFF in either order)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(memoryview(bytes(data)).cast("H"))
    while s > 0xFFFF:
        s = (s >> 16) + (s & 0xFFFF)
    return s


def transport_ok(src, dst, proto, seg):
    """The TCP / UDP / ICMP / ICMPv6 checksum verifies."""
    if proto == 1:
        return ones_sum(seg) == 0xFFFF
    ph = src + dst + (struct.pack("!HH", proto, len(seg)) if len(src) == 4 else struct.pack("!II", len(seg), proto))
    return ones_sum(ph + seg) == 0xFFFF


def packets(path):
    """Each IP datagram of the capture (fragments reassembled, GTP-U decoded) as dicts, and per-frame
    facts for the header checks."""
    frags, out, checks = {}, [], Counter()
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for ts, buf in reader:
            eth = dpkt.ethernet.Ethernet(buf)
            vlan = tuple(t.id for t in getattr(eth, "vlan_tags", [])) or None
            l3 = 14 + 4 * len(vlan or ())
            if eth.type == dpkt.ethernet.ETH_TYPE_ARP:
                checks["arp"] += 1
                continue
            if len(buf) < 60:
                checks["short"] += 1
            raw = buf[l3:]
            if raw[0] >> 4 == 4:
                hl, total = (raw[0] & 15) * 4, int.from_bytes(raw[2:4], "big")
                checks["bad_ip4_sum"] += ones_sum(raw[:hl]) != 0xFFFF
                checks["bad_total"] += total > len(raw) or (len(buf) > 60 and total != len(raw))
                src, dst, proto, off = raw[12:16], raw[16:20], raw[9], int.from_bytes(raw[6:8], "big")
                if off & 0x3FFF:                      # a fragment: collect until the datagram is whole
                    key = (src, dst, proto, raw[4:6])
                    parts = frags.setdefault(key, [])
                    parts.append(((off & 0x1FFF) * 8, raw[hl:total], len(buf), not off & 0x2000))
                    have = sorted(parts)
                    if not have[-1][3] or sum(len(p[1]) for p in have) != have[-1][0] + len(have[-1][1]):
                        continue
                    del frags[key]
                    seg, wire, ncap = b"".join(p[1] for p in have), sum(p[2] for p in have), len(have)
                else:
                    seg, wire, ncap = raw[hl:total], len(buf), 1
            else:
                plen = int.from_bytes(raw[4:6], "big")
                src, dst, proto, seg, wire, ncap = raw[8:24], raw[24:40], raw[6], raw[40:40 + plen], len(buf), 1
            out.extend(datagram(ts, vlan, None, src, dst, proto, seg, wire, ncap, checks))
    assert not frags
    return out, checks


def datagram(ts, vlan, teid, src, dst, proto, seg, wire, ncap, checks):
    checks["bad_l4_sum"] += not transport_ok(src, dst, proto, seg)
    p = dict(ts=ts, vlan=vlan, teid=teid, src=src, dst=dst, proto=proto, wire=wire, ncap=ncap, sport=None,
             dport=None, flags=0, seq=None)
    if proto == 6:
        t = dpkt.tcp.TCP(seg)
        doff = t.off * 4
        checks[f"tcp_doff{doff}{'_syn' if t.flags & dpkt.tcp.TH_SYN else ''}"] += 1
        p.update(sport=t.sport, dport=t.dport, flags=t.flags, seq=t.seq, payload=len(seg) - doff)
    elif proto == 17:
        u = dpkt.udp.UDP(seg)
        checks["bad_ulen"] += u.ulen != len(seg)
        p.update(sport=u.sport, dport=u.dport, payload=len(seg) - 8)
        if u.sport == u.dport == 2152:              # GTP-U G-PDU: the inner datagram is a session too
            flags, mtype, length, inner_teid = struct.unpack("!BBHI", u.data[:8])
            assert (flags, mtype, length) == (0x30, 0xFF, len(u.data) - 8)
            inner = dpkt.ip.IP(u.data[8:])
            checks["bad_ip4_sum"] += ones_sum(u.data[8:28]) != 0xFFFF
            checks["gtp"] += 1
            return [p] + datagram(ts, None, inner_teid, inner.src, inner.dst, inner.p, bytes(inner.data),
                                  wire, ncap, checks)
    else:
        assert proto in (1, 58), proto
        p["payload"] = len(seg) - 8
    return [p]


def aggregate(pkts):
    """Sessions, as the pipeline defines them, from the datagrams."""
    table, done = {}, []
    for p in pkts:
        a, b = (p["src"], p["sport"]), (p["dst"], p["dport"])
        key = (p["vlan"], p["teid"], p["proto"]) + tuple(sorted([a, b], key=repr))
        s = table.get(key)
        timeout = DNS_TIMEOUT if 53 in (p["sport"], p["dport"]) else TIMEOUT[p["proto"]]
        if s is None or p["ts"] - s["end"] > timeout:
            s = table[key] = dict(client=a, server=b, vlan=p["vlan"], teid=p["teid"], proto=p["proto"], start=p["ts"],
                                  retx=0, fins=set(), rst=False, seen={True: set(), False: set()},
                                  **{side + c: 0 for side in ("", "ul_", "dl_") for c in COUNTED})
            done.append(s)
        up = a == s["client"]
        s["end"] = p["ts"]
        for side in ("", "ul_" if up else "dl_"):
            for c, v in zip(COUNTED, (1, p["wire"], p["ncap"], p["wire"], p["payload"] > 0, p["payload"])):
                s[side + c] += v
        if p["proto"] == 6:
            if p["payload"]:
                rng = (p["seq"], p["payload"])
                s["retx"] += rng in s["seen"][up]
                s["seen"][up].add(rng)
            if p["flags"] & dpkt.tcp.TH_FIN:
                s["fins"].add(up)
            s["rst"] |= bool(p["flags"] & dpkt.tcp.TH_RST)
    return done


def as_truth(s):
    ntop = lambda b: socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)
    (cip, cport), (sip, sport) = s["client"], s["server"]
    d = dict(client_ip=ntop(cip), client_port=cport, server_ip=ntop(sip), server_port=sport, transport=s["proto"],
             ip_version=4 if len(cip) == 4 else 6, vlan=list(s["vlan"]) if s["vlan"] else None,
             tunnel_inner=s["teid"] is not None, retransmission_count=s["retx"],
             closed=len(s["fins"]) == 2 or s["rst"], start=s["start"], end=s["end"])
    d.update({k: v for k, v in s.items() if k.endswith(COUNTED)})
    return d


def by_start(d):
    return (d["start"], d["client_ip"], str(d["client_port"]), d["transport"], d["tunnel_inner"])


def test_independent_aggregation_matches_truth(trace):
    path, frames, truth = trace
    pkts, _ = packets(path)
    mine = sorted((as_truth(s) for s in aggregate(pkts)), key=by_start)
    want = sorted(({k: t[k] for k in mine[0]} for t in truth), key=by_start)
    assert len(mine) == len(want)
    for m, w in zip(mine, want):
        assert m == w


@pytest.mark.parametrize("seed,n", [(7, 40), (3, 0)])
def test_other_seeds_and_sizes_match_truth(tmp_path, seed, n):
    frames, truth = tracegen.build(seed=seed, sessions=n)
    tracegen.write_pcap(str(tmp_path / "t.pcap"), frames)
    mine = sorted((as_truth(s) for s in aggregate(packets(tmp_path / "t.pcap")[0])), key=by_start)
    assert mine == sorted(({k: t[k] for k in mine[0]} for t in truth), key=by_start)
    assert len(truth) == n + 6              # the GTP outer + 2 inner, the fragmented one, the two gap halves


def test_headers_and_checksums(trace):
    path, frames, _ = trace
    _, checks = packets(path)
    for bad in ("bad_ip4_sum", "bad_l4_sum", "bad_total", "bad_ulen", "short"):
        assert checks[bad] == 0, bad
    doffs = {k: v for k, v in checks.items() if k.startswith("tcp_doff")}
    assert set(doffs) == {"tcp_doff20", "tcp_doff20_syn", "tcp_doff32_syn"}, doffs
    assert checks["arp"] == 6 and checks["gtp"] > 10
    assert all(len(f) >= 60 for _, f in frames)
    assert any(len(f) == 1514 for _, f in frames)        # full-size fragments and segments


def test_pcap_records(trace):
    path, frames, _ = trace
    data = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 1)
    off, last, n = 24, 0.0, 0
    while off < len(data):
        sec, usec, cap, wire = struct.unpack_from("<IIII", data, off)
        assert cap == wire == len(frames[n][1]) and usec < 10**6
        assert data[off + 16:off + 16 + cap] == frames[n][1]
        assert sec + usec / 1e6 >= last and abs(sec + usec / 1e6 - frames[n][0]) < 1e-6
        last, off, n = sec + usec / 1e6, off + 16 + cap, n + 1
    assert n == len(frames)


def test_the_trace_has_every_case(trace):
    path, frames, truth = trace
    kinds = Counter(t["kind"] for t in truth)
    assert kinds["tcp"] > 60 and kinds["dns"] > 20 and kinds["udp"] > 15 and kinds["icmp"] > 20
    assert {(t["transport"], t["ip_version"]) for t in truth} == {(6, 4), (6, 6), (17, 4), (17, 6), (1, 4), (58, 6)}
    tagged = [t["vlan"] for t in truth if t["vlan"]]
    assert len(tagged) >= len(truth) // 10 and sum(len(v) == 2 for v in tagged) == 2
    tcps = [t for t in truth if t["transport"] == 6]
    assert sum(t["retransmission_count"] > 0 for t in tcps) > 5
    assert all(t["retransmission_count"] <= 1 for t in tcps)
    fin = sum(t["closed"] and t["tcp_flags"] & 1 for t in tcps)
    rst = sum(t["closed"] and t["tcp_flags"] & 4 for t in tcps)
    assert fin > 10 and rst > 3 and sum(not t["closed"] for t in tcps) > 3
    assert all(t["rtt"] > 0 for t in tcps) and all(t["rtt"] is None for t in truth if t["transport"] != 6)
    [frag] = [t for t in truth if t["fragmented"]]
    assert (frag["packet_count"], frag["cap_packet_count"], frag["data_packet_count"]) == (1, 3, 1)
    last_piece = frag["data_byte_count"] + 8 - 2 * 1480      # UDP header + payload beyond two full fragments
    assert frag["data_byte_count"] >= 3000 and frag["byte_count"] == 2 * 1514 + max(60, 14 + 20 + last_piece)
    [outer] = [t for t in truth if t["tunnel_outer"]]
    inner = [t for t in truth if t["tunnel_inner"]]
    assert (outer["client_port"], outer["server_port"], len(inner)) == (2152, 2152, 2)
    assert outer["packet_count"] == sum(t["packet_count"] for t in inner)
    assert outer["byte_count"] == sum(t["byte_count"] for t in inner)
    assert {t["transport"] for t in inner} == {6, 17}
    a, b = [t for t in truth if t["kind"] == "udp-gap"]
    assert [a[k] for k in ("client_ip", "client_port", "server_ip", "server_port")] == \
           [b[k] for k in ("client_ip", "client_port", "server_ip", "server_port")]
    assert b["start"] - a["end"] > 60
    # about ten minutes, many sessions open at once
    assert 540 < frames[-1][0] - frames[0][0] < 700
    edges = sorted([(t["start"], 1) for t in truth] + [(t["end"], -1) for t in truth])
    open_now = peak = 0
    for _, d in edges:
        open_now += d
        peak = max(peak, open_now)
    assert peak >= 6
    # every frame is counted once by a top-level session, the ARP frames aside
    assert sum(t["cap_packet_count"] for t in truth if not t["tunnel_inner"]) == len(frames) - 6


def test_tcp_handshake_timing(trace):
    path, _, truth = trace
    first = {}
    for p in packets(path)[0]:
        if p["proto"] == 6:
            ends = tuple(sorted([(p["src"], p["sport"]), (p["dst"], p["dport"])]))
            first.setdefault((p["teid"],) + ends, []).append(p)
    rtts = {}
    for key, ps in first.items():
        syn, synack, ack = ps[:3]
        assert (syn["flags"], synack["flags"], ack["flags"]) == (0x02, 0x12, 0x10)
        rtt = ack["ts"] - syn["ts"]
        assert abs((synack["ts"] - syn["ts"]) - rtt / 2) <= 1.5e-6
        rtts[syn["sport"], syn["teid"] is not None] = rtt
    for t in truth:
        if t["transport"] == 6:
            assert abs(rtts[t["client_port"], t["tunnel_inner"]] - t["rtt"]) < 1e-6


def test_deterministic(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.pcap", "b.pcap", "c.pcap"))
    fa, ta = tracegen.build(seed=4, sessions=30)
    fb, tb = tracegen.build(seed=4, sessions=30)
    tracegen.write_pcap(str(a), fa)
    tracegen.write_pcap(str(b), fb)
    assert a.read_bytes() == b.read_bytes() and ta == tb
    fc, tc = tracegen.build(seed=5, sessions=30)
    tracegen.write_pcap(str(c), fc)
    assert a.read_bytes() != c.read_bytes() and ta != tc


def test_nanosecond_and_snaplen_variants(tmp_path, trace):
    path, frames, _ = trace
    ns, cut = tmp_path / "ns.pcap", tmp_path / "cut.pcap"
    tracegen.write_pcap(str(ns), frames, nanosecond=True)
    tracegen.write_pcap(str(cut), frames, snaplen=96)
    assert ns.read_bytes()[:4] == struct.pack("<I", 0xA1B23C4D)
    with open(path, "rb") as f1, open(ns, "rb") as f2, open(cut, "rb") as f3:
        rows = list(zip(dpkt.pcap.Reader(f1), dpkt.pcap.Reader(f2), dpkt.pcap.Reader(f3)))
    assert len(rows) == len(frames)
    for (t1, b1), (t2, b2), (t3, b3) in rows:
        assert b1 == b2 and abs(t1 - float(t2)) < 1e-6 and t1 == t3 and b3 == b1[:96]
    data, off, wires = cut.read_bytes(), 24, []
    while off < len(data):
        cap, wire = struct.unpack_from("<II", data, off + 8)
        wires.append(wire)
        off += 16 + cap
    assert wires == [len(f) for _, f in frames]


def test_command_line(tmp_path):
    out, truth = tmp_path / "t.pcap", tmp_path / "t.json"
    assert tracegen.main([str(out), "--seed", "9", "--sessions", "25", "--truth", str(truth)]) == 0
    frames, want = tracegen.build(seed=9, sessions=25)
    tracegen.write_pcap(str(tmp_path / "ref.pcap"), frames)
    assert out.read_bytes() == (tmp_path / "ref.pcap").read_bytes()
    assert json.loads(truth.read_text()) == json.loads(json.dumps(want))
