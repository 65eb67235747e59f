"""Live capture (`--interface`): the capture loop, and the extra capture processes
of `--capture-procs K`.

Each capture process opens its own AF_PACKET ring in one PACKET_FANOUT group
(hash mode: a flow's frames all reach the same process, in order), runs its
own front-end (`proc` = its number, so session ids and proto_path ids never
clash) and pushes to the same N workers; the workers end when every capture
process has sent its end of stream. Time is the wall clock: while the link is
idle every worker still gets a tick each second, so sessions expire and interim
reports go out on time (NFStream and MMT only advance time with packets).
Kernel drops are read at the end and counted in frames_dropped (and in
frames_read: a frame the kernel dropped was still read off the wire).
"""
import os
import signal
import time

import msgpack
import zmq

from contracts import wire
from contracts.children import CollectPacer, connect_local, cpu_seconds, drop_privileges, fail, title

from .dispatch import ToWorkers
from .frontend.core import FrontEnd
from .frontend.live import LiveCapture
from .frontend.readers import CaptureError

TICK_S = 1.0
MSG_CAPTURE, MSG_READY = wire.MSG_CAPTURE, wire.MSG_READY


def open_live(cfg: dict) -> LiveCapture:
    return LiveCapture(cfg["interfaces"], ring_mb=cfg["ring_mb"], snaplen=cfg["snaplen"],
                       promisc=cfg["promisc"], bpf=cfg["bpf"], fanout_group=cfg["fanout"])


def feed_live(cap, fe, send_batches, stop, check=lambda: None) -> None:
    """Chunks from the ring to the workers until stop(); an idle tick every second."""
    last = 0.0
    with CollectPacer() as pacer:
        for chunk in cap.chunks(stop):
            pacer.tick()
            if len(chunk):
                send_batches(fe, fe.process(chunk))
            now = time.time()
            if now - last >= TICK_S:
                send_batches(fe, fe.idle(now))
                last = now
            check()
    k = cap.stats()
    fe.stats["frames_dropped"] += k["dropped"]
    fe.stats["frames_read"] += k["dropped"]
    cap.close()


def capture_child(proc: int, cfg: dict) -> None:
    """Capture process `proc` (1..K-1; the supervisor itself is capture process 0)."""
    title(f"pipeline: capture {proc}")
    parent = os.getppid()
    stopping = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the supervisor says when (SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        cap = open_live(cfg)
        if cfg.get("user"):
            drop_privileges(cfg["user"])
    except (CaptureError, OSError, ValueError) as e:
        fail(str(e))
    fe = FrontEnd(cfg["workers"], cfg["timeouts"], seed=cfg["hash_seed"], proc=proc,
                  classify_budget=cfg["classify"], vlan_key=cfg["vlan_key"], teredo_any_port=cfg["teredo_any_port"])
    ctx = zmq.Context()

    def orphaned():
        if os.getppid() != parent:
            os._exit(1)

    to = ToWorkers(ctx, cfg["worker_addrs"], orphaned)
    control = ctx.socket(zmq.PUSH)
    control.setsockopt(zmq.LINGER, -1)
    connect_local(control, cfg["control_addr"])
    control.send_multipart([MSG_READY, msgpack.packb(proc)])   # in the fanout group: traffic is shared now
    deadline = cfg["deadline"]
    feed_live(cap, fe, lambda fe, batch: to.batches(fe, batch), lambda: bool(stopping) or time.time() >= deadline)
    to.batches(fe, fe.finish())
    to.end(fe)
    control.send_multipart([MSG_CAPTURE, msgpack.packb({"proc": proc, "stats": fe.stats,
                                                        "extra": dict(fe.extra), "cpu_s": cpu_seconds()})])
    to.close()
    control.close()
    ctx.term()
