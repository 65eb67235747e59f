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
from contracts.children import collector_sockets, cpu_seconds, fail
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


class Uplink:
    """One run's link: the sockets, the spool, what was sent, delivered and refused."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.parent, self.ctx, self.pull, self.control = collector_sockets(cfg, "pipeline: uplink", 64)
        up = self.up = self.ctx.socket(zmq.DEALER)
        up.setsockopt(zmq.IMMEDIATE, 1)        # queue only on a live connection; the spool keeps the rest
        up.setsockopt(zmq.LINGER, 0)
        up.setsockopt(zmq.SNDHWM, WINDOW * 2)
        up.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.watch = up.get_monitor_socket(link.HANDSHAKE_EVENTS)   # why a reachable collector does not take us
        self.told = ""                  # the failure said last: once per episode, a handshake ends it
        self.retry_at = 0.0             # when to connect again after ZeroMQ gave the endpoint up
        try:
            if cfg.get("curve_client_cert"):
                link.client_curve(up, cfg["curve_client_cert"], cfg["curve_server_cert"])
            self.spool = Spool(cfg.get("spool_dir"), cfg.get("spool_mem_bytes", 64 << 20),
                               cfg.get("spool_disk_bytes", 1 << 30))
        except (link.LinkError, OSError) as e:
            fail(str(e))
        self.addr = cfg["collector"]
        up.connect(self.addr)
        self.run_id = uuid.uuid4().hex[:16]
        self.seq = self.records = self.finals = self.delivered = self.refused = self.frames = 0
        self.sizes = {}                 # (run, seq) -> records in the batch (this run's batches)
        self.done = {}                  # worker -> its statistics
        self.metrics = MetricsSender(self.ctx, cfg.get("metrics_addr"))

    def handshakes(self) -> None:
        """Say once per episode why the collector does not take us, and connect again
        where ZeroMQ gave the endpoint up."""
        for kind in link.handshake_events(self.watch):
            if kind == "ok" and self.told:
                _log(f"uplink: the collector at {self.addr} accepts this sensor now")
                self.told = ""
            elif kind != "ok" and kind != self.told and handshake_line(kind, self.cfg):
                _log(handshake_line(kind, self.cfg))
                self.told = kind
            if kind in GIVES_UP:
                self.retry_at = time.monotonic() + REFUSED_RETRY_S

    def reconnect(self) -> None:
        self.retry_at = 0.0
        try:
            self.up.disconnect(self.addr)
        except zmq.ZMQError:
            pass                    # already gone
        self.up.connect(self.addr)

    def take(self) -> None:
        """The workers' record batches into the spool, numbered; their end-of-stream figures."""
        spool = self.spool
        for _ in range(WINDOW):
            try:
                parts = self.pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if parts[0] == wire.MSG_RECORDS:
                recs = msgpack.unpackb(parts[1])
                self.seq += 1
                hdr = msgpack.packb({"sensor": self.cfg["sensor"], "run": self.run_id, "seq": self.seq})
                spool.add((self.run_id, self.seq), hdr, parts[1])
                self.sizes[(self.run_id, self.seq)] = len(recs)
                self.records += len(recs)
                for r in recs:
                    if r[_FINAL]:
                        self.finals += 1
                        if r[_PARENT] is None:
                            self.frames += r[_CAP]
            elif parts[0] == wire.MSG_DONE:
                st = msgpack.unpackb(parts[1])
                self.done[st["worker"]] = st
            if spool.full():
                break

    def acks(self) -> None:
        """The collector's acknowledgements: the batch leaves the spool."""
        while True:
            try:
                parts = self.up.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 2 or parts[0] != wire.MSG_ACK:
                continue
            try:
                a = msgpack.unpackb(parts[1], max_str_len=256, max_map_len=8, max_array_len=8)
                key = (a["run"], a["seq"])
                hash(key)
            except Exception:  # a peer speaking another protocol: ignore its message
                continue
            if self.spool.acked(key):
                n = self.sizes.pop(key, 0)
                if a.get("ok", True):
                    self.delivered += n
                else:
                    self.refused += n
                    _log(f"uplink: collector {self.addr} refused batch {key[1]} ({counted(n, 'record')}): see its log")

    def send(self, now: float) -> None:
        """(Re)send what is due, keeping at most WINDOW batches in flight."""
        spool = self.spool
        inflight = sum(1 for e in spool.pending.values() if now - e[2] < RESEND_S)
        for key in spool.due(now, RESEND_S, max(0, WINDOW - inflight)):
            try:
                self.up.send_multipart([wire.MSG_RECORDS, spool.pending[key][0], spool.body(key)], zmq.NOBLOCK)
            except zmq.Again:
                break                  # no live connection: the spool keeps it
            spool.sent(key, now)

    def stats(self) -> dict:
        return {"records": self.records, "final_records": self.finals, "frames_in_records": self.frames,
                "outputs": {f"collector:{self.addr}": self.delivered}, "refused": self.refused,
                "spooled_batches": self.spool.spooled, "workers": [self.done[w] for w in sorted(self.done)],
                "cpu_s": cpu_seconds()}

    def close(self) -> None:
        self.metrics.close()
        self.pull.close(0)
        self.up.disable_monitor()
        self.watch.close(0)
        self.up.close(0)
        self.control.close()
        self.ctx.term()


def run(cfg: dict) -> None:
    u = Uplink(cfg)
    spool, workers = u.spool, cfg["workers"]
    if len(spool):
        _log(f"uplink: {counted(len(spool), 'batch', 'batches')} left in the spool by an earlier run: "
             "sending them first")
    poller = zmq.Poller()
    poller.register(u.up, zmq.POLLIN)
    poller.register(u.watch, zmq.POLLIN)
    taking = False
    waited_since = None
    last_note = 0.0
    while len(u.done) < workers or len(spool):
        want_more = len(u.done) < workers and not spool.full()
        if want_more != taking:
            (poller.register if want_more else poller.unregister)(u.pull, *((zmq.POLLIN,) if want_more else ()))
            taking = want_more
        events = dict(poller.poll(200))
        if os.getppid() != u.parent:
            raise SystemExit(1)
        if events.get(u.watch):
            u.handshakes()
        if u.retry_at and time.monotonic() >= u.retry_at:
            u.reconnect()
        if events.get(u.pull):
            u.take()
        u.acks()
        u.metrics.maybe(lambda: {"records": u.records, "outputs": {f"collector:{u.addr}": u.delivered},
                                 "spool_bytes": spool.in_memory + spool.on_disk, "spool_batches": len(spool)})
        now = time.monotonic()
        u.send(now)
        if len(u.done) == workers and len(spool):
            waited_since = waited_since or now
            if spool.in_memory and now - waited_since >= SPILL_AFTER_S:
                spool.spill_all()      # a sensor stopped while its collector is away loses nothing
            if now - last_note >= 10 and now - waited_since >= 10:
                _log(f"uplink: waiting for collector {u.addr}: {counted(len(spool), 'batch', 'batches')} not "
                     "acknowledged" + (" (see above: it does not accept this sensor)" if u.told else ""))
                last_note = now
    u.control.send_multipart([wire.MSG_STATS, msgpack.packb(u.stats())])
    u.close()
