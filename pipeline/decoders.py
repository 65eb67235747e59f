"""Front-end processes on capture files (`--capture-procs K`, K >= 2, with --read).

The supervisor reads the files (pipeline/supervisor.py: frame numbers, time, damage)
and sends chunk j's columns to process j mod K; each process decodes its chunks,
takes its turns in chunk order (pipeline/frontend/ring.py) and sends the rows to the
N workers, numbered, so that each worker applies them in chunk order. This module is
the ZeroMQ shell around `RingMember`:

    reader  --[b"K", head, offsets, caplen, wirelen, ts, linktype]-->  process j mod K
            --[b"Z", {"chunks": J, "now": t}]-->                       every process, at the end
    process --[b"T", {"seq", "pin"}, state]-->                         the next chunk's process
            --[b"F", head, columns...] or [b"F", {"seq", "now"}]-->    the holder of a pinned state
            --[b"B", header with "seq", rows, b""]-->                  each worker, then [b"E", ...]
            --[MSG_CAPTURE, {"proc", "stats", "extra", "frames"}]-->   the supervisor, at the end
    reader  --[b"Q"]-->                                                every process, once the workers are done

Frames are never copied: the processes are forked with the capture files mapped (as
the workers are), and a chunk's columns say where each frame is in them.
"""
import os

import msgpack
import numpy as np
import zmq

from contracts import wire
from contracts.children import CollectPacer, connect_local, cpu_seconds, ignore_stop_signals, title

from .dispatch import ToWorkers
from .frontend.core import FrontEnd
from .frontend.readers import Chunk
from .frontend.ring import RingMember

MSG_CHUNK, MSG_END_READ, MSG_TOKEN, MSG_FORWARD, MSG_QUIT = b"K", b"Z", b"T", b"F", b"Q"
COLUMNS = (("offsets", np.int64), ("caplen", np.uint32), ("wirelen", np.uint32), ("ts", np.float64),
           ("linktype", np.uint16))


def chunk_parts(head: dict, chunk) -> list:
    """The reader's message for one chunk: its header and columns (zero-copy buffers)."""
    return [MSG_CHUNK, msgpack.packb(head)] + [np.ascontiguousarray(getattr(chunk, name), dtype)
                                               for name, dtype in COLUMNS]


def _chunk(data, frames) -> Chunk:
    cols = [np.frombuffer(f.buffer, dtype) for f, (_, dtype) in zip(frames, COLUMNS)]
    return Chunk(data, *cols)


class _Shell:
    """The messages of one front-end process: what `RingMember` asks for, sent."""

    def __init__(self, k, cfg, ctx, waiting):
        self.k = k
        addrs = cfg["ring_addrs"]
        self.peers = {}
        for m, addr in enumerate(addrs):
            if m != k:
                s = ctx.socket(zmq.PUSH)
                s.setsockopt(zmq.LINGER, -1)
                connect_local(s, addr)
                self.peers[m] = s
        self.to = ToWorkers(ctx, cfg["worker_addrs"], waiting)

    def token(self, to, seq, pin, state):
        self.peers[to].send_multipart([MSG_TOKEN, msgpack.packb({"seq": seq, "pin": pin}), state or b""], copy=False)

    def forward(self, to, seq, raw, now):
        if raw is None:
            raw = [MSG_FORWARD, msgpack.packb({"seq": seq, "now": now})]
        else:
            raw = [MSG_FORWARD] + raw[1:]
        self.peers[to].send_multipart(raw, copy=False)

    def batch(self, seq, head, base, batch):
        self.to.shared = head["input"] if head is not None else None
        self.to.batches(self.fe, batch, seq=seq, base=base)


def run(k: int, cfg: dict) -> None:
    """Front-end process k of cfg["decoders"]."""
    title(f"pipeline: capture {k}")
    parent = ignore_stop_signals()          # the reader says when: it sends the end of its stream
    K = cfg["decoders"]
    fe = FrontEnd(cfg["workers"], cfg["timeouts"], seed=cfg["hash_seed"], classify_budget=cfg["classify"],
                  vlan_key=cfg["vlan_key"], teredo_any_port=cfg["teredo_any_port"], path_base=k,
                  young_table=cfg["young_table"])
    inputs = cfg["inputs"]
    ctx = zmq.Context()

    def orphaned():
        if os.getppid() != parent:
            os._exit(1)

    reader = ctx.socket(zmq.PULL)
    reader.setsockopt(zmq.RCVHWM, 2)
    reader.bind(cfg["decoder_addrs"][k])
    ring = ctx.socket(zmq.PULL)
    ring.bind(cfg["ring_addrs"][k])
    shell = _Shell(k, cfg, ctx, orphaned)
    shell.fe = fe
    member = RingMember(k, K, fe, shell)
    poller = zmq.Poller()
    poller.register(ring, zmq.POLLIN)
    with CollectPacer() as pacer:
        while not member.done:
            reading = member.total is None and member.room()
            if reading:
                poller.register(reader, zmq.POLLIN)
            ready = dict(poller.poll(1000))
            if reading:
                poller.unregister(reader)
            if not ready:
                orphaned()
                continue
            if ready.get(ring):
                parts = ring.recv_multipart(copy=False)
                kind, head = parts[0].bytes, msgpack.unpackb(parts[1].bytes)
                if kind == MSG_TOKEN:
                    member.token(head["seq"], head["pin"], parts[2].bytes if head["pin"] is None else None)
                else:
                    pacer.tick()
                    member.forwarded(head, _chunk(inputs[head["input"]], parts[2:]) if len(parts) > 2 else None)
            elif ready.get(reader):
                parts = reader.recv_multipart(copy=False)
                head = msgpack.unpackb(parts[1].bytes)
                if parts[0].bytes == MSG_END_READ:
                    member.end(head["chunks"], head["now"])
                else:
                    pacer.tick()
                    member.own(head, _chunk(inputs[head["input"]], parts[2:]), parts)
    fe.now = member.end_now
    shell.to.end(fe)
    control = ctx.socket(zmq.PUSH)
    control.setsockopt(zmq.LINGER, -1)
    connect_local(control, cfg["control_addr"])
    control.send_multipart([wire.MSG_CAPTURE, msgpack.packb({"proc": k, "stats": fe.stats, "extra": dict(fe.extra),
                                                             "frames": member.frames, "cpu_s": cpu_seconds()})])
    # Stay until the reader says the run is over: a process that exits while a worker has not
    # yet read what it sent (the worker's queue full, its reading paused) can lose the last
    # messages (seen: batches and ends of stream never arrived, on a short capture).
    while True:
        if reader.poll(1000) and reader.recv_multipart()[0] == MSG_QUIT:
            break
        orphaned()
    control.close()
    shell.to.close()
    for s in shell.peers.values():
        s.close()
    reader.close(0)
    ring.close(0)
    ctx.term()
