"""Capture readers: every Chunk field against files written here byte by byte, damage
(cut-short tails, absurd caplens, garbage pcapng blocks) skipped with one warning per
region, unreadable files refused with a one-line CaptureError, and a differential check
against dpkt's readers over the shared captures."""
import gzip
import os
import shutil
import subprocess
import sys
import re
import struct
import threading
from pathlib import Path

import dpkt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.frontend.readers import CaptureError, Chunk, open_capture

SHARED = Path(__file__).resolve().parents[2] / "shared"
PCAPS = SHARED / "pcaps"
needs_shared = pytest.mark.skipif(not PCAPS.is_dir(), reason=f"{PCAPS} is absent (a clone without ../shared)")

BOM = 0x1A2B3C4D


# -- writers: the formats as the specifications lay them out ------------------------
def pcap_header(order="<", nano=False, linktype=1, snaplen=65535, major=2):
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    return struct.pack(order + "IHHiIII", magic, major, 4, 0, 0, snaplen, linktype)


def pcap_record(order, sec, frac, data, wirelen=None):
    return struct.pack(order + "IIII", sec, frac, len(data), len(data) if wirelen is None else wirelen) + data


def pad4(b):
    return b + b"\0" * (-len(b) % 4)


def block(order, btype, body):
    body = pad4(body)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def shb(order):
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", BOM, 1, 0, -1))


def option(order, code, value):
    return struct.pack(order + "HH", code, len(value)) + pad4(value)


def idb(order, linktype, snaplen=0, tsresol=None, tsoffset=None):
    opts = b""
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += option(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order, iface, ticks, data, wirelen=None):
    wirelen = len(data) if wirelen is None else wirelen
    head = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wirelen)
    return block(order, 6, head + data)


def spb(order, data, wirelen):
    return block(order, 3, struct.pack(order + "I", wirelen) + data)


def pb(order, iface, ticks, data, wirelen=None):
    wirelen = len(data) if wirelen is None else wirelen
    head = struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wirelen)
    return block(order, 2, head + data)


def payload(i, n):
    return bytes((i * 7 + k) & 0xFF for k in range(n))


def read_all(path, max_frames=65536):
    """All chunks of a file, concatenated, plus the reader (closed)."""
    r = open_capture(str(path))
    chunks = list(r.chunks(max_frames))
    r.close()
    cols = {f: np.concatenate([getattr(c, f) for c in chunks]) if chunks else np.empty(0)
            for f in ("offsets", "caplen", "wirelen", "ts", "linktype")}
    return r, chunks, cols


def frame_bytes(path, cols, i):
    data = Path(path).read_bytes()
    off, cap = int(cols["offsets"][i]), int(cols["caplen"][i])
    return data[off:off + cap]


# -- classic pcap ---------------------------------------------------------------------
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_fields(tmp_path, order, nano):
    frac = [0, 999_999_999 if nano else 999_999, 123_456_789 if nano else 123_456]
    recs = [(1_600_000_000, frac[0], payload(0, 60), None),
            (1_600_000_001, frac[1], payload(1, 1514), None),
            (1_600_000_005, frac[2], payload(2, 96), 1500)]       # snapped: wire > cap
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_header(order, nano, linktype=113) + b"".join(pcap_record(order, *r) for r in recs))
    r, chunks, cols = read_all(path, max_frames=2)
    assert [len(c.offsets) for c in chunks] == [2, 1]
    assert all(isinstance(c, Chunk) for c in chunks)
    assert cols["offsets"].tolist() == [24 + 16, 24 + 16 + 60 + 16, 24 + 16 + 60 + 16 + 1514 + 16]
    assert cols["caplen"].tolist() == [60, 1514, 96]
    assert cols["wirelen"].tolist() == [60, 1514, 1500]
    div = 1e9 if nano else 1e6
    want_ts = [1_600_000_000 + frac[0] / div, 1_600_000_001 + frac[1] / div, 1_600_000_005 + frac[2] / div]
    assert np.allclose(cols["ts"], want_ts, rtol=0, atol=3e-7)      # a float64 ulp near 1.6e9 is 2.4e-7
    if nano:   # nanoseconds are not rounded to microseconds on the way
        assert abs(cols["ts"][2] - 1_600_000_005.123456789) < 3e-7 and cols["ts"][1] > 1_600_000_001.9999995
    assert cols["linktype"].tolist() == [113, 113, 113]
    for c in chunks:
        assert c.offsets.dtype == np.int64 and c.caplen.dtype == np.uint32 and c.wirelen.dtype == np.uint32
        assert c.ts.dtype == np.float64 and c.linktype.dtype == np.uint16
    for i, rec in enumerate(recs):
        assert frame_bytes(path, cols, i) == rec[2]
    assert r.damage == 0 and r.warnings == [] and r.bytes_done == r.size == path.stat().st_size


def test_first_chunks_are_smaller_then_double(tmp_path, monkeypatch):
    """A file's first chunk is FIRST_CHUNK frames, the next ones double up to the chunk
    size (the workers start early); the frames are the same, in the same order."""
    import pipeline.frontend.readers as readers
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_header("<", False) + b"".join(pcap_record("<", 1_600_000_000 + i, 0, payload(i, 60 + i % 7))
                                                         for i in range(1000)))
    monkeypatch.setattr(readers, "FIRST_CHUNK", 10)
    _, chunks, cols = read_all(path, max_frames=300)
    assert [len(c.offsets) for c in chunks] == [10, 20, 40, 80, 160, 300, 300, 90]
    monkeypatch.setattr(readers, "FIRST_CHUNK", 0)          # 0: every chunk the full size
    monkeypatch.setattr(readers, "MIN_CHUNKS", 1)
    _, plain, cols0 = read_all(path, max_frames=300)
    assert [len(c.offsets) for c in plain] == [300, 300, 300, 100]
    assert all(np.array_equal(cols[f], cols0[f]) for f in cols)
    monkeypatch.setattr(readers, "FIRST_CHUNK", 4096)       # larger than the chunk size: the chunk size
    assert [len(c.offsets) for c in read_all(path, max_frames=300)[1]] == [300, 300, 300, 100]


def test_progress_follows_the_chunks_handed_over(tmp_path, monkeypatch):
    """bytes_done (the progress line) covers each chunk as it is handed over and no more,
    though the reader has read one chunk ahead."""
    import pipeline.frontend.readers as readers
    monkeypatch.setattr(readers, "FIRST_CHUNK", 0)
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_header("<", False) + b"".join(pcap_record("<", 1_600_000_000 + i, 0, payload(i, 60))
                                                         for i in range(2000)))
    r = open_capture(str(path))
    seen = []
    for c in r.chunks(300):
        end = int(c.offsets[-1] + c.caplen[-1])
        seen.append(r.bytes_done)
        assert end <= r.bytes_done < end + 16 + 60 or r.bytes_done == r.size
    assert seen[0] < r.size / 2 and seen == sorted(seen) and r.bytes_done == r.size


@pytest.mark.parametrize("frames,sizes", [(1000, [300, 300, 300, 20, 20, 20, 20, 20]), (100, [12, 13] * 4),
                                          (3, [1, 1, 1]), (1, [1])])
def test_a_short_file_comes_in_at_least_min_chunks(tmp_path, monkeypatch, frames, sizes):
    """A file of fewer chunks than MIN_CHUNKS has its last chunk shared out, as evenly as
    can be, so that K front-end processes each get some of it; the frames are the same,
    in the same order."""
    import pipeline.frontend.readers as readers
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_header("<", False) + b"".join(pcap_record("<", 1_600_000_000 + i, 0, payload(i, 60 + i % 7))
                                                         for i in range(frames)))
    monkeypatch.setattr(readers, "FIRST_CHUNK", 0)
    assert readers.MIN_CHUNKS == 8
    _, chunks, cols = read_all(path, max_frames=300)
    assert [len(c.offsets) for c in chunks] == sizes
    monkeypatch.setattr(readers, "MIN_CHUNKS", 1)
    _, _, cols1 = read_all(path, max_frames=300)
    assert all(np.array_equal(cols[f], cols1[f]) for f in cols)


def test_chunk_data_is_the_file_without_copies(tmp_path, monkeypatch):
    import pipeline.frontend.readers as readers
    monkeypatch.setattr(readers, "MIN_CHUNKS", 1)          # the file in one chunk
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_header() + b"".join(pcap_record("<", 1, i, payload(i, 40 + i)) for i in range(10)))
    r = open_capture(str(path))
    assert r.path == str(path) and r.size == path.stat().st_size and r.bytes_done == 0
    c = next(r.chunks())
    u8 = np.frombuffer(c.data, np.uint8)
    assert len(u8) == r.size
    assert bytes(u8[c.offsets[3]:c.offsets[3] + c.caplen[3]]) == payload(3, 43)
    view = memoryview(c.data)     # still held by a consumer when the reader closes: no error
    r.close()
    assert bytes(view[c.offsets[0]:c.offsets[0] + 4]) == payload(0, 4)


def test_pcap_empty_after_header_and_zero_length_frames(tmp_path):
    path = tmp_path / "h.pcap"
    path.write_bytes(pcap_header())
    r, chunks, cols = read_all(path)
    assert chunks == [] and r.damage == 0 and r.bytes_done == 24
    path.write_bytes(pcap_header() + pcap_record("<", 5, 0, b"", 60) + pcap_record("<", 6, 0, b"ab"))
    r, chunks, cols = read_all(path)
    assert cols["caplen"].tolist() == [0, 2] and cols["wirelen"].tolist() == [60, 2] and r.damage == 0


def test_modified_pcap_records(tmp_path):
    """Kuznetzov's variant: 8 more bytes per record header."""
    path = tmp_path / "m.pcap"
    head = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    recs = b"".join(struct.pack("<IIII", 10 + i, 5, 30, 60) + b"\0" * 8 + payload(i, 30) for i in range(3))
    path.write_bytes(head + recs)
    r, chunks, cols = read_all(path)
    assert cols["offsets"].tolist() == [48, 48 + 54, 48 + 108]
    assert cols["wirelen"].tolist() == [60] * 3
    assert np.allclose(cols["ts"], [10.000005, 11.000005, 12.000005], rtol=0, atol=1e-9)


@pytest.mark.parametrize("cut", [1, 10, 16, 30])
def test_pcap_cut_short_tail(tmp_path, cut):
    recs = [pcap_record("<", 100 + i, i, payload(i, 50)) for i in range(3)]
    last = 24 + 2 * 66
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_header() + b"".join(recs)[:-66 + cut])      # the third record keeps `cut` bytes
    r, chunks, cols = read_all(path)
    assert cols["caplen"].tolist() == [50, 50]
    assert np.allclose(cols["ts"], [100.0, 101.000001], rtol=0, atol=1e-9)
    assert r.damage == 1
    assert r.warnings == [f"{path}: file cut short at offset {last}"]
    assert r.bytes_done == r.size


def _pcap_with_bad_caplen(order, n, bad_index, bad_caplen):
    recs = [pcap_record(order, 1_700_000_000 + i, 1000 * i, payload(i, 40 + 13 * i), 1500) for i in range(n)]
    sizes = [len(x) for x in recs]
    b = bytearray(recs[bad_index])
    b[8:12] = struct.pack(order + "I", bad_caplen)
    recs[bad_index] = bytes(b)
    starts = [24 + sum(sizes[:i]) for i in range(n)]
    return pcap_header(order) + b"".join(recs), starts


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("bad_caplen", [0x7FFFFFFF, 262145, 200_000])
def test_pcap_absurd_caplen_then_good_records_recovered(tmp_path, order, bad_caplen):
    data, starts = _pcap_with_bad_caplen(order, 12, 5, bad_caplen)
    path = tmp_path / "fuzzed.pcap"
    path.write_bytes(data)
    r, chunks, cols = read_all(path, max_frames=4)
    kept = [i for i in range(12) if i != 5]
    assert cols["caplen"].tolist() == [40 + 13 * i for i in kept]
    assert cols["offsets"].tolist() == [starts[i] + 16 for i in kept]
    assert np.allclose(cols["ts"], [1_700_000_000 + i + 0.001 * i for i in kept], rtol=0, atol=1e-9)
    assert cols["wirelen"].tolist() == [1500] * 11
    assert r.damage == 1 and len(r.warnings) == 1
    w = r.warnings[0]
    assert w.startswith(f"{path}: damaged record at offset {starts[5]}: caplen {bad_caplen} ")
    assert w.endswith(f"; skipped to offset {starts[6]}") and "\n" not in w


def test_pcap_first_record_damaged_resyncs_without_a_time_reference(tmp_path):
    data, starts = _pcap_with_bad_caplen("<", 6, 0, 0xFFFFFFF0)
    path = tmp_path / "first.pcap"
    path.write_bytes(data)
    r, chunks, cols = read_all(path)
    assert cols["offsets"].tolist() == [s + 16 for s in starts[1:]]
    assert r.warnings == [f"{path}: damaged record at offset 24: caplen 4294967280 exceeds 262144; "
                          f"skipped to offset {starts[1]}"]


def test_pcap_two_damaged_regions_each_warned_once(tmp_path):
    data, starts = _pcap_with_bad_caplen("<", 12, 3, 0xFFFFFFFF)
    b = bytearray(data)
    b[starts[8] + 8:starts[8] + 12] = struct.pack("<I", 999_999)
    path = tmp_path / "f2.pcap"
    path.write_bytes(bytes(b))
    r, chunks, cols = read_all(path)
    assert len(cols["caplen"]) == 10 and r.damage == 2
    assert [int(re.search(r"offset (\d+):", w).group(1)) for w in r.warnings] == [starts[3], starts[8]]


def test_pcap_damage_with_nothing_readable_after(tmp_path):
    data, starts = _pcap_with_bad_caplen("<", 4, 3, 0x10000000)
    path = tmp_path / "g.pcap"
    path.write_bytes(data[:starts[3] + 16] + b"\xee" * 5000)
    r, chunks, cols = read_all(path)
    assert len(cols["caplen"]) == 3 and r.damage == 1
    assert r.warnings[0].startswith(f"{path}: damaged record at offset {starts[3]}: caplen 268435456 exceeds")
    assert r.bytes_done == r.size


def test_pcap_keeps_wirelen_below_caplen_as_recorded(tmp_path):
    path = tmp_path / "w.pcap"
    path.write_bytes(pcap_header() + pcap_record("<", 1, 0, payload(0, 80), 20) + pcap_record("<", 2, 0, payload(1, 8)))
    r, chunks, cols = read_all(path)
    assert cols["caplen"].tolist() == [80, 8] and cols["wirelen"].tolist() == [20, 8] and r.damage == 0


# -- pcapng ---------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_block_kinds(tmp_path, order):
    us_ticks = 1_600_000_000_123_456                 # interface 0: default microseconds
    ns_ticks = 1_600_000_001_987_654_321             # interface 1: if_tsresol=9
    b2_ticks = 1024 * 1_000_000 + 512                # interface 2: if_tsresol=2^-10, if_tsoffset=1.6e9
    f = [payload(0, 60), payload(1, 1500), payload(2, 33), payload(3, 70), payload(4, 100), payload(5, 41)]
    parts = [
        shb(order),
        idb(order, 1),
        block(order, 4, b"\x01\x00\x04\x00" + b"\x00" * 8),               # name resolution: skipped
        idb(order, 113, tsresol=9),
        idb(order, 101, tsresol=0x8A, tsoffset=1_600_000_000),
        epb(order, 0, us_ticks, f[0], 64),
        epb(order, 1, ns_ticks, f[1]),
        block(order, 0x40000BAD, b"\x00\x00\x7f\x00custom"),               # custom block: skipped
        spb(order, f[2], 33),
        pb(order, 1, ns_ticks + 1000, f[3]),
        epb(order, 2, b2_ticks, f[4], 9000),
        block(order, 5, struct.pack(order + "III", 0, 0, 0)),             # statistics: skipped
        spb(order, f[5] + b"\0" * 3, 41),                                   # padding beyond wirelen is not data
    ]
    path = tmp_path / "multi.pcapng"
    path.write_bytes(b"".join(parts))
    starts = np.cumsum([0] + [len(p) for p in parts])
    r, chunks, cols = read_all(path, max_frames=4)
    assert [len(c.offsets) for c in chunks] == [4, 1, 1]          # the last chunk shared out (MIN_CHUNKS)
    assert cols["linktype"].tolist() == [1, 113, 1, 113, 101, 1]
    assert cols["caplen"].tolist() == [60, 1500, 33, 70, 100, 41]
    assert cols["wirelen"].tolist() == [64, 1500, 33, 70, 9000, 41]
    assert cols["offsets"].tolist() == [starts[5] + 28, starts[6] + 28, starts[8] + 12, starts[9] + 28,
                                        starts[10] + 28, starts[12] + 12]
    ts = cols["ts"]
    assert abs(ts[0] - 1_600_000_000.123456) < 3e-7
    assert abs(ts[1] - 1_600_000_001.987654321) < 3e-7
    assert ts[2] == ts[1]                                  # a simple packet has no time: the one before it
    assert abs(ts[3] - 1_600_000_001.987655321) < 3e-7
    assert ts[4] == 1_600_000_000 + 1_000_000.5
    assert ts[5] == ts[4]
    for i in range(6):
        assert frame_bytes(path, cols, i) == f[i]
    assert r.damage == 0 and r.warnings == [] and r.bytes_done == r.size


def test_pcapng_sections_restart_interfaces_and_may_change_byte_order(tmp_path):
    a = shb("<") + idb("<", 1) + epb("<", 0, 5_000_000, payload(0, 20))
    b = shb(">") + idb(">", 228) + idb(">", 229, snaplen=16) + epb(">", 1, 6_000_000, payload(1, 20)) \
        + spb(">", payload(2, 20), 20)
    path = tmp_path / "sections.pcapng"
    path.write_bytes(a + b)
    r, chunks, cols = read_all(path)
    assert cols["linktype"].tolist() == [1, 229, 228]
    assert cols["ts"].tolist() == [5.0, 6.0, 6.0]
    assert cols["caplen"].tolist() == [20, 20, 20] and r.damage == 0


def test_pcapng_simple_packet_caplen_is_bounded_by_snaplen(tmp_path):
    path = tmp_path / "spb.pcapng"
    path.write_bytes(shb("<") + idb("<", 1, snaplen=64) + spb("<", payload(0, 64), 1500))
    r, chunks, cols = read_all(path)
    assert cols["caplen"].tolist() == [64] and cols["wirelen"].tolist() == [1500] and cols["ts"].tolist() == [0.0]


GARBAGE = {
    "bad length": lambda o: struct.pack(o + "II", 6, 0xEEEEEEEC) + b"\xee" * 24,
    "length not a multiple of 4": lambda o: struct.pack(o + "II", 6, 30) + b"\x00" * 20 + struct.pack(o + "I", 30),
    "trailing length mismatch": lambda o: struct.pack(o + "II", 6, 32) + b"\x00" * 20 + struct.pack(o + "I", 36),
    "too small": lambda o: struct.pack(o + "II", 1, 4) + b"\x00" * 8,
}


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_pcapng_garbage_block_then_good_blocks_recovered(tmp_path, order, kind):
    head = shb(order) + idb(order, 1) + epb(order, 0, 1_000_000, payload(0, 40))
    garbage = GARBAGE[kind](order)
    tail = epb(order, 0, 2_000_000, payload(1, 50)) + epb(order, 0, 3_000_000, payload(2, 60))
    path = tmp_path / "garbage.pcapng"
    path.write_bytes(head + garbage + tail)
    r, chunks, cols = read_all(path)
    assert cols["caplen"].tolist() == [40, 50, 60]
    assert cols["ts"].tolist() == [1.0, 2.0, 3.0]
    assert cols["offsets"].tolist()[1:] == [len(head) + len(garbage) + 28,
                                            len(head) + len(garbage) + len(epb(order, 0, 0, payload(1, 50))) + 28]
    assert r.damage == 1
    assert r.warnings[0].startswith(f"{path}: damaged record at offset {len(head)}: ")
    assert r.warnings[0].endswith(f"; skipped to offset {len(head) + len(garbage)}")


def test_pcapng_bad_packet_inside_a_sound_block_is_skipped(tmp_path):
    bad_iface = epb("<", 7, 0, payload(0, 16))
    b = bytearray(epb("<", 0, 0, payload(1, 16)))
    b[20:24] = struct.pack("<I", 5000)                     # caplen larger than its block
    head = shb("<") + idb("<", 1)
    path = tmp_path / "inner.pcapng"
    path.write_bytes(head + bad_iface + bytes(b) + epb("<", 0, 9_000_000, payload(2, 16)))
    r, chunks, cols = read_all(path)
    assert cols["ts"].tolist() == [9.0] and r.damage == 2
    assert f"offset {len(head)}: packet names interface 7" in r.warnings[0]
    assert f"offset {len(head) + len(bad_iface)}: caplen 5000 exceeds" in r.warnings[1]


@pytest.mark.parametrize("cut", [3, 8, 20, 40])
def test_pcapng_cut_short_tail(tmp_path, cut):
    good = shb("<") + idb("<", 1) + epb("<", 0, 1_000_000, payload(0, 40))
    path = tmp_path / "cut.pcapng"
    path.write_bytes(good + epb("<", 0, 2_000_000, payload(1, 60))[:cut])
    r, chunks, cols = read_all(path)
    assert cols["caplen"].tolist() == [40]
    assert r.damage == 1 and r.warnings == [f"{path}: file cut short at offset {len(good)}"]


def test_pcapng_impossible_tsresol_warns_and_assumes_microseconds(tmp_path):
    path = tmp_path / "res.pcapng"
    path.write_bytes(shb("<") + idb("<", 1, tsresol=90) + epb("<", 0, 2_500_000, payload(0, 10)))
    r, chunks, cols = read_all(path)
    assert cols["ts"].tolist() == [2.5] and r.damage == 1 and "if_tsresol" in r.warnings[0]


# -- files that cannot be read at all ----------------------------------------------------
def _error(path) -> str:
    with pytest.raises(CaptureError) as e:
        open_capture(str(path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path) + ": ")
    return msg


def test_capture_errors(tmp_path):
    (tmp_path / "empty.pcap").write_bytes(b"")
    assert "empty file" in _error(tmp_path / "empty.pcap")
    assert "no such file" in _error(tmp_path / "missing.pcap")
    (tmp_path / "notes.txt").write_text("hello, this is not a capture\nsecond line\n")
    assert _error(tmp_path / "notes.txt").endswith("not a pcap or pcapng file (magic 0x68656c6c)")
    assert "directory" in _error(tmp_path)
    (tmp_path / "t.pcap.gz").write_bytes(gzip.compress(pcap_header() + pcap_record("<", 1, 0, b"x")))
    assert "compressed captures are not supported" in _error(tmp_path / "t.pcap.gz")
    (tmp_path / "v3.pcap").write_bytes(pcap_header(major=3))
    assert "unsupported pcap version 3.4" in _error(tmp_path / "v3.pcap")
    (tmp_path / "short.pcap").write_bytes(pcap_header()[:13])
    assert "truncated pcap file header (13 of 24 bytes)" in _error(tmp_path / "short.pcap")
    (tmp_path / "tiny").write_bytes(b"\xd4\xc3")
    assert "not a pcap or pcapng file" in _error(tmp_path / "tiny")
    (tmp_path / "bom.pcapng").write_bytes(shb("<")[:8] + b"\0" * 20)
    assert "byte-order magic" in _error(tmp_path / "bom.pcapng")
    (tmp_path / "v2.pcapng").write_bytes(block("<", 0x0A0D0D0A, struct.pack("<IHHq", BOM, 2, 0, -1)))
    assert "unsupported pcapng version 2.0" in _error(tmp_path / "v2.pcapng")


def test_permission_denied(tmp_path):
    p = tmp_path / "secret.pcap"
    p.write_bytes(pcap_header())
    p.chmod(0)
    if os.geteuid() != 0:
        assert "permission denied" in _error(p)
        return
    # root reads any file: run the check in a child without the capabilities that
    # bypass file permissions (setpriv, util-linux; present wherever CI runs)
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to test this as root"
    code = ("import sys; sys.path.insert(0, sys.argv[2]); "
            "from pipeline.frontend.readers import open_capture, CaptureError\n"
            "try:\n    open_capture(sys.argv[1])\nexcept CaptureError as e:\n    print(e)")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code,
                          str(p), root], capture_output=True, text=True)
    assert "permission denied" in out.stdout, out.stderr


def test_unmappable_input_is_read_instead(tmp_path):
    fifo = tmp_path / "fifo.pcap"
    os.mkfifo(fifo)
    data = pcap_header() + pcap_record("<", 7, 0, payload(0, 30))
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    try:
        r, chunks, cols = read_all(fifo)
    finally:
        writer.join()
    assert r.size == len(data) and cols["caplen"].tolist() == [30] and cols["ts"].tolist() == [7.0]


# -- never an exception from damage --------------------------------------------------------
def _sample_pcap():
    return pcap_header() + b"".join(pcap_record("<", 1_700_000_000 + i, i, payload(i, 20 + 9 * i)) for i in range(12))


def _sample_pcapng():
    return (shb("<") + idb("<", 1) + idb("<", 113, tsresol=9) + b"".join(
        epb("<", i % 2, 10**15 + i, payload(i, 20 + 9 * i)) for i in range(8)) + spb("<", payload(9, 30), 30))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(["pcap", "pcapng"]),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=8)), max_size=6),
       cut=st.integers(0, 10_000))
def test_damage_never_raises(tmp_path, base, edits, cut):
    data = bytearray(_sample_pcap() if base == "pcap" else _sample_pcapng())
    for at, junk in edits:
        at = 24 + at % (len(data) - 24)        # keep the file header: damage is inside the file
        data[at:at + len(junk)] = junk
    data = bytes(data[:max(28, len(data) - cut % 200)])
    path = tmp_path / f"fuzz.{base}"
    path.write_bytes(data)
    try:
        r = open_capture(str(path))
    except CaptureError as e:
        assert "\n" not in str(e)
        return
    for c in r.chunks(5):
        assert 0 < len(c.offsets) <= 5
        assert (c.offsets >= 0).all() and (c.offsets + c.caplen <= r.size).all()
    assert r.bytes_done == r.size and r.damage >= 0
    assert all("\n" not in w and w.startswith(f"{path}: ") for w in r.warnings)
    r.close()


# -- the shared captures, against dpkt --------------------------------------------------------
def _shared_files():
    if not PCAPS.is_dir():
        return []
    return sorted(p for p in PCAPS.rglob("*") if p.is_file())


def _captures():
    return [p for p in _shared_files() if p.suffix in (".pcap", ".pcapng", ".cap")]


@needs_shared
def test_every_shared_file_reads_or_is_refused_cleanly():
    assert _shared_files(), "no files under ../shared/pcaps"
    for p in _shared_files():
        try:
            r = open_capture(str(p))
        except CaptureError as e:
            assert "\n" not in str(e) and str(p) in str(e)
            continue
        for c in r.chunks():
            assert (c.offsets + c.caplen <= r.size).all()
        r.close()


def _dpkt_frames(path):
    """[(caplen, wirelen, ts)] as dpkt reads the file, and whether dpkt met a cut-short tail;
    None where dpkt cannot read the file. dpkt's iterator gives (ts, bytes); the wire length
    comes from walking the same records with dpkt's own header classes. dpkt reads every
    pcapng time with the first interface's clock: ts is None for packets of other interfaces."""
    data = path.read_bytes()
    with open(path, "rb") as f:
        try:
            reader = dpkt.pcap.UniversalReader(f)
        except Exception:
            return None
        got = []
        try:
            for ts, buf in reader:
                got.append((float(ts), len(buf)))
        except Exception:
            pass                     # dpkt stops on a partial header: frames so far stand
    wire = []
    if isinstance(reader, dpkt.pcap.Reader):
        ph = dpkt.pcap.MAGIC_TO_PKT_HDR[dpkt.pcap.FileHdr(data[:24]).magic]
        pos = 24
        while pos + ph.__hdr_len__ <= len(data):
            h = ph(data[pos:pos + ph.__hdr_len__])
            wire.append((h.caplen, h.len, 0))
            pos += ph.__hdr_len__ + h.caplen
    else:
        le = data[8:12] == struct.pack("<I", BOM)
        pos = 0
        while pos + 8 <= len(data):
            btype, blen = struct.unpack_from("<II" if le else ">II", data, pos)
            if btype in (2, 6) and pos + blen <= len(data):
                cls = {6: (dpkt.pcapng.EnhancedPacketBlockLE, dpkt.pcapng.EnhancedPacketBlock),
                       2: (dpkt.pcapng.PacketBlockLE, dpkt.pcapng.PacketBlock)}[btype][0 if le else 1]
                blk = cls(data[pos:pos + blen])
                wire.append((blk.caplen, blk.pkt_len, blk.iface_id))
            if blen < 12:
                break
            pos += blen
    frames = [(n, w[1], ts if w[2] == 0 else None) for (ts, n), w in zip(got, wire)]
    short_tail = bool(frames) and frames[-1][0] < wire[len(frames) - 1][0]
    if short_tail:
        frames.pop()
    return frames, short_tail


@needs_shared
@pytest.mark.parametrize("path", _captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shared_capture_agrees_with_dpkt(path):
    try:
        r, chunks, cols = read_all(path)
    except CaptureError as e:
        pytest.skip(f"refused: {e}")
    ref = _dpkt_frames(path)
    if ref is None:
        pytest.skip("dpkt cannot read this file")
    theirs, short_tail = ref
    ours = list(zip(cols["caplen"].tolist(), cols["wirelen"].tolist(), cols["ts"].tolist()))
    if r.damage:     # past the first damaged region we resynchronise and dpkt does not
        first = int(re.search(r"offset (\d+)", r.warnings[0]).group(1))
        ours = [o for o, off in zip(ours, cols["offsets"].tolist()) if off < first]
        theirs = theirs[:len(ours)]
    else:
        assert not short_tail
    assert len(ours) == len(theirs)
    assert [(c, w) for c, w, _ in ours] == [(c, w) for c, w, _ in theirs]
    # times rounded to microseconds, with one microsecond (or two float64 ulps, for absurd
    # times) of slack: dpkt divides a 64-bit tick count in floating point, we do not
    both = [(t, ref) for (_, _, t), (_, _, ref) in zip(ours, theirs) if ref is not None]
    us = np.array([round(t * 1e6) for t, _ in both], np.float64)
    ref_us = np.array([round(ref * 1e6) for _, ref in both], np.float64)
    slack = 1 + 2e6 * np.spacing(np.abs(ref_us / 1e6))
    assert (np.abs(us - ref_us) <= slack).all()
