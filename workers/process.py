"""The worker process: a thin ZeroMQ shell around `workers.engine.Engine`.

It pulls keyed event batches from the front-end, feeds the engine, and pushes
the records it produces to the collector in batches; at end of stream it
flushes every open session and reports its statistics.
"""
import mmap
import resource
import sys
from functools import partial

import msgpack
import msgspec
import numpy as np
import zmq

from contracts import wire
from contracts.monitor import MetricsSender
from contracts.children import (CollectPacer, become_user, connect_local, cpu_seconds, ignore_stop_signals, title,
                               wait_message)

from . import classify
from .engine import EVICTED_BY, Engine
from .plugins import load
from .reorder import InOrder
from .table import HIGH, RECOVERY

RECORDS_PER_MESSAGE = 4096
FINISH_SLICE = 1024         # sessions ended (and sent) at a time at the end of the stream
_ENCODE = msgspec.msgpack.Encoder().encode


def pack(records) -> bytes:
    """Records as msgpack, by msgspec (a third of msgpack.packb's cost, the same bytes for
    the types records are made of). A value msgspec refuses and msgpack takes (a float or
    str subclass from a plugin: numpy.float64, numpy.str_) goes msgpack's way; values
    msgspec alone takes (datetime, set, Decimal, UUID, Enum, from a plugin) are written by
    its rules (docs/outputs.md) where msgpack.packb failed."""
    try:
        return _ENCODE(records)
    except TypeError:
        return msgpack.packb(records)


def release(data, base: int, ev) -> None:
    """Let go of the pages of the mapped capture file that the batch `ev` read payloads
    from (those wholly before its last payload byte): the kernel keeps them in its page
    cache, but mapped they counted in this worker's RSS, ~400 bytes a session for
    sessions with payload in a capture of them. A later read of one maps it again."""
    if not len(ev) or not hasattr(data, "madvise"):
        return
    end = base + int((ev["ploff"] + ev["pllen"]).max())
    lo = base - base % mmap.PAGESIZE
    hi = end - end % mmap.PAGESIZE
    if hi > lo:
        data.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def peak_rss() -> int:
    """This process's peak resident memory (the kernel's high-water mark), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Emergency:
    """Says when the worker's table enters and leaves emergency mode, one line each per
    episode (the engine only changes state and counts the episodes:
    `table.SessionTable.settle`). An episode that begins and ends inside one batch is
    seen by its count."""

    def __init__(self, index: int, eng: Engine):
        self.index, self.eng = index, eng
        self.episodes = eng.table.episodes
        self.on = eng.emergency
        self.since = None           # packet time the episode was first seen

    def check(self) -> None:
        eng, t = self.eng, self.eng.table
        if t.episodes != self.episodes:             # a new episode, over already or not
            self.episodes, self.since, self.on = t.episodes, eng.now, eng.emergency
            if eng.emergency:
                self._say(f"session table {t.occupancy:.0%} full {self._count()}: emergency mode, sessions "
                          f"without an answer now end after {t.unanswered:g} s idle (episode {t.episodes})")
            else:
                self._say(f"session table went into emergency mode and out of it within one batch "
                          f"(episode {t.episodes}); {self._evicted()}")
        elif self.on and not eng.emergency:
            self.on = False
            self._say(f"session table back to {t.occupancy:.0%} {self._count()}: emergency mode over after "
                      f"{eng.now - self.since:,.0f} s of packet time; {self._evicted()}")

    def _count(self) -> str:
        t = self.eng.table
        return f"({len(t):,} of {t.capacity:,} sessions)"

    def _evicted(self) -> str:
        st = self.eng.stats
        return "evicted so far: " + ", ".join(f"{st[k]:,} {k[len('evicted_'):]}" for k in EVICTED_BY)

    def _say(self, msg: str) -> None:
        print(f"pipeline: worker {self.index}: {msg}", file=sys.stderr, flush=True)


def _engine(index: int, cfg: dict) -> Engine:
    """Worker `index`'s engine, as the run's configuration sets it up."""
    return Engine(index, cfg["timeouts"], cfg["sensor"], cfg.get("proc", 0), cfg.get("max_sessions", 0),
                  load(cfg.get("plugins", ())), cfg.get("classify", classify.BUDGET),
                  vlan_key=cfg.get("vlan_key", True), marks=cfg.get("marks", (HIGH, RECOVERY)))


def _figures(index: int, eng: Engine) -> dict:
    """The worker's live figures (/metrics, `pipeline status`)."""
    st = eng.stats
    t = eng.table
    return {"worker": index, "frames": st["events"], "sessions_open": len(t),
            "sessions": st["sessions"], "sessions_ended": st["final_records"], "records": st["records"],
            "evicted": st["evicted"], **{k: st[k] for k in EVICTED_BY}, "drops": 0,
            "capacity": t.capacity, "occupancy": round(t.occupancy, 4), "emergency": int(t.emergency),
            "emergency_episodes": t.episodes}


def run(index: int, cfg: dict) -> None:
    title(f"pipeline: worker {index}")
    parent = ignore_stop_signals()
    become_user(cfg)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 1)
    pull.bind(cfg["worker_addrs"][index])    # every capture process connects to it
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 64)
    push.setsockopt(zmq.LINGER, -1)
    connect_local(push, cfg["collector_addr"])
    eng = _engine(index, cfg)
    emergency = Emergency(index, eng)

    def send(recs):
        for i in range(0, len(recs), RECORDS_PER_MESSAGE):
            push.send_multipart([wire.MSG_RECORDS, pack(recs[i:i + RECORDS_PER_MESSAGE])])

    def flush():
        send(eng.take_records())

    eng.sink = send                          # a long batch's records go out between its slices

    metrics = MetricsSender(ctx, cfg.get("metrics_addr"))

    figures = partial(_figures, index, eng)
    inputs = cfg.get("inputs") or []

    def apply(hdr, parts):
        if hdr.get("paths"):
            eng.add_paths(hdr["paths"])
        eng.proc = hdr.get("proc", 0)         # the capture process that numbered these frames
        ev = np.frombuffer(parts[2].buffer, dtype=wire.EVENT)
        if "input" in hdr:                    # payloads in the capture file we were forked with
            pay = memoryview(inputs[hdr["input"]])[hdr["base"]:]
        else:
            pay = parts[3].bytes if len(parts) > 3 else None
        eng.feed_batch(ev, hdr["cuts"], pay)      # one segment per second of packet time
        emergency.check()
        if "input" in hdr:
            release(inputs[hdr["input"]], hdr["base"], ev)
        flush()
        metrics.maybe(figures)

    ends, last = 0, float("-inf")
    in_order = InOrder(None if cfg.get("restarted") else 0)
    pacer = CollectPacer()
    while True:
        parts = wait_message(pull, parent)
        pacer.tick()
        kind = parts[0].bytes
        hdr = msgpack.unpackb(parts[1].bytes, strict_map_key=False)
        if kind == wire.MSG_BATCH:
            if "seq" not in hdr:                  # live, or one front-end: as it comes
                apply(hdr, parts)
                continue
            for h, p in in_order.put(hdr["seq"], (hdr, parts)):
                apply(h, p)
        elif kind == wire.MSG_END:
            ends += 1
            last = max(last, hdr["now"])
            if ends < cfg.get("frontends", 1):
                continue                          # other capture processes still send
            for h, p in in_order.rest():
                apply(h, p)
            for recs in eng.finishing(last, FINISH_SLICE):
                send(recs)
            stats = dict(eng.stats, worker=index, max_rss_bytes=peak_rss(), cpu_s=cpu_seconds())
            push.send_multipart([wire.MSG_DONE, msgpack.packb(stats)])
            break
    metrics.close()
    pull.close(0)
    push.close()
    ctx.term()
