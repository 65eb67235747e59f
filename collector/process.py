"""The collector process: pulls record batches from every worker, writes them out.

It knows how many workers feed it and ends when each has said it is done;
then it closes (and fsyncs) its outputs and reports to the supervisor, so a run
exits only once every record is on disk. An output that fails (a disk full)
ends the run: the collector still reports what it wrote, with the error, so
that the supervisor writes --stats-json, then says why in one line.
"""
import os
import sys

import msgpack

from contracts import wire
from contracts.monitor import MetricsSender
from contracts.children import SAID_WHY, CollectPacer, collector_sockets, cpu_seconds, fail, wait_message

from . import outputs
from .enrich import EnrichError, Enricher
from .sink import Sink


def records(body: bytes) -> list:
    """A workers' batch of records (msgpack); a plugin's aware datetime (a msgpack
    timestamp, workers.process.pack) comes back as a datetime, which the outputs write
    in ISO 8601."""
    return msgpack.unpackb(body, timestamp=3)


def run(cfg: dict) -> None:
    parent, ctx, pull, control = collector_sockets(cfg, "pipeline: collector", 256)
    try:
        sink = Sink(cfg["outputs"], cfg.get("aggregate_interval", 60.0), enricher=Enricher(**cfg.get("enrich", {})))
    except (outputs.OutputError, EnrichError) as e:
        fail(str(e))
    done = {}
    metrics = MetricsSender(ctx, cfg.get("metrics_addr"))
    pacer = CollectPacer()
    try:
        while len(done) < cfg["workers"]:
            kind, body = (f.bytes for f in wait_message(pull, parent)[:2])
            pacer.tick()
            if kind == wire.MSG_RECORDS:
                sink.write(records(body))
                metrics.maybe(sink.stats)
            elif kind == wire.MSG_DONE:
                st = msgpack.unpackb(body)
                done[st["worker"]] = st
        sink.close()
    except OSError as e:
        sink.close_quietly()
        # the line first: the supervisor ends the run (and this process) once the figures arrive
        print(f"pipeline: error: {e}", file=sys.stderr, flush=True)
        control.send_multipart([wire.MSG_STATS, msgpack.packb(dict(sink.stats(), error=str(e)))])
        metrics.close()
        pull.close(0)
        control.close(linger=2000)
        ctx.term()                      # the figures delivered (2 s at most) before the process ends
        os._exit(SAID_WHY)
    stats = dict(sink.stats(), workers=[done[w] for w in sorted(done)], cpu_s=cpu_seconds())
    control.send_multipart([wire.MSG_STATS, msgpack.packb(stats)])
    metrics.close()
    pull.close(0)
    control.close()
    ctx.term()
