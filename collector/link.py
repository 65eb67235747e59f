"""The sensor-to-collector link: ZeroMQ socket set-up, CurveZMQ and message checks.

Messages from the network are untrusted: msgpack is unpacked with limits on
every size, and records are checked against the schema before anything is
written; a bad message is counted and refused, never fatal. With CURVE, the
collector accepts only the sensors whose public certificates are in the
clients folder (ZAP through `zmq.auth`); a plaintext peer cannot complete the
handshake with a CURVE server at all.
"""
import ipaddress
import math
import os
from urllib.parse import urlsplit

import msgpack
import zmq
import zmq.auth

from pipeline.record import INDEX, NAMES

MAX_MESSAGE = 64 << 20          # bytes in one record batch
MAX_RECORDS = 65536             # records in one batch
_N = len(NAMES)
_NUM = (int, float)
_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))
# what every field may hold; the fields the plugins own (content_*, family) may hold any plain value
_TYPES = {INDEX["type"]: str, INDEX["final"]: bool, INDEX["end_reason"]: str, INDEX["session_id"]: int,
          INDEX["parent_session_id"]: _OPT_INT, INDEX["sensor"]: str, INDEX["worker"]: int,
          INDEX["report_number"]: int, INDEX["start"]: _NUM, INDEX["end"]: _NUM, INDEX["duration"]: _NUM,
          INDEX["ip_version"]: int, INDEX["transport"]: int, INDEX["client_ip"]: str,
          INDEX["client_port"]: _OPT_INT, INDEX["server_ip"]: str, INDEX["server_port"]: _OPT_INT,
          INDEX["vlan"]: (list, type(None)), INDEX["proto_path"]: str, INDEX["rtt"]: (int, float, type(None)),
          INDEX["tcp_flags"]: int, INDEX["app"]: _OPT_STR, INDEX["community_id"]: _OPT_STR}
_COUNTERS = [i for n, i in INDEX.items() if n.endswith("_count")]
_FINITE = [INDEX[n] for n in ("start", "end", "duration", "rtt")]
_RANGES = [(INDEX[n], lo, hi) for n, lo, hi in (
    ("transport", 0, 255), ("tcp_flags", 0, 255), ("client_port", 0, 65535),
    ("server_port", 0, 65535), ("session_id", 0, (1 << 64) - 1), ("parent_session_id", 0, (1 << 64) - 1))]
_IPS = (INDEX["client_ip"], INDEX["server_ip"])
_VLAN = INDEX["vlan"]
_FREE = [INDEX[n] for n in ("content_class", "content_type", "content_flags", "family")]
_PLAIN_DEPTH = 8
_REASONS = ("idle", "closed", "shutdown", "evicted", "active")


class LinkError(Exception):
    """One line for the user."""


def unpack_header(raw: bytes) -> dict:
    if len(raw) > 4096:
        raise ValueError("batch header too large")
    h = msgpack.unpackb(raw, max_str_len=256, max_array_len=16, max_map_len=16)
    if not (isinstance(h, dict) and isinstance(h.get("sensor"), str) and isinstance(h.get("run"), str)
            and isinstance(h.get("seq"), int) and h["seq"] > 0):
        raise ValueError("bad batch header")
    return h


def unpack_records(raw: bytes, sensor: str = None) -> list:
    """A batch of wire records from the network, checked against the schema (and, given
    `sensor`, all of that sensor); ValueError if anything is off, so no output ever sees a
    value it cannot write."""
    if len(raw) > MAX_MESSAGE:
        raise ValueError("batch too large")
    recs = msgpack.unpackb(raw, max_array_len=max(MAX_RECORDS, _N + 1),
                           max_map_len=1024, max_str_len=1 << 16, max_bin_len=0, max_ext_len=0)
    if not isinstance(recs, list) or len(recs) > MAX_RECORDS:
        raise ValueError("batch is not a list of records")
    for r in recs:
        _check_record(r, sensor)
    return recs


def _check_record(r, sensor) -> None:
    if not isinstance(r, list) or not (_N <= len(r) <= _N + 1):
        raise ValueError("record of the wrong shape")
    for i, t in _TYPES.items():
        if not isinstance(r[i], t) or (isinstance(r[i], bool) and t is not bool):
            raise ValueError(f"record field {NAMES[i]} of the wrong type")
    if r[0] != "session":
        raise ValueError("record of a type other than session")
    if r[INDEX["end_reason"]] not in _REASONS or r[INDEX["ip_version"]] not in (4, 6):
        raise ValueError("record field end_reason or ip_version out of range")
    if sensor is not None and r[INDEX["sensor"]] != sensor:
        raise ValueError("record of a sensor other than the batch's")
    for i in _COUNTERS:
        if not isinstance(r[i], int) or isinstance(r[i], bool) or r[i] < 0:
            raise ValueError(f"record field {NAMES[i]} is not a count")
    for i in _FINITE:
        if r[i] is not None and not math.isfinite(r[i]):
            raise ValueError(f"record field {NAMES[i]} is not a finite number")
    for i, lo, hi in _RANGES:
        if r[i] is not None and not lo <= r[i] <= hi:
            raise ValueError(f"record field {NAMES[i]} out of range")
    for i in _IPS:
        try:
            ipaddress.ip_address(r[i])
        except ValueError:
            raise ValueError(f"record field {NAMES[i]} is not an IP address") from None
    if r[_VLAN] is not None and not (len(r[_VLAN]) <= 8 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 4095 for v in r[_VLAN])):
        raise ValueError("record field vlan is not a list of VLAN ids")
    for i in _FREE:
        if not _plain(r[i], _PLAIN_DEPTH):
            raise ValueError(f"record field {NAMES[i]} is not a plain value")
    if len(r) > _N and not (isinstance(r[_N], dict) and _plain(r[_N], _PLAIN_DEPTH)):
        raise ValueError("record extension is not a map of plain values with string keys")


def _plain(v, depth: int) -> bool:
    """JSON's values: what every output can write (maps keyed by strings, bounded nesting)."""
    if v is None or isinstance(v, (str, bool, int)):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if depth <= 0:
        return False
    if isinstance(v, list):
        return all(_plain(x, depth - 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth - 1) for k, x in v.items())
    return False


def check_address(addr: str, what: str) -> str:
    """tcp://HOST:PORT or ipc://PATH, else a one-line LinkError."""
    if addr.startswith("ipc://") and len(addr) > 6:
        return addr
    u = urlsplit(addr)
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme != "tcp" or not u.hostname or port is None:
        raise LinkError(f"{what} {addr!r}: expected tcp://HOST:PORT or ipc://PATH")
    return addr


def is_loopback(addr: str) -> bool:
    if addr.startswith("ipc://"):
        return True
    host = urlsplit(addr).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load(path: str, what: str, secret: bool):
    if not os.path.isfile(path):
        raise LinkError(f"{what} {path!r}: no such file")
    try:
        public, private = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as e:
        raise LinkError(f"{what} {path!r}: not a CurveZMQ certificate ({e})") from None
    if secret and private is None:
        raise LinkError(f"{what} {path!r}: holds no secret key (give the .key_secret file)")
    return public, private


def server_curve(ctx, sock, server_cert: str, clients_dir: str):
    """Make `sock` a CURVE server that admits only the certificates in clients_dir.
    Returns the authenticator (stop it when done)."""
    from zmq.auth.thread import ThreadAuthenticator
    public, secret = _load(server_cert, "--curve-server-cert", True)
    if not os.path.isdir(clients_dir):
        raise LinkError(f"--curve-clients {clients_dir!r}: no such directory")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=clients_dir)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def client_curve(sock, client_cert: str, server_cert: str) -> None:
    public, secret = _load(client_cert, "--curve-client-cert", True)
    server_public, _ = _load(server_cert, "--curve-server-cert", False)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


def keygen(dest: str) -> tuple:
    """`pipeline keygen DIR/NAME`: NAME.key (public) and NAME.key_secret (0600)."""
    folder, name = os.path.split(dest)
    folder = folder or "."
    if not name:
        raise LinkError(f"keygen {dest!r}: give DIR/NAME")
    if not os.path.isdir(folder):
        raise LinkError(f"keygen {dest!r}: no such directory {folder}")
    old = os.umask(0o077)
    try:
        pub, sec = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old)
    os.chmod(pub, 0o644)
    return pub, sec
