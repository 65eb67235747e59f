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

from contracts import link, monitor, wire
from contracts.children import write_stats

from . import checks
from .journal import Journal
from .outputs import OutputError
from .sink import Sink


def _log(msg: str) -> None:
    print(f"pipeline: {msg}", file=sys.stderr, flush=True)


def serve(args) -> int:
    stopping = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        link.check_address(args.listen, "--listen")
        journal = Journal(args.state_dir) if args.state_dir else Journal(None)
        # a standalone collector appends: it may be a restart of one that wrote the same files
        sink = Sink(args.output or ["jsonl:-"], args.aggregate_interval, append=True)
    except (link.LinkError, OutputError, OSError) as e:
        _log(f"error: {e}")
        return 2
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, link.MAX_MESSAGE + 8192)
    auth = None
    try:
        if args.curve_server_cert or args.curve_clients:
            if not (args.curve_server_cert and args.curve_clients):
                raise link.LinkError("CURVE needs both --curve-server-cert and --curve-clients")
            auth = link.server_curve(ctx, sock, args.curve_server_cert, args.curve_clients)
        elif not link.is_loopback(args.listen):
            _log(f"WARNING: listening on {args.listen} WITHOUT encryption or authentication: anyone who can "
                 "reach it can send records. Use --curve-server-cert and --curve-clients.")
        sock.bind(args.listen)
    except (link.LinkError, zmq.ZMQError) as e:
        _log(f"error: --listen {args.listen}: {e}")
        sink.close_quietly()
        journal.close()
        sock.close(0)
        if auth is not None:
            auth.stop()         # else its thread keeps the process alive
        ctx.term()
        return 2
    mon = monitor.Monitor(0, role="collector")
    mon.add_process("collector", os.getpid())
    servers = []
    try:
        if args.metrics_port is not None:
            servers.append(monitor.serve_metrics(mon, args.metrics_port, args.metrics_addr)[0])
    except OSError as e:
        _log(f"error: --metrics-port {args.metrics_port}: {e.strerror or e}")
        sink.close_quietly()
        return 2
    srv = monitor.serve_status(mon, args.status_socket or monitor.default_socket("collector"))
    if srv is not None:
        servers.append(srv)
    for path, nbytes in journal.truncate_outputs(sink.outs):
        _log(f"warning: {path}: cut {nbytes} bytes of a batch the last collector did not finish")
    for o in sink.outs:
        if getattr(getattr(o, "file", None), "repaired", 0):
            _log(f"warning: {o.file.path}: cut a half line of {o.file.repaired} bytes at its end")
    if journal.unclean and sink.agg is not None:
        _log("warning: the last collector did not end in order: the aggregates it still held are lost, "
             "and sessions it had interim records of are counted in full again")
    counts = {"batches": 0, "duplicates": 0, "rejected": 0}
    kill_after = _test_kill_after()
    sensors = {}
    t0 = time.monotonic()
    rc = 0
    try:
        while not stopping:
            if not sock.poll(200):
                continue
            parts = sock.recv_multipart()
            if len(parts) != 4 or parts[1] != wire.MSG_RECORDS:
                counts["rejected"] += 1
                continue
            ident, _, raw_hdr, body = parts
            try:
                h = link.unpack_header(raw_hdr)
            except Exception:  # untrusted bytes: any failure to decode is a bad message
                counts["rejected"] += 1
                continue
            ack = {"run": h["run"], "seq": h["seq"], "ok": True}
            if journal.seen(h["sensor"], h["run"], h["seq"]):
                counts["duplicates"] += 1
            else:
                try:
                    recs = checks.unpack_records(body, h["sensor"])
                except Exception as e:  # untrusted bytes, as above
                    counts["rejected"] += 1
                    _log(f"warning: refused batch {h['seq']} from sensor {h['sensor']!r}: {e}")
                    ack["ok"] = False
                else:
                    journal.begin(h["sensor"], h["run"], h["seq"], sink.outs)
                    sink.write(recs)
                    sink.flush()
                    if counts["batches"] + 1 == kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)     # test hook: written, not committed
                    journal.commit()
                    counts["batches"] += 1
                    sensors[h["sensor"]] = sensors.get(h["sensor"], 0) + len(recs)
            sock.send_multipart([ident, wire.MSG_ACK, _packb(ack)])
            mon.collector = dict(sink.stats(), **counts)
        sink.close()
        journal.close(clean=True)
    except OSError as e:
        _log(f"error: {e}")
        sink.close_quietly()
        counts["error"] = str(e)        # in --stats-json, as `pipeline start` has it
        rc = 1
    finally:
        for srv in servers:
            srv.shutdown()
        journal.close()
        sock.close()
        if auth is not None:
            auth.stop()
        ctx.term()
    stats = dict(sink.stats(), **counts, sensors=sensors, elapsed_s=round(time.monotonic() - t0, 3))
    if args.stats_json and not write_stats(args.stats_json, stats):
        return 1
    if not args.quiet:
        _log(f"collector: {stats['records']} records from {len(sensors)} sensors "
             f"({counts['duplicates']} duplicate and {counts['rejected']} rejected batches)")
    return rc


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
