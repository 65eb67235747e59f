"""The per-session observations of the record, on traces built here frame by frame, with
the expected values worked out by hand from the frames (not from the code under test).

Each trace is read by the front-end and fed to the worker's engine twice: packet by
packet and through the batch path (tests/test_engine_bulk.py compares the two on random
rows and on every shared capture; here both must also give the values expected)."""
import struct

import pytest

from contracts.record import as_dict
from contracts.timeouts import Timeouts
from pipeline import tracegen as tg
from tests.rows import run_engine
from pipeline.frontend.core import FrontEnd
from pipeline.frontend.readers import open_capture
from tests.shared import PCAPS, needs_shared
from tests.test_engine_bulk import BULK, PER_PACKET, front_end_batches

MAC_C, MAC_S = bytes.fromhex("02000000000c"), bytes.fromhex("02000000000d")
C4, S4 = tg.ip("10.9.0.1"), tg.ip("10.9.0.2")
T0 = 1_700_000_000.0
TCP, UDP = 6, 17


def run(tmp_path, frames, timeouts=Timeouts(), linktype=1, chunk=4096, vlan_key=True):
    """Final and interim records (dicts, by session and report number) of `frames` [(ts,
    frame)]: read in one batch and in batches of 7 rows, each packet by packet and through
    the batch path; all four must agree."""
    p = tmp_path / "t.pcap"
    tg.write_pcap(str(p), frames)
    if linktype != 1:                       # the header's link type field
        raw = bytearray(p.read_bytes())
        raw[20:24] = struct.pack("<I", linktype)
        p.write_bytes(bytes(raw))
    out = []
    for size in (chunk, 7):                 # one batch, and many (sessions known from earlier batches)
        fe = FrontEnd(1, timeouts, vlan_key=vlan_key)
        batches = [fe.pack(fe.process(c))[0] for c in open_capture(str(p)).chunks(size)]
        paths = {v: k for k, v in fe.paths.ids.items()}
        for bulk_min in (PER_PACKET, BULK):
            recs, _ = run_engine(batches, timeouts, paths, lambda e, b=bulk_min: setattr(e, "bulk_min", b),
                                 vlan_key=vlan_key)
            out.append(sorted((as_dict(r) for r in recs), key=lambda d: (d["session_id"], d["report_number"])))
    assert all(o == out[0] for o in out)
    return out[0]


def eth(src_mac, dst_mac, ipkt):
    return tg.ether(src_mac, dst_mac, 0x0800 if ipkt[0] >> 4 == 4 else 0x86DD, ipkt)


def udp4(up, data, sport=40000, dport=5000):
    (a, ma), (b, mb) = ((C4, MAC_C), (S4, MAC_S)) if up else ((S4, MAC_S), (C4, MAC_C))
    sp, dp = (sport, dport) if up else (dport, sport)
    return eth(ma, mb, tg.ipv4(a, b, UDP, tg.udp(a, b, sp, dp, data), 1, 64))


def tcp4(up, flags, seq, ack=0, data=b"", sport=40000, dport=80):
    (a, ma), (b, mb) = ((C4, MAC_C), (S4, MAC_S)) if up else ((S4, MAC_S), (C4, MAC_C))
    sp, dp = (sport, dport) if up else (dport, sport)
    return eth(ma, mb, tg.ipv4(a, b, TCP, tg.tcp(a, b, sp, dp, seq, ack, flags, data), 1, 64))


# -- IP bytes, Ethernet addresses, the ICMP Community ID -----------------------------------

def test_ip_bytes_are_the_ip_lengths_per_direction(tmp_path):
    """ul/dl_ip_byte_count: the IP lengths (20 + 8 + payload for these UDP datagrams),
    not the frames' (Ethernet pads the small ones to 60 bytes)."""
    sizes = [(True, 5), (False, 300), (True, 1), (False, 0), (True, 1000)]
    (rec,) = run(tmp_path, [(T0 + i, udp4(up, b"x" * n)) for i, (up, n) in enumerate(sizes)])
    assert rec["ul_ip_byte_count"] == (28 + 5) + (28 + 1) + (28 + 1000)
    assert rec["dl_ip_byte_count"] == (28 + 300) + 28
    assert rec["ul_byte_count"] == 60 + 60 + (14 + 28 + 1000)        # the frames: the padded ones 60


def test_fragmented_datagram_counts_its_whole_length_once(tmp_path):
    """Three fragments of one 1,208-byte UDP datagram (20 + 8 + 1,180): one packet, its IP
    length once, where its frames' IP headers sum to 1,248."""
    payload = tg.udp(C4, S4, 40000, 5000, b"f" * 1180)
    parts = [(0, payload[:600], True), (600, payload[600:1184], True), (1184, payload[1184:], False)]
    frames = [(T0 + i / 10, eth(MAC_C, MAC_S, tg.ipv4(C4, S4, UDP, chunk, 77, 64, offset=off, more=more)))
              for i, (off, chunk, more) in enumerate(parts)]
    (rec,) = run(tmp_path, frames)
    assert (rec["ul_packet_count"], rec["ul_cap_packet_count"]) == (1, 3)
    assert rec["ul_ip_byte_count"] == 20 + len(payload) == 1208


def test_macs_are_the_first_frames_oriented_client_to_server(tmp_path):
    """The client's address is the source of the first frame, unless that frame is a SYN-ACK
    (the capture began mid-handshake): then the client is its receiver."""
    (rec,) = run(tmp_path, [(T0, udp4(True, b"q")), (T0 + 1, udp4(False, b"r"))])
    assert (rec["client_mac"], rec["server_mac"]) == ("02:00:00:00:00:0c", "02:00:00:00:00:0d")
    (rec,) = run(tmp_path, [(T0, tcp4(False, 0x12, 500, 101)), (T0 + 0.1, tcp4(True, 0x10, 101, 501))])
    assert rec["client_ip"] == "10.9.0.1"
    assert (rec["client_mac"], rec["server_mac"]) == ("02:00:00:00:00:0c", "02:00:00:00:00:0d")


def test_no_macs_without_ethernet(tmp_path):
    """A capture of bare IP (link type 101) has no Ethernet header: the MACs are null."""
    frames = [(T0, tg.ipv4(C4, S4, UDP, tg.udp(C4, S4, 1, 2, b"z"), 1, 64))]
    (rec,) = run(tmp_path, frames, linktype=101)
    assert rec["client_mac"] is None and rec["server_mac"] is None and rec["ul_ip_byte_count"] == 29


def test_icmp_community_id_from_the_first_message(tmp_path):
    """pycommunityid's test_icmp vector: 192.168.0.89 -> 192.168.0.1 echo request (type 8,
    code 0) is 1:X0snYXpgwiv9TZtqg64sgzUn6Dk=, and its reply has the same id."""
    a, b = tg.ip("192.168.0.89"), tg.ip("192.168.0.1")
    frames = [(T0, eth(MAC_C, MAC_S, tg.ipv4(a, b, 1, tg.icmp_echo(a, b, False, 7, 1, b"p" * 8), 1, 64))),
              (T0 + 0.5, eth(MAC_S, MAC_C, tg.ipv4(b, a, 1, tg.icmp_echo(b, a, True, 7, 1, b"p" * 8), 1, 64)))]
    (rec,) = run(tmp_path, frames)
    assert rec["community_id"] == "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
    (rec,) = run(tmp_path, frames[1:])                  # the reply alone: its own message, the same id
    assert rec["community_id"] == "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="


def test_icmpv6_one_way_message_is_hashed_from_its_sender(tmp_path):
    """The spec's icmp6.pcap: a destination unreachable (type 1, code 4) from
    3ffe:501:410:0:2c0:dfff:fe47:33e to 3ffe:507:0:1:200:86ff:fe05:80da is
    1:hLZd0XGWojozrvxqE0dWB1iM6R0= (one-way: the endpoints are not ordered)."""
    a, b = tg.ip("3ffe:501:410:0:2c0:dfff:fe47:33e"), tg.ip("3ffe:507:0:1:200:86ff:fe05:80da")
    msg = struct.pack("!BBHI", 1, 4, 0, 0) + bytes(48)
    (rec,) = run(tmp_path, [(T0, eth(MAC_C, MAC_S, tg.ipv6(a, b, 58, msg, 64)))])
    assert rec["community_id"] == "1:hLZd0XGWojozrvxqE0dWB1iM6R0="
    assert rec["ul_ip_byte_count"] == 40 + len(msg)


# -- tunnel parents, VLAN stacks ------------------------------------------------------------

def test_tunnel_parents_every_outer_session_in_order(tmp_path):
    """A GTP-U inner session whose uplink rides one outer flow (port 5906 -> 2152) and whose
    downlink another (2152 -> 2152), then a third (after the gateway moved the uplink to
    port 5907): tunnel_parents lists the three outer sessions, each opened by its flow's
    first frame (session id = frame number << 8), in that order."""
    A, B = tg.ip("192.0.2.1"), tg.ip("192.0.2.2")

    def frame(up, port, k):
        inner = tg.ipv4(*((C4, S4) if up else (S4, C4)), UDP,
                        tg.udp(*((C4, S4, 40000, 53) if up else (S4, C4, 53, 40000)), b"i" * k), 1, 64)
        src, dst, sp, dp = (A, B, port, 2152) if up else (B, A, 2152, 2152)
        return eth(MAC_C, MAC_S, tg.ipv4(src, dst, UDP, tg.udp(src, dst, sp, dp, tg.gtpu(7, inner)), 1, 64))
    frames = [(T0 + i / 10, frame(i % 2 == 0, 5906 if i < 60 else 5907, i)) for i in range(100)]
    recs = run(tmp_path, frames)
    (inner,) = [r for r in recs if r["parent_session_id"] is not None]
    assert inner["tunnel_parents"] == [1 << 8, 2 << 8, 61 << 8]
    assert inner["parent_session_id"] == 1 << 8 and (inner["ul_packet_count"], inner["dl_packet_count"]) == (50, 50)
    assert all(r["tunnel_parents"] is None for r in recs if r["parent_session_id"] is None)


def test_vlan_stacks_of_a_tap_that_tags_each_direction(tmp_path):
    """--no-vlan-key: the uplink tagged 10, the downlink 20, and after a while untagged
    downlink frames: one session, vlan the first packet's, vlan_stacks every stack in the
    order first seen. With the VLAN ids in the key: three sessions, no vlan_stacks."""
    def frame(i):
        up = i % 2 == 0
        f = udp4(up, b"v" * 20)
        tags = (10,) if up else ((20,) if i < 50 else ())
        return f[:12] + b"".join(struct.pack("!HH", 0x8100, v) for v in tags) + f[12:]
    frames = [(T0 + i / 10, frame(i)) for i in range(80)]
    (rec,) = run(tmp_path, frames, vlan_key=False)
    assert rec["vlan"] == [10] and rec["vlan_stacks"] == [[10], [20], []]
    recs = run(tmp_path, frames)
    assert len(recs) == 3 and all(r["vlan_stacks"] is None for r in recs)


# -- Zeek's conn_state, history, sequence space, missed bytes --------------------------------

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def tcp_frames(segments, t0=T0, step=0.01, **kw):
    """(ts, frame) of TCP segments [(up, flags, seq, ack, payload bytes)]."""
    return [(t0 + i * step, tcp4(up, fl, seq, ack, b"p" * n, **kw)) for i, (up, fl, seq, ack, n) in enumerate(segments)]


HANDSHAKE = [(True, SYN, 100, 0, 0), (False, SYN | ACK, 900, 101, 0), (True, ACK, 101, 901, 0)]


def test_a_whole_connection(tmp_path):
    """Handshake, 300 bytes up in three segments, one of them sent again, 1000 bytes down, a
    FIN each way: ShADadTFf, SF; 300 and 1000 bytes of sequence space (the retransmission
    once); IP bytes 40 per empty segment, 40 + n per data segment."""
    segs = HANDSHAKE + [(True, ACK | PSH, 101, 901, 100), (True, ACK | PSH, 201, 901, 100),
                        (False, ACK, 901, 301, 0), (True, ACK | PSH, 101, 901, 100), (True, ACK | PSH, 301, 901, 100),
                        (False, ACK | PSH, 901, 401, 1000), (True, FIN | ACK, 401, 1901, 0),
                        (False, FIN | ACK, 1901, 402, 0), (True, ACK, 402, 1902, 0)]
    (rec,) = run(tmp_path, tcp_frames(segs))
    assert (rec["history"], rec["conn_state"]) == ("ShADaTdFf", "SF")
    assert (rec["ul_seq_byte_count"], rec["dl_seq_byte_count"], rec["missed_bytes"]) == (300, 1000, 0)
    assert (rec["ul_data_byte_count"], rec["retransmission_count"]) == (400, 1)
    assert (rec["ul_ip_byte_count"], rec["dl_ip_byte_count"]) == (40 * 8 + 400, 40 * 4 + 1000)


def test_content_gap_is_missed_and_in_the_sequence_space(tmp_path):
    """The capture lost 500 bytes of the download: missed_bytes 500, resp_bytes counts them
    (Zeek's sequence space), the payload counters do not."""
    segs = HANDSHAKE + [(False, ACK | PSH, 901, 101, 500), (False, ACK | PSH, 1901, 101, 500), (True, ACK, 101, 2401, 0)]
    (rec,) = run(tmp_path, tcp_frames(segs))
    assert (rec["dl_seq_byte_count"], rec["dl_data_byte_count"], rec["missed_bytes"]) == (1500, 1000, 500)
    assert (rec["history"], rec["conn_state"]) == ("ShAd", "S1")


@pytest.mark.parametrize("segs,history,state", [
    ([(True, SYN, 1, 0, 0)] * 3, "S", "S0"),                                              # unanswered, retried
    ([(True, SYN, 1, 0, 0), (False, RST | ACK, 0, 2, 0)], "Sr", "REJ"),
    (HANDSHAKE + [(True, RST, 101, 0, 0)], "ShAR", "RSTO"),
    (HANDSHAKE + [(False, RST, 901, 0, 0)], "ShAr", "RSTR"),
    ([(True, SYN, 1, 0, 0), (True, RST, 2, 0, 0)], "SR", "RSTOS0"),
    ([(False, SYN | ACK, 900, 101, 0), (True, ACK, 101, 901, 0), (True, ACK | PSH, 101, 901, 10)], "^hAD", "S1"),
    (HANDSHAKE + [(True, FIN | ACK, 101, 901, 0)], "ShAF", "S2"),
    (HANDSHAKE + [(False, FIN | ACK, 901, 101, 0)], "ShAf", "S3"),
    ([(True, ACK | PSH, 5, 9, 10), (False, ACK | PSH, 9, 15, 10)], "Dd", "OTH"),          # midstream
    ([(True, SYN | FIN, 1, 0, 0)], "Q", "SH"),
    (HANDSHAKE + [(False, ACK | PSH, 901, 101, 10)] * 2, "ShAdt", "S1"),                # the server's retransmission
])
def test_conn_states(tmp_path, segs, history, state):
    (rec,) = run(tmp_path, tcp_frames(segs, step=0.5))
    assert (rec["history"], rec["conn_state"]) == (history, state)


def test_udp_icmp_and_other_transports(tmp_path):
    """UDP: D and d for each side's first packet, SF when both sent, S0 the client only, the
    payload as sequence bytes; ICMP and others: OTH and no history."""
    (rec,) = run(tmp_path, [(T0, udp4(True, b"q" * 30)), (T0 + 1, udp4(False, b"r" * 70))])
    assert (rec["history"], rec["conn_state"], rec["ul_seq_byte_count"], rec["dl_seq_byte_count"]) == \
        ("Dd", "SF", 30, 70)
    (rec,) = run(tmp_path, [(T0, udp4(True, b"q"))])
    assert (rec["history"], rec["conn_state"], rec["missed_bytes"]) == ("D", "S0", 0)
    a, b = tg.ip("10.1.1.1"), tg.ip("10.1.1.2")
    (rec,) = run(tmp_path, [(T0, eth(MAC_C, MAC_S, tg.ipv4(a, b, 1, tg.icmp_echo(a, b, False, 1, 1, b"x" * 56), 1, 64)))])
    assert (rec["history"], rec["conn_state"], rec["ul_seq_byte_count"]) == (None, "OTH", 56)
    (rec,) = run(tmp_path, [(T0, eth(MAC_C, MAC_S, tg.ipv4(a, b, 132, b"s" * 28, 1, 64)))])
    assert (rec["history"], rec["conn_state"]) == (None, "OTH")


def test_many_retransmissions_add_t_at_1_10_100(tmp_path):
    """One side sends the same segment 120 times: T at its 1st, 10th and 100th repeat."""
    segs = HANDSHAKE + [(True, ACK | PSH, 101, 901, 10)] * 121
    (rec,) = run(tmp_path, tcp_frames(segs, step=0.001))
    assert rec["history"] == "ShADTTT" and rec["retransmission_count"] == 120


# -- where Zeek starts a new connection (close expiry on) ----------------------------------------

def test_a_syn_with_a_new_isn_starts_a_new_session(tmp_path):
    """The tuple reused without a close: a SYN whose sequence number is not the opening
    SYN's is a new connection (Zeek's connection reuse); the same SYN again is not. With
    --no-close-expiry (NFStream's model) it stays one session."""
    segs = HANDSHAKE + [(True, ACK | PSH, 101, 901, 10), (True, SYN, 100, 0, 0),      # retransmitted: the same
                        (True, SYN, 5000, 0, 0), (False, SYN | ACK, 7000, 5001, 0), (True, ACK, 5001, 7001, 0)]
    recs = run(tmp_path, tcp_frames(segs))
    assert [(r["ul_packet_count"], r["dl_packet_count"], r["end_reason"], r["history"]) for r in recs] == \
        [(4, 1, "closed", "ShAD"), (2, 1, "shutdown", "ShA")]
    no_close = Timeouts.make(close_expiry=False)
    assert [(r["ul_packet_count"], r["dl_packet_count"]) for r in run(tmp_path, tcp_frames(segs), no_close)] == [(6, 2)]


def test_a_fin_to_a_silent_peer_closes(tmp_path):
    """A FIN from one side while the other has sent nothing closes the session (Zeek: a
    close against an inactive peer): its trailing ACK stays inside, a RST 10 s later is a
    new session. The FIN comes from port 80 to 40000 and is no SYN: port 80's end is the
    server (^: not the first packet's sender), so the server sent the FIN (f) and the
    client the ACK (A): Zeek's SHR. Without close expiry: one session."""
    frames = tcp_frames([(False, FIN | ACK, 900, 101, 0), (True, ACK, 101, 901, 0)]) + \
        tcp_frames([(True, RST | ACK, 101, 901, 0)], t0=T0 + 10)
    recs = run(tmp_path, frames)
    assert [(r["client_port"], r["ul_packet_count"], r["dl_packet_count"], r["history"], r["conn_state"],
             r["end_reason"]) for r in recs] == [(40000, 1, 1, "^fA", "SHR", "closed"),
                                                 (40000, 1, 0, "R", "OTH", "shutdown")]
    assert len(run(tmp_path, frames, Timeouts.make(close_expiry=False))) == 1


@needs_shared
def test_teredo_capture_splits_where_zeek_does():
    """Zeek's Teredo.pcap: HTTP connections on ports 1576-1578 closed by FINs against a silent
    peer and reset seconds later. Zeek's conn.log (its btest baseline) has three connections
    on 1576 (1+1, 1, 1 packets), three on 1577 (1+1, 1+1, 1) and two on 1578 (6+4, 1)."""
    path = PCAPS / "zeek" / "tunnels__Teredo.pcap"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    batches, paths = front_end_batches(path, 4096, Timeouts())
    for bulk_min in (PER_PACKET, BULK):
        recs, _ = run_engine(batches, Timeouts(), paths, lambda e, b=bulk_min: setattr(e, "bulk_min", b))
        got = {}
        for r in map(as_dict, recs):
            port = {r["client_port"], r["server_port"]} & {1576, 1577, 1578}
            if r["transport"] == 6 and port:
                got.setdefault(port.pop(), []).append(r["packet_count"])
        assert {p: sorted(v) for p, v in got.items()} == {1576: [1, 1, 2], 1577: [1, 2, 2], 1578: [1, 10]}


# -- which end is the client --------------------------------------------------------------

@pytest.mark.parametrize("case", [
    # (transport, first packet from the lower test port?, its TCP flags, sport, dport), expected:
    # (client port, history, conn_state), worked out from Zeek's rule (likely_server_ports)
    ((UDP, 0, 53, 40000), (40000, "^d", "SHR")),        # a DNS reply first: the client is its receiver
    ((UDP, 0, 3544, 3797), (3797, "^d", "SHR")),        # Teredo's server port (Zeek's Teredo.pcap)
    ((UDP, 0, 40000, 53), (40000, "D", "S0")),          # a query first: as sent
    ((UDP, 0, 67, 68), (67, "D", "S0")),                # both service ports (DHCP): as sent
    ((UDP, 0, 5000, 6000), (5000, "D", "S0")),          # neither: as sent
    ((TCP, ACK, 443, 50000), (50000, "^a", "OTH")),     # mid-conversation, from the server's port
    ((TCP, RST | ACK, 80, 1576), (1576, "^r", "RSTRH")),  # a reset from the server's port (Teredo.pcap)
    ((TCP, SYN, 80, 40000), (80, "S", "S0")),           # a SYN: its sender is the client, whatever its port
    ((TCP, SYN | ACK, 40000, 80), (80, "^h", "OTH")),   # a SYN-ACK: its receiver, whatever its port
    ((TCP, ACK, 40000, 80), (40000, "A", "OTH")),       # to a service port: as sent
    ((UDP, 0, 443, 80), (80, "^d", "SHR")),             # 443/udp is a service port (QUIC), 80/udp is not
    ((TCP, ACK, 443, 80), (443, "A", "OTH")),           # both TCP service ports: as sent
])
def test_the_client_is_the_first_packets_sender_unless_it_answers(tmp_path, case):
    """One packet, from sport to dport: its sender is the client, unless it is a SYN-ACK,
    or not a SYN (TCP) or UDP, from a well-known service port to a port that is not one
    (workers/orientation.py: Zeek's rule), where its receiver is; history and conn_state
    then read from the client's side (^: the client did not send the first packet)."""
    (proto, flags, sport, dport), want = case
    if proto == UDP:
        frame = udp4(True, b"x", sport=sport, dport=dport)
    else:
        frame = tcp4(True, flags, 1000, 2000 if flags & ACK else 0, sport=sport, dport=dport)
    (rec,) = run(tmp_path, [(T0, frame)])
    assert (rec["client_port"], rec["history"], rec["conn_state"]) == want
    assert rec["client_ip"] == ("10.9.0.1" if rec["client_port"] == sport else "10.9.0.2")
