"""A session's record, built from the schema (`contracts.record`): two builders, one check.

Two builders that must write the same records, side by side here:
- `RecordWriter.many`: many sessions at once (the sessions a batch ended), a
  column per field: the first rows' endpoints, the counters, the address texts
  and the community ids are worked out over numpy columns, each column is
  filed under its field's name, and the records are zipped from the columns in
  the order of the worker fields (`contracts.record.WIRE_NAMES`): a field they have and
  `many` lacks fails at once.
- `RecordWriter.one`: one session as it is now (an interim report, a sweep that
  ended few sessions); the plain reference. Its list is written out in the
  schema's order, one line per group of fields: built as a dict by name, a
  record cost it 44% more instructions (docs/benchmarks.md), and it writes most
  records where traffic is light.
`tests/test_engine_report.py` holds the two to the same records and types, so
a field added to the schema and to `many` by name but put in the wrong place
in `one` fails there.

After the fields a record may carry one dict: the classifier's metadata and a
plugin's `extra` fields. A plugin's values for the classification fields win
over the classifier's.
"""
import functools
import socket
from collections import deque
from itertools import compress, repeat

import numpy as np

from contracts.community_id import community_id_packed, community_ids_ported
from contracts.record import INDEX, TYPE_SESSION, WIRE_NAMES
from contracts.wire import ICMP_SEEN, row_struct

from .inspection import class_of
from .session import BYTE, CAP_BYTE, CAP_PKT, DATA_BYTE, DATA_PKT, FIRST, IP_BYTE, N_COUNTERS, PKT, PORTED, session_ids
from .tcp import conn_state, history_text, seq_bytes

_ntop, _AF_INET, _AF_INET6 = socket.inet_ntop, socket.AF_INET, socket.AF_INET6
# the record's counters by Session.c's index (six per direction), each as the total, the
# client's (ul_) and the server's (dl_)
COUNTERS = {PKT: "packet_count", BYTE: "byte_count", CAP_PKT: "cap_packet_count", CAP_BYTE: "cap_byte_count",
            DATA_PKT: "data_packet_count", DATA_BYTE: "data_byte_count"}
_COUNTER_FIELDS = [(i, name, "ul_" + name, "dl_" + name) for i, name in COUNTERS.items()]
CLASS_FIELDS = ("content_class", "content_type", "content_flags", "app", "family")   # from the classification
_CLASS_AT = tuple((INDEX[n], n) for n in CLASS_FIELDS)    # where they are in a record
_PATH_AT = INDEX["proto_path"]
_UNNAMED = (None,) * (len(CLASS_FIELDS) + 1) + (False,)     # `class_columns`' row of a classification naming no app
_OCTET = [str(i) for i in range(256)]   # IPv4 address texts are made of these
_PORTED = sorted(PORTED)                # transports with ports
_ICMPS = (1, 58)
# the first row's fields `one` needs besides the endpoints: its direction, its ICMP type and
# code (in seq), its Ethernet addresses
_FIRST = row_struct("dir", "seq", "smac", "dmac", dtype=FIRST)


def mac_text(v: int):
    """A 48-bit Ethernet address as aa:bb:cc:dd:ee:ff; 0 (none) as None."""
    return v.to_bytes(6, "big").hex(":") if v else None


@functools.lru_cache(maxsize=8192)
def tcp_history(order: int, client_dir: int, flipped: bool) -> tuple:
    """(history, conn_state, whether content gaps count) of a TCP session from its history's
    letters (`TcpState.hist >> 16`): the client's in upper case, ^ first when the client is
    the first packet's receiver. Gaps count once the responder answered the handshake and
    the originator acknowledged (Zeek reports them between established endpoints only).
    Few distinct histories: cached."""
    text = history_text(order << 16)
    if client_dir:
        text = text.swapcase()
    if flipped:
        text = "^" + text
    return text or None, conn_state(text), "h" in text and ("A" in text or "D" in text)


# Zeek's UDP history and conn_state by (client sent, server sent)
_UDP = {(True, True): ("Dd", "SF"), (True, False): ("D", "S0"), (False, True): ("d", "SHR"),
        (False, False): (None, "OTH")}
_OTHER = (None, "OTH")
# _UDP by (client sent) * 2 + (server sent), for numpy; the history also by + 4 * flipped (^ first)
_UDP_STATE = np.array([_UDP[bool(k & 2), bool(k & 1)][1] for k in range(4)], object)
_UDP_HISTORY = np.array([h and "^" * f + h for f in (0, 1) for h in (_UDP[bool(k & 2), bool(k & 1)][0]
                                                                    for k in range(4))], object)


def zeek_fields(proto: int, st, client_dir: int, flipped: bool, ul_pkts: int, dl_pkts: int) -> tuple:
    """(history, conn_state, missed_bytes) of a session (`st`: its TcpState or None)."""
    if proto == 6:
        hist, state, counted = tcp_history(st.hist >> 16 if st is not None else 0, client_dir, flipped)
        return hist, state, st.gap if counted and st is not None else 0
    if proto == 17:
        k = (ul_pkts > 0) * 2 + (dl_pkts > 0)
        return _UDP_HISTORY[k + 4 * flipped], _UDP_STATE[k], 0
    return (*_OTHER, 0)


def icmp_type_code(proto: int, seq: int) -> tuple:
    """(type, code) of an ICMP or ICMPv6 row from its `seq` (wire.ICMP_SEEN), else (None, None)."""
    if seq & ICMP_SEEN and (proto == 1 or proto == 58):
        return (seq >> 8) & 0xFF, seq & 0xFF
    return None, None


class RecordWriter:
    """Writes the records of one worker's sessions (`sensor`, `worker`: fields of every
    record; `classify`: 0 when the worker does not classify)."""
    __slots__ = ("sensor", "worker", "classify")

    def __init__(self, sensor: str, worker: int, classify: int):
        self.sensor = sensor
        self.worker = worker
        self.classify = classify

    def one(self, s, final: bool, reason: str) -> list:
        """One record of the session as it is now (the reference `many` follows)."""
        s.reports += 1
        c = s.c
        u = 6 * s.client_dir
        dn = 6 - u
        ipver, proto, lo, lport, hi, hport, vlans = s.endpoints()
        if s.client_dir == 0:
            ca, cport, sa, sport = lo, lport, hi, hport
        else:
            ca, cport, sa, sport = hi, hport, lo, lport
        af = _AF_INET if ipver == 4 else _AF_INET6
        d0, seq0, m0, m1 = _FIRST.unpack_from(s.first)
        fwd = d0 == s.client_dir                # the first row's source is the client
        if proto == 1 or proto == 58:           # one-way ICMP hashes the first message's sender first
            cid = community_id_packed(proto, *((ca, sa) if fwd else (sa, ca)), None, None, *icmp_type_code(proto, seq0))
        else:
            cid = community_id_packed(proto, ca, sa, cport, sport)
        st = s.tcp
        cd = s.client_dir
        if proto == 6:
            ul_seq, dl_seq = seq_bytes(st, cd), seq_bytes(st, 1 - cd)
        else:
            ul_seq, dl_seq = c[u + DATA_BYTE], c[dn + DATA_BYTE]
        hist, state, missed = zeek_fields(proto, st, cd, not fwd, c[u + PKT], c[dn + PKT])
        rec = [TYPE_SESSION, final, reason, s.id, s.parent_id or None, self.sensor, self.worker, s.reports,
               round(s.start, 6), round(s.last, 6), round(s.last - s.start, 6), ipver, proto,
               _ntop(af, ca), cport, _ntop(af, sa), sport, list(vlans) if vlans else None, s.path,
               c[PKT] + c[6 + PKT], c[u + PKT], c[dn + PKT],                     # packet_count, ul_, dl_
               c[BYTE] + c[6 + BYTE], c[u + BYTE], c[dn + BYTE],
               c[CAP_PKT] + c[6 + CAP_PKT], c[u + CAP_PKT], c[dn + CAP_PKT],
               c[CAP_BYTE] + c[6 + CAP_BYTE], c[u + CAP_BYTE], c[dn + CAP_BYTE],
               c[DATA_PKT] + c[6 + DATA_PKT], c[u + DATA_PKT], c[dn + DATA_PKT],
               c[DATA_BYTE] + c[6 + DATA_BYTE], c[u + DATA_BYTE], c[dn + DATA_BYTE],
               round(st.rtt, 6) if st is not None and st.rtt is not None else None,
               st.retrans if st is not None else 0,
               st.flags if st is not None else 0,
               None, None, None, None, None,                                     # CLASS_FIELDS
               cid,
               state, hist, ul_seq, dl_seq, missed,
               c[IP_BYTE + cd], c[IP_BYTE + 1 - cd],                              # ul_, dl_ip_byte_count
               mac_text(m0 if fwd else m1), mac_text(m1 if fwd else m0),          # client_mac, server_mac
               s.tunnel_parents, s.vlan_stacks]
        meta = _classified(rec, class_of(s, proto, cport, sport)) if self.classify else None
        if s.ext:
            meta = _extended(s.ext, rec, meta)
        if meta:
            rec.append(meta)
        return rec

    def many(self, items) -> list:
        """`one` for (session, final, reason) items at once, each session once, in their
        order, a column per field (see the module's docstring)."""
        n = len(items)
        ss = [it[0] for it in items]
        for s in ss:
            s.reports += 1
        tcps = [s.tcp for s in ss]
        cd = np.fromiter([s.client_dir for s in ss], np.uint8, n)
        first = np.frombuffer(b"".join([s.first for s in ss]), FIRST)     # the first rows, decoded once
        cols = {"type": repeat(TYPE_SESSION, n), "final": [it[1] for it in items],
                "end_reason": [it[2] for it in items], "session_id": session_ids(ss, first),
                "parent_session_id": [s.parent_id or None for s in ss], "sensor": repeat(self.sensor, n),
                "worker": repeat(self.worker, n), "report_number": [s.reports for s in ss],
                "retransmission_count": [st.retrans if st is not None else 0 for st in tcps],
                "tcp_flags": [st.flags if st is not None else 0 for st in tcps],
                "tunnel_parents": [s.tunnel_parents if s.parent_id else None for s in ss],
                "vlan_stacks": [s.vlan_stacks if s.ext else None for s in ss]}
        _time_columns(cols, ss, tcps, first)
        counters = _counter_columns(cols, ss, cd)
        protos, cports, sports, fwd, proto = _endpoint_columns(cols, first, cd)
        _zeek_columns(cols, tcps, counters, cd, proto, fwd)
        paths = [s.path for s in ss]
        if self.classify:
            classes, cols["proto_path"], metas = class_columns(
                [ins if ins.__class__ is dict else class_of(s, pr, cp, sp)     # done: its result, as class_of
                 for s, ins, pr, cp, sp in zip(ss, [s.insp for s in ss], protos, cports, sports)], paths)
            cols.update(classes)
        else:
            cols["proto_path"], metas = paths, None
            cols.update((name, repeat(None, n)) for name in CLASS_FIELDS)
        out = list(map(list, zip(*map(cols.__getitem__, WIRE_NAMES))))
        _append_metadata(ss, out, metas)
        return out


def _append_metadata(ss, out, metas) -> None:
    """Each record of `out` (of sessions `ss`) that has metadata (`metas`: the classes'
    metadata per record, None: none; a session's extended observations) gets it at its end,
    as `one` appends it."""
    if any([s.ext for s in ss]):
        for s, rec, meta in zip(ss, out, metas or repeat(None)):
            if s.ext:
                meta = _extended(s.ext, rec, meta)
            if meta:
                rec.append(meta)
    elif metas is not None:
        deque(map(list.append, compress(out, metas), compress(metas, metas)), 0)


def _time_columns(cols: dict, ss, tcps, first) -> None:
    """start, end, duration and rtt, rounded to the microsecond as `one` rounds them
    (`first`: the sessions' first rows, FIRST)."""
    n = len(ss)
    start = first["ts"]
    last = np.fromiter([s.last for s in ss], np.float64, n)
    cols["start"], cols["end"], cols["duration"] = round6(start), round6(last), round6(last - start)
    timed = [j for j, st in enumerate(tcps) if st is not None and st.rtt is not None]
    rtts = [None] * n
    for j, v in zip(timed, round6(np.fromiter([tcps[j].rtt for j in timed], np.float64, len(timed)))):
        rtts[j] = v
    cols["rtt"] = rtts


def _counter_columns(cols: dict, ss, cd):
    """The counter fields: each session's counters as a row, the client's side picked per
    session (`cd`: the sessions' client directions). Returns the counters (n, N_COUNTERS)."""
    n = len(ss)
    c = np.frombuffer(b"".join([s.c for s in ss]), np.int64).reshape(n, N_COUNTERS)
    lo, hi = c[:, :6], c[:, 6:12]
    client_lo = (cd == 0)[:, None]
    totals = (lo + hi).T.tolist()
    ul = np.where(client_lo, lo, hi).T.tolist()
    dl = np.where(client_lo, hi, lo).T.tolist()
    for i, total, up, down in _COUNTER_FIELDS:
        cols[total], cols[up], cols[down] = totals[i], ul[i], dl[i]
    ip = c[:, IP_BYTE:IP_BYTE + 2]
    cols["ul_ip_byte_count"] = np.where(cd == 0, ip[:, 0], ip[:, 1]).tolist()
    cols["dl_ip_byte_count"] = np.where(cd == 0, ip[:, 1], ip[:, 0]).tolist()
    return c


def _zeek_columns(cols: dict, tcps, c, cd, proto, fwd) -> None:
    """conn_state, history, missed_bytes and the sequence space (`c`: the counters, `proto`:
    the transports, `fwd`: the first row's source is the client): TCP's from its state, the
    others' from the counters."""
    n = len(tcps)
    ul_seq, dl_seq = cols["ul_data_byte_count"][:], cols["dl_data_byte_count"][:]   # other transports: payload
    # by who sent (UDP: _UDP's table; others: OTH, no history), as numpy lookups
    sent = (c[:, PKT] > 0) + 2 * (c[:, 6 + PKT] > 0)                    # canonical directions
    code = np.where(cd == 0, (sent & 1) * 2 + (sent >> 1), (sent >> 1) * 2 + (sent & 1))
    udp = proto == 17
    hist = np.where(udp, _UDP_HISTORY[code + 4 * ~fwd], None).tolist()
    state = np.where(udp, _UDP_STATE[code], "OTH").tolist()
    missed = [0] * n
    j = np.flatnonzero(proto == 6).tolist()
    if j:
        for i, st, d, flip in zip(j, [tcps[i] for i in j], cd[j].tolist(), (~fwd[j]).tolist()):
            if st is None:
                hist[i], state[i], _ = tcp_history(0, d, flip)
                ul_seq[i] = dl_seq[i] = 0
                continue
            hist[i], state[i], counted = tcp_history(st.hist >> 16, d, flip)
            if counted:
                missed[i] = st.gap
            ul_seq[i], dl_seq[i] = seq_bytes(st, d), seq_bytes(st, 1 - d)
    cols["ul_seq_byte_count"], cols["dl_seq_byte_count"] = ul_seq, dl_seq
    cols["history"], cols["conn_state"], cols["missed_bytes"] = hist, state, missed


def _endpoint_columns(cols: dict, r, cd):
    """ip_version, transport, client and server addresses and ports, vlan,
    community_id and the Ethernet addresses, from the sessions' first rows (`r`, FIRST;
    `cd`: their client directions). Returns the transports and the ports (None where
    the transport has none) as lists, for the classification."""
    n = len(r)
    fwd = r["dir"] == cd                    # the first row's source is the client
    f2 = fwd[:, None]
    src = np.empty((n, 2), ">u8")
    src[:, 0] = r["src_hi"]
    src[:, 1] = r["src_lo"]
    dst = np.empty((n, 2), ">u8")
    dst[:, 0] = r["dst_hi"]
    dst[:, 1] = r["dst_lo"]
    ca = np.where(f2, src, dst).astype(">u8")      # 16 bytes each, IPv4 in the first 4
    sa = np.where(f2, dst, src).astype(">u8")
    cab, sab = ca.tobytes(), sa.tobytes()
    sp, dp = r["sport"], r["dport"]
    cport = np.where(fwd, sp, dp)
    sport = np.where(fwd, dp, sp)
    ipver, proto = r["ipver"], r["proto"]
    v4 = ipver == 4
    # community ids: IPv4 and IPv6 sessions with ports in bulk, the rest one by one
    cids = [None] * n
    ported = np.isin(proto, _PORTED)
    for ver, width in ((4, 4), (6, 16)):
        sel = np.flatnonzero(ported & (ipver == ver))
        if len(sel):
            a = np.frombuffer(cab, np.uint8).reshape(n, 16)[sel, :width].tobytes()
            b = np.frombuffer(sab, np.uint8).reshape(n, 16)[sel, :width].tobytes()
            for j, cid in zip(sel.tolist(), community_ids_ported(a, b, width, proto[sel], cport[sel], sport[sel])):
                cids[j] = cid
    protos, cps, sps = proto.tolist(), cport.tolist(), sport.tolist()
    for j in np.flatnonzero(~ported).tolist():
        w = 4 if v4[j] else 16
        o = 16 * j
        cps[j] = sps[j] = None
        a, b = cab[o:o + w], sab[o:o + w]
        if protos[j] in _ICMPS:
            if not fwd[j]:
                a, b = b, a
            cids[j] = community_id_packed(protos[j], a, b, None, None, *icmp_type_code(protos[j], int(r["seq"][j])))
        else:
            cids[j] = community_id_packed(protos[j], a, b, None, None)
    vl = [None] * n
    for j in np.flatnonzero(r["nvlan"]).tolist():
        vl[j] = [int(r["vlan0"][j]), int(r["vlan1"][j])][:int(r["nvlan"][j])]
    macs = {0: None}
    cm, sm = np.where(fwd, r["smac"], r["dmac"]).tolist(), np.where(fwd, r["dmac"], r["smac"]).tolist()
    for v in set(cm).union(sm):        # a few distinct addresses (gateways) in many records
        macs[v] = mac_text(v)
    cols.update(ip_version=ipver.tolist(), transport=protos, client_ip=address_texts(ca[:, 0], v4, cab),
                client_port=cps, server_ip=address_texts(sa[:, 0], v4, sab), server_port=sps, vlan=vl,
                community_id=cids, client_mac=list(map(macs.__getitem__, cm)),
                server_mac=list(map(macs.__getitem__, sm)))
    return protos, cps, sps, fwd, proto


def _classified(rec: list, cls: dict):
    """app, family, content and the protocol path's application part of one record, from
    the session's classification (its inspection's result, or its port's, marked as a
    guess). Returns the metadata, which go with the plugin fields (dotted names: tls.sni,
    http.host, ...). `class_columns` is the same for many."""
    if cls["app"] is None:
        return None
    for j, name in _CLASS_AT:
        rec[j] = cls[name]
    rec[_PATH_AT] = _class_path(cls, rec[_PATH_AT])
    return _class_meta(cls)


def class_columns(clss, paths) -> tuple:
    """`_classified` for many records (`clss`: their classifications, `paths`: their
    protocol paths), a column at a time: ({field: column} for CLASS_FIELDS, proto_path
    column, metadata list). Fields, path and metadata are worked out once per distinct
    classification (and path): most records share a few (the port guesses), and the
    columns are then gathered by builtins. A guess's metadata is a new dict per record,
    as `_class_meta` makes it."""
    if not clss:
        return {name: [] for name in CLASS_FIELDS}, [], []
    ids = list(map(id, clss))
    distinct = dict(zip(ids, clss))
    row = {}                            # id -> the five fields, the metadata, whether it is a guess
    for i, c in distinct.items():
        if c["app"] is None:
            row[i] = _UNNAMED
        else:
            row[i] = (*map(c.__getitem__, CLASS_FIELDS), _class_meta(c), bool(c["guess"]))
    *cols, metas, guesses = map(list, zip(*map(row.__getitem__, ids)))
    if all(guesses):
        metas = list(map(dict, metas))
    elif any(guesses):
        metas = [dict(m) if g else m for m, g in zip(metas, guesses)]
    keys = list(zip(ids, paths))
    path_of = {(i, p): p if row[i] is _UNNAMED else _class_path(distinct[i], p) for i, p in set(keys)}
    return dict(zip(CLASS_FIELDS, cols)), list(map(path_of.__getitem__, keys)), metas


def _class_path(cls: dict, path: str) -> str:
    """A session's proto_path with its classification's application part at the end."""
    suffix = cls["path_suffix"]
    if suffix and not path.endswith("." + suffix):      # icmp is already the path's end
        return path + "." + suffix
    return path


def _class_meta(cls: dict):
    """A classification's metadata for the record (a new dict where it adds app_guess)."""
    if cls["guess"]:
        return dict(cls["meta"], app_guess=True)
    return cls["meta"] or None


def _extended(ext: dict, rec: list, meta):
    """A plugin's values in the record (they win over the classifier's); returns the
    metadata with its extra fields."""
    for j, name in _CLASS_AT:
        if name in ext:
            rec[j] = ext[name]
    if ext.get("extra"):
        meta = dict(meta, **ext["extra"]) if meta else ext["extra"]
    return meta


def round6(x) -> list:
    """`[round(v, 6) for v in x]` for a float64 array, exactly, without Python's slow
    correctly-rounded decimal conversion for most values: N = rint(x * 1e6) is the
    right number of microseconds whenever x * 1e6 lies clearly (by more than its
    rounding error) inside N +- 0.5, and round() then returns the double nearest to
    N / 10^6, which IEEE division gives exactly. Ties, huge and odd values take round()."""
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        p = x * 1e6
        n = np.rint(p)
        good = np.abs(p - n) < 0.5 - np.abs(np.spacing(p))
        good &= np.abs(p) < 2.0 ** 52
    out = (n / 1e6).tolist()
    if not good.all():
        xs = x.tolist()
        for j in np.flatnonzero(~good).tolist():
            out[j] = round(xs[j], 6)
    return out


def address_texts(words, v4, raw) -> list:
    """The addresses' texts. IPv4: dotted decimal from a table of the 256 octets (what
    inet_ntop writes, at a third of its cost); IPv6: inet_ntop. `words`: each
    address's first 8 bytes as a big-endian number, `raw`: 16 bytes per address."""
    n = len(words)
    j4 = np.flatnonzero(v4)
    texts4 = [f"{_OCTET[a >> 24]}.{_OCTET[(a >> 16) & 255]}.{_OCTET[(a >> 8) & 255]}.{_OCTET[a & 255]}"
              for a in (words[j4] >> 32).tolist()]
    if len(j4) == n:
        return texts4
    out = [None] * n
    for j, t in zip(j4.tolist(), texts4):
        out[j] = t
    for j in np.flatnonzero(~v4).tolist():
        out[j] = _ntop(_AF_INET6, raw[16 * j:16 * j + 16])
    return out
