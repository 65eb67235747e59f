"""Live figures of a running sensor: Prometheus /metrics, `pipeline status`, the progress bar.

Workers, the collector and the uplink push a small statistics message about once
a second (wire.MSG_METRICS, never blocking: a figure is worth less than a
frame); the supervisor drains them between chunks into a Monitor. A snapshot
adds CPU and memory per process (psutil). The HTTP server (prometheus-client)
and the status socket answer from threads with a snapshot; nothing they do
touches the hot path.

Memory is reported as anonymous resident memory (heap, session tables, buffers:
what grows, what the OOM killer takes back), next to RSS. RSS also counts the
resident pages of the memory-mapped capture file and of the shared libraries,
which the kernel drops and reloads at will: a worker reading a 1.2 GB file showed
2.2 GB RSS with 90 MB of its own. Anonymous = statm's resident less its shared
(file and shmem) pages, the kernel's RssAnon, from the one read of
/proc/PID/statm that RSS already costs; USS or PSS walk every mapping (smaps).
"""
import json
import os
import selectors
import socket
import socketserver
import stat
import sys
import threading
import time

import msgpack
import psutil
import zmq

from . import wire
from .children import connect_local


class Monitor:
    def __init__(self, workers: int, role: str = "sensor"):
        self.role = role
        self.started = time.time()
        self.workers = {i: {"frames": 0, "sessions_open": 0, "sessions": 0, "records": 0, "evicted": 0,
                            "evicted_unanswered": 0, "evicted_closing": 0, "evicted_established": 0,
                            "capacity": 0, "occupancy": 0.0, "emergency": 0, "emergency_episodes": 0}
                        for i in range(workers)}
        self.sent_rows = [0] * workers      # rows the front-end sent each worker (queue depth = sent - done)
        self.frontend = {}
        self.collector = {}
        self.procs = {}                     # name -> psutil.Process
        self.restarts = 0
        self.sessions_lost = 0
        self.lock = threading.Lock()

    def add_process(self, name: str, pid: int) -> None:
        try:
            p = psutil.Process(pid)
            p.cpu_percent(None)             # starts its CPU clock
            self.procs[name] = p
        except psutil.Error:
            pass

    def drain(self, sock) -> None:
        """Take every pending metrics message (non-blocking)."""
        while True:
            try:
                _, body = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            m = msgpack.unpackb(body, strict_map_key=False)
            with self.lock:
                if "worker" in m:
                    self.workers[m["worker"]] = m
                else:
                    self.collector = m

    def snapshot(self) -> dict:
        with self.lock:
            workers = [dict(self.workers[i], worker=i, queue=max(0, self.sent_rows[i] - self.workers[i]["frames"]))
                       for i in sorted(self.workers)]
            fe = dict(self.frontend)
            col = dict(self.collector)
            if "sensors" in col:        # the collector's, changed under this lock as batches come
                col["sensors"] = {name: dict(s) for name, s in col["sensors"].items()}
        procs = {}
        for name, p in list(self.procs.items()):
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    mem = p.memory_info()
                    procs[name] = {"pid": p.pid, "cpu_percent": p.cpu_percent(None),
                                   "cpu_seconds": t.user + t.system, "rss_bytes": mem.rss,
                                   "anon_bytes": anonymous(mem)}
            except psutil.Error:
                procs[name] = {"pid": p.pid, "gone": True}
        now = time.time()
        return {"role": self.role, "time": round(now, 3), "uptime_s": round(now - self.started, 3), "frontend": fe,
                "worker_restarts": self.restarts, "sessions_lost": self.sessions_lost,
                "workers": workers, "collector": col, "processes": procs}


def anonymous(mem) -> int:
    """Anonymous resident bytes from psutil's memory_info() (Linux: /proc/PID/statm);
    RSS where the platform does not split it."""
    shared = getattr(mem, "shared", None)
    return mem.rss - shared if shared is not None else mem.rss


class MetricsSender:
    """A child's side: at most one message a second, dropped rather than waited for."""

    def __init__(self, ctx, addr, every: float = 1.0):
        self.sock = None
        if addr:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.SNDHWM, 4)
            self.sock.setsockopt(zmq.LINGER, 0)
            connect_local(self.sock, addr)
        self.every = every
        self.last = 0.0

    def maybe(self, make) -> None:
        if self.sock is None:
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            try:
                self.sock.send_multipart([wire.MSG_METRICS, msgpack.packb(make())], zmq.NOBLOCK)
            except zmq.Again:
                pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)


# -- Prometheus ---------------------------------------------------------------------------
SERIES = {"records": "records", "batches": "batches", "duplicates": "duplicate_batches",
          "rejected": "rejected_batches"}        # status key -> metric name part
COUNTER, GAUGE = "counter", "gauge"
FRONTEND_COUNTERS = ("frames_read", "frames_ip", "frames_non_ip", "frames_malformed", "frames_unassembled",
                     "frames_dropped")
WORKER_SERIES = (                               # pipeline_worker_KEY{worker=...}: status key, meaning, kind
    ("frames", "frames (datagrams) processed", COUNTER),
    ("sessions_open", "sessions in the table", GAUGE),
    ("sessions", "sessions opened", COUNTER),
    ("sessions_ended", "sessions ended (final records)", COUNTER),
    ("records", "records sent to the collector", COUNTER),
    ("evicted", "sessions evicted because the table was full", COUNTER),
    ("evicted_unanswered", "sessions without an answer evicted", COUNTER),
    ("evicted_closing", "closing TCP sessions evicted", COUNTER),
    ("evicted_established", "established sessions evicted", COUNTER),
    ("capacity", "session table capacity (--max-sessions)", GAUGE),
    ("occupancy", "open sessions as a share of the capacity (0 to 1)", GAUGE),
    ("emergency", "1 while the session table is in emergency mode", GAUGE),
    ("emergency_episodes", "times the session table entered emergency mode", COUNTER),
    ("drops", "frames this worker lost", COUNTER),
    ("queue", "rows sent to the worker and not yet processed", GAUGE))
PROCESS_SERIES = (                              # pipeline_process_NAME{process=...}: status key, meaning, kind
    ("cpu_seconds", "cpu_seconds", "CPU time per process", COUNTER),
    ("rss_bytes", "resident_bytes", "resident memory per process, mapped capture files and libraries included",
     GAUGE),
    ("anon_bytes", "anonymous_bytes", "anonymous resident memory per process (heap, session tables): alert on this",
     GAUGE))
COLLECTOR_COUNTERS = (                          # the standalone collector's: status key, meaning
    ("batches", "record batches written"), ("duplicates", "batches already written, dropped"),
    ("rejected", "batches refused (not the protocol, or records that fail the checks)"))
SENSOR_COUNTERS = (("records", "records written"), ("batches", "batches written"),
                   ("duplicates", "duplicate batches dropped"), ("rejected", "batches refused"))


def _serve(server, name: str, on_stop=None) -> threading.Thread:
    """Serve `server` (a socketserver server) from a daemon thread until its `shutdown()`,
    which returns at once: the thread waits on the server's socket and on a wake-up pair
    with no timeout, so it neither polls while idle nor makes shutdown wait. (socketserver's
    serve_forever looks for a shutdown every 0.5 s: every run with a status socket, all live
    runs, or /metrics ended half a second late; a shorter poll interval cost an idle
    service ~3 ms of CPU a second.) `shutdown()` then closes the server, and calls
    `on_stop`."""
    wake, waker = socket.socketpair()
    server.timeout = 0          # handle_request() after a readiness that went away: no wait

    def loop():
        with selectors.DefaultSelector() as sel:
            sel.register(server, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while not any(key.fileobj is wake for key, _ in sel.select()):
                server.handle_request()

    t = threading.Thread(target=loop, name=name, daemon=True)
    t.start()

    def shutdown():
        if waker.fileno() < 0:
            return                  # shut down already
        waker.send(b"\0")
        t.join()
        wake.close()
        waker.close()
        server.server_close()
        if on_stop is not None:
            on_stop()

    server.shutdown = shutdown
    return t


def serve_metrics(monitor: Monitor, port: int, addr: str = "127.0.0.1"):
    """Serve /metrics on addr:port from a thread; OSError (one line) if the port is taken.
    Returns (server, thread). prometheus_client's own start_http_server, but for the
    stop (`_serve`): its WSGI app, served the way it serves it (a thread per request, no
    request log, the address family the address asks for)."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.core import CollectorRegistry

    class _Collector:
        def collect(self):
            s = monitor.snapshot()
            if s["role"] != "collector":
                yield from _pipeline_families(s)
            yield from _process_families(s)
            if s["collector"]:
                yield from _collector_families(s["collector"])
                if "sensors" in s["collector"]:     # else a sensor's own collector or uplink
                    yield from _standalone_families(s["collector"])

    class _Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):
            pass

    family, _, _, _, sockaddr = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    _Server.address_family = family
    reg = CollectorRegistry()
    reg.register(_Collector())
    httpd = make_server(sockaddr[0], port, make_wsgi_app(reg), _Server, handler_class=_Quiet)
    return httpd, _serve(httpd, "metrics")


def _family(kind):
    # prometheus_client only where metrics are served: its import is not every run's cost
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    return CounterMetricFamily if kind == COUNTER else GaugeMetricFamily


def _pipeline_families(s):
    counter = _family(COUNTER)
    fe = s["frontend"]
    for key in FRONTEND_COUNTERS:
        if key in fe:
            yield counter(f"pipeline_{key}", f"front-end {key.replace('_', ' ')}", value=fe[key])
    for key, doc, kind in WORKER_SERIES:
        m = _family(kind)(f"pipeline_worker_{key}", f"per worker: {doc}", labels=["worker"])
        for w in s["workers"]:
            m.add_metric([str(w["worker"])], w.get(key, 0))
        yield m
    yield counter("pipeline_worker_restarts", "workers restarted after dying", value=s["worker_restarts"])
    yield counter("pipeline_sessions_lost", "open sessions lost with a dead worker", value=s["sessions_lost"])


def _process_families(s):
    families = [(key, _family(kind)(f"pipeline_process_{name}", doc, labels=["process"]))
                for key, name, doc, kind in PROCESS_SERIES]
    for name, p in s["processes"].items():
        if not p.get("gone"):
            for key, m in families:
                m.add_metric([name], p[key])
    for _, m in families:
        yield m


def _collector_families(col):
    """What every collector reports: the sensor's own, its uplink, the standalone one."""
    counter, gauge = _family(COUNTER), _family(GAUGE)
    yield counter("pipeline_collector_records_in", "records received by the collector", value=col.get("records", 0))
    out = counter("pipeline_collector_records_out", "records written, per output", labels=["output"])
    for name, n in col.get("outputs", {}).items():
        out.add_metric([name], n)
    yield out
    issues = counter("pipeline_collector_output_issues", "records an output clamped or could not "
                     "write, per output and issue (docs/outputs.md)", labels=["output", "issue"])
    for name, counts in col.get("output_issues", {}).items():
        for issue, n in counts.items():
            issues.add_metric([name, issue], n)
    yield issues
    yield gauge("pipeline_spool_bytes", "bytes waiting for a remote collector", value=col.get("spool_bytes", 0))


def _standalone_families(col):
    """The standalone collector's: batches, refusals, and figures per sensor."""
    counter, gauge = _family(COUNTER), _family(GAUGE)
    for key, doc in COLLECTOR_COUNTERS:
        yield counter(f"pipeline_collector_{SERIES[key]}", doc, value=col.get(key, 0))
    yield counter("pipeline_collector_curve_refusals", "connections refused: key not in --curve-clients",
                  value=col.get("curve_refused", 0))
    yield counter("pipeline_collector_handshake_failures",
                  "connections whose handshake failed (no CurveZMQ, another collector's key)",
                  value=col.get("handshake_failed", 0))
    per = {key: counter(f"pipeline_collector_sensor_{SERIES[key]}", f"per sensor: {doc}", labels=["sensor"])
           for key, doc in SENSOR_COUNTERS}
    seen = gauge("pipeline_collector_sensor_last_seen_timestamp_seconds",
                 "per sensor: when its last batch came (Unix time)", labels=["sensor"])
    for name, figures in col["sensors"].items():
        for key, m in per.items():
            m.add_metric([name], figures[key])
        seen.add_metric([name], figures["last_seen"])
    yield from per.values()
    yield seen


# -- `pipeline status` --------------------------------------------------------------------
RUN_DIR = "/run/pipeline"       # the units' RuntimeDirectory= (deploy/), also made at boot by tmpfiles.d


def socket_dirs() -> list:
    """Where status sockets live, in order: the service's runtime directory (systemd sets
    $RUNTIME_DIRECTORY for RuntimeDirectory=), /run/pipeline, then the user's own
    ($XDG_RUNTIME_DIR, else /tmp/pipeline-UID). A unit's /tmp is its own (PrivateTmp), so
    a socket there is out of `pipeline status`'s reach: a service's goes to /run/pipeline."""
    dirs = []
    for d in (_runtime_dir(), RUN_DIR, os.environ.get("XDG_RUNTIME_DIR"), f"/tmp/pipeline-{os.getuid()}"):
        if d and d not in dirs:
            dirs.append(d)
    return dirs


def _runtime_dir() -> str:
    return os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]     # systemd: several, colon-separated


def default_socket(role: str = "sensor") -> str:
    """Where a running instance serves its status: the first of socket_dirs() it may write
    in (/run/pipeline, unless systemd gave it, only where it exists and is writable: root)."""
    for d in socket_dirs():
        if d == RUN_DIR != _runtime_dir() and not (os.path.isdir(d) and os.access(d, os.W_OK)):
            continue
        return os.path.join(d, f"pipeline-{role}.sock")
    raise AssertionError("socket_dirs() ends with a folder of the user's own")


def find_socket(role: str = "sensor") -> tuple:
    """Where `pipeline status` asks: the first of socket_dirs() that holds the role's socket,
    so root or a member of group pipeline reaches the service's in /run/pipeline. Returns
    (path, None), or (None, the folders looked in)."""
    dirs = socket_dirs()
    for d in dirs:
        path = os.path.join(d, f"pipeline-{role}.sock")
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                return path, None
        except OSError:
            continue
    return None, dirs


def serve_status(monitor: Monitor, path: str):
    """Answer each connection on a UNIX socket with one JSON snapshot. Returns the server
    (shut it down at exit), or None with a warning if the socket cannot be made."""
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            try:
                self.wfile.write(json.dumps(monitor.snapshot()).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass        # the peer left without reading (another instance's probe, below)

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
                probe.close()
                print(f"pipeline: warning: status socket {path} belongs to another running instance; "
                      "`pipeline status` will not see this one (give --status-socket)", file=sys.stderr)
                return None
            except OSError:
                os.unlink(path)             # left by a run that died
        server = socketserver.ThreadingUnixStreamServer(path, Handler)
        os.chmod(path, 0o660)     # the service's user and its group (an operator in group pipeline)
    except OSError as e:
        print(f"pipeline: warning: status socket {path}: {e.strerror or e}", file=sys.stderr)
        return None
    server.daemon_threads = True

    def unlink():
        try:
            os.unlink(path)             # the next instance finds no stale socket
        except OSError:
            pass
    _serve(server, "status", unlink)
    return server


def query_status(path: str, timeout: float = 5.0) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
        data = b""
        while not data.endswith(b"\n"):
            part = s.recv(1 << 16)
            if not part:
                break
            data += part
    finally:
        s.close()
    return json.loads(data)


def status_table(snap: dict, previous: dict = None) -> str:
    """What `pipeline status` prints: a sensor's workers, or a standalone collector's sensors,
    then a line per process."""
    lines = _collector_lines(snap) if snap["role"] == "collector" else _sensor_lines(snap, previous)
    for name, p in snap["processes"].items():
        if not name.startswith("worker") and not p.get("gone"):
            lines.append(f"{name:>12}: cpu {p['cpu_percent']:.1f}%  anon {p['anon_bytes'] / 2**20:.1f} MB  "
                         f"(rss {p['rss_bytes'] / 2**20:.1f} MB)")
    return "\n".join(lines) + "\n"


def _sensor_lines(snap: dict, previous: dict = None) -> list:
    up = snap["uptime_s"] or 1e-9
    lines = [f"{snap['role']} up {up:.0f} s; front-end: {snap['frontend'].get('frames_read', 0):,} frames read, "
             f"{snap['frontend'].get('frames_dropped', 0):,} dropped",
             f"{'worker':>6} {'frames':>12} {'frames/s':>10} {'open':>9} {'table':>6} {'evicted':>9} "
             f"{'records':>10} {'queue':>8} {'drops':>7} {'cpu%':>6} {'anon MB':>8}"]
    procs = snap["processes"]
    for w in snap["workers"]:
        p = procs.get(f"worker {w['worker']}", {})
        rate = w["frames"] / up
        if previous:
            for pw in previous["workers"]:
                if pw["worker"] == w["worker"] and snap["uptime_s"] > previous["uptime_s"]:
                    rate = (w["frames"] - pw["frames"]) / (snap["uptime_s"] - previous["uptime_s"])
        lines.append(f"{w['worker']:>6} {w['frames']:>12,} {rate:>10,.0f} {w['sessions_open']:>9,} "
                     f"{w.get('occupancy', 0):>6.0%} {w.get('evicted', 0):>9,} "
                     f"{w['records']:>10,} {w.get('queue', 0):>8,} {w.get('drops', 0):>7,} "
                     f"{p.get('cpu_percent', 0):>6.1f} {p.get('anon_bytes', 0) / 2**20:>8.1f}")
    emergencies = [w for w in snap["workers"] if w.get("emergency")]
    for w in emergencies:
        lines.append(f"worker {w['worker']}: session table in emergency mode (episode "
                     f"{w.get('emergency_episodes', 0)}): sessions without an answer end after --emergency-timeout")
    evicted = [w for w in snap["workers"] if w.get("evicted")]
    if evicted:
        lines.append("evicted: " + "; ".join(
            f"worker {w['worker']}: {w.get('evicted_unanswered', 0):,} unanswered, "
            f"{w.get('evicted_closing', 0):,} closing, {w.get('evicted_established', 0):,} established"
            for w in evicted))
    col = snap["collector"]
    if col:
        out = ", ".join(f"{name} {n:,}" for name, n in col.get("outputs", {}).items())
        line = f"records: {col.get('records', 0):,} from the workers; written: {out or 'none yet'}"
        if "spool_bytes" in col:
            line += (f"; waiting for the collector: {counted(col.get('spool_batches', 0), 'batch', 'batches')}, "
                     f"{col['spool_bytes'] / 2**20:.1f} MB")
        lines.append(line)
    return lines


def _collector_lines(snap: dict) -> list:
    col, now = snap["collector"], snap.get("time", time.time())
    out = ", ".join(f"{name} {n:,}" for name, n in col.get("outputs", {}).items())
    lines = [f"collector up {snap['uptime_s']:.0f} s; {col.get('records', 0):,} records in; written: "
             f"{out or 'none yet'}",
             f"batches: {col.get('batches', 0):,} written, {col.get('duplicates', 0):,} duplicate, "
             f"{col.get('rejected', 0):,} rejected; CurveZMQ: {col.get('curve_refused', 0):,} refused, "
             f"{col.get('handshake_failed', 0):,} failed handshakes"]
    sensors = col.get("sensors", {})
    if not sensors:
        lines.append("no sensor has sent anything yet")
        return lines
    lines.append(f"{'sensor':<24} {'records':>12} {'batches':>9} {'dup':>6} {'rejected':>9} {'last seen':>10}")
    for name, s in sorted(sensors.items()):
        ago = f"{max(0.0, now - s['last_seen']):,.0f} s ago" if s.get("last_seen") else "never"
        lines.append(f"{name[:24]:<24} {s['records']:>12,} {s['batches']:>9,} {s['duplicates']:>6,} "
                     f"{s['rejected']:>9,} {ago:>10}")
    return lines


def counted(n: int, noun: str, plural: str = None) -> str:
    """'1 session', '2 sessions', '1 batch', '3 batches': the lines an operator reads
    (and greps) say what they count the way it is said."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


# -- progress bar ---------------------------------------------------------------------------
def progress_line(done: int, total: int, frames: int, elapsed: float, open_sessions: int, width: int = 24) -> str:
    frac = min(1.0, done / total) if total else 0.0
    bar = "#" * int(frac * width)
    rate = frames / elapsed if elapsed > 0 else 0.0
    eta = (elapsed / frac - elapsed) if frac > 0 else 0.0
    return (f"[{bar:<{width}}] {frac * 100:5.1f}% {done / 2**20:,.1f}/{total / 2**20:,.1f} MiB  "
            f"{rate:,.0f} frames/s  {open_sessions:,} open sessions  ETA {int(eta) // 60}:{int(eta) % 60:02d}")
