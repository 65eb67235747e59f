"""Differential test: the vectorised fast path and the per-frame slow path agree on
every frame the fast path accepts, over every shared capture and our own trace."""
import pytest

from pipeline import tracegen
from pipeline.frontend import slowpath
from pipeline.frontend.fastpath import PathIds, decode_fast
from pipeline.frontend.readers import CaptureError, open_capture
from tests.shared import all_captures, capture_ids, needs_shared

FIELDS = ("ipver", "proto", "sport", "dport", "tcpflags", "seq", "ack", "payload",
          "src_hi", "src_lo", "dst_hi", "dst_lo", "nvlan", "vlan0", "vlan1", "wirelen", "caplen")


def _slow_row(layer):
    src, dst = layer.src.ljust(16, b"\0"), layer.dst.ljust(16, b"\0")
    vl = layer.vlans
    return dict(ipver=layer.ipver, proto=layer.proto, sport=layer.sport, dport=layer.dport,
                tcpflags=layer.tcpflags, seq=layer.seq, ack=layer.ack, payload=layer.payload,
                src_hi=int.from_bytes(src[:8], "big"), src_lo=int.from_bytes(src[8:], "big"),
                dst_hi=int.from_bytes(dst[:8], "big"), dst_lo=int.from_bytes(dst[8:], "big"),
                nvlan=len(vl), vlan0=vl[0] if vl else 0, vlan1=vl[1] if len(vl) > 1 else 0)


def compare(path):
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
                               chunk.linktype, paths)
        names.update(paths.take_new())
        assert len(ev) + int(slow.sum()) == len(chunk.offsets)
        accepted += len(ev)
        data = memoryview(chunk.data)
        for row in ev:
            i = int(row["fidx"])
            off, cap = int(chunk.offsets[i]), int(chunk.caplen[i])
            d = slowpath.decode(int(chunk.linktype[i]), data[off:off + cap])
            want = None
            if d.kind == "ip" and len(d.layers) == 1 and d.layers[0].frag is None and d.layers[0].tunnel is None:
                want = _slow_row(d.layers[0])
                want.update(wirelen=int(chunk.wirelen[i]), caplen=cap)
                want["path"] = d.layers[0].path
            got = {f: int(row[f]) for f in FIELDS}
            got["path"] = names[int(row["path"])]
            if got != want:
                bad.append((i, got, want, d.kind, d.error))
    reader.close()
    return accepted, bad


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
