"""`pipeline collector`: the standalone collector that many sensors feed over the network.

A ROUTER socket takes record batches from sensors (`contracts.wire`: R/A
messages), drops those already written (by sensor, run and batch number; with
`--state-dir` this survives a restart, see `collector.journal`), writes the
rest through the same `Sink` as a sensor's own collector, and acknowledges
each batch once it is in every output. It runs until SIGINT/SIGTERM, then
closes its outputs and writes --stats-json.
"""
import os
import signal
import sys
import time

import zmq

from contracts import link, monitor, notify, wire
from contracts.children import write_stats

from . import checks
from .enrich import EnrichError, Enricher, options
from .journal import Journal
from .outputs import OutputError
from .sink import Sink


def _log(msg: str) -> None:
    print(f"pipeline: {msg}", file=sys.stderr, flush=True)


MAX_SENSORS = 1024          # sensors with figures of their own; the name is the peer's word
OTHERS = "(others)"         # where the batches of the names beyond those are counted


class Tally:
    """What the collector has taken, in all and per sensor: for status, /metrics and
    --stats-json. Changed under the monitor's lock: its threads read it any time."""

    def __init__(self, mon):
        self.mon = mon
        self.counts = {"batches": 0, "duplicates": 0, "rejected": 0}
        self.sensors = {}           # name -> records, batches, duplicates, rejected, last_seen (Unix time)
        self.handshakes = 0         # failed for a protocol reason (no CurveZMQ, a wrong server key)

    def add(self, sensor, what: str, records: int = 0) -> None:
        with self.mon.lock:
            self.counts[what] += 1
            if sensor is None:
                return              # no header to name it by
            s = self.sensors.get(sensor)
            if s is None:
                if len(self.sensors) >= MAX_SENSORS:
                    sensor = OTHERS
                s = self.sensors.setdefault(sensor, {"records": 0, "batches": 0, "duplicates": 0, "rejected": 0,
                                                     "last_seen": 0.0})
            s[what] += 1
            s["records"] += records
            s["last_seen"] = round(time.time(), 3)

    def figures(self, sink, gate) -> dict:
        return dict(sink.stats(), **self.counts, curve_refused=gate.refused if gate else 0,
                    handshake_failed=self.handshakes)

    def publish(self, sink, gate) -> None:
        figures = self.figures(sink, gate)
        with self.mon.lock:
            self.mon.collector = dict(figures, sensors=self.sensors)


def _handshake_line(kind: str, listen: str, curve: bool) -> str:
    """What a failed handshake at the collector means (ZeroMQ's monitor gives no peer address;
    a refused key is said by the CurveGate, with it)."""
    if kind == "mechanism" and curve:
        return f"a peer connected to {listen} without CurveZMQ (a sensor without --curve-client-cert?)"
    if kind == "mechanism":
        return (f"a peer connected to {listen} with CurveZMQ, which this collector does not use "
                "(give it --curve-server-cert and --curve-clients)")
    if kind == "crypto":
        return (f"a CurveZMQ handshake on {listen} failed (cryptographic error: a sensor whose "
                "--curve-server-cert is not this collector's public key?)")
    return f"a handshake on {listen} failed (not the ZeroMQ protocol: is a sensor's --collector this address?)"


class _Link:
    """The ROUTER socket the sensors connect to, the monitor of its failed handshakes and,
    with CurveZMQ, the gate that checks each sensor's key."""

    def __init__(self):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.MAXMSGSIZE, link.MAX_MESSAGE + 8192)
        self.watch = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self.gate = None

    def bind(self, args) -> None:
        if args.curve_server_cert or args.curve_clients:
            if not (args.curve_server_cert and args.curve_clients):
                raise link.LinkError("CURVE needs both --curve-server-cert and --curve-clients")
            self.gate = link.server_curve(self.ctx, self.sock, args.curve_server_cert, args.curve_clients, _log)
        elif not link.is_loopback(args.listen):
            _log(f"WARNING: listening on {args.listen} WITHOUT encryption or authentication: anyone who can "
                 "reach it can send records. Use --curve-server-cert and --curve-clients.")
        self.sock.bind(args.listen)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.watch.close(0)
        self.sock.close()
        if self.gate is not None:
            self.gate.stop()             # else its thread keeps the process alive
        self.ctx.term()


def _open_outputs(args):
    link.check_address(args.listen, "--listen")
    enricher = Enricher(**options(args))
    journal = Journal(args.state_dir) if args.state_dir else Journal(None)
    # a standalone collector appends: it may be a restart of one that wrote the same files
    sink = Sink(args.output or ["jsonl:-"], args.aggregate_interval, append=True, enricher=enricher)
    return journal, sink


def _say_repairs(journal, sink) -> None:
    """What a restart found of the last collector's unfinished work, said once at start."""
    for path, nbytes in journal.truncate_outputs(sink.outs):
        _log(f"warning: {path}: cut {nbytes} bytes of a batch the last collector did not finish")
    for o in sink.outs:
        if getattr(getattr(o, "file", None), "repaired", 0):
            _log(f"warning: {o.file.path}: cut a half line of {o.file.repaired} bytes at its end")
    if journal.unclean and sink.agg is not None:
        _log("warning: the last collector did not end in order: the aggregates it still held are lost, "
             "and sessions it had interim records of are counted in full again")


class _Batches:
    """Takes one message from a sensor: a batch written once (by sensor, run and number),
    acknowledged once it is in every output; anything else is counted as rejected."""

    def __init__(self, journal, sink, tally):
        self.journal, self.sink, self.tally = journal, sink, tally
        self.kill_after = _test_kill_after()

    def take(self, parts) -> bytes:
        """The acknowledgement to send back, or None for a message not worth one."""
        if len(parts) != 4 or parts[1] != wire.MSG_RECORDS:
            self.tally.add(None, "rejected")
            return None
        _, _, raw_hdr, body = parts
        try:
            h = link.unpack_header(raw_hdr)
        except Exception:  # untrusted bytes: any failure to decode is a bad message
            self.tally.add(None, "rejected")
            return None
        ack = {"run": h["run"], "seq": h["seq"], "ok": True}
        if self.journal.seen(h["sensor"], h["run"], h["seq"]):
            self.tally.add(h["sensor"], "duplicates")
            return _packb(ack)
        try:
            recs = checks.unpack_records(body, h["sensor"])
        except Exception as e:  # untrusted bytes, as above
            self.tally.add(h["sensor"], "rejected")
            _log(f"warning: refused batch {h['seq']} from sensor {h['sensor']!r}: {e}")
            ack["ok"] = False
            return _packb(ack)
        self.journal.begin(h["sensor"], h["run"], h["seq"], self.sink.outs)
        self.sink.write(recs)
        self.sink.flush()
        if self.tally.counts["batches"] + 1 == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)     # test hook: written, not committed
        self.journal.commit()
        self.tally.add(h["sensor"], "batches", len(recs))
        return _packb(ack)


def _loop(args, lk: _Link, batches: _Batches, stopping: list) -> None:
    """Until SIGINT/SIGTERM: take batches, answer each, and say failed handshakes once per
    episode."""
    tally, sink = batches.tally, batches.sink
    said = link.Episodes()
    poller = zmq.Poller()
    poller.register(lk.sock, zmq.POLLIN)
    poller.register(lk.watch, zmq.POLLIN)
    watchdog = notify.Watchdog()
    notify.notify(f"READY=1\nSTATUS=listening on {args.listen}")     # systemd: started (Type=notify)
    while not stopping:
        watchdog.ping()
        ready = dict(poller.poll(200))
        if lk.watch in ready:
            for kind in link.handshake_events(lk.watch):
                tally.handshakes += 1
                if said.new(kind):
                    _log(f"warning: {_handshake_line(kind, args.listen, lk.gate is not None)} (said once while "
                         "it goes on)")
            tally.publish(sink, lk.gate)
        if lk.sock not in ready:
            continue
        parts = lk.sock.recv_multipart()
        ack = batches.take(parts)
        if ack is not None:
            lk.sock.send_multipart([parts[0], wire.MSG_ACK, ack])
        tally.publish(sink, lk.gate)
    notify.notify("STOPPING=1")


def _servers(args, mon) -> list:
    """/metrics (when asked for) and the status socket; OSError when the port is taken."""
    servers = []
    if args.metrics_port is not None:
        servers.append(monitor.serve_metrics(mon, args.metrics_port, args.metrics_addr)[0])
    srv = monitor.serve_status(mon, args.status_socket or monitor.default_socket("collector"))
    if srv is not None:
        servers.append(srv)
    return servers


def serve(args) -> int:
    stopping = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        journal, sink = _open_outputs(args)
    except (link.LinkError, OutputError, OSError, EnrichError) as e:
        _log(f"error: {e}")
        return 2
    lk = _Link()
    mon = monitor.Monitor(0, role="collector")
    where = f"--listen {args.listen}"
    try:
        lk.bind(args)
        where = f"--metrics-port {args.metrics_port}"
        mon.add_process("collector", os.getpid())
        servers = _servers(args, mon)
    except (link.LinkError, zmq.ZMQError, OSError) as e:
        _log(f"error: {where}: {getattr(e, 'strerror', None) or e}")
        sink.close_quietly()
        journal.close()
        lk.close()
        return 2
    _say_repairs(journal, sink)
    tally = Tally(mon)
    tally.publish(sink, lk.gate)
    t0 = time.monotonic()
    error = None
    try:
        _loop(args, lk, _Batches(journal, sink, tally), stopping)
        sink.close()
        journal.close(clean=True)
    except OSError as e:
        _log(f"error: {e}")
        sink.close_quietly()
        error = str(e)
    finally:
        for srv in servers:
            srv.shutdown()
        journal.close()
        lk.close()
    return _finish(args, tally, sink, lk.gate, time.monotonic() - t0, error)


def _finish(args, tally, sink, gate, elapsed: float, error) -> int:
    """--stats-json and the summary line; 1 when the outputs failed or the stats could not
    be written."""
    counts = tally.counts
    sensors = {name: s["records"] for name, s in tally.sensors.items() if s["batches"]}
    stats = dict(tally.figures(sink, gate), sensors=sensors, per_sensor=tally.sensors,
                 elapsed_s=round(elapsed, 3))
    if error is not None:
        stats["error"] = error          # in --stats-json, as `pipeline start` has it
    if args.stats_json and not write_stats(args.stats_json, stats):
        return 1
    if not args.quiet:
        n = monitor.counted
        _log(f"collector: {n(stats['records'], 'record')} from {n(len(sensors), 'sensor')} "
             f"({n(counts['duplicates'], 'duplicate batch', 'duplicate batches')}, "
             f"{n(counts['rejected'], 'rejected batch', 'rejected batches')})")
    return 1 if error is not None else 0


def _test_kill_after() -> int:
    """PIPELINE_TEST_KILL_AFTER_BATCHES=N (tests only): SIGKILL this collector right after it
    has written its N-th batch and before the journal commits it, the moment a restart
    must repair (tests/test_collector.py)."""
    try:
        return int(os.environ.get("PIPELINE_TEST_KILL_AFTER_BATCHES", "0"))
    except ValueError:
        return 0


def _packb(d) -> bytes:
    import msgpack
    return msgpack.packb(d)
