"""A front-end's way to the workers: one PUSH socket per worker, one batch message per
worker per chunk, then the end of stream.

Shared by the supervisor (capture process 0, offline or live) and the extra
capture processes of `--capture-procs`. A send that would block waits in
half-second steps and calls `waiting()` each time, so the caller notices a dead
peer instead of blocking forever (offline, these blocking sends are the
backpressure that makes runs lossless).
"""
import msgpack
import zmq

from contracts import wire
from contracts.children import connect_local


class ToWorkers:
    def __init__(self, ctx, addrs, waiting):
        self.socks = []
        for addr in addrs:
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.SNDHWM, 4)
            s.setsockopt(zmq.LINGER, -1)
            connect_local(s, addr)
            self.socks.append(s)
        self.waiting = waiting
        self.end_msg = None                 # the end-of-stream message, once sent
        self.shared = None                  # index of the input the workers read payloads from

    def send(self, i, parts) -> None:
        sock = self.socks[i]
        while not sock.poll(500, zmq.POLLOUT):
            self.waiting()
        sock.send_multipart(parts, copy=False)

    def batches(self, fe, batch, seq=None, base=None) -> list:
        """Split one front-end batch by worker and send it; returns the rows each got.
        While `shared` names an input the workers map too (offline: they are forked with
        the open capture files), payload bytes stay in it: the header says which input
        and from which offset ploff counts (`base`, default the front-end's last chunk's),
        and nothing is copied. `seq`: the chunk's number, where several front-end
        processes share one stream (workers apply the batches in that order)."""
        head = {"paths": fe.take_paths(), "proc": fe.proc}
        if seq is not None:
            head["seq"] = seq
        shared = self.shared is not None and len(batch[3]) > 0
        if shared:
            head["input"], head["base"] = self.shared, fe.data_base if base is None else base
        rows = []
        for i, (ev, cuts, pay) in enumerate(fe.pack(batch, gather=not shared)):
            head["cuts"] = cuts
            self.send(i, [wire.MSG_BATCH, msgpack.packb(head), ev, pay])
            rows.append(len(ev))
        return rows

    def end(self, fe) -> None:
        """End of this front-end's stream (its last rows already sent: `fe.finish()`)."""
        self.end_msg = msgpack.packb({"now": fe.now})
        for i in range(len(self.socks)):
            self.resend_end(i)

    def resend_end(self, i) -> None:
        self.send(i, [wire.MSG_END, self.end_msg])

    def close(self, linger=None) -> None:
        for s in self.socks:
            s.close(linger)
