"""The pcap record walk stops at the same place whatever the chunk size: a record that
runs past the end of the file (or a header cut short) is never handed out, whether the
walk meets it in the middle of a chunk or as the last frame that fits in one."""
import struct

import pytest

from pipeline.frontend.readers import open_capture


def _pcap(sizes, tail=b""):
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    recs = b"".join(struct.pack("<IIII", 1000 + i, 0, n, n) + bytes([i % 251]) * n for i, n in enumerate(sizes))
    return head + recs + tail


def _expected(sizes):
    offs, pos = [], 24
    for n in sizes:
        offs.append(pos + 16)
        pos += 16 + n
    return offs


TAILS = {
    "exact end": b"",
    "record runs past the end": struct.pack("<IIII", 2000, 0, 500, 500) + b"x" * 20,
    "caplen runs far past the end": struct.pack("<IIII", 2000, 0, 200_000, 500) + b"x" * 20,
    "header cut in its caplen": struct.pack("<II", 2000, 0) + b"\x01\x02",
    "header cut after its caplen": struct.pack("<III", 2000, 0, 10),
}


@pytest.mark.parametrize("tail", list(TAILS))
def test_walk_stops_at_the_same_record_for_every_chunk_size(tmp_path, tail):
    sizes = [60 + (7 * i) % 90 for i in range(9)]
    path = tmp_path / "t.pcap"
    path.write_bytes(_pcap(sizes, TAILS[tail]))
    for max_frames in range(1, len(sizes) + 3):
        with open_capture(path) as r:
            offs = [o for c in r.chunks(max_frames) for o in c.offsets.tolist()]
            assert offs == _expected(sizes), max_frames
            assert r.damage == (0 if tail == "exact end" else 1)
            assert r.bytes_done == r.size
