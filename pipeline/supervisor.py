"""`pipeline start`: starts the collector and the workers, runs the front-end, accounts.

Process layout (offline):
    supervisor (this process) = capture front-end: reads, decodes, keys, shards
      -- PUSH/PULL per worker, ipc -->  worker 0..N-1 (one session table each)
      -- PUSH/PULL, ipc -->             collector (outputs)
      -- collector reports back on a control socket when everything is written.
Children are forked before any ZeroMQ context exists (fork safety); sends wait
with a timeout so a dead child is noticed instead of blocking forever. Offline
runs are lossless: high-water marks and blocking sends give backpressure.
"""
import importlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

import msgpack
import zmq

from contracts import monitor, notify, wire
from contracts.children import (
    SAID_WHY,
    CollectPacer,
    cpu_seconds,
    fail,
    loaded_files,
    tune_heap,
    unreadable_for,
    write_stats,
)

from .dispatch import ToWorkers
from .frontend.core import FrontEnd
from .frontend.readers import CaptureError, open_capture

# a worker's figures summed over the workers in --stats-json (and kept per worker)
WORKER_TOTALS = ("evicted", "evicted_unanswered", "evicted_closing", "evicted_established", "emergency_episodes")
STOP_GRACE = 10.0   # seconds from SIGINT/SIGTERM to an orderly end, else the children are killed
# What the children import after the fork, some of it after dropping to --user (the
# workers' classifiers import parts of dpkt on first use): --user must be able to read them.
CHILD_MODULES = ("workers.process", "workers.classify", "collector.process", "collector.outputs",
                 "pipeline.uplink", "pipeline.capture", "dpkt")


class RunError(Exception):
    """A run that cannot go on; str() is the one line the user sees."""


def _collector_main(cfg) -> None:
    """The collector child. Its modules (outputs) and the workers' (session engine,
    classifiers, dpkt) are imported in the children, after the fork: the front-end
    never uses them, and the import then runs on another core while the front-end
    reads its first chunk instead of before it."""
    process = _child_module("collector", "collector")
    process.run(cfg)


def _worker_main(index, cfg) -> None:
    process = _child_module("workers", f"worker {index}")
    process.run(index, cfg)


def _child_module(package: str, name: str):
    """`package.process`, or `children.fail` (a broken install: a worker restarted would
    only fail again)."""
    try:
        return importlib.import_module(f"{package}.process")
    except Exception as e:  # noqa: BLE001 - whatever the import raised, the child cannot run
        fail(f"{name} cannot start: {type(e).__name__}: {e}")


def _log(msg: str) -> None:
    # stderr may be gone (a closed pipe, a restarted journal): the line is lost, not the
    # run. Raised from the stop signal's handler, it used to skip the orderly stop and
    # leave the supervisor waiting for its collector for ever.
    try:
        print(f"pipeline: {msg}", file=sys.stderr, flush=True)
    except OSError:
        pass


class Run:
    def __init__(self, args, timeouts, live=None):
        self.args = args
        self.live = live                    # live capture settings (capture.open_live), else None
        self.frontends = args.capture_procs if live else 1
        # offline, K >= 2: this process reads, K front-end processes decode (pipeline/decoders.py)
        self.decoders = args.capture_procs if not live and args.capture_procs > 1 else 0
        self.chunks_sent = 0
        self.deadline = time.time() + args.duration if args.duration else float("inf")
        self.captures = []                  # statistics of capture processes 1..K-1
        self.timeouts = timeouts
        self.workers = args.workers
        self.procs = []
        self.damage = 0
        self.stopping = False
        self.stop_deadline = float("inf")
        self.monitor = monitor.Monitor(self.workers)
        self.restarts = 0
        self.sessions_lost = 0
        self.collector_failed = None        # the collector's last figures, when an output failed
        self.servers = []
        self.progress = not args.quiet and not live and sys.stderr.isatty()
        self.bytes_total = 0
        self.bytes_before = 0               # bytes of the inputs already read
        self.inputs = []                    # the capture files, mapped (offline)
        self.reader = None
        self.t0 = time.monotonic()
        self.last_draw = 0.0
        self.watchdog = notify.Watchdog()
        self.children_watch = None          # under systemd: the metrics socket's accepted connections

    def check_children(self):
        self.watchdog.ping()                # every loop of the run passes here: chunks, waits, the end
        if self.stopping and time.monotonic() > self.stop_deadline:
            raise RunError(f"no orderly end {STOP_GRACE:.0f} s after the stop signal; children killed")
        for j, (name, p) in enumerate(self.procs):
            if p.exitcode is not None and p.exitcode != 0:
                if p.exitcode == SAID_WHY:
                    raise RunError(None)   # the child said why, in one line; restarting a worker would not help
                if name.startswith("worker"):
                    self.restart_worker(j, name, p)
                    continue
                raise RunError(f"{name} exited with status {p.exitcode}")

    def restart_worker(self, j, name, p):
        """A worker died (killed, crashed): start another on the same socket and go on.
        Its open sessions are lost; the frames lost are counted exactly at the end
        (frames_ip less the frames in final records)."""
        i = int(name.split()[1])
        lost = self.monitor.workers.get(i, {}).get("sessions_open", 0)
        self.restarts += 1
        self.sessions_lost += lost
        how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"status {p.exitcode}"
        _log(f"warning: {name} died ({how}) with about {monitor.counted(lost, 'open session')}; restarting it")
        q = mp.get_context("fork").Process(target=_worker_main, args=(i, dict(self.cfg, restarted=True)), name=name)
        q.start()
        self.procs[j] = (name, q)
        self.monitor.add_process(name, q.pid)
        with self.monitor.lock:
            self.monitor.restarts = self.restarts
            self.monitor.sessions_lost = self.sessions_lost
        if self.to.end_msg is not None:     # it died after the end of stream: the new one needs it too
            for _ in range(self.decoders or 1):
                self.to.resend_end(i)

    def waiting(self):
        """While a send to a worker waits: notice dead children, keep the figures fresh."""
        self.check_children()
        self.monitor.drain(self.metrics)

    def start(self):
        """Fork the children, then open this process's sockets and servers; return once every
        capture process has its ring open."""
        self.dir = tempfile.mkdtemp(prefix="pipeline-")
        if self.args.user:
            import pwd
            pw = pwd.getpwnam(self.args.user)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)   # children drop to --user and still reach their sockets
        self.cfg = self.config()
        self.fork_children()
        if self.args.cpus:
            self.pin(self.args.cpus)
        self.open_sockets()
        self.serve()
        self.to = ToWorkers(self.ctx, self.cfg["worker_addrs"], self.waiting)
        if self.decoders:
            self.to_decoders = ToWorkers(self.ctx, self.cfg["decoder_addrs"], self.waiting)
        ready = 1
        while ready < self.frontends:       # announce the capture only once every ring is open
            while not self.control.poll(500):
                self.check_children()
            kind, _ = self.control.recv_multipart()
            ready += kind == wire.MSG_READY

    def config(self) -> dict:
        """What every child is given at its fork."""
        a = self.args
        cfg = {
            "worker_addrs": [f"ipc://{self.dir}/w{i}" for i in range(self.workers)],
            "collector_addr": f"ipc://{self.dir}/collector",
            "control_addr": f"ipc://{self.dir}/control",
            "timeouts": self.timeouts,
            "sensor": a.sensor_id or socket.gethostname(),
            "plugins": a.plugin or [],
            "max_sessions": a.max_sessions or 0,
            "marks": (a.emergency_mark / 100, a.recovery_mark / 100),
            "outputs": a.output or ["jsonl:-"],
            "workers": self.workers,
            "aggregate_interval": a.aggregate_interval,
            "enrich": getattr(a, "enrich", None) or {},
            "collector": a.collector,
            "curve_client_cert": a.curve_client_cert,
            "curve_server_cert": a.curve_server_cert,
            "spool_dir": a.spool_dir,
            "spool_disk_bytes": a.spool_max_mb << 20,
            "spool_mem_bytes": a.spool_mem_mb << 20,
            "frontends": self.decoders or self.frontends,   # ends of stream each worker waits for
            "hash_seed": a.hash_seed,
            "vlan_key": a.vlan_key,
            "teredo_any_port": a.teredo_heuristic,
            "user": a.user,
            "deadline": self.deadline,
            "metrics_addr": f"ipc://{self.dir}/metrics",
            "classify": a.classify_packets,
            # the capture files, mapped: forked workers read young payloads from them (dispatch.py)
            "inputs": self.inputs,
        }
        if self.live:
            cfg.update(self.live)
        if self.decoders:
            from .frontend.sequencer import shared_table
            cfg.update(decoders=self.decoders, young_table=shared_table(),
                       decoder_addrs=[f"ipc://{self.dir}/d{k}" for k in range(self.decoders)],
                       ring_addrs=[f"ipc://{self.dir}/r{k}" for k in range(self.decoders)])
        return cfg

    def fork_children(self):
        """The collector (or the uplink, which takes its place and its socket with --collector),
        the workers, then capture processes 1..K-1 (live) or the K decoding ones (offline)."""
        cfg = self.cfg
        if self.args.collector:
            from . import uplink
            self.fork("collector", uplink.run, (cfg,), "uplink")
        else:
            self.fork("collector", _collector_main, (cfg,))
        for i in range(self.workers):
            self.fork(f"worker {i}", _worker_main, (i, cfg))
        for k in range(1, self.frontends):
            from . import capture
            self.fork(f"capture {k}", capture.capture_child, (k, cfg))
        for k in range(self.decoders):
            from . import decoders
            self.fork(f"capture {k}", decoders.run, (k, cfg))

    def fork(self, name, target, args, title=None):
        p = mp.get_context("fork").Process(target=target, args=args, name=title or name)
        p.start()
        self.procs.append((name, p))

    def open_sockets(self):
        """The control and metrics sockets every child connects to."""
        cfg = self.cfg
        self.ctx = zmq.Context()
        self.control = self.ctx.socket(zmq.PULL)
        self.control.bind(cfg["control_addr"])
        self.metrics = self.ctx.socket(zmq.PULL)
        if notify.enabled():                # before the bind: no child's connection goes unseen
            self.children_watch = self.metrics.get_monitor_socket(zmq.EVENT_ACCEPTED)
        self.metrics.bind(cfg["metrics_addr"])
        if self.args.user:                  # the children run as --user: they must reach our sockets too
            for addr in (cfg["control_addr"], cfg["metrics_addr"]):
                os.chown(addr[len("ipc://"):], self.uid, self.gid)

    def serve(self):
        """The monitor's processes, then --metrics-port and the status socket."""
        a = self.args
        self.monitor.frontend = self.fe_stats
        self.monitor.add_process("frontend", os.getpid())
        for name, p in self.procs:
            self.monitor.add_process(name, p.pid)
        if a.metrics_port is not None:
            try:
                self.servers.append(monitor.serve_metrics(self.monitor, a.metrics_port, a.metrics_addr)[0])
            except OSError as e:
                raise RunError(f"--metrics-port {a.metrics_port}: {e.strerror or e}") from None
        if a.status_socket or self.live:
            srv = monitor.serve_status(self.monitor, a.status_socket or monitor.default_socket())
            if srv is not None:
                self.servers.append(srv)

    def ready(self):
        """READY=1 to systemd (Type=notify) once the capture is open (start() waited for every
        ring) and every worker and the collector are up: each connects to the metrics socket
        once its imports and set-up (tables, outputs, spool) are done. Only under systemd:
        elsewhere an offline run reads its first chunk while the children start."""
        if self.children_watch is None:
            return
        from zmq.utils.monitor import recv_monitor_message
        up, want = 0, sum(1 for name, _ in self.procs if not name.startswith("capture"))
        try:
            while up < want:
                while not self.children_watch.poll(500):
                    self.check_children()
                up += recv_monitor_message(self.children_watch)["event"] == zmq.EVENT_ACCEPTED
        finally:
            self.metrics.disable_monitor()
            self.children_watch.close(0)
            self.children_watch = None
        notify.notify(f"READY=1\nSTATUS={'capturing' if self.live else 'reading'}, "
                      f"{monitor.counted(self.workers, 'worker')}")

    def pin(self, cpus):
        """--cpus: capture processes first, then workers, then the collector, round robin."""
        import psutil
        first = "reader" if self.decoders else "capture 0"
        order = [(first, os.getpid())] + [(n, p.pid) for n, p in self.procs if n.startswith("capture")] \
            + [(n, p.pid) for n, p in self.procs if n.startswith("worker")] \
            + [(n, p.pid) for n, p in self.procs if n == "collector"]
        self.pinned = {}
        for i, (name, pid) in enumerate(order):
            cpu = cpus[i % len(cpus)]
            try:
                psutil.Process(pid).cpu_affinity([cpu])
                self.pinned[name] = cpu
            except psutil.Error as e:
                _log(f"warning: --cpus: cannot pin {name} to CPU {cpu}: {e}")

    def feed(self, readers, fe):
        self.bytes_total = sum(r.size for r in readers)
        with CollectPacer() as pacer:
            for k, reader in enumerate(readers):
                if self.stopping:
                    break
                self.reader = reader
                self.to.shared = k              # workers read payload bytes from their own map of it
                for chunk in reader.chunks(self.args.chunk_frames):
                    if self.stopping:
                        break
                    pacer.tick()
                    if self.decoders:
                        self.send_chunk(fe, k, chunk)
                    else:
                        self.send_batches(fe, fe.process(chunk))
                for w in reader.warnings:
                    _log(f"warning: {w}")
                self.damage += reader.damage
                self.bytes_before += reader.size
        self.to.shared = None
        if self.progress:
            sys.stderr.write("\r\033[K")
        self.end_stream(fe)

    def feed_live(self, cap, fe):
        from . import capture
        capture.feed_live(cap, fe, self.send_batches,
                          lambda: self.stopping or time.time() >= self.deadline, self.check_children)
        for name, p in self.procs:
            if name.startswith("capture") and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)      # the other capture processes stop too
        self.end_stream(fe)

    def end_stream(self, fe):
        if self.decoders:                   # they end the stream (the last chunk's turn holds the state)
            from .decoders import MSG_END_READ
            end = msgpack.packb({"chunks": self.chunks_sent, "now": fe.now})
            for k in range(self.decoders):
                self.to_decoders.send(k, [MSG_END_READ, end])
            return
        self.send_batches(fe, fe.finish())
        self.to.end(fe)

    def send_chunk(self, fe, i, chunk):
        """K front-end processes: number chunk j of input i and send its columns to process j mod K."""
        from .decoders import chunk_parts
        base, now = fe.number(chunk)
        j = self.chunks_sent
        self.to_decoders.send(j % self.decoders, chunk_parts({"seq": j, "input": i, "base": base, "now": now}, chunk))
        self.chunks_sent += 1
        self.monitor.drain(self.metrics)
        self.check_children()
        if self.progress:
            self.draw(fe)

    def send_batches(self, fe, batch):
        sent = self.monitor.sent_rows
        for i, n in enumerate(self.to.batches(fe, batch)):
            sent[i] += n
        self.monitor.drain(self.metrics)
        self.check_children()
        if self.progress:
            self.draw(fe)

    def draw(self, fe):
        now = time.monotonic()
        if now - self.last_draw < 0.5:
            return
        self.last_draw = now
        done = self.bytes_before + (self.reader.bytes_done if self.reader else 0)
        open_sessions = sum(w["sessions_open"] for w in self.monitor.workers.values())
        line = monitor.progress_line(done, self.bytes_total, fe.stats["frames_read"], now - self.t0, open_sessions)
        sys.stderr.write("\r" + line + "\033[K")
        sys.stderr.flush()

    def wait_collector(self):
        """The collector's (or uplink's) final statistics, and those of every other capture
        process. They come over separate links into one socket, so in no set order: a
        capture process sends its figures just after its end of stream, and the
        collector may be done first (the front-end figures then missed that process's
        frames)."""
        final = None
        while final is None or len(self.captures) < self.frontends - 1 + self.decoders:
            while not self.control.poll(500):
                self.check_children()
            kind, body = self.control.recv_multipart()
            msg = msgpack.unpackb(body, strict_map_key=False)
            if kind == wire.MSG_CAPTURE:
                self.captures.append(msg)
                if self.decoders and len(self.captures) == self.decoders:
                    self.to.end_msg = msgpack.packb({"now": self.fe.now})   # for a worker restarted now
            elif "error" in msg:            # an output failed: the collector says why, and exits
                self.collector_failed = msg
                raise RunError(None)
            else:
                final = msg
        if self.decoders:                   # the workers are done: nothing the processes sent is in flight
            from .decoders import MSG_QUIT
            for k in range(self.decoders):
                self.to_decoders.send(k, [MSG_QUIT])
        return final

    def failed_stats(self, fe, error, elapsed) -> dict:
        """--stats-json of a run that failed: the figures so far, what the collector
        wrote (it reports them before it exits on a failed output), and `error`."""
        cstats = self.collector_failed or {}
        control = getattr(self, "control", None)
        while not cstats and control is not None and control.poll(200):
            kind, body = control.recv_multipart()
            if kind == wire.MSG_STATS:
                cstats = msgpack.unpackb(body, strict_map_key=False)
        stats = dict(fe.stats, capture_damage=self.damage, elapsed_s=round(elapsed, 3),
                     interrupted=self.stopping, worker_restarts=self.restarts, sessions_lost=self.sessions_lost)
        for k in ("records", "final_records", "outputs", "output_issues"):
            if k in cstats:
                stats[k] = cstats[k]
        stats["error"] = error or cstats.get("error") or "a process of the run failed"
        return stats

    def stop_signal(self, signum, _frame):
        """SIGINT / SIGTERM: stop reading; every open session is still written ("shutdown").
        A second signal, or no orderly end within STOP_GRACE, kills the children."""
        if self.stopping:
            self.stop_deadline = 0.0
            return
        _log(f"{signal.Signals(signum).name}: stopping, writing every open session")
        notify.notify("STOPPING=1")
        self.stopping = True
        self.stop_deadline = time.monotonic() + STOP_GRACE

    def stop(self):
        if self.children_watch is not None:
            self.metrics.disable_monitor()
            self.children_watch.close(0)
        for srv in self.servers:
            srv.shutdown()
        self.metrics.close(0)
        self.to.close(0)
        if self.decoders:
            self.to_decoders.close(0)
        self.control.close(0)
        self.ctx.term()
        for _, p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self):
        for srv in self.servers:
            srv.shutdown()
        for _, p in self.procs:
            if p.is_alive():
                p.kill()
        for _, p in self.procs:
            p.join(5)
        shutil.rmtree(getattr(self, "dir", ""), ignore_errors=True)


def start(args, timeouts) -> int:
    refusal = _unreadable(args)
    if refusal:
        _log(f"error: {refusal}")
        return 2
    tune_heap()                            # before any child is forked: they inherit it
    try:
        readers, live, cap = _open_inputs(args)
    except (CaptureError, OSError, ValueError) as e:
        _log(f"error: {e}")
        return 2
    run = Run(args, timeouts, live)
    run.inputs = [r.data for r in readers]
    signal.signal(signal.SIGINT, run.stop_signal)
    signal.signal(signal.SIGTERM, run.stop_signal)
    t0 = time.monotonic()
    fe = FrontEnd(args.workers, timeouts, seed=args.hash_seed, classify_budget=args.classify_packets,
                  vlan_key=args.vlan_key, teredo_any_port=args.teredo_heuristic)
    run.fe, run.fe_stats = fe, fe.stats
    try:
        cstats = _capture(run, readers, cap, fe)
    except RunError as e:
        run.abort()
        if e.args[0]:
            _log(f"error: {e}")
        if args.stats_json:
            write_stats(args.stats_json, run.failed_stats(fe, e.args[0], time.monotonic() - t0))
        return 1
    run.stop()
    elapsed = time.monotonic() - t0
    stats = _final_stats(run, fe, cstats, elapsed)
    if args.stats_json and not write_stats(args.stats_json, stats):
        return 1
    if not args.quiet:
        _log(_summary(stats, elapsed, args.workers))
    return 0


def _unreadable(args) -> str:
    """With --user: the files the children will open as that user and could not read, said
    before any starts; "" when none."""
    if not args.user:
        return ""
    cannot = unreadable_for(args.user, loaded_files(CHILD_MODULES))
    if cannot:
        return (f"--user {args.user} cannot read {cannot}: the processes would fail at their next "
                f"import; install the pipeline where {args.user} can read it (docs/deploy.md)")
    dbs = [path for path in (getattr(args, "enrich", None) or {}).values() if isinstance(path, str)]
    cannot = unreadable_for(args.user, dbs) if dbs else ""
    if cannot:
        return f"--user {args.user} cannot read {cannot}: the collector opens its databases as that user"
    return ""


def _open_inputs(args):
    """The capture files, mapped, or the live capture's sockets: (readers, live settings, capture)."""
    readers = [open_capture(path) for path in args.read]
    if not args.interface:
        return readers, None, None
    live = {"interfaces": args.interface, "ring_mb": args.ring_mb, "snaplen": args.snaplen,
            "promisc": not args.no_promisc, "bpf": args.bpf,
            "fanout": (os.getpid() % 60000) if args.capture_procs > 1 else None}
    from . import capture  # live capture only: its modules stay out of offline start-up
    return readers, live, capture.open_live(live)


def _capture(run, readers, cap, fe) -> dict:
    """Start the children, read to the end of the input (or the stop signal) and return the
    collector's final figures."""
    args = run.args
    run.start()
    if cap is None:
        run.ready()
        run.feed(readers, fe)
        return run.wait_collector()
    if args.user:
        try:
            from contracts.children import drop_privileges
            drop_privileges(args.user)
        except OSError as e:
            raise RunError(str(e)) from None
    run.ready()
    if not args.quiet:
        _log(f"capturing on {', '.join(args.interface)} "
             f"({monitor.counted(run.frontends, 'capture process', 'capture processes')}, "
             f"{monitor.counted(args.workers, 'worker')})")
    run.feed_live(cap, fe)
    return run.wait_collector()


def _final_stats(run, fe, cstats, elapsed) -> dict:
    """--stats-json of a run that ended: the front-end's figures with every capture process's
    added, then the workers' and the collector's (the keys' order is the file's)."""
    stats = dict(fe.stats)
    if run.decoders:
        stats["captures"] = sorted(({"proc": c["proc"], "frames": c["frames"]} for c in run.captures),
                                   key=lambda c: c["proc"])
    else:
        stats["captures"] = [{"proc": 0, "frames": fe.stats["frames_read"]}] + \
            [{"proc": c["proc"], "frames": c["stats"]["frames_read"]} for c in run.captures]
    for c in run.captures:                      # capture processes 1..K-1
        for k, v in c["stats"].items():
            stats[k] += v
        fe.extra.update(c["extra"])
    workers = cstats["workers"]
    stats["sessions"] = sum(w["sessions"] for w in workers)
    stats["records"] = cstats["records"]
    stats["final_records"] = cstats["final_records"]
    for key in WORKER_TOTALS:
        stats[key] = sum(w.get(key, 0) for w in workers)
    stats["capture_damage"] = run.damage
    stats["elapsed_s"] = round(elapsed, 3)
    stats["interrupted"] = run.stopping
    stats["workers"] = [{"worker": w["worker"], "frames": w["events"], "sessions": w["sessions"],
                         "records": w["records"], **{k: w.get(k, 0) for k in WORKER_TOTALS},
                         "max_rss_bytes": w.get("max_rss_bytes")} for w in workers]
    stats["outputs"] = cstats["outputs"]
    stats["output_issues"] = cstats.get("output_issues", {})
    stats["worker_restarts"] = run.restarts
    stats["sessions_lost"] = run.sessions_lost
    # frames of sessions that died with a worker: never in a final record
    stats["frames_lost"] = stats["frames_ip"] - cstats.get("frames_in_records", stats["frames_ip"])
    if getattr(run, "pinned", None):
        stats["cpus"] = run.pinned
    stats["cpu"] = _cpu(run, cstats, stats["frames_read"])
    stats["detail"] = dict(sorted(fe.extra.items()))
    return stats


def _cpu(run, cstats, frames: int) -> dict:
    """CPU seconds of each process of the run (user + system, its threads included), as each
    measured itself at its end: the supervisor (offline: the reader, and with one front-end
    the front-end too; live: capture process 0), the other capture processes, the workers,
    the collector (with --collector: the uplink; the remote collector's is its own); their
    total and microseconds a frame. CPU per frame from one run, where the peers are compared
    (docs/benchmarks.md). A worker restarted after a crash counts from its restart: what the
    dead one spent is not known. A failed run's statistics have no `cpu`."""
    caps = sorted(({"proc": c["proc"], "cpu_s": c["cpu_s"]} for c in run.captures if "cpu_s" in c),
                  key=lambda c: c["proc"])
    workers = [{"worker": w["worker"], "cpu_s": w["cpu_s"]} for w in cstats["workers"] if "cpu_s" in w]
    own, col = cpu_seconds(), cstats.get("cpu_s", 0.0)
    total = own + col + sum(c["cpu_s"] for c in caps) + sum(w["cpu_s"] for w in workers)
    return {"supervisor_s": own, "captures": caps, "workers": workers, "collector_s": col,
            "total_s": round(total, 3), "us_per_frame": round(total * 1e6 / frames, 3) if frames else None}


def _summary(stats, elapsed, workers) -> str:
    rate = stats["frames_read"] / elapsed if elapsed > 0 else 0
    n = monitor.counted
    return (f"{n(stats['frames_read'], 'frame')} ({stats['frames_ip']} ip, {stats['frames_non_ip']} non-ip, "
            f"{stats['frames_malformed']} malformed, {stats['frames_unassembled']} unassembled) -> "
            f"{n(stats['sessions'], 'session')}, {n(stats['records'], 'record')} in {elapsed:.2f}s "
            f"({rate:,.0f} frames/s, {n(workers, 'worker')})")
