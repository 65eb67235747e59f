"""The session object: MMT's session model, small enough for 200k open sessions.

Counters live in one flat list indexed by the canonical direction (0: packets
from the lower endpoint, 1: from the higher), six per direction: packets,
bytes, captured frames, captured bytes, data packets, data bytes; then, per
direction, the IP lengths' sum (IP_BYTE + d). The client (initiator) is one of
the two directions, so upload/download are a view, never a second set of
counters. TCP state and plugin data are created only
when needed.

The properties below are MMT's session accessors (get_session_id,
get_session_parent, get_session_protocol_index, ..., get_session_next /
get_session_previous in the expiry list) under Python names.
"""
import socket
from array import array

import numpy as np

from contracts.wire import DEPTH_BITS, EVENT, ID_SHIFT, row_struct

# what a session keeps of its first row: the fields its id, start, class and record
# come from, and what tells a reused tuple (seq, ack) and the Ethernet ends (86 bytes,
# where the whole EVENT row is 116: a table holds 200k of them)
FIRST_FIELDS = tuple(name for name in EVENT.names if name in {
    "fidx", "ts", "dir", "ipver", "proto", "depth", "tcpflags", "nvlan", "sport", "dport", "src_hi", "src_lo",
    "dst_hi", "dst_lo", "vlan0", "vlan1", "seq", "ack", "smac", "dmac"})      # in EVENT's order
FIRST = np.dtype([(name, EVENT.fields[name][0]) for name in FIRST_FIELDS])
_FROM_EVENT = row_struct(*FIRST_FIELDS)
_AS_FIRST = row_struct(*FIRST_FIELDS, dtype=FIRST, whole=True)


def first_row(row: bytes) -> bytes:
    """A session's `first` (FIRST) from its first EVENT row's bytes."""
    return _AS_FIRST.pack(*_FROM_EVENT.unpack_from(row))


def first_rows(rows) -> bytes:
    """`first_row` of many EVENT rows (a numpy array) at once, one after the other."""
    out = np.empty(len(rows), FIRST)
    for name in FIRST_FIELDS:
        out[name] = rows[name]
    return out.tobytes()


PORTED = frozenset((6, 17, 33, 132, 136))    # transports whose sessions have ports
PKT, BYTE, CAP_PKT, CAP_BYTE, DATA_PKT, DATA_BYTE = range(6)
IP_BYTE = 12                        # + canonical direction
N_COUNTERS = 14
_ZEROS = array("q", bytes(8 * N_COUNTERS))
# the EVENT fields a record needs, straight from the first row's bytes (the addresses raw)
_ROW = row_struct("dir", "ipver", "proto", "nvlan", "sport", "dport", "src_hi", "src_lo", "dst_hi", "dst_lo",
                  "vlan0", "vlan1", raw=("src_hi", "src_lo", "dst_hi", "dst_lo"), dtype=FIRST)
_STACK = row_struct("nvlan", "vlan0", "vlan1", dtype=FIRST)
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_TS = row_struct("ts", dtype=FIRST)
_FIDX = row_struct("fidx", dtype=FIRST)
_DEPTH = (1 << DEPTH_BITS) - 1
_LOW = (1 << ID_SHIFT) - 1
ENDED = float("nan")        # the `slot` of an ended session: equal to no expiry bucket


def session_ids(sessions, first) -> list:
    """`Session.id` of many sessions at once (`first`: their first rows, FIRST, as one array)."""
    low = np.fromiter([s._low for s in sessions], np.uint64, len(sessions))
    return ((first["fidx"] << np.uint64(ID_SHIFT)) | low).tolist()


class Session:
    """One bidirectional session. Under 1 KiB with its table entry (docs/benchmarks.md):
    the first packet's row is kept as raw bytes (its FIRST fields) and decoded only
    when a record is written.
    What can be derived is not stored (a table holds 200k of them): the id is the
    first row's frame number and its low bits (capture process, tunnel depth), the
    start time is in the first row, and `ended` is a `slot` of ENDED (`depth` and `ts`
    are arguments all the same: the id and the row hold them; `sid` must be the
    first row's frame's, as `contracts.wire.session_id` makes it)."""
    __slots__ = ("key", "_low", "parent_id", "client_dir", "last", "timeout",
                 "c", "tcp", "first", "path", "reports", "next_report", "slot", "ext", "_wheel", "insp")

    def __init__(self, key, sid, parent_id, depth, client_dir, ts, timeout, first, path, c=None):
        self.key = key
        self._low = sid & _LOW      # a small int: one object for all
        self.parent_id = parent_id
        self.client_dir = client_dir
        self.last = ts
        self.timeout = timeout
        self.c = array("q", _ZEROS) if c is None else c   # `c`: counters already summed (the bulk path)
        self.tcp = None
        self.first = first          # the opening row's FIRST fields, raw (`first_row`)
        self.path = path
        self.reports = 0
        self.next_report = 0.0
        self.slot = None            # expiry bucket (second) it is filed in; ENDED once it has ended
        self.ext = None             # rarely used attributes (user data, protocol data, content, app, extra)
        self._wheel = None
        self.insp = None            # classification: None before the first payload, an Inspector, its result
                                    # (a dict) once done, False when there is nothing to inspect

    @property
    def id(self) -> int:
        """Its session id (contracts.wire.session_id)."""
        return _FIDX.unpack_from(self.first)[0] << ID_SHIFT | self._low

    @property
    def depth(self) -> int:
        """Its tunnel depth (0: the outermost layer)."""
        return self._low & _DEPTH

    @property
    def start(self) -> float:
        """Its first packet's time."""
        return _TS.unpack_from(self.first)[0]

    @property
    def ended(self) -> bool:
        return self.slot is ENDED

    @ended.setter
    def ended(self, yes: bool) -> None:
        if yes:
            self.slot = ENDED

    @property
    def meta(self):
        """(ipver, proto, lower ip, lower port, higher ip, higher port, vlans, path), from the first row."""
        ipver, proto, lo, lport, hi, hport, vlans = self.endpoints()
        af = _AF[ipver]
        return ipver, proto, socket.inet_ntop(af, lo), lport, socket.inet_ntop(af, hi), hport, vlans, self.path

    def endpoints(self):
        """(ipver, proto, lower address, lower port, higher address, higher port, vlans), the
        addresses as bytes in network order (4 or 16), ports None for port-less transports."""
        d, ipver, proto, nv, sport, dport, sh, sl, dh, dl, v0, v1 = _ROW.unpack_from(self.first)
        if ipver == 4:
            src, dst = sh[7:3:-1], dh[7:3:-1]
        else:
            src, dst = sh[::-1] + sl[::-1], dh[::-1] + dl[::-1]
        if proto not in PORTED:
            sport = dport = None
        vlans = (v0, v1)[:nv] if nv else ()
        if d == 0:
            return ipver, proto, src, sport, dst, dport, vlans
        return ipver, proto, dst, dport, src, sport, vlans

    # -- what the rows carried beside the first one's: outer sessions, VLAN stacks --------
    def observe(self, parent: int, stack) -> None:
        """Note a row's outer session and (`stack`: its VLAN ids as a tuple, outermost first;
        None: not watched) VLAN stack when the session has not seen them yet. Kept in `ext`,
        only by the sessions that have more than the first row's."""
        if parent and parent != self.parent_id:
            more = self._get("parents")
            if more is None:
                self._set("parents", [parent])
            elif parent not in more:
                more.append(parent)
        if stack is not None:
            nv, v0, v1 = _STACK.unpack_from(self.first)
            if stack != (v0, v1)[:nv]:
                more = self._get("vlans")
                if more is None:
                    self._set("vlans", [stack])
                elif stack not in more:
                    more.append(stack)

    @property
    def tunnel_parents(self):
        """Every outer session that carried the session's packets, the first row's first (Zeek's
        tunnel_parents); None at the top level."""
        if not self.parent_id:
            return None
        more = self._get("parents")
        return [self.parent_id, *more] if more else [self.parent_id]

    @property
    def vlan_stacks(self):
        """The distinct VLAN stacks of the session's packets, the first row's first, when they
        were more than one (--no-vlan-key); else None."""
        more = self._get("vlans")
        if not more:
            return None
        nv, v0, v1 = _STACK.unpack_from(self.first)
        return [list((v0, v1)[:nv]), *map(list, more)]

    def _get(self, name):
        return self.ext.get(name) if self.ext else None

    def _set(self, name, value):
        if self.ext is None:
            self.ext = {}
        self.ext[name] = value

    # -- identity and protocol hierarchy -------------------------------------
    @property
    def session_id(self):
        return self.id

    @property
    def parent(self):
        """Id of the tunnel's outer session, or None."""
        return self.parent_id or None

    @property
    def ip_version(self):
        return self.meta[0]

    @property
    def transport(self):
        return self.meta[1]

    @property
    def protocol_hierarchy(self):
        return tuple(self.path.split("."))

    @property
    def protocol_index(self):
        """The session's top protocol (MMT: the protocol index of the session)."""
        return self.protocol_hierarchy[-1]

    @property
    def proto_path(self):
        return self.path

    @property
    def vlan(self):
        return list(self.meta[6]) if self.meta[6] else None

    def _endpoint(self, lower):
        m = self.meta
        return (m[2], m[3]) if lower else (m[4], m[5])

    @property
    def client(self):
        """(ip, port) of the initiator."""
        return self._endpoint(self.client_dir == 0)

    @property
    def server(self):
        return self._endpoint(self.client_dir == 1)

    # -- user context and per-protocol data ----------------------------------
    user_data = property(lambda s: s._get("user"), lambda s, v: s._set("user", v))
    content_class = property(lambda s: s._get("content_class"), lambda s, v: s._set("content_class", v))
    content_type = property(lambda s: s._get("content_type"), lambda s, v: s._set("content_type", v))
    content_flags = property(lambda s: s._get("content_flags"), lambda s, v: s._set("content_flags", v))
    app = property(lambda s: s._get("app"), lambda s, v: s._set("app", v))
    family = property(lambda s: s._get("family"), lambda s, v: s._set("family", v))
    extra = property(lambda s: s._get("extra"), lambda s, v: s._set("extra", v),
                     doc="dict of fields a plugin adds to the session's records")

    def session_data(self, protocol):
        """Per-protocol data attached by parsers or plugins (MMT: get_session_protocol_data)."""
        return (self._get("protocol_data") or {}).get(protocol)

    def set_session_data(self, protocol, value):
        pd = self._get("protocol_data")
        if pd is None:
            pd = {}
            self._set("protocol_data", pd)
        pd[protocol] = value

    # -- counters --------------------------------------------------------------
    def _total(self, i):
        return self.c[i] + self.c[6 + i]

    def _ul(self, i):
        return self.c[6 * self.client_dir + i]

    def _dl(self, i):
        return self.c[6 * (1 - self.client_dir) + i]

    packet_count = property(lambda s: s._total(PKT))
    ul_packet_count = property(lambda s: s._ul(PKT))
    dl_packet_count = property(lambda s: s._dl(PKT))
    byte_count = property(lambda s: s._total(BYTE))
    ul_byte_count = property(lambda s: s._ul(BYTE))
    dl_byte_count = property(lambda s: s._dl(BYTE))
    cap_packet_count = property(lambda s: s._total(CAP_PKT))
    ul_cap_packet_count = property(lambda s: s._ul(CAP_PKT))
    dl_cap_packet_count = property(lambda s: s._dl(CAP_PKT))
    cap_byte_count = property(lambda s: s._total(CAP_BYTE))
    ul_cap_byte_count = property(lambda s: s._ul(CAP_BYTE))
    dl_cap_byte_count = property(lambda s: s._dl(CAP_BYTE))
    data_packet_count = property(lambda s: s._total(DATA_PKT))
    ul_data_packet_count = property(lambda s: s._ul(DATA_PKT))
    dl_data_packet_count = property(lambda s: s._dl(DATA_PKT))
    data_byte_count = property(lambda s: s._total(DATA_BYTE))
    ul_data_byte_count = property(lambda s: s._ul(DATA_BYTE))
    dl_data_byte_count = property(lambda s: s._dl(DATA_BYTE))
    ul_ip_byte_count = property(lambda s: s.c[IP_BYTE + s.client_dir])
    dl_ip_byte_count = property(lambda s: s.c[IP_BYTE + 1 - s.client_dir])

    # -- time, TCP ---------------------------------------------------------------
    @property
    def init_time(self):
        return self.start

    @property
    def last_activity_time(self):
        return self.last

    @property
    def rtt(self):
        return self.tcp.rtt if self.tcp is not None else None

    @property
    def retransmission_count(self):
        return self.tcp.retrans if self.tcp is not None else 0

    # -- expiry list -------------------------------------------------------------
    @property
    def next(self):
        """The session after this one in its expiry bucket, or None."""
        return self._wheel.neighbour(self, +1) if self._wheel else None

    @property
    def previous(self):
        return self._wheel.neighbour(self, -1) if self._wheel else None

    def __repr__(self):
        (cip, cp), (sip, sp) = self.client, self.server
        return f"<Session {self.id} {self.proto_path} {cip}:{cp} -> {sip}:{sp} pkts={self.packet_count}>"
