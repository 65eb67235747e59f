"""Generated conversations for the front-end's tests: one inner TCP conversation (3 packets
from the client, 2 from the server, directions interleaved) wrapped frame by frame by a
function that gives each direction its own outer fields; and the records and rows a
capture of them gives through the real FrontEnd and Engine (in process)."""
import numpy as np

from contracts.record import as_dict
from pipeline import tracegen
from pipeline.frontend.core import FrontEnd
from pipeline.frontend.readers import open_capture
from tests.rows import run_engine
from tests.test_slowpath import eth, ipv4, ipv6, tcp, udp
from contracts.timeouts import Timeouts

CLI4, SRV4 = bytes([172, 16, 0, 5]), bytes([93, 184, 216, 34])
CLI6 = bytes.fromhex("2001000041379e508000f12ab9c82815")          # a Teredo address
SRV6 = bytes.fromhex("20014860000020010000000000000068")
C4 = bytes([10, 9, 0, 3])                                          # an ERSPAN collector, a TZSP collector
UP = (0x02, 0x18, 0x11)          # client: SYN, data, FIN
DOWN = (0x12, 0x18)              # server: SYN-ACK, data


def inner_tcp(up: bool, flags: int, v6=False) -> bytes:
    seg = tcp(40000, 80, flags=flags, data=b"d" if flags == 0x18 else b"") if up else \
        tcp(80, 40000, flags=flags, data=b"r" if flags == 0x18 else b"")
    if v6:
        return ipv6(6, seg, src=CLI6, dst=SRV6) if up else ipv6(6, seg, src=SRV6, dst=CLI6)
    return ipv4(6, seg, src=CLI4, dst=SRV4) if up else ipv4(6, seg, src=SRV4, dst=CLI4)


def inner_eth(up, flags):
    return eth(0x0800, inner_tcp(up, flags))


def tagged(up, flags, tags):
    """The inner packet on Ethernet with 802.1Q tags `tags`."""
    return eth(0x0800, inner_tcp(up, flags), tags=[(0x8100, v) for v in tags])


def udp_frame(src, dst, sport, dport, payload):
    if len(src) == 16:
        return eth(0x86DD, ipv6(17, udp(sport, dport, payload), src=src, dst=dst))
    return eth(0x0800, ipv4(17, udp(sport, dport, payload), src=src, dst=dst))


def ip_frame(src, dst, proto, payload):
    if len(src) == 16:
        return eth(0x86DD, ipv6(proto, payload, src=src, dst=dst))
    return eth(0x0800, ipv4(proto, payload, src=src, dst=dst))


def conversation(make, t0=1.0):
    """Frames of one inner conversation, directions interleaved (up first), with the outer
    flow of each: [(ts, frame, flow)]."""
    order = [(True, UP[0]), (False, DOWN[0]), (True, UP[1]), (False, DOWN[1]), (True, UP[2])]
    out = []
    for i, (up, flags) in enumerate(order):
        frame, flow = make(up, flags)
        out.append((t0 + i * 0.01, frame, flow))
    return out


def front_end_records(path, workers=1, **fe_kw):
    """Records of a capture through FrontEnd(workers) and one Engine per worker (in
    process), and the rows each engine got."""
    fe = FrontEnd(workers, Timeouts(), **fe_kw)
    batches = [[] for _ in range(workers)]
    r = open_capture(str(path))
    for c in r.chunks(4096):
        for w, b in enumerate(fe.pack(fe.process(c))):
            batches[w].append(b)
    for w, b in enumerate(fe.pack(fe.finish())):
        batches[w].append(b)
    r.close()
    paths = {v: k for k, v in fe.paths.ids.items()}
    recs, rows = [], []
    for w in range(workers):
        got, _ = run_engine(batches[w], Timeouts(), paths, vlan_key=fe_kw.get("vlan_key", True))
        recs += [as_dict(x) for x in got]
        rows += [b[0] for b in batches[w]]
    return recs, np.concatenate(rows), paths


def write(tmp_path, frames, name="t.pcap"):
    p = tmp_path / name
    tracegen.write_pcap(str(p), [(t, f) for t, f, *_ in frames])
    return p
