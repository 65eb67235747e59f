"""--vlan-key / --no-vlan-key: VLAN ids name address spaces and are part of the session key
by default; without them a tap whose two directions carry different VLAN ids gives one
session per conversation, on the fast path (one or two tags) and the slow path (more)
alike, and the EVENT rows still carry each packet's VLAN ids for the record."""
import struct

from tests.conversations import conversation, front_end_records, inner_eth, tagged, udp_frame, write
from tests.test_fastpath import compare
from tests.test_slowpath import A4, B4, vxlan


def test_asymmetric_vlan_tap(tmp_path):
    """A tap whose directions carry different VLAN ids: by default two sessions (VLAN ids
    name address spaces); --no-vlan-key one, on the fast path (one or two tags) and the
    slow path (three tags) alike. The rows keep each packet's VLAN ids."""
    for up_tags, down_tags in (((10,), (20,)), ((10, 11), (20,)), ((10, 11, 12), (20,))):
        frames = conversation(lambda up, f: (tagged(up, f, up_tags if up else down_tags), 0))
        p = write(tmp_path, frames, f"vlan{len(up_tags)}.pcap")
        recs, _, _ = front_end_records(p)
        assert sorted(r["packet_count"] for r in recs if r["final"]) == [2, 3]      # one per direction
        assert all(r["vlan_stacks"] is None for r in recs)
        recs, rows, _ = front_end_records(p, vlan_key=False)
        (rec,) = [r for r in recs if r["final"]]
        assert (rec["ul_packet_count"], rec["dl_packet_count"]) == (3, 2)
        # the record lists both directions' VLAN ids: the first packet's, then the other (two ids at most, as vlan)
        assert rec["vlan"] == list(up_tags[:2]) and rec["vlan_stacks"] == [list(up_tags[:2]), [20]]
        assert rows["vlan0"].tolist() == [10, 20, 10, 20, 10]
        assert rows["nvlan"].tolist() == [len(up_tags), 1] * 2 + [len(up_tags)]
        assert compare(p)[1] == []


def test_asymmetric_vlan_tap_under_a_tunnel(tmp_path):
    """The outer VLAN ids are part of a tunnel's scope under --vlan-key only."""
    def make(up, f):
        outer = udp_frame(A4, B4, 1000, 4789, vxlan(1, inner_eth(up, f)))
        return outer[:12] + struct.pack(">HH", 0x8100, 10 if up else 20) + outer[12:], 1
    p = write(tmp_path, conversation(make))
    recs, _, _ = front_end_records(p)
    assert sorted(r["packet_count"] for r in [r for r in recs if r["final"] and r["parent_session_id"] is not None]) == [2, 3]
    recs, _, _ = front_end_records(p, vlan_key=False)
    assert [(r["ul_packet_count"], r["dl_packet_count"]) for r in [r for r in recs if r["final"] and r["parent_session_id"] is not None]] == [(3, 2)]
