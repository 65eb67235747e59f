"""One conversation is one session, whatever the encapsulation's per-direction fields.

For every encapsulation the front-end decodes, a generated capture carries one inner TCP
conversation whose two directions travel with their real per-direction fields: GTP-U
uplink and downlink TEIDs, VXLAN / Geneve / GRE-in-UDP entropy source ports, GRE keys
set per end, PPTP call ids, a Teredo ping that leaves through the server and comes back
through a relay, ... Each must give one inner session (3 packets up, 2 down) whose parent
is the outer session of its first packet, while every EVENT row names the outer session
that carried it (the workers' `tunnel_parents`). Address spaces still separate: two VNIs,
two NVGRE subnets, two GRE tunnels between different endpoints give two sessions.
"""
import struct

import pytest

from tests import runner
from tests.conversations import (C4, CLI4, SRV4, conversation, front_end_records, inner_eth, inner_tcp, ip_frame, tagged,
                                 udp_frame, write)
from tests.test_fastpath import compare
from tests.test_slowpath import A4, A6, B4, B6, eth, geneve, gre, gtp, ipv4, ipv6, mpls, tcp, udp, vxlan


def pptp(call, inner):
    ppp = b"\xff\x03\x00\x21" + inner
    return struct.pack(">HHHHI", 0x3001, 0x880B, len(ppp), call, 1) + ppp


def ayiya(inner):
    return bytes([0x41, 0x52, 0x11, 4]) + bytes(4) + bytes(16) + bytes(20) + inner


def erspan2(session, inner):
    return gre(0x88BE, struct.pack(">HHI", 0x1000 | 5, session, 0) + inner, seq=1)


def erspan3(session, inner):
    return gre(0x22EB, struct.pack(">HHIHH", 0x2000 | 10, session, 0, 0, 0) + inner, seq=1)


def capwap(inner):
    return bytes([0, 0x10, 0x00, 0x00]) + bytes(4) + inner


def tzsp(inner):
    return b"\x01\x00\x00\x01" + b"\x01" + inner


TEREDO_SERVER, TEREDO_RELAY, TEREDO_HOST = bytes([65, 55, 158, 118]), bytes([83, 170, 1, 38]), bytes([192, 168, 2, 16])

# name -> frame(up, flags) -> (frame, the outer flow that carries it, as both directions name it)
ENCAPS = {
    "gtp": lambda up, f: (udp_frame(A4, B4, 2152, 2152, gtp(0x1111, inner_tcp(up, f))) if up else
                          udp_frame(B4, A4, 2152, 2152, gtp(0x2222, inner_tcp(up, f))), "gtp"),
    "gtp-ports": lambda up, f: (udp_frame(A4, B4, 5906, 2152, gtp(0x1111, inner_tcp(up, f))), "up") if up else
                               (udp_frame(B4, A4, 2152, 2152, gtp(0x2222, inner_tcp(up, f))), "down"),
    "gtp-ipv6-outer": lambda up, f: (udp_frame(A6, B6, 2152, 2152, gtp(7, inner_tcp(up, f))), "o") if up else
                                    (udp_frame(B6, A6, 2152, 2152, gtp(9, inner_tcp(up, f))), "o"),
    "vxlan": lambda up, f: (udp_frame(A4, B4, 49152, 4789, vxlan(77, inner_eth(up, f))), "up") if up else
                           (udp_frame(B4, A4, 51000, 4789, vxlan(77, inner_eth(up, f))), "down"),
    "geneve": lambda up, f: (udp_frame(A4, B4, 50901, 6081, geneve(77, 0x6558, inner_eth(up, f))), "up") if up else
                            (udp_frame(B4, A4, 0, 6081, geneve(77, 0x6558, inner_eth(up, f))), "down"),
    "gre-keys": lambda up, f: (ip_frame(A4, B4, 47, gre(0x0800, inner_tcp(up, f), key=1)) if up else
                               ip_frame(B4, A4, 47, gre(0x0800, inner_tcp(up, f), key=2)), "o"),
    "nvgre": lambda up, f: (ip_frame(A4, B4, 47, gre(0x6558, inner_eth(up, f), key=0x123401)) if up else
                            ip_frame(B4, A4, 47, gre(0x6558, inner_eth(up, f), key=0x1234FE)), "o"),
    "pptp": lambda up, f: (ip_frame(A4, B4, 47, pptp(0x1111, inner_tcp(up, f))) if up else
                           ip_frame(B4, A4, 47, pptp(0x2222, inner_tcp(up, f))), "o"),
    "gre-udp": lambda up, f: (udp_frame(A4, B4, 50343, 4754, gre(0x0800, inner_tcp(up, f), key=1)), "up") if up else
                             (udp_frame(B4, A4, 53571, 4754, gre(0x0800, inner_tcp(up, f), key=2)), "down"),
    "erspan2": lambda up, f: (ip_frame(A4, C4, 47, erspan2(300, inner_eth(up, f))), "o"),
    "erspan3": lambda up, f: (ip_frame(A4, C4, 47, erspan3(301, inner_eth(up, f))), "o"),
    "4in4": lambda up, f: (ip_frame(A4, B4, 4, inner_tcp(up, f)) if up else ip_frame(B4, A4, 4, inner_tcp(up, f)), "o"),
    "6in4": lambda up, f: (ip_frame(A4, B4, 41, inner_tcp(up, f, True)) if up else
                           ip_frame(B4, A4, 41, inner_tcp(up, f, True)), "o"),
    "4in6": lambda up, f: (ip_frame(A6, B6, 4, inner_tcp(up, f)) if up else ip_frame(B6, A6, 4, inner_tcp(up, f)), "o"),
    "6in6": lambda up, f: (ip_frame(A6, B6, 41, inner_tcp(up, f, True)) if up else
                           ip_frame(B6, A6, 41, inner_tcp(up, f, True)), "o"),
    "etherip": lambda up, f: (ip_frame(A4, B4, 97, b"\x30\x00" + inner_eth(up, f)) if up else
                              ip_frame(B4, A4, 97, b"\x30\x00" + inner_eth(up, f)), "o"),
    "mpls-in-ip": lambda up, f: (ip_frame(A4, B4, 137, mpls(16) + inner_tcp(up, f)) if up else
                                 ip_frame(B4, A4, 137, mpls(17) + inner_tcp(up, f)), "o"),
    "mpls-udp": lambda up, f: (udp_frame(A4, B4, 40001, 6635, mpls(16) + inner_tcp(up, f)), "up") if up else
                              (udp_frame(B4, A4, 40002, 6635, mpls(17) + inner_tcp(up, f)), "down"),
    "ayiya": lambda up, f: (udp_frame(A4, B4, 53859, 5072, ayiya(inner_tcp(up, f))), "up") if up else
                           (udp_frame(B4, A4, 5072, 53796, ayiya(inner_tcp(up, f))), "down"),
    "capwap": lambda up, f: (udp_frame(A4, B4, 12222, 5247, capwap(inner_eth(up, f))), "up") if up else
                            (udp_frame(B4, A4, 5247, 12223, capwap(inner_eth(up, f))), "down"),
    "tzsp": lambda up, f: (udp_frame(A4, C4, 40000, 37008, tzsp(inner_eth(up, f))), "o"),
    # out through the Teredo server (port 3544), back through a relay on a port of its own
    "teredo": lambda up, f: (udp_frame(TEREDO_HOST, TEREDO_SERVER, 3797, 3544, inner_tcp(up, f, True)), "up") if up else
                            (udp_frame(TEREDO_RELAY, TEREDO_HOST, 32900, 3797, inner_tcp(up, f, True)), "down"),
    "teredo-relay": lambda up, f: (udp_frame(TEREDO_HOST, TEREDO_RELAY, 3797, 32900, inner_tcp(up, f, True)), "o") if up
                                  else (udp_frame(TEREDO_RELAY, TEREDO_HOST, 32900, 3797, inner_tcp(up, f, True)), "o"),
}


def inner_of(recs):
    return [r for r in recs if r["final"] and r["parent_session_id"] is not None and r["transport"] == 6]


@pytest.mark.parametrize("name", sorted(ENCAPS))
def test_one_inner_conversation_is_one_session(tmp_path, name):
    frames = conversation(ENCAPS[name])
    p = write(tmp_path, frames)
    recs, rows, paths = front_end_records(p)
    (rec,) = inner_of(recs)
    assert (rec["ul_packet_count"], rec["dl_packet_count"]) == (3, 2)
    assert rec["client_port"] == 40000 and rec["server_port"] == 80 and rec["proto_path"].endswith(".tcp")
    # outer sessions: opened by the first frame of each outer flow (session id = frame << 8)
    first = {}
    for i, (_, _, flow) in enumerate(frames, start=1):
        first.setdefault(flow, i << 8)
    assert rec["parent_session_id"] == first[frames[0][2]]
    assert rec["tunnel_parents"] == list(first.values())          # each outer session, as first seen
    outer_ids = {r["session_id"] for r in recs if r["final"] and r["parent_session_id"] is None}
    assert outer_ids == set(first.values())
    # every inner row names the outer session that carried its frame
    inner = rows[rows["depth"] == 1]
    assert len(inner) == len(frames)
    want = [first[frames[int(fidx) - 1][2]] for fidx in inner["fidx"]]
    assert inner["parent"].tolist() == want
    # the fast path leaves every frame to the slow path, which decodes them
    accepted, bad = compare(p)
    assert (accepted, bad) == (0, [])


def test_same_records_with_one_and_three_workers(tmp_path):
    frames = []
    for k, name in enumerate(sorted(ENCAPS)):
        frames += conversation(ENCAPS[name], t0=1.0 + 400 * k)   # apart: some share a scope
    p = write(tmp_path, frames)
    one, _, _ = front_end_records(p, 1)
    three, _, _ = front_end_records(p, 3)
    strip = lambda recs: sorted(tuple(sorted((k, repr(v)) for k, v in r.items() if k != "worker")) for r in recs)  # noqa: E731
    assert strip(one) == strip(three)
    assert len(inner_of(one)) == len(ENCAPS)


def pair(make_a, make_b):
    """Two conversations with the same inner 5-tuple, in two scopes."""
    return conversation(make_a) + conversation(make_b, t0=1.001)


@pytest.mark.parametrize("case", ["vni", "nvgre-vsid", "gre-endpoints", "gtp-endpoints", "erspan-session",
                                  "top-level"])
def test_address_spaces_stay_apart(tmp_path, case):
    """What names an address space (a VNI, an NVGRE subnet, an ERSPAN session, the
    tunnel's endpoints) keeps the same inner 5-tuple apart: two sessions."""
    D4 = bytes([10, 0, 0, 9])
    make = {
        "vni": (lambda up, f: (udp_frame(A4, B4, 1000 + up, 4789, vxlan(1, inner_eth(up, f))), 1),
                lambda up, f: (udp_frame(A4, B4, 1000 + up, 4789, vxlan(2, inner_eth(up, f))), 1)),
        "nvgre-vsid": (lambda up, f: (ip_frame(A4, B4, 47, gre(0x6558, inner_eth(up, f), key=0x100 + up)), 1),
                       lambda up, f: (ip_frame(A4, B4, 47, gre(0x6558, inner_eth(up, f), key=0x200 + up)), 1)),
        "gre-endpoints": (lambda up, f: (ip_frame(A4, B4, 47, gre(0x0800, inner_tcp(up, f))), 1),
                          lambda up, f: (ip_frame(A4, D4, 47, gre(0x0800, inner_tcp(up, f))), 2)),
        "gtp-endpoints": (lambda up, f: (udp_frame(A4, B4, 2152, 2152, gtp(5, inner_tcp(up, f))), 1),
                          lambda up, f: (udp_frame(D4, B4, 2152, 2152, gtp(5, inner_tcp(up, f))), 2)),
        "erspan-session": (lambda up, f: (ip_frame(A4, C4, 47, erspan2(1, inner_eth(up, f))), 1),
                           lambda up, f: (ip_frame(A4, C4, 47, erspan2(2, inner_eth(up, f))), 1)),
        "top-level": (lambda up, f: (inner_eth(up, f), 0),
                      lambda up, f: (udp_frame(A4, B4, 1000, 4789, vxlan(1, inner_eth(up, f))), 1)),
    }[case]
    p = write(tmp_path, pair(*make))
    recs, _, _ = front_end_records(p)
    tcp_recs = [r for r in recs if r["final"] and r["transport"] == 6]
    assert sorted((r["ul_packet_count"], r["dl_packet_count"]) for r in tcp_recs) == [(3, 2), (3, 2)]


def test_pbb_and_vntag_conversations(tmp_path):
    """802.1ah and VN-Tag frames are decoded (slow path): one session each, their path named."""
    def pbb(up, f):
        return eth(0x88E7, struct.pack(">I", 0x00ABCDEF) + inner_eth(up, f), tags=[(0x88A8, 5)]), 0

    def vntag(up, f):
        return eth(0x8926, struct.pack(">IH", 0x80010002 if up else 0x00020001, 0x0800) + inner_tcp(up, f)), 0
    frames = conversation(pbb) + conversation(vntag, t0=5.0)
    p = write(tmp_path, frames)
    recs, _, _ = front_end_records(p)
    got = sorted((r["proto_path"], r["ul_packet_count"], r["dl_packet_count"], r["vlan"]) for r in recs if r["final"])
    assert got == [("eth.vlan.pbb.eth.ipv4.tcp", 3, 2, [5]), ("eth.vntag.ipv4.tcp", 3, 2, None)]
    assert compare(p) == (0, [])


@pytest.mark.slow
def test_cli_flags_end_to_end(tmp_path):
    """The real pipeline: every encapsulation's conversation is one session with 1 and 3
    workers; --no-teredo-heuristic leaves the relay's Teredo as plain UDP; --no-vlan-key
    joins an asymmetric VLAN tap; both flags are accepted from the config file too."""
    frames = []
    for k, name in enumerate(sorted(ENCAPS)):
        frames += conversation(ENCAPS[name], t0=1.0 + 400 * k)   # apart: some share a scope
    frames += conversation(lambda up, f: (tagged(up, f, (10,) if up else (20,)), 0), t0=30.0)
    p = write(tmp_path, frames)
    _, a, sa = runner.run([p], tmp_path / "a", workers=1)
    _, b, _ = runner.run([p], tmp_path / "b", workers=3)
    key = lambda recs: sorted(tuple(sorted((k, repr(v)) for k, v in r.items() if k != "worker")) for r in recs)  # noqa: E731
    assert key(a) == key(b)
    inner = [r for r in a if r["final"] and r["parent_session_id"] is not None and r["transport"] == 6]
    assert sorted((r["ul_packet_count"], r["dl_packet_count"]) for r in inner) == [(3, 2)] * len(ENCAPS)
    assert sa["frames_read"] == len(frames) == sa["frames_ip"]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sensor]\nvlan-key = false\n")
    _, c, _ = runner.run([p], tmp_path / "c", "--no-teredo-heuristic", "--config", str(cfg), workers=2)
    teredo6 = [r for r in c if r["final"] and r["ip_version"] == 6 and r["transport"] == 6
               and r["proto_path"].startswith("eth.ipv4.udp.teredo")]
    assert sorted((r["ul_packet_count"], r["dl_packet_count"]) for r in teredo6) == [(3, 0)]   # 3544 only
    vlan = [r for r in c if r["final"] and r["vlan"] is not None]
    assert [(r["ul_packet_count"], r["dl_packet_count"]) for r in vlan] == [(3, 2)]
    assert [r["vlan_stacks"] for r in vlan] == [[[10], [20]]]     # the workers know --no-vlan-key too


def test_teredo_scope_is_the_client(tmp_path):
    """Teredo's scope is its client's outer address and port: a client's router
    solicitations to two server addresses are one session (Zeek's gtp8_teredo), while
    two clients' identical solicitations (same link-local addresses) stay apart."""
    rs = ipv6(58, b"\x85\x00" + bytes(14), src=bytes.fromhex("fe80000000000000ffffffffffffffff"),
              dst=bytes.fromhex("ff020000000000000000000000000002"))
    other_client = bytes([192, 168, 2, 17])
    frames = [(1.0, udp_frame(TEREDO_HOST, TEREDO_SERVER, 3797, 3544, rs)),
              (1.1, udp_frame(TEREDO_HOST, bytes([65, 55, 158, 119]), 3797, 3544, rs)),
              (1.2, udp_frame(other_client, TEREDO_SERVER, 3797, 3544, rs))]
    p = write(tmp_path, frames)
    recs, _, _ = front_end_records(p)
    icmp = sorted(r["packet_count"] for r in recs if r["final"] and r["transport"] == 58)
    assert icmp == [1, 2]


def test_incomplete_outer_datagram_counts_only_its_outer_layer(tmp_path):
    """A GTP-U datagram whose last fragment never came: its first fragment is a packet of
    the outer session (as for any partial datagram), but its inner packet never reached the
    tunnel's far end: no inner packet counted (Zeek's gtp1_gn_normal_incl_fragmentation).
    A complete fragmented one gives its inner packet."""
    from pipeline.frontend.core import FrontEnd
    from pipeline.frontend.readers import open_capture
    from contracts.timeouts import Timeouts
    data = udp(2152, 2152, gtp(5, ipv4(6, tcp(40000, 80, data=b"x" * 100), src=CLI4, dst=SRV4)))
    first = eth(0x0800, ipv4(17, data[:80], src=A4, dst=B4, ident=1, mf=True))     # the inner TCP header whole
    whole = [eth(0x0800, ipv4(17, data[:80], src=A4, dst=B4, ident=2, mf=True)),
             eth(0x0800, ipv4(17, data[80:], src=A4, dst=B4, ident=2, offset=80))]
    p = write(tmp_path, [(1.0, first), (2.0, whole[0]), (2.1, whole[1])])
    recs, rows, _ = front_end_records(p)
    assert sorted((r["transport"], r["packet_count"]) for r in recs if r["final"]) == [(6, 1), (17, 2)]
    assert rows[rows["depth"] == 1]["fidx"].tolist() == [3]          # the completed datagram's inner packet
    fe = FrontEnd(1, Timeouts())
    r = open_capture(str(p))
    for c in r.chunks(64):
        fe.process(c)
    fe.finish()
    assert (fe.extra["partial_datagrams"], fe.extra["partial_tunnel_inner"], fe.stats["frames_ip"]) == (1, 1, 3)
