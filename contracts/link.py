"""The sensor-to-collector link: ZeroMQ socket set-up, CurveZMQ, batch headers.

Messages from the network are untrusted: headers are unpacked with limits on
every size here, records by `collector.checks` against the schema before
anything is written; a bad message is counted and refused, never fatal. With CURVE, the
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

MAX_MESSAGE = 64 << 20          # bytes in one record batch (collector.checks checks what is in it)


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


def keygen(dest: str, force: bool = False) -> tuple:
    """`pipeline keygen DIR/NAME`: NAME.key (public) and NAME.key_secret (0600). An existing
    pair is kept unless `force`: overwriting a collector's or a sensor's secret locks every
    peer that trusts the old public key out, with nothing to undo it."""
    folder, name = os.path.split(dest)
    folder = folder or "."
    if not name:
        raise LinkError(f"keygen {dest!r}: give DIR/NAME")
    if not os.path.isdir(folder):
        raise LinkError(f"keygen {dest!r}: no such directory {folder}")
    there = [p for p in (os.path.join(folder, name + ".key"), os.path.join(folder, name + ".key_secret"))
             if os.path.lexists(p)]
    if there and not force:
        raise LinkError(f"keygen {dest!r}: {there[0]} exists; peers may trust it (give --force to replace "
                        "the pair)")
    old = os.umask(0o077)
    try:
        pub, sec = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old)
    os.chmod(pub, 0o644)
    return pub, sec
