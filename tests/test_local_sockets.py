"""The run's own ZeroMQ links retry soon when their peer has not bound yet.

A child binds only after its fork and imports, so the supervisor's first connect
often finds nothing yet; with ZeroMQ's default reconnect interval (100 ms) the
first batches then waited that long while the workers sat idle."""
import ast
import shutil
import tempfile
from pathlib import Path

import pytest
import zmq

from contracts.children import RECONNECT_MS, connect_local
from pipeline.dispatch import ToWorkers
from contracts.monitor import MetricsSender

ROOT = Path(__file__).resolve().parents[1]
ZMQ_DEFAULT_RECONNECT_MS = 100


@pytest.fixture
def ipc_dir():
    """A short directory for ipc endpoints (AF_UNIX paths end at ~107 bytes, pytest's
    tmp_path can be longer), as the supervisor makes its own."""
    d = tempfile.mkdtemp(prefix="z", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)         # closes what a failed test left open: term() would wait forever


def test_connect_local_sets_a_short_reconnect_interval(ctx, ipc_dir):
    s = ctx.socket(zmq.PUSH)
    connect_local(s, f"ipc://{ipc_dir}/peer")
    assert s.getsockopt(zmq.RECONNECT_IVL) == RECONNECT_MS
    assert RECONNECT_MS < ZMQ_DEFAULT_RECONNECT_MS


def test_front_end_and_metrics_sockets_use_it(ctx, ipc_dir):
    to = ToWorkers(ctx, [f"ipc://{ipc_dir}/w0", f"ipc://{ipc_dir}/w1"], lambda: None)
    assert [s.getsockopt(zmq.RECONNECT_IVL) for s in to.socks] == [RECONNECT_MS] * 2
    m = MetricsSender(ctx, f"ipc://{ipc_dir}/metrics")
    assert m.sock.getsockopt(zmq.RECONNECT_IVL) == RECONNECT_MS


# the connects that are not to a peer of the run: the uplink's remote collector (its own
# back-off, and again after a refused handshake), plain sockets (the status client's unix
# sockets, systemd's notification socket, the syslog and IPFIX outputs' network peers),
# and connect_local's own
REMOTE_OR_PLAIN = {("pipeline/uplink.py", "up.connect(self.addr)"),
                   ("pipeline/uplink.py", "self.up.connect(self.addr)"),
                   ("contracts/notify.py", "s.connect(addr)"),
                   ("contracts/monitor.py", "probe.connect(path)"),
                   ("contracts/monitor.py", "s.connect(path)"),
                   ("collector/outputs/syslog.py", "self.connect()"),
                   ("collector/outputs/syslog.py", "s.connect(addr)"),
                   ("collector/outputs/ipfix.py", "s.connect(addr)"),
                   ("contracts/children.py", "sock.connect(addr)")}


def test_every_link_between_the_runs_processes_uses_it():
    """The workers', the collector's and the capture processes' sockets are made inside
    their processes: the source says how they connect. A plain .connect() between
    processes of the run fails this test."""
    found = set()
    for folder in ("contracts", "pipeline", "workers", "collector"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for node in ast.walk(ast.parse(text)):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "connect"):
                    found.add((path.relative_to(ROOT).as_posix(), ast.get_source_segment(text, node)))
    assert found == REMOTE_OR_PLAIN


def test_a_message_sent_before_the_peer_binds_arrives(ctx, ipc_dir):
    """The case the run relies on: connect and send first, the peer binds later."""
    addr = f"ipc://{ipc_dir}/late"
    push = ctx.socket(zmq.PUSH)
    connect_local(push, addr)
    push.send(b"first batch")
    pull = ctx.socket(zmq.PULL)
    pull.bind(addr)
    assert pull.poll(10_000), "the message never arrived"
    assert pull.recv() == b"first batch"
