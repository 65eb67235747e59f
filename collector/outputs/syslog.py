"""Syslog: each session record as one RFC 5424 message to a SIEM's collector.

`syslog:udp://HOST:PORT` or `syslog:tcp://HOST:PORT`, options
`?format=json|cef&facility=local0&severity=info&app=pipeline` and `timeout=10`
(seconds to connect, to send, and to wait for the receiver at close).

Why this shape: SIEMs ingest syslog everywhere, and one record per message keeps
their parsers trivial. The body is the record as compact JSON (the native
format) or ArcSight CEF for SIEMs that map CEF keys to their own schema.
The syslog TIMESTAMP is the session's last packet time (when the event
happened in the network, also right for replayed captures); HOSTNAME is the
record's sensor. MSG carries no BOM (RFC 5424 MSG-ANY): receivers hand the
body to JSON/CEF parsers, which reject a leading BOM.

UDP sends one datagram per message and never truncates: a message over 65000
bytes is not sent, counted in `oversize`, and makes close() fail; datagrams
the receiver's host answers with "port unreachable" are counted in `refused`
(taken off `written`) and make close() fail too. TCP uses
octet counting (RFC 6587 3.4.1), sends each batch whole, and reconnects once
when the connection broke; a batch is resent whole after a reconnect, so a
broken connection may duplicate records but never loses them silently.
"""
import datetime
import errno
import os
import re
import select
import socket
from importlib import metadata
from urllib.parse import parse_qsl

from contracts.record import INDEX

from .jsonl import as_json   # the record as the JSON lines write it

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
    return int(round(float(t) * 1000))


def as_cef(r) -> bytes:
    g = r.__getitem__
    final = g(INDEX["final"])
    transport = g(INDEX["transport"])
    ext = [("src", g(INDEX["client_ip"])), ("dst", g(INDEX["server_ip"])),
           ("spt", g(INDEX["client_port"])), ("dpt", g(INDEX["server_port"])),
           ("proto", TRANSPORT_NAMES.get(transport, transport)),
           ("in", g(INDEX["dl_byte_count"])), ("out", g(INDEX["ul_byte_count"])),
           ("start", _ms(g(INDEX["start"]))), ("end", _ms(g(INDEX["end"]))),
           ("app", g(INDEX["app"]) or g(INDEX["proto_path"])),
           ("dvchost", g(INDEX["sensor"])),
           ("reason", g(INDEX["end_reason"])),
           ("cs1Label", "session_id"), ("cs1", g(INDEX["session_id"]))]
    if g(INDEX["parent_session_id"]) is not None:
        ext += [("cs2Label", "parent_session_id"), ("cs2", g(INDEX["parent_session_id"]))]
    ext += [("cn1Label", "report_number"), ("cn1", g(INDEX["report_number"])),
            ("cn2Label", "packet_count"), ("cn2", g(INDEX["packet_count"]))]
    header = "|".join(["CEF:0", "pipeline", "pipeline", cef_header(VERSION), "session",
                       "Session ended" if final else "Session update", "3"])
    body = " ".join(f"{k}={cef_value(v)}" for k, v in ext if v is not None)
    return (header + "|" + body).encode("utf-8", "replace")


def timestamp(t) -> str:
    """RFC 3339, UTC, microseconds."""
    dt = datetime.datetime.fromtimestamp(float(t), datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hostname(sensor) -> bytes:
    if sensor is None or sensor == "":
        return b"-"
    return _NOT_PRINTUSASCII.sub(b"_", str(sensor).encode("utf-8", "replace"))[:255]


class SyslogSender:
    kind = "syslog"

    @staticmethod
    def check(target: str) -> None:
        parse_target(target)

    def __init__(self, target: str):
        self.target = target
        cfg = parse_target(target)
        self.cfg = cfg
        self.body = as_cef if cfg["format"] == "cef" else as_json
        self.prefix_tail = f"{cfg['app']} {os.getpid()} session - ".encode()
        self.pri = f"<{cfg['pri']}>1 ".encode()
        self.written = 0
        self.oversize = 0       # UDP messages over MAX_UDP bytes: not sent
        self.refused = 0        # UDP datagrams the receiver's host answered "port unreachable"
        self.sock = None
        self.connect()

    # --- formatting
    def message(self, r) -> bytes:
        end = r[INDEX["end"]]
        ts = timestamp(end).encode() if end is not None else b"-"
        return b"".join((self.pri, ts, b" ", hostname(r[INDEX["sensor"]]), b" ",
                         self.prefix_tail, self.body(r)))

    # --- connection
    def _where(self) -> str:
        return f"{self.cfg['transport']}://{self.cfg['host']}:{self.cfg['port']}"

    def connect(self) -> None:
        cfg = self.cfg
        kind = socket.SOCK_DGRAM if cfg["transport"] == "udp" else socket.SOCK_STREAM
        last = None
        try:
            infos = socket.getaddrinfo(cfg["host"], cfg["port"], type=kind)
        except socket.gaierror as e:
            raise OSError(f"syslog receiver {self._where()}: cannot resolve {cfg['host']!r} ({e.strerror})") from None
        for family, type_, proto, _, addr in infos:
            s = socket.socket(family, type_, proto)
            try:
                s.settimeout(cfg["timeout"])
                s.connect(addr)
            except OSError as e:
                s.close()
                last = e
                continue
            self.sock = s
            return
        why = (last.strerror or str(last)) if last else "no address"
        raise OSError(f"syslog receiver {self._where()} cannot be reached: {why}")

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
        msgs = [self.message(r) for r in records]
        if self.cfg["transport"] == "udp":
            self._send_udp(msgs)
        else:
            self._send_tcp(msgs)

    def _send_udp(self, msgs) -> None:
        for m in msgs:
            if len(m) > MAX_UDP:
                self.oversize += 1
                continue
            for _ in (0, 1):
                try:
                    self.sock.send(m)
                except ConnectionRefusedError:
                    self._lost_one()        # the error is an earlier datagram's: try this one again
                    continue
                except OSError as e:
                    raise OSError(f"syslog receiver {self._where()}: {e.strerror or e}") from None
                self.written += 1
                break
            else:
                self.refused += 1           # this one was not sent

    def _lost_one(self) -> None:
        """A datagram sent earlier drew ICMP "port unreachable": it was counted as
        written, but nobody received it."""
        self.refused += 1
        self.written -= 1

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
                elif s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED:
                    self._lost_one()     # the last datagram's "port unreachable"
            finally:
                s.close()
        lost = []
        if self.oversize:
            lost.append(f"{self.oversize} records over {MAX_UDP} bytes not sent")
        if self.refused:
            lost.append(f"{self.refused} datagrams refused (port unreachable)")
        if lost:
            raise OSError(f"syslog receiver {self._where()}: " + "; ".join(lost))

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


OUTPUT = SyslogSender     # for the registry in collector/outputs/__init__.py
