"""The sensor's uplink to a remote collector (`--collector`): takes the place of the
run's own collector process.

Workers push record batches to it exactly as they would to a local collector;
it numbers each batch (run id, seq), keeps it in the spool until the remote
collector acknowledges it, and re-sends what stays unacknowledged. The
collector drops batches it has already written, so a record reaches the
output once even when a collector restarts. At end of stream it waits until
everything is acknowledged, saying every 10 s what it is waiting for; with
--spool-dir, what is still unacknowledged a second after the end goes to disk,
so a sensor stopped then (its children killed) leaves it to the next run.
"""
import os
import sys
import time
import uuid

import msgpack
import zmq

from contracts import link
from contracts import wire
from contracts.record import INDEX
from contracts.monitor import MetricsSender, counted
from contracts.children import collector_sockets, fail
from pipeline.spool import Spool

WINDOW = 32          # batches sent and not yet acknowledged
RESEND_S = 5.0       # re-send a batch unacknowledged for this long
SPILL_AFTER_S = 1.0  # with --spool-dir, at end of stream: unacknowledged this long, it all goes to disk
REFUSED_RETRY_S = 5.0   # connect again this long after the collector refused the handshake
# ZeroMQ gives up an endpoint for good after a handshake that fails on a protocol error (a
# refused key, CurveZMQ on one side only): without a connect of our own, a sensor refused
# once waited forever, even after the collector was given its key and restarted.
GIVES_UP = {"auth", "mechanism", "crypto", "protocol"}
_FINAL, _PARENT, _CAP = INDEX["final"], INDEX["parent_session_id"], INDEX["cap_packet_count"]


def _log(msg: str) -> None:
    print(f"pipeline: {msg}", file=sys.stderr, flush=True)


def handshake_line(kind: str, cfg: dict) -> str:
    """What a failed handshake with the collector means, in one line ('' where a
    connection that closes says nothing: a collector restarting)."""
    addr, cert = cfg["collector"], cfg.get("curve_client_cert")
    if kind == "auth":
        name = os.path.basename(cert or "NAME").removesuffix(".key_secret")
        return (f"uplink: the collector at {addr} refused this sensor's key (CurveZMQ): is {name}.key in its "
                "--curve-clients?")
    if kind == "mechanism" and cert:
        return (f"uplink: the collector at {addr} does not use CurveZMQ and this sensor does: give the collector "
                "--curve-server-cert and --curve-clients")
    if kind == "mechanism":
        return (f"uplink: the collector at {addr} requires CurveZMQ: give this sensor --curve-client-cert and "
                "--curve-server-cert (docs/deploy.md)")
    if kind in ("crypto", "closed") and cert:
        return (f"uplink: the collector at {addr} dropped the CurveZMQ handshake: is --curve-server-cert "
                f"{cfg['curve_server_cert']} its public key?")
    if kind == "protocol":
        return f"uplink: the handshake with {addr} failed (not the ZeroMQ protocol): is it a `pipeline collector`?"
    return ""


def run(cfg: dict) -> None:
    parent, ctx, pull, control = collector_sockets(cfg, "pipeline: uplink", 64)
    up = ctx.socket(zmq.DEALER)
    up.setsockopt(zmq.IMMEDIATE, 1)        # queue only on a live connection; the spool keeps the rest
    up.setsockopt(zmq.LINGER, 0)
    up.setsockopt(zmq.SNDHWM, WINDOW * 2)
    up.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    watch = up.get_monitor_socket(link.HANDSHAKE_EVENTS)      # why a reachable collector does not take us
    told = ""                       # the failure said last: once per episode, a handshake ends it
    retry_at = 0.0                  # when to connect again after ZeroMQ gave the endpoint up
    try:
        if cfg.get("curve_client_cert"):
            link.client_curve(up, cfg["curve_client_cert"], cfg["curve_server_cert"])
        spool = Spool(cfg.get("spool_dir"), cfg.get("spool_mem_bytes", 64 << 20),
                      cfg.get("spool_disk_bytes", 1 << 30))
    except (link.LinkError, OSError) as e:
        fail(str(e))
    up.connect(cfg["collector"])
    addr = cfg["collector"]
    run_id = uuid.uuid4().hex[:16]
    sensor = cfg["sensor"]
    if len(spool):
        _log(f"uplink: {counted(len(spool), 'batch', 'batches')} left in the spool by an earlier run: "
             "sending them first")
    seq = records = finals = delivered = refused = frames = 0
    sizes = {}                      # (run, seq) -> records in the batch (this run's batches)
    done = {}
    poller = zmq.Poller()
    poller.register(up, zmq.POLLIN)
    poller.register(watch, zmq.POLLIN)
    taking = False
    metrics = MetricsSender(ctx, cfg.get("metrics_addr"))
    waited_since = None
    last_note = 0.0
    while len(done) < cfg["workers"] or len(spool):
        want_more = len(done) < cfg["workers"] and not spool.full()
        if want_more != taking:
            (poller.register if want_more else poller.unregister)(pull, *((zmq.POLLIN,) if want_more else ()))
            taking = want_more
        events = dict(poller.poll(200))
        if os.getppid() != parent:
            raise SystemExit(1)
        if events.get(watch):
            for kind in link.handshake_events(watch):
                if kind == "ok" and told:
                    _log(f"uplink: the collector at {addr} accepts this sensor now")
                    told = ""
                elif kind != "ok" and kind != told and handshake_line(kind, cfg):
                    _log(handshake_line(kind, cfg))
                    told = kind
                if kind in GIVES_UP:
                    retry_at = time.monotonic() + REFUSED_RETRY_S
        if retry_at and time.monotonic() >= retry_at:
            retry_at = 0.0
            try:
                up.disconnect(addr)
            except zmq.ZMQError:
                pass                # already gone
            up.connect(addr)
        if events.get(pull):
            for _ in range(WINDOW):
                try:
                    parts = pull.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if parts[0] == wire.MSG_RECORDS:
                    recs = msgpack.unpackb(parts[1])
                    seq += 1
                    hdr = msgpack.packb({"sensor": sensor, "run": run_id, "seq": seq})
                    spool.add((run_id, seq), hdr, parts[1])
                    sizes[(run_id, seq)] = len(recs)
                    records += len(recs)
                    for r in recs:
                        if r[_FINAL]:
                            finals += 1
                            if r[_PARENT] is None:
                                frames += r[_CAP]
                elif parts[0] == wire.MSG_DONE:
                    st = msgpack.unpackb(parts[1])
                    done[st["worker"]] = st
                if spool.full():
                    break
        while True:
            try:
                parts = up.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) != 2 or parts[0] != wire.MSG_ACK:
                continue
            try:
                a = msgpack.unpackb(parts[1], max_str_len=256, max_map_len=8, max_array_len=8)
                key = (a["run"], a["seq"])
                hash(key)
            except Exception:  # a peer speaking another protocol: ignore its message
                continue
            if spool.acked(key):
                n = sizes.pop(key, 0)
                if a.get("ok", True):
                    delivered += n
                else:
                    refused += n
                    _log(f"uplink: collector {addr} refused batch {key[1]} ({counted(n, 'record')}): see its log")
        metrics.maybe(lambda: {"records": records, "outputs": {f"collector:{addr}": delivered},
                               "spool_bytes": spool.in_memory + spool.on_disk, "spool_batches": len(spool)})
        now = time.monotonic()
        inflight = sum(1 for e in spool.pending.values() if now - e[2] < RESEND_S)
        for key in spool.due(now, RESEND_S, max(0, WINDOW - inflight)):
            try:
                up.send_multipart([wire.MSG_RECORDS, spool.pending[key][0], spool.body(key)], zmq.NOBLOCK)
            except zmq.Again:
                break                  # no live connection: the spool keeps it
            spool.sent(key, now)
        if len(done) == cfg["workers"] and len(spool):
            waited_since = waited_since or now
            if spool.in_memory and now - waited_since >= SPILL_AFTER_S:
                spool.spill_all()      # a sensor stopped while its collector is away loses nothing
            if now - last_note >= 10 and now - waited_since >= 10:
                _log(f"uplink: waiting for collector {addr}: {counted(len(spool), 'batch', 'batches')} not "
                     "acknowledged" + (" (see above: it does not accept this sensor)" if told else ""))
                last_note = now
    stats = {"records": records, "final_records": finals, "frames_in_records": frames,
             "outputs": {f"collector:{addr}": delivered}, "refused": refused,
             "spooled_batches": spool.spooled, "workers": [done[w] for w in sorted(done)]}
    control.send_multipart([wire.MSG_STATS, msgpack.packb(stats)])
    metrics.close()
    pull.close(0)
    up.disable_monitor()
    watch.close(0)
    up.close(0)
    control.close()
    ctx.term()
