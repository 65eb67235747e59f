"""The supervisor's end of a run: the collector's statistics and every extra capture
process's come over separate links into one socket, in no set order. A run whose
collector finished first used to report only capture process 0's frames."""
import shutil
import tempfile
from types import SimpleNamespace

import msgpack
import pytest
import zmq

from contracts import wire
from pipeline.supervisor import Run


@pytest.fixture
def control():
    d = tempfile.mkdtemp(prefix="z", dir="/tmp")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"ipc://{d}/control")
    pushes = []

    def peer():
        s = ctx.socket(zmq.PUSH)
        s.connect(f"ipc://{d}/control")
        pushes.append(s)
        return s

    yield pull, peer
    ctx.destroy(linger=0)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("collector_first", [True, False])
def test_waits_for_every_capture_process_whatever_comes_first(control, collector_first):
    pull, peer = control
    collector, capture1, capture2 = peer(), peer(), peer()
    final = [wire.MSG_STATS, msgpack.packb({"records": 7})]
    caps = [(capture1, {"proc": 1, "stats": {"frames_read": 10}}),
            (capture2, {"proc": 2, "stats": {"frames_read": 20}})]
    if collector_first:
        collector.send_multipart(final)
        assert pull.poll(10_000)        # the collector's statistics are there before any capture's
    for sock, body in caps:
        sock.send_multipart([wire.MSG_CAPTURE, msgpack.packb(body)])
    if not collector_first:
        collector.send_multipart(final)
    run = SimpleNamespace(control=pull, captures=[], frontends=3, decoders=0, check_children=lambda: None)  # live
    assert Run.wait_collector(run) == {"records": 7}
    assert sorted(c["proc"] for c in run.captures) == [1, 2]
