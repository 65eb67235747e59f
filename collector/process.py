"""The collector process: pulls record batches from every worker, writes them out.

It knows how many workers feed it and ends when each has said it is done;
then it closes (and fsyncs) its outputs and reports to the supervisor, so a run
exits only once every record is on disk.
"""
import os
import sys

import msgpack
import zmq

from pipeline import wire
from pipeline.children import ignore_stop_signals, title, wait_message

from . import outputs
from .merge import Merger


def _fail(msg: str) -> None:
    """An output that cannot be written ends the run with one line (exit status 3)."""
    print(f"pipeline: error: {msg}", file=sys.stderr, flush=True)
    os._exit(3)


def run(cfg: dict) -> None:
    title("pipeline: collector")
    parent = ignore_stop_signals()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 256)
    pull.bind(cfg["collector_addr"])
    control = ctx.socket(zmq.PUSH)
    control.setsockopt(zmq.LINGER, -1)
    control.connect(cfg["control_addr"])
    try:
        outs = [outputs.make(s) for s in cfg["outputs"]]
    except outputs.OutputError as e:
        _fail(str(e))
    merger = Merger()
    done = {}
    while len(done) < cfg["workers"]:
        kind, body = (f.bytes for f in wait_message(pull, parent))
        if kind == wire.MSG_RECORDS:
            recs = msgpack.unpackb(body)
            merger.add(recs)
            for o in outs:
                try:
                    o.write(recs)
                except OSError as e:
                    _fail(f"output {o.kind}:{o.target}: {e.strerror or e}")
        elif kind == wire.MSG_DONE:
            st = msgpack.unpackb(body)
            done[st["worker"]] = st
    for o in outs:
        try:
            o.close()
        except OSError as e:
            _fail(f"output {o.kind}:{o.target}: {e.strerror or e}")
    stats = {"records": merger.records, "final_records": merger.final_records,
             "outputs": {o.kind + ":" + o.target: o.written for o in outs},
             "workers": [done[w] for w in sorted(done)]}
    control.send_multipart([wire.MSG_STATS, msgpack.packb(stats)])
    pull.close(0)
    control.close()
    ctx.term()
