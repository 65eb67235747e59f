"""The sensor-to-collector link: ZeroMQ socket set-up, CurveZMQ, batch headers.

Messages from the network are untrusted: headers are unpacked with limits on
every size here, records by `collector.checks` against the schema before
anything is written; a bad message is counted and refused, never fatal. With CURVE, the
collector accepts only the sensors whose public certificates are in the
clients folder (`CurveGate`, its ZAP handler); a plaintext peer cannot complete the
handshake with a CURVE server at all. Both ends say why a connection fails, once per
episode: a refused sensor tries again every two seconds.
"""
import ipaddress
import os
import threading
import time
from urllib.parse import urlsplit

import msgpack
import zmq
import zmq.auth
from zmq.utils import z85

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


def server_curve(ctx, sock, server_cert: str, clients_dir: str, log):
    """Make `sock` a CURVE server that admits only the certificates in clients_dir.
    Returns its gate (stop it when done)."""
    public, secret = _load(server_cert, "--curve-server-cert", True)
    gate = CurveGate(ctx, clients_dir, log)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return gate


def client_curve(sock, client_cert: str, server_cert: str) -> None:
    public, secret = _load(client_cert, "--curve-client-cert", True)
    server_public, _ = _load(server_cert, "--curve-server-cert", False)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


def key_id(public: bytes) -> str:
    """The first characters of a public key in Z85, as `pipeline keygen`'s NAME.key holds it:
    enough to find the file (grep), nothing to authenticate with."""
    return z85.encode(public).decode()[:8] + "…"


class Episodes:
    """Says a recurring failure once per episode: when first seen, and again only after
    `gap` seconds without it. Bounded: a peer controls the keys (address, key id)."""

    def __init__(self, gap: float = 300.0, limit: int = 1024):
        self.gap = gap
        self.limit = limit
        self.last = {}

    def new(self, key, now: float = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self.last.pop(key, None)
        self.last[key] = now                # the newest last: the oldest go first
        if len(self.last) > self.limit:
            del self.last[next(iter(self.last))]
        return last is None or now - last > self.gap


ZAP = "inproc://zeromq.zap.01"      # where libzmq asks a socket's context (RFC 27)


class CurveGate:
    """The collector's ZAP handler: admits the CurveZMQ keys of the files in the clients
    folder, and logs every other key with the peer's address (once per episode, counted
    in `refused`). Its own, not zmq.auth's: that one logs nothing above debug level and
    runs an asyncio loop in its thread."""

    def __init__(self, ctx, clients_dir: str, log):
        if not os.path.isdir(clients_dir):
            raise LinkError(f"--curve-clients {clients_dir!r}: no such directory")
        self.clients_dir = clients_dir
        self.keys = {}                      # z85 public key -> the file's name
        for name in sorted(os.listdir(clients_dir)):
            if name.endswith(".key"):
                public, _ = _load(os.path.join(clients_dir, name), "--curve-clients", False)
                self.keys[public] = name[:-len(".key")]
        if not self.keys:
            log(f"warning: --curve-clients {clients_dir} holds no NAME.key: every sensor is refused")
        self.log = log
        self.refused = 0
        self.episodes = Episodes()
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            while not self.stopping.is_set():
                if self.sock.poll(100):
                    self.sock.send_multipart(self.answer(self.sock.recv_multipart()))
        finally:
            self.sock.close(0)

    def answer(self, msg: list) -> list:
        """The reply to one ZAP request: [version, request id, domain, address, identity,
        mechanism, credentials...]."""
        rid = msg[1] if len(msg) > 1 else b""
        if len(msg) < 6 or msg[0] != b"1.0":
            return [b"1.0", rid, b"400", b"bad ZAP request", b"", b""]
        address, mechanism, creds = msg[3], msg[5], msg[6:]
        public = creds[0] if mechanism == b"CURVE" and len(creds) == 1 and len(creds[0]) == 32 else None
        name = self.keys.get(z85.encode(public)) if public else None
        if name is not None:
            return [b"1.0", rid, b"200", b"OK", name.encode(), b""]
        self.refused += 1
        peer = address.decode(errors="replace") or "?"
        what = f"key {key_id(public)}" if public else f"mechanism {mechanism.decode(errors='replace')}"
        if self.episodes.new((peer, what)):
            self.log(f"warning: refused a sensor at {peer}: CurveZMQ {what} is in no NAME.key of --curve-clients "
                     f"{self.clients_dir} (said once while it keeps trying)")
        return [b"1.0", rid, b"400", b"unknown key", b"", b""]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


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


HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED)


def handshake(event: dict) -> str:
    """A socket monitor's event -> 'ok', or why a handshake failed: 'auth' (the ZAP handler
    refused the key), 'mechanism' (CurveZMQ on one side only), 'crypto' (a CurveZMQ box
    that does not open: the wrong server key), 'closed' (the peer hung up mid-handshake),
    'protocol' (anything else); '' for other events."""
    kind, value = event["event"], event["value"]
    if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return "ok"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "auth"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return "closed"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return {zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "mechanism",
                zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "crypto"}.get(value, "protocol")
    return ""


def handshake_events(mon) -> list:
    """handshake() of every event waiting on a monitor socket (non-blocking)."""
    from zmq.utils.monitor import recv_monitor_message
    out = []
    while mon.poll(0):
        kind = handshake(recv_monitor_message(mon))
        if kind:
            out.append(kind)
    return out
