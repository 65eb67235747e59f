"""IPFIX export (`ipfix:udp://HOST:PORT` or `ipfix:tcp://HOST:PORT`): sessions as RFC 7011 flows.

Why: flow collectors (nfdump, Wireshark, SiLK, ...) already speak IPFIX, so a
team can keep its tooling and feed it our sessions. A session is one RFC 5103
biflow: the forward elements describe client -> server, the reverse elements
(same IEs, enterprise bit set, PEN 29305) server -> client. Collectors that
ignore enterprise elements (several do) read the same counts from the IANA
biflow elements beside them: initiatorOctets/responderOctets (231/232) and
initiatorPackets/responderPackets (298/299), with biflowDirection (239) = 1
(initiator: the source is the session's client). They carry the values of the
forward and reverse counters (our wire byte counts, deltas), as consumers that
read them in place of octetDeltaCount and its reverse (Elastic's netflow
input, for one) expect, although IANA's text for 231/232 speaks of layer-4
payload bytes.

Counters are DELTAS per record, as IPFIX collectors sum them: for each
(sensor, session_id) we remember the cumulative counters last exported and
send the difference, forgetting the session at its final record. Summed over
all records of a session, the packets and bytes are those of its final record.

Each record carries the session's first and last packet times (flowStart/End
Milliseconds), flowId = session_id, the outermost VLAN (vlanId, 0 if none),
tcpControlBits = tcp_flags (both directions), flowEndReason from end_reason
(RFC 5102 codes), and octets = our byte counts (wire lengths of the frames).
Null ports are 0.

Times are unsigned 64-bit milliseconds: one before 1970 (or beyond) is
written as the nearest (0), counted in `times_clamped` (limits.py). An
address that is not of the record's ip_version goes in the template its
addresses fit (IPv4 in IPv6 as ::ffff:a.b.c.d), a zone (fe80::1%eth0) is
dropped: IPFIX has no room for it.

Query options: `template_every=S` (UDP: templates again every S seconds,
default 60, 0 = in every datagram) and `domain=N` (observation domain id,
default 1). UDP datagrams stay under 1400 bytes and are fire-and-forget: a
refused one is counted in `datagrams_refused` (udp.py) and the run goes on.
Over TCP the templates are sent once per connection and a broken connection
is re-opened once per message; records that could not be sent are counted
(`send_errors`) and make close() raise OSError.
"""
import errno
import ipaddress
import select
import socket
import struct
import time
from urllib.parse import parse_qsl, urlsplit

from contracts.record import CLOSED, EVICTED, IDLE, INDEX, INTERIM, REASONS, SHUTDOWN

from . import limits
from .udp import Datagrams

IPFIX_VERSION = 10
DEFAULT_PORT = 4739                 # IANA port of IPFIX
UDP_MAX = 1400                      # stays under a 1500-byte MTU with IP/UDP headers
TCP_MAX = 65535                     # the message length field is 16 bits
TEMPLATE_SET_ID = 2
TEMPLATE_V4, TEMPLATE_V6 = 256, 257
REVERSE_PEN = 29305                 # RFC 5103 reverse information elements
ENTERPRISE_BIT = 0x8000
CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 60.0

# RFC 5102 flowEndReason: 1 idle timeout, 2 active timeout, 3 end of flow
# detected, 4 forced end, 5 lack of resources.
END_REASONS = dict(zip((IDLE, INTERIM, CLOSED, SHUTDOWN, EVICTED), (1, 2, 3, 4, 5)))
assert set(END_REASONS) == set(REASONS), "every end_reason needs its flowEndReason"

MESSAGE_HEADER = struct.Struct("!HHIII")    # version, length, export time, sequence, domain
SET_HEADER = struct.Struct("!HH")            # set id, length


def _fields(address_ie: tuple) -> list:
    """(element id, length, enterprise number or 0) of one template, in data order."""
    src, dst, size = address_ie
    return [
        (152, 8, 0),                # flowStartMilliseconds
        (153, 8, 0),                # flowEndMilliseconds
        (src, size, 0),             # sourceIPv4Address / sourceIPv6Address
        (dst, size, 0),             # destinationIPv4Address / destinationIPv6Address
        (7, 2, 0),                  # sourceTransportPort
        (11, 2, 0),                 # destinationTransportPort
        (4, 1, 0),                  # protocolIdentifier
        (6, 2, 0),                  # tcpControlBits (RFC 7125: 2 octets)
        (136, 1, 0),                # flowEndReason
        (58, 2, 0),                 # vlanId (outermost)
        (148, 8, 0),                # flowId = session_id
        (1, 8, 0),                  # octetDeltaCount, client -> server
        (2, 8, 0),                  # packetDeltaCount, client -> server
        (1, 8, REVERSE_PEN),        # reverse octetDeltaCount, server -> client
        (2, 8, REVERSE_PEN),        # reverse packetDeltaCount, server -> client
        (231, 8, 0),                # initiatorOctets = octetDeltaCount (client -> server)
        (232, 8, 0),                # responderOctets = reverse octetDeltaCount
        (298, 8, 0),                # initiatorPackets = packetDeltaCount
        (299, 8, 0),                # responderPackets = reverse packetDeltaCount
        (239, 1, 0),                # biflowDirection: 1, initiator (RFC 5103)
    ]


BIFLOW_INITIATOR = 1
FIELDS_V4 = _fields((8, 12, 4))
FIELDS_V6 = _fields((27, 28, 16))
RECORD_V4 = struct.Struct("!QQ4s4sHHBHBHQQQQQQQQQB")
RECORD_V6 = struct.Struct("!QQ16s16sHHBHBHQQQQQQQQQB")
assert RECORD_V4.size == sum(f[1] for f in FIELDS_V4) and RECORD_V6.size == sum(f[1] for f in FIELDS_V6)


def _template(template_id: int, fields: list) -> bytes:
    out = [struct.pack("!HH", template_id, len(fields))]
    for ie, length, pen in fields:
        if pen:
            out.append(struct.pack("!HHI", ie | ENTERPRISE_BIT, length, pen))
        else:
            out.append(struct.pack("!HH", ie, length))
    return b"".join(out)


_TEMPLATE_BODY = _template(TEMPLATE_V4, FIELDS_V4) + _template(TEMPLATE_V6, FIELDS_V6)
TEMPLATE_SET = SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(_TEMPLATE_BODY)) + _TEMPLATE_BODY

_I = INDEX
(I_SENSOR, I_SID, I_FINAL, I_REASON, I_START, I_END, I_IPV, I_PROTO, I_CIP, I_CPORT, I_SIP, I_SPORT,
 I_VLAN, I_FLAGS, I_ULP, I_DLP, I_ULB, I_DLB) = (
    _I["sensor"], _I["session_id"], _I["final"], _I["end_reason"], _I["start"], _I["end"], _I["ip_version"],
    _I["transport"], _I["client_ip"], _I["client_port"], _I["server_ip"], _I["server_port"], _I["vlan"],
    _I["tcp_flags"], _I["ul_packet_count"], _I["dl_packet_count"], _I["ul_byte_count"], _I["dl_byte_count"])


def parse_target(target: str):
    """`udp://HOST:PORT?template_every=S&domain=N` -> (transport, host, port, template_every, domain);
    ValueError with one line when malformed."""
    try:
        u = urlsplit(target)
        port = u.port
    except ValueError as e:
        raise ValueError(f"ipfix target {target!r}: {e}") from None
    if u.scheme not in ("udp", "tcp"):
        raise ValueError(f"ipfix target {target!r}: expected udp://HOST:PORT or tcp://HOST:PORT")
    if not u.hostname:
        raise ValueError(f"ipfix target {target!r}: no host")
    if u.path not in ("", "/") or u.fragment or u.username or u.password:
        raise ValueError(f"ipfix target {target!r}: expected udp://HOST:PORT or tcp://HOST:PORT")
    if port == 0:
        raise ValueError(f"ipfix target {target!r}: port 0")
    template_every, domain = 60.0, 1
    for key, value in parse_qsl(u.query, keep_blank_values=True, strict_parsing=False):
        if key == "template_every":
            try:
                template_every = float(value)
            except ValueError:
                template_every = -1.0
            if not (0 <= template_every < float("inf")):
                raise ValueError(f"ipfix target {target!r}: template_every must be seconds >= 0")
        elif key == "domain":
            if not value.isdigit() or int(value) >= 1 << 32:
                raise ValueError(f"ipfix target {target!r}: domain must be an integer 0..4294967295")
            domain = int(value)
        else:
            raise ValueError(f"ipfix target {target!r}: unknown option {key!r} (known: template_every, domain)")
    return u.scheme, u.hostname, port or DEFAULT_PORT, template_every, domain


def _address(text: str, version: int) -> bytes:
    return socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, text)


def _addresses(client: str, server: str) -> tuple:
    """(ip version, client, server packed) of addresses whatever their record's ip_version
    says: both IPv4, or both IPv6 (an IPv4 one mapped, ::ffff:a.b.c.d); a zone is dropped."""
    a, b = ipaddress.ip_address(client), ipaddress.ip_address(server)
    if a.version == b.version == 4:
        return 4, a.packed, b.packed
    return 6, _v6(a), _v6(b)


def _v6(a) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + a.packed if a.version == 4 else a.packed


class IpfixExporter:
    kind = "ipfix"

    @staticmethod
    def check(target: str) -> None:
        parse_target(target)

    @staticmethod
    def probe(target: str) -> None:
        """A TCP collector is there (OSError if not); UDP cannot tell."""
        if parse_target(target)[0] == "tcp":
            IpfixExporter(target).close()

    def __init__(self, target: str):
        self.target = target
        self.transport, self.host, self.port, self.template_every, self.domain = parse_target(target)
        self.max_message = UDP_MAX if self.transport == "udp" else TCP_MAX
        self.written = 0
        self.issues = limits.counters("times_clamped", "datagrams_refused")
        self.datagrams = Datagrams(self) if self.transport == "udp" else None
        self.last_count = 0             # records in the last datagram sent (UDP: what a refusal lost)
        self.send_errors = 0            # records that could not be sent (TCP)
        self.last_error = None
        self.sequence = 0               # data records sent in this stream before the next message
        self.templates_sent_at = None   # monotonic time of the last template set (UDP); None: due
        self.counters = {}              # (sensor, session_id) -> cumulative ul/dl packets/bytes last sent
        self.sock = None
        self._connect()

    # -- transport ------------------------------------------------------------------------------

    def _connect(self) -> None:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        where = f"ipfix {self.transport}://{self.host}:{self.port}"
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=kind)
        except socket.gaierror as e:
            raise OSError(errno.EHOSTUNREACH, f"{where}: cannot resolve {self.host} ({e.strerror})") from None
        last = None
        for family, stype, proto, _, addr in infos:
            s = socket.socket(family, stype, proto)
            try:
                if self.transport == "tcp":
                    s.settimeout(CONNECT_TIMEOUT)
                s.connect(addr)
                if self.transport == "tcp":
                    s.settimeout(SEND_TIMEOUT)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:
                s.close()
                last = e
                continue
            self.sock = s
            self.templates_sent_at = None
            if self.transport == "tcp":
                self.sequence = 0       # a new transport session starts its own count
            return
        reason = (last.strerror or str(last)) if last else "no address"
        raise OSError(getattr(last, "errno", None) or errno.ECONNREFUSED, f"{where}: cannot connect ({reason})")

    def _message(self, body: bytes, templates: bool) -> bytes:
        if templates:
            body = TEMPLATE_SET + body
        return MESSAGE_HEADER.pack(IPFIX_VERSION, MESSAGE_HEADER.size + len(body), int(time.time()),
                                   self.sequence, self.domain) + body

    def _deliver(self, body: bytes, templates: bool) -> bool:
        """Send one message over TCP; a broken connection is re-opened once (templates first)."""
        try:
            if self.sock is None or self._peer_closed():
                raise OSError(errno.ENOTCONN, "not connected")
            self.sock.sendall(self._message(body, templates))
            return templates
        except OSError:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            self._connect()             # new transport session: sequence 0, templates due
            self.sock.sendall(self._message(body, True))
            return True

    def _peer_closed(self) -> bool:
        """True when the collector has closed the TCP connection (it never sends us anything):
        found before sending, so a restarted collector does not swallow a message."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _templates_due(self) -> bool:
        if self.transport == "tcp":
            return self.templates_sent_at is None
        return (self.templates_sent_at is None
                or time.monotonic() - self.templates_sent_at >= self.template_every)

    def _encode(self, r, careful: bool = False) -> tuple:
        """(template id, data record bytes) of one wire record; updates the delta state.
        Raises on what IPFIX cannot say as it is, unless `careful` (limits.py)."""
        key = (r[I_SENSOR], r[I_SID])
        now = (r[I_ULP] or 0, r[I_DLP] or 0, r[I_ULB] or 0, r[I_DLB] or 0)
        before = self.counters.get(key)
        if before is None or any(n < b for n, b in zip(now, before)):
            delta = now                 # first record, or counters went back (a new session)
        else:
            delta = tuple(n - b for n, b in zip(now, before))
        vlan = r[I_VLAN]
        if careful:
            start, c1 = limits.bounded(r[I_START], 1000, 0, limits.U64)
            end, c2 = limits.bounded(r[I_END], 1000, 0, limits.U64)
            if c1 or c2:
                limits.clamped(self, "start or end")
            version, client, server = _addresses(r[I_CIP], r[I_SIP])
        else:
            version = r[I_IPV]
            start, end = round(r[I_START] * 1000), round(r[I_END] * 1000)
            client, server = _address(r[I_CIP], version), _address(r[I_SIP], version)
        fields = (
            start, end, client, server,
            r[I_CPORT] or 0, r[I_SPORT] or 0, r[I_PROTO] & 0xFF, (r[I_FLAGS] or 0) & 0xFFFF,
            END_REASONS.get(r[I_REASON], 0), (vlan[0] & 0xFFF) if vlan else 0,
            r[I_SID] & 0xFFFFFFFFFFFFFFFF,
            delta[2], delta[0], delta[3], delta[1],
            delta[2], delta[3], delta[0], delta[1], BIFLOW_INITIATOR,
        )
        if version == 4:
            encoded = TEMPLATE_V4, RECORD_V4.pack(*fields)
        else:
            encoded = TEMPLATE_V6, RECORD_V6.pack(*fields)
        if r[I_FINAL]:
            self.counters.pop(key, None)
        else:
            self.counters[key] = now
        return encoded

    @staticmethod
    def _pack(encoded: list, i: int, room: int) -> tuple:
        """One data set per template holding encoded[i:j], in at most `room` bytes: (body, j)."""
        sets = {}                       # template id -> data records (dicts keep first-seen order)
        size, j, n = 0, i, len(encoded)
        while j < n:
            tid, data = encoded[j]
            need = len(data) + (0 if tid in sets else SET_HEADER.size)
            if size + need > room and j > i:
                break
            sets.setdefault(tid, []).append(data)
            size += need
            j += 1
        body = b"".join(SET_HEADER.pack(tid, SET_HEADER.size + sum(map(len, recs))) + b"".join(recs)
                        for tid, recs in sets.items())
        return body, j

    # -- output interface -------------------------------------------------------------------------

    def write(self, records) -> None:
        encoded = []
        for r in records:
            try:
                encoded.append(self._encode(r))
            except Exception:  # noqa: BLE001 - what IPFIX cannot say as it is (limits.py)
                try:
                    encoded.append(self._encode(r, careful=True))
                except Exception as e:  # noqa: BLE001 - never fatal: one record, counted
                    limits.unwritable(self, e)
        i = 0
        while i < len(encoded):
            # TCP keeps room for the templates in every message, in case the connection is re-opened
            templates = self._templates_due()
            room = self.max_message - MESSAGE_HEADER.size
            if templates or self.transport == "tcp":
                room -= len(TEMPLATE_SET)
            body, j = self._pack(encoded, i, room)
            count = j - i
            i = j
            if self.transport == "udp":
                if self.datagrams.send(self.sock, self._message(body, templates), count, self.last_count):
                    if templates:
                        self.templates_sent_at = time.monotonic()
                    self.sequence = (self.sequence + count) & 0xFFFFFFFF
                    self.written += count
                    self.last_count = count
                continue
            try:
                if self._deliver(body, templates):
                    self.templates_sent_at = time.monotonic()
            except OSError as e:
                self.send_errors += count
                self.last_error = e.strerror or str(e)
                continue
            self.sequence = (self.sequence + count) & 0xFFFFFFFF
            self.written += count
        if self.datagrams is not None:
            self.datagrams.batch_done()

    def close(self) -> None:
        if self.sock is not None:
            try:
                if self.transport == "tcp":
                    self.sock.shutdown(socket.SHUT_WR)
                else:
                    self.datagrams.close(self.sock, self.last_count)
            except OSError as e:
                self.last_error = self.last_error or e.strerror
            finally:
                self.sock.close()
                self.sock = None
        if self.send_errors:
            raise OSError(errno.EIO, f"ipfix {self.transport}://{self.host}:{self.port}: {self.send_errors} "
                                     f"of {self.send_errors + self.written} records could not be sent "
                                     f"({self.last_error})")
