"""The session object: MMT's session model, small enough for 200k open sessions.

Counters live in one flat list indexed by the canonical direction (0: packets
from the lower endpoint, 1: from the higher), six per direction: packets,
bytes, captured frames, captured bytes, data packets, data bytes. The client
(initiator) is one of the two directions, so upload/download are a view,
never a second set of counters. TCP state and plugin data are created only
when needed.

The properties below are MMT's session accessors (get_session_id,
get_session_parent, get_session_protocol_index, ..., get_session_next /
get_session_previous in the expiry list) under Python names.
"""
import socket

PKT, BYTE, CAP_PKT, CAP_BYTE, DATA_PKT, DATA_BYTE = range(6)


class Session:
    __slots__ = ("key", "id", "parent_id", "depth", "client_dir", "start", "last", "timeout",
                 "c", "tcp", "meta", "reports", "next_report", "slot", "ended",
                 "user", "protocol_data", "content_class", "content_type", "content_flags",
                 "app", "family", "extra", "_wheel")

    def __init__(self, key, sid, parent_id, depth, client_dir, ts, timeout, meta):
        self.key = key
        self.id = sid
        self.parent_id = parent_id
        self.depth = depth
        self.client_dir = client_dir
        self.start = ts
        self.last = ts
        self.timeout = timeout
        self.c = [0] * 12
        self.tcp = None
        self.meta = meta            # (ipver, proto, lower ip, lower port, higher ip, higher port, vlans, path)
        self.reports = 0
        self.next_report = 0.0
        self.slot = -1
        self.ended = False
        self.user = None
        self.protocol_data = None
        self.content_class = self.content_type = self.content_flags = None
        self.app = self.family = None
        self.extra = None
        self._wheel = None

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
        return tuple(self.meta[7].split("."))

    @property
    def protocol_index(self):
        """The session's top protocol (MMT: the protocol index of the session)."""
        return self.protocol_hierarchy[-1]

    @property
    def proto_path(self):
        return self.meta[7]

    @property
    def vlan(self):
        return list(self.meta[6]) if self.meta[6] else None

    def _endpoint(self, lower):
        ip = self.meta[2] if lower else self.meta[4]
        port = self.meta[3] if lower else self.meta[5]
        return ip, port

    @property
    def client(self):
        """(ip, port) of the initiator."""
        return self._endpoint(self.client_dir == 0)

    @property
    def server(self):
        return self._endpoint(self.client_dir == 1)

    # -- user context and per-protocol data ----------------------------------
    @property
    def user_data(self):
        return self.user

    @user_data.setter
    def user_data(self, value):
        self.user = value

    def session_data(self, protocol):
        """Per-protocol data attached by parsers or plugins (MMT: get_session_protocol_data)."""
        return (self.protocol_data or {}).get(protocol)

    def set_session_data(self, protocol, value):
        if self.protocol_data is None:
            self.protocol_data = {}
        self.protocol_data[protocol] = value

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


def format_ip(ipver: int, hi: int, lo: int) -> str:
    if ipver == 4:
        return socket.inet_ntop(socket.AF_INET, (hi >> 32).to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, hi.to_bytes(8, "big") + lo.to_bytes(8, "big"))
