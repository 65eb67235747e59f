"""The sensor-to-collector link: ZeroMQ socket set-up, CurveZMQ and message checks.

Messages from the network are untrusted: msgpack is unpacked with limits on
every size, and records are checked against the schema before anything is
written; a bad message is counted and refused, never fatal. With CURVE, the
collector accepts only the sensors whose public certificates are in the
clients folder (ZAP through `zmq.auth`); a plaintext peer cannot complete the
handshake with a CURVE server at all.
"""
import ipaddress
import os
from urllib.parse import urlsplit

import msgpack
import zmq
import zmq.auth

from pipeline.record import INDEX, NAMES

MAX_MESSAGE = 64 << 20          # bytes in one record batch
MAX_RECORDS = 65536             # records in one batch
_N = len(NAMES)
_TYPES = {INDEX["sensor"]: str, INDEX["session_id"]: int, INDEX["report_number"]: int, INDEX["final"]: bool,
          INDEX["end"]: (int, float), INDEX["start"]: (int, float), INDEX["type"]: str}
_COUNTERS = [i for n, i in INDEX.items() if n.endswith("_count")]


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


def unpack_records(raw: bytes) -> list:
    """A batch of wire records from the network, checked; ValueError if anything is off."""
    if len(raw) > MAX_MESSAGE:
        raise ValueError("batch too large")
    recs = msgpack.unpackb(raw, max_array_len=max(MAX_RECORDS, _N + 1),
                           max_map_len=1024, max_str_len=1 << 16, max_bin_len=0, max_ext_len=0)
    if not isinstance(recs, list) or len(recs) > MAX_RECORDS:
        raise ValueError("batch is not a list of records")
    for r in recs:
        if not isinstance(r, list) or not (_N <= len(r) <= _N + 1):
            raise ValueError("record of the wrong shape")
        for i, t in _TYPES.items():
            if not isinstance(r[i], t):
                raise ValueError(f"record field {NAMES[i]} of the wrong type")
        for i in _COUNTERS:
            if not isinstance(r[i], int) or r[i] < 0:
                raise ValueError(f"record field {NAMES[i]} is not a count")
        if len(r) > _N and not isinstance(r[_N], dict):
            raise ValueError("record extension is not a map")
    return recs


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
