"""Build keyed EVENT rows by hand, for tests of the sans-IO worker core."""
import ipaddress

import numpy as np

from pipeline.frontend.keying import key_rows
from contracts.wire import EVENT


def addr_words(ip: str):
    a = ipaddress.ip_address(ip)
    b = a.packed.ljust(16, b"\0")
    return a.version, int.from_bytes(b[:8], "big"), int.from_bytes(b[8:], "big")


def rows(specs, seed=0, path=1):
    """specs: dicts with src, dst, sport, dport, proto, ts and optional flags, seq, payload,
    wirelen, caplen, ncap, vlans, ctx, parent, depth, fidx (default: position)."""
    ev = np.zeros(len(specs), EVENT)
    for i, s in enumerate(specs):
        v, sh, sl = addr_words(s["src"])
        _, dh, dl = addr_words(s["dst"])
        vl = s.get("vlans", ())
        ev[i]["fidx"] = s.get("fidx", i)
        ev[i]["ts"] = s["ts"]
        ev[i]["wirelen"] = s.get("wirelen", 100)
        ev[i]["caplen"] = s.get("caplen", s.get("wirelen", 100))
        ev[i]["ncap"] = s.get("ncap", 1)
        ev[i]["ipver"] = v
        ev[i]["proto"] = s.get("proto", 6)
        ev[i]["depth"] = s.get("depth", 0)
        ev[i]["tcpflags"] = s.get("flags", 0)
        ev[i]["nvlan"] = len(vl)
        ev[i]["sport"] = s.get("sport", 0)
        ev[i]["dport"] = s.get("dport", 0)
        ev[i]["payload"] = s.get("payload", 0)
        ev[i]["seq"] = s.get("seq", 0)
        ev[i]["ack"] = s.get("ack", 0)
        ev[i]["src_hi"], ev[i]["src_lo"], ev[i]["dst_hi"], ev[i]["dst_lo"] = sh, sl, dh, dl
        ev[i]["vlan0"] = vl[0] if vl else 0
        ev[i]["vlan1"] = vl[1] if len(vl) > 1 else 0
        ev[i]["path"] = s.get("path", path)
        ev[i]["ctx"] = s.get("ctx", 0)
        ev[i]["parent"] = s.get("parent", 0)
    key_rows(ev, seed)
    return ev


def session(i, timeout=1.0):
    """A Session whose first row is frame i's (its id: i << 8), for tests of the table's parts."""
    from workers.session import Session, first_row
    first = first_row(rows([dict(src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, proto=6, ts=0.0, fidx=i)])[0].tobytes())
    return Session(i, i << 8, 0, 0, 0, 0.0, timeout, first, "")


def run_engine(batches, timeouts, paths=None, setup=lambda eng: None, **kw):
    """Feed front-end style batches [(rows, cuts, payload), ...] to a fresh Engine (after
    `setup(engine)`), finish it; returns (records in order, engine)."""
    from workers.engine import Engine
    eng = Engine(0, timeouts, "t", **kw)
    setup(eng)
    eng.add_paths(paths or {1: "eth.ipv4.tcp"})
    out = []
    for ev, cuts, pay in batches:
        eng.feed_batch(ev, cuts, pay)
        out += eng.take_records()
    eng.finish(eng.now)
    out += eng.take_records()
    return out, eng
