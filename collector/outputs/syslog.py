"""Syslog: each session record as one RFC 5424 message to a SIEM's collector.

`syslog:udp://HOST:PORT` or `syslog:tcp://HOST:PORT`, options
`?format=json|cef&facility=local0&severity=info&app=pipeline` and `timeout=10`
(seconds to connect, to send, and to wait for the receiver at close).

Why this shape: SIEMs ingest syslog everywhere, and one record per message keeps
their parsers trivial. The body is the record as compact JSON (the native
format) or ArcSight CEF for SIEMs that map CEF keys to their own schema.
The syslog TIMESTAMP is the session's last packet time (when the event
happened in the network, also right for replayed captures), RFC 3339 with a
four-digit year. Receivers take less than RFC 3339 can say: rsyslog reads a
year after 2099 as no timestamp at all and the whole header as the message,
which breaks the body's parser. So a time outside years 1-2099 is sent as
the NILVALUE (`-`, RFC 5424 6.2.3: the receiver puts its own time) and the
record is counted in `times_clamped` (limits.py); the body keeps the time.
HOSTNAME is the record's sensor.
MSG carries no BOM (RFC 5424 MSG-ANY): receivers hand the body to JSON/CEF
parsers, which reject a leading BOM.

CEF carries the application fields where CEF has a key for them (`dhost`,
`request`, `requestMethod`, `requestClientApplication`; the DNS query in
`cs3` labelled `dns.query`) and its times in milliseconds within a signed
64-bit number (clamped and counted beyond).

UDP sends one datagram per message and never truncates: a message over 65000
bytes is not sent and is counted in `records_oversize` (one warning line);
datagrams the receiver's host refuses are counted in `datagrams_refused`
(udp.py: fire-and-forget, the run goes on). TCP uses
octet counting (RFC 6587 3.4.1), sends each batch whole, and reconnects once
when the connection broke; a batch is resent whole after a reconnect, so a
broken connection may duplicate records but never loses them silently.
"""
import os
import re
import select
import socket
from importlib import metadata
from urllib.parse import parse_qsl

from contracts.record import INDEX, NAMES

from . import limits
from .jsonl import as_json   # the record as the JSON lines write it
from .udp import Datagrams

MAX_UDP = 65000
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12,
    "security": 13, "console": 14, "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITIES = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4,
              "warn": 4, "notice": 5, "info": 6, "debug": 7}
FORMATS = ("json", "cef")
OPTIONS = ("format", "facility", "severity", "app", "timeout")
TRANSPORT_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP",
                   51: "AH", 58: "ICMPv6", 132: "SCTP"}
_NOT_PRINTUSASCII = re.compile(rb"[^\x21-\x7e]")

try:
    VERSION = metadata.version("session-pipeline")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0"


def parse_target(target: str) -> dict:
    """`udp://HOST:PORT?opts` -> settings dict; ValueError (one line) if anything is wrong."""
    addr, _, query = target.partition("?")
    scheme, sep, hostport = addr.partition("://")
    if not sep or scheme not in ("udp", "tcp"):
        raise ValueError(f"syslog target {target!r}: expected udp://HOST:PORT or tcp://HOST:PORT")
    host, colon, port = hostport.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or "/" in hostport or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"syslog target {target!r}: expected {scheme}://HOST:PORT with a port 1-65535")
    opts = {}
    for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if k not in OPTIONS:
            raise ValueError(f"syslog target {target!r}: unknown option {k!r} (known: {', '.join(OPTIONS)})")
        opts[k] = v
    fmt = opts.get("format", "json").lower()
    if fmt not in FORMATS:
        raise ValueError(f"syslog target {target!r}: format must be json or cef, not {fmt!r}")
    try:
        facility = _facility(opts.get("facility", "local0"))
        severity = _severity(opts.get("severity", "info"))
    except ValueError as e:
        raise ValueError(f"syslog target {target!r}: {e}") from None
    app = opts.get("app", "pipeline")
    if not 1 <= len(app) <= 48 or _NOT_PRINTUSASCII.search(app.encode("utf-8", "replace")):
        raise ValueError(f"syslog target {target!r}: app must be 1-48 printable ASCII characters without spaces")
    try:
        timeout = float(opts.get("timeout", "10"))
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < 1e6:
        raise ValueError(f"syslog target {target!r}: timeout must be a positive number of seconds")
    return {"transport": scheme, "host": host, "port": int(port), "format": fmt,
            "pri": facility * 8 + severity, "app": app, "timeout": timeout}


def _facility(v: str) -> int:
    if v.isdigit() and int(v) <= 23:
        return int(v)
    if v.lower() in FACILITIES:
        return FACILITIES[v.lower()]
    raise ValueError(f"unknown facility {v!r} (0-23 or kern, user, ..., local0-local7)")


def _severity(v: str) -> int:
    if v.isdigit() and int(v) <= 7:
        return int(v)
    if v.lower() in SEVERITIES:
        return SEVERITIES[v.lower()]
    raise ValueError(f"unknown severity {v!r} (0-7 or emerg, alert, crit, err, warning, notice, info, debug)")


# --- message bodies -------------------------------------------------------------

def cef_header(value) -> str:
    """CEF header field: backslash and pipe escaped; a header is one line."""
    s = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return s.replace("\r", " ").replace("\n", " ")


def cef_value(value) -> str:
    """CEF extension value: backslash and equals escaped, line breaks as \\n and \\r."""
    s = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return s.replace("\r", "\\r").replace("\n", "\\n")


def _ms(t) -> int:
    """Epoch seconds as CEF's milliseconds (a Java long); OverflowError beyond."""
    ms = round(t * 1000)
    if not limits.I64_MIN <= ms <= limits.I64_MAX:
        raise OverflowError("time out of range")
    return ms


_N = len(NAMES)


def cef_application(p: dict) -> list:
    """CEF's own keys for the application fields a record's extension dict has (the
    classifiers' dotted names, docs/classification.md): the host asked for (HTTP Host,
    else the TLS or QUIC SNI), the HTTP request, and the DNS query in a labelled
    custom string (CEF has no key of its own for it)."""
    ext = []
    host = p.get("http.host") or p.get("tls.sni") or p.get("quic.sni")
    if host:
        ext.append(("dhost", host))
    method, uri = p.get("http.method"), p.get("http.uri")
    if method:
        ext.append(("requestMethod", method))
    if uri:
        http_host = p.get("http.host")
        absolute = isinstance(uri, str) and "://" in uri[:16]
        ext.append(("request", f"http://{http_host}{uri}" if http_host and not absolute else uri))
    if p.get("http.user_agent"):
        ext.append(("requestClientApplication", p["http.user_agent"]))
    if p.get("dns.query"):
        ext += [("cs3Label", "dns.query"), ("cs3", p["dns.query"])]
    return ext


def as_cef(r, ms=_ms) -> bytes:
    """The record as a CEF event; `ms` writes its times (OverflowError beyond a long,
    unless a careful one)."""
    g = r.__getitem__
    final = g(INDEX["final"])
    transport = g(INDEX["transport"])
    ext = [("src", g(INDEX["client_ip"])), ("dst", g(INDEX["server_ip"])),
           ("spt", g(INDEX["client_port"])), ("dpt", g(INDEX["server_port"])),
           ("proto", TRANSPORT_NAMES.get(transport, transport)),
           ("in", g(INDEX["dl_byte_count"])), ("out", g(INDEX["ul_byte_count"])),
           ("start", ms(g(INDEX["start"]))), ("end", ms(g(INDEX["end"]))),
           ("app", g(INDEX["app"]) or g(INDEX["proto_path"])),
           ("dvchost", g(INDEX["sensor"])),
           ("reason", g(INDEX["end_reason"])),
           ("cs1Label", "session_id"), ("cs1", g(INDEX["session_id"]))]
    if len(r) > _N and isinstance(r[_N], dict):
        ext += cef_application(r[_N])
    if g(INDEX["parent_session_id"]) is not None:
        ext += [("cs2Label", "parent_session_id"), ("cs2", g(INDEX["parent_session_id"]))]
    ext += [("cn1Label", "report_number"), ("cn1", g(INDEX["report_number"])),
            ("cn2Label", "packet_count"), ("cn2", g(INDEX["packet_count"]))]
    header = "|".join(["CEF:0", "pipeline", "pipeline", cef_header(VERSION), "session",
                       "Session ended" if final else "Session update", "3"])
    body = " ".join(f"{k}={cef_value(v)}" for k, v in ext if v is not None)
    return (header + "|" + body).encode("utf-8", "replace")


# the last microsecond receivers take in a TIMESTAMP (rsyslog: years up to 2099)
TIMESTAMP_MAX_US = 4102444800 * 10 ** 6 - 1     # 2099-12-31T23:59:59.999999Z


def timestamp(t) -> str:
    """RFC 3339, UTC, microseconds, four-digit year; OverflowError outside years 1-2099."""
    us = round(t * 1e6)
    if us > TIMESTAMP_MAX_US:
        raise OverflowError("TIMESTAMP after 2099")
    return limits.iso(us)


def _within(scale: int, lo: int, hi: int, clamped: list):
    """A writer of times as limits.bounded says them, noting in `clamped` whether each was."""
    def write(t) -> int:
        v, c = limits.bounded(t, scale, lo, hi)
        clamped.append(c)
        return v
    return write


def hostname(sensor) -> bytes:
    if sensor is None or sensor == "":
        return b"-"
    return _NOT_PRINTUSASCII.sub(b"_", str(sensor).encode("utf-8", "replace"))[:255]


class SyslogSender:
    kind = "syslog"

    @staticmethod
    def check(target: str) -> None:
        parse_target(target)

    @staticmethod
    def probe(target: str) -> None:
        """A TCP receiver is there (OSError if not); UDP cannot tell."""
        cfg = parse_target(target)
        if cfg["transport"] == "tcp":
            _connect(cfg).close()

    def __init__(self, target: str):
        self.target = target
        cfg = parse_target(target)
        self.cfg = cfg
        self.body = as_cef if cfg["format"] == "cef" else as_json
        self.prefix_tail = f"{cfg['app']} {os.getpid()} session - ".encode()
        self.pri = f"<{cfg['pri']}>1 ".encode()
        self.written = 0
        self.issues = limits.counters("times_clamped", "records_oversize", "datagrams_refused")
        self.datagrams = Datagrams(self) if cfg["transport"] == "udp" else None
        self.sock = None
        self.connect()

    @property
    def oversize(self) -> int:
        """UDP messages over MAX_UDP bytes: not sent."""
        return self.issues["records_oversize"]

    @property
    def refused(self) -> int:
        """UDP datagrams refused (port unreachable)."""
        return self.issues["datagrams_refused"]

    # --- formatting
    def message(self, r) -> bytes:
        end = r[INDEX["end"]]
        ts = timestamp(end).encode() if end is not None else b"-"
        return b"".join((self.pri, ts, b" ", hostname(r[INDEX["sensor"]]), b" ",
                         self.prefix_tail, self.body(r)))

    def careful_message(self, r) -> bytes:
        """message(), with times the format cannot say clamped and counted (limits.py)."""
        clamped = []
        end = r[INDEX["end"]]
        ts = b"-"
        if end is not None:
            us, c = limits.bounded(end, 1000000, limits.DATE_MIN_US, TIMESTAMP_MAX_US)
            clamped.append(c)
            if not c:
                ts = limits.iso(us).encode()
        if self.body is as_cef:
            body = as_cef(r, _within(1000, limits.I64_MIN, limits.I64_MAX, clamped))
        else:
            body = self.body(r)
        if any(clamped):
            limits.clamped(self, "time")
        return b"".join((self.pri, ts, b" ", hostname(r[INDEX["sensor"]]), b" ", self.prefix_tail, body))

    # --- connection
    def _where(self) -> str:
        return _where(self.cfg)

    def connect(self) -> None:
        self.sock = _connect(self.cfg)

    def _peer_closed(self) -> bool:
        """A syslog receiver never sends: a readable TCP socket means it closed or reset."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if not poller.poll(0):
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    # --- output interface
    def write(self, records) -> None:
        if not records:
            return
        try:
            msgs = [self.message(r) for r in records]
        except Exception:  # noqa: BLE001 - a record the format cannot say as it is: one at a time
            msgs = limits.each(self, records, self.message, self.careful_message)
        if self.cfg["transport"] == "udp":
            self._send_udp(msgs)
        else:
            self._send_tcp(msgs)

    def _send_udp(self, msgs) -> None:
        send = self.datagrams.send
        for m in msgs:
            if len(m) > MAX_UDP:
                limits.count(self, "records_oversize", 1, f"a message of {len(m)} bytes, over {MAX_UDP}, "
                                                          f"is not sent (UDP; TCP takes it)")
                continue
            if send(self.sock, m):
                self.written += 1
        self.datagrams.batch_done()

    def _send_tcp(self, msgs) -> None:
        frame = b"".join(b"%d %s" % (len(m), m) for m in msgs)
        for attempt in (0, 1):
            try:
                if self.sock is None or self._peer_closed():
                    raise ConnectionResetError("connection closed by the receiver")
                self.sock.sendall(frame)
                break
            except OSError as e:
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
                if attempt:
                    raise OSError(f"syslog receiver {self._where()}: {e.strerror or e} "
                                  f"({len(msgs)} records not sent)") from None
                try:
                    self.connect()   # once
                except OSError as e2:
                    raise OSError(f"{e2} after the connection broke ({len(msgs)} records not sent)") from None
        self.written += len(msgs)

    def close(self) -> None:
        s, self.sock = self.sock, None
        if s is not None:
            try:
                if self.cfg["transport"] == "tcp":
                    self._drain(s)
                else:
                    self.datagrams.close(s)      # the last datagram's refusal, if any
            finally:
                s.close()

    def _drain(self, s) -> None:
        """Half-close and wait for the receiver to close: then it has read everything."""
        try:
            s.shutdown(socket.SHUT_WR)
            s.settimeout(self.cfg["timeout"])
            while s.recv(4096):
                pass
        except socket.timeout:
            pass     # receiver keeps the connection open; the data was sent
        except OSError as e:
            raise OSError(f"syslog receiver {self._where()}: {e.strerror or e} while closing; "
                          f"records may be lost") from None


def _where(cfg: dict) -> str:
    return f"{cfg['transport']}://{cfg['host']}:{cfg['port']}"


def _connect(cfg: dict):
    """A socket connected to the receiver; OSError (one line) if it cannot be reached."""
    kind = socket.SOCK_DGRAM if cfg["transport"] == "udp" else socket.SOCK_STREAM
    last = None
    try:
        infos = socket.getaddrinfo(cfg["host"], cfg["port"], type=kind)
    except socket.gaierror as e:
        raise OSError(f"syslog receiver {_where(cfg)}: cannot resolve {cfg['host']!r} ({e.strerror})") from None
    for family, type_, proto, _, addr in infos:
        s = socket.socket(family, type_, proto)
        try:
            s.settimeout(cfg["timeout"])
            s.connect(addr)
        except OSError as e:
            s.close()
            last = e
            continue
        return s
    why = (last.strerror or str(last)) if last else "no address"
    raise OSError(f"syslog receiver {_where(cfg)} cannot be reached: {why}")


OUTPUT = SyslogSender     # for the registry in collector/outputs/__init__.py
