"""The run's own ZeroMQ links retry soon when their peer has not bound yet.

A child binds only after its fork and imports, so the supervisor's first connect
often finds nothing yet; with ZeroMQ's default reconnect interval (100 ms) the
first batches then waited that long while the workers sat idle."""
import zmq

from pipeline.children import RECONNECT_MS, connect_local
from pipeline.dispatch import ToWorkers
from pipeline.monitor import MetricsSender

ZMQ_DEFAULT_RECONNECT_MS = 100


def test_connect_local_sets_a_short_reconnect_interval(tmp_path):
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.PUSH)
        connect_local(s, f"ipc://{tmp_path}/peer")
        assert s.getsockopt(zmq.RECONNECT_IVL) == RECONNECT_MS
        assert RECONNECT_MS < ZMQ_DEFAULT_RECONNECT_MS
        s.close(0)
    finally:
        ctx.term()


def test_front_end_and_metrics_sockets_use_it(tmp_path):
    ctx = zmq.Context()
    try:
        to = ToWorkers(ctx, [f"ipc://{tmp_path}/w0", f"ipc://{tmp_path}/w1"], lambda: None)
        assert [s.getsockopt(zmq.RECONNECT_IVL) for s in to.socks] == [RECONNECT_MS] * 2
        m = MetricsSender(ctx, f"ipc://{tmp_path}/metrics")
        assert m.sock.getsockopt(zmq.RECONNECT_IVL) == RECONNECT_MS
        to.close(0)
        m.sock.close(0)
    finally:
        ctx.term()


def test_a_message_sent_before_the_peer_binds_arrives(tmp_path):
    """The case the run relies on: connect and send first, the peer binds later."""
    ctx = zmq.Context()
    addr = f"ipc://{tmp_path}/late"
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        connect_local(push, addr)
        push.send(b"first batch")
        pull = ctx.socket(zmq.PULL)
        pull.bind(addr)
        assert pull.poll(10_000), "the message never arrived"
        assert pull.recv() == b"first batch"
        push.close(0)
        pull.close(0)
    finally:
        ctx.term()
