"""Differential test: the vectorised fast path and the per-frame slow path agree on
every frame the fast path accepts, over every shared capture and our own trace."""
import numpy as np
import pytest

from pipeline import tracegen
from pipeline.frontend import slowpath
from pipeline.frontend.fastpath import PAYLOAD_MAX, PathIds, decode_fast
from pipeline.frontend.readers import CaptureError, open_capture
from tests.shared import all_captures, capture_ids, needs_shared

FIELDS = ("ipver", "proto", "sport", "dport", "tcpflags", "seq", "ack", "payload", "iplen",
          "src_hi", "src_lo", "dst_hi", "dst_lo", "smac", "dmac", "nvlan", "vlan0", "vlan1", "wirelen", "caplen")


def _slow_row(layer):
    src, dst = layer.src.ljust(16, b"\0"), layer.dst.ljust(16, b"\0")
    vl = layer.vlans
    return dict(ipver=layer.ipver, proto=layer.proto, sport=layer.sport, dport=layer.dport,
                tcpflags=layer.tcpflags, seq=layer.seq, ack=layer.ack, payload=layer.payload, iplen=layer.iplen,
                smac=layer.smac, dmac=layer.dmac,
                src_hi=int.from_bytes(src[:8], "big"), src_lo=int.from_bytes(src[8:], "big"),
                dst_hi=int.from_bytes(dst[:8], "big"), dst_lo=int.from_bytes(dst[8:], "big"),
                nvlan=len(vl), vlan0=vl[0] if vl else 0, vlan1=vl[1] if len(vl) > 1 else 0)


def compare(path, teredo_any_port=True):
    """Returns (frames accepted by the fast path, mismatches)."""
    try:
        reader = open_capture(str(path))
    except CaptureError:
        return 0, []
    accepted, bad = 0, []
    paths = PathIds()
    names = {}
    for chunk in reader.chunks(4096):
        ev, slow = decode_fast(chunk.data, chunk.offsets, chunk.caplen, chunk.wirelen, chunk.ts,
                               chunk.linktype, paths, teredo_any_port=teredo_any_port)
        names.update(paths.take_new())
        assert len(ev) + int(slow.sum()) == len(chunk.offsets)
        accepted += len(ev)
        data = memoryview(chunk.data)
        for row in ev:
            i = int(row["fidx"])
            off, cap = int(chunk.offsets[i]), int(chunk.caplen[i])
            d = slowpath.decode(int(chunk.linktype[i]), data[off:off + cap], teredo_any_port=teredo_any_port)
            want = None
            if d.kind == "ip" and len(d.layers) == 1 and d.layers[0].frag is None and d.layers[0].tunnel is None:
                want = _slow_row(d.layers[0])
                want.update(wirelen=int(chunk.wirelen[i]), caplen=cap)
                want["path"] = d.layers[0].path
            got = {f: int(row[f]) for f in FIELDS}
            got["path"] = names[int(row["path"])]
            if got != want:
                bad.append((i, got, want, d.kind, d.error))
            elif not _payload_marked(row, bytes(data[off:off + cap]), data):
                bad.append((i, "ploff/pllen", int(row["ploff"]), int(row["pllen"])))
    reader.close()
    return accepted, bad


def _payload_marked(row, frame, data) -> bool:
    """ploff/pllen point at the transport payload's first bytes (up to PAYLOAD_MAX), as dpkt
    finds them; frames dpkt cannot take apart are not judged here."""
    import dpkt
    try:
        eth = dpkt.ethernet.Ethernet(frame)
        payload = bytes(eth.data.data.data)
    except (dpkt.UnpackError, AttributeError):
        return True
    want = payload[:min(int(row["payload"]), PAYLOAD_MAX)]
    o, n = int(row["ploff"]), int(row["pllen"])
    return bytes(data[o:o + n]) == want


def test_fast_equals_slow_on_generated_trace(tmp_path):
    frames, _ = tracegen.build(seed=11, sessions=300)
    p = tmp_path / "t.pcap"
    tracegen.write_pcap(str(p), frames)
    accepted, bad = compare(p)
    assert accepted > len(frames) // 2
    assert not bad, bad[:3]


CAPS = all_captures()


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("path", CAPS, ids=capture_ids(CAPS))
def test_fast_equals_slow_on_shared_capture(path):
    accepted, bad = compare(path)
    assert not bad, f"{len(bad)} of {accepted} frames differ, first: {bad[0]}"


def _frame(vlans=0, ip_options=0, v6=False, payload=b""):
    """An Ethernet frame with `vlans` 802.1Q tags, IPv4 (with option bytes) or IPv6, TCP."""
    import struct
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 7, 9, 5 << 4, 0x18, 512, 0, 0) + payload
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + bytes(range(1, 17)) + bytes(range(17, 33)) + tcp
        et = 0x86DD
    else:
        hl = 20 + ip_options
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, hl + len(tcp), 1, 0, 64, 6, 0,
                         b"\x0a\x00\x00\x01", b"\xc0\xa8\x01\x02") + b"\x01" * ip_options + tcp
        et = 0x0800
    tags = b"".join(struct.pack("!HH", 0x8100, 100 + k) for k in range(vlans))
    return b"\x00\x11\x22\x33\x44\x55" + b"\x66\x77\x88\x99\xaa\xbb" + tags + struct.pack("!H", et) + ip


@pytest.mark.parametrize("frames", [
    [_frame(vlans=2, ip_options=40)],                          # the furthest header bytes the fast path reads
    [_frame(v6=True, vlans=2)],
    [_frame(), _frame(vlans=1, ip_options=40, payload=b"x")],  # a long-header frame last in the file
    [_frame(v6=True, payload=b"y" * 3)] * 3,
    [_frame(payload=b"z")],                                    # a file shorter than a block
], ids=["qinq-ipv4-options", "qinq-ipv6", "last-frame-long-header", "ipv6-small-file", "tiny-file"])
def test_fast_equals_slow_at_the_end_of_a_small_file(tmp_path, frames):
    """Each frame's first bytes are gathered in blocks (fastpath._BLOCK): a frame that ends
    the buffer, in files smaller than a block or not, still decodes as the slow path does."""
    p = tmp_path / "small.pcap"
    tracegen.write_pcap(str(p), [(1.0 + i, f) for i, f in enumerate(frames)])
    accepted, bad = compare(p)
    assert accepted == len(frames)
    assert not bad, bad[:3]


def _qinq_tcp(src, dst, sport, dport, flags, seq, ack, payload=b""):
    import struct
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 512, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst) + tcp
    tags = struct.pack("!HHHH", 0x88A8, 10, 0x8100, 20)
    return b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb" + tags + struct.pack("!H", 0x0800) + ip


def test_qinq_http_session_is_classified_from_its_payload(tmp_path):
    """QinQ frames take the fast path, which ships the first payloads to the workers, so a
    QinQ HTTP session gets its request's metadata (before the fix of the second tag's
    offset they all fell to the slow path, which ships none)."""
    from tests.rows import run_engine
    from tests.test_engine_bulk import front_end_batches
    from contracts.timeouts import Timeouts
    from contracts.record import INDEX
    c, s = b"\x0a\x00\x00\x01", b"\xc0\xa8\x01\x02"
    get = b"GET /x HTTP/1.1\r\nHost: qinq.example\r\n\r\n"
    frames = [_qinq_tcp(c, s, 40000, 80, 0x02, 100, 0), _qinq_tcp(s, c, 80, 40000, 0x12, 500, 101),
              _qinq_tcp(c, s, 40000, 80, 0x10, 101, 501), _qinq_tcp(c, s, 40000, 80, 0x18, 101, 501, get),
              _qinq_tcp(s, c, 80, 40000, 0x18, 501, 101 + len(get), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    p = tmp_path / "qinq-http.pcap"
    tracegen.write_pcap(str(p), [(1.0 + i / 100, f) for i, f in enumerate(frames)])
    assert compare(p) == (len(frames), [])          # all on the fast path, as the slow path decodes them
    batches, paths = front_end_batches(p, 64, Timeouts())
    recs, _ = run_engine(batches, Timeouts(), paths)
    assert len(recs) == 1
    rec = recs[0]
    assert rec[INDEX["vlan"]] == [10, 20] and rec[INDEX["app"]] == "http"
    assert rec[-1].get("http.host") == "qinq.example"


# -- Teredo by its shape on any UDP port -----------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from pipeline.frontend.fastpath import _teredo_shaped  # noqa: E402
from pipeline.frontend.tunnels import teredo_by_shape  # noqa: E402
from tests.test_slowpath import teredo_shapes, udp4  # noqa: E402

SHAPES = [p for p, _ in teredo_shapes()]


@st.composite
def udp_payloads(draw):
    """Teredo-like payloads, mutated (bit flips, cut, grown), or random bytes; and how much
    of each the capture kept."""
    if draw(st.booleans()):
        b = bytearray(draw(st.sampled_from(SHAPES)))
        for x in draw(st.lists(st.integers(0, 10**6), max_size=3)):
            if b:
                b[x % len(b)] ^= 1 << (x // len(b) % 8)
        if draw(st.booleans()):
            b = b[:draw(st.integers(0, len(b)))] + draw(st.binary(max_size=8))
    else:
        b = bytearray(draw(st.binary(max_size=120)))
    return bytes(b), draw(st.integers(0, len(b)))


@settings(max_examples=600, deadline=None)
@given(st.lists(udp_payloads(), min_size=1, max_size=12), st.binary(min_size=64, max_size=64))
def test_teredo_shape_vectorised_equals_scalar(items, filler):
    """fastpath._teredo_shaped gives tunnels.teredo_by_shape's answer for every payload, the
    captured bytes followed by other frames' bytes (what a chunk holds past a cut capture)."""
    data, starts = bytearray(filler), []
    for p, kept in items:
        starts.append(len(data))
        data += p[:kept] + filler[:17]
    data += filler
    starts = np.array(starts, np.int64)
    avail = np.array([kept for _, kept in items], np.int64)
    size = np.array([len(p) for p, _ in items], np.int64)
    got = _teredo_shaped(bytes(data), starts, avail, size).tolist()
    want = [teredo_by_shape(p[:kept], len(p)) is not None for p, kept in items]
    assert got == want


def test_teredo_shaped_frames_take_the_slow_path(tmp_path):
    """Teredo-shaped UDP on any port goes to the slow path (which decodes it), other UDP
    stays on the fast path; --no-teredo-heuristic keeps them all on the fast path, as the
    slow path then decodes them as plain UDP."""
    frames = [udp4(32900 + i, 3797, p) for i, (p, _) in enumerate(teredo_shapes())]
    shaped = sum(t for _, t in teredo_shapes())
    p = tmp_path / "teredo.pcap"
    tracegen.write_pcap(str(p), [(1.0 + i, f) for i, f in enumerate(frames)])
    plain_udp = sum(not t for _, t in teredo_shapes())
    accepted, bad = compare(p)
    assert not bad and accepted == plain_udp and plain_udp + shaped == len(frames)
    accepted, bad = compare(p, teredo_any_port=False)
    assert not bad and accepted == len(frames)
