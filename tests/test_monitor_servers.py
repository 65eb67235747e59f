"""The status socket's and /metrics' servers (contracts/monitor.py), in-process: they
answer, they stop as soon as they are asked to, and a client that leaves without
reading is no error.

Stopping is a run's last step wherever one of them is on (every live run has a
status socket, the collector service both): with socketserver's default poll
interval, shutdown() waited up to half a second for the serving thread to look.
The bound asserted below is that latency, a property of the stop (well under
that half second, well over what the stop takes), not a speed target. Idle, the
servers' thread waits without a timeout (no polling CPU): measured, not tested.
"""
import socket
import threading
import time
import urllib.request

import pytest

from contracts import monitor

STOP_BOUND_S = 0.3      # serve_forever's 0.5 s poll waited 0.45-0.5 s after a query


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _timed_stop(server) -> float:
    t = time.monotonic()
    server.shutdown()
    server.server_close()
    return time.monotonic() - t


def test_status_server_answers_and_stops_at_once(tmp_path):
    path = str(tmp_path / "run" / "status.sock")
    srv = monitor.serve_status(monitor.Monitor(2), path)
    assert srv is not None
    snap = monitor.query_status(path)
    assert snap["role"] == "sensor" and len(snap["workers"]) == 2
    assert _timed_stop(srv) < STOP_BOUND_S
    assert not (tmp_path / "run" / "status.sock").exists()      # no stale socket for the next run
    fresh = monitor.serve_status(monitor.Monitor(1), path)       # stopped as soon as it is up
    assert _timed_stop(fresh) < STOP_BOUND_S


@pytest.mark.parametrize("addr,host", [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
def test_metrics_server_answers_and_stops_at_once(addr, host):
    if addr == "::1" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    port = _free_port()
    srv, thread = monitor.serve_metrics(monitor.Monitor(1), port, addr)
    body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    assert "pipeline_worker_frames_total" in body
    assert _timed_stop(srv) < STOP_BOUND_S
    thread.join(1)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2)


def test_metrics_port_taken_is_an_oserror():
    port = _free_port()
    srv, _ = monitor.serve_metrics(monitor.Monitor(1), port)
    try:
        with pytest.raises(OSError):
            monitor.serve_metrics(monitor.Monitor(1), port)
    finally:
        srv.shutdown()
        srv.server_close()


def _handlers_done(limit_s: float = 10.0) -> None:
    """Wait for socketserver's request threads (one per connection) to end."""
    end = time.monotonic() + limit_s
    while any("process_request_thread" in t.name for t in threading.enumerate()):
        assert time.monotonic() < end, "request handlers still running"
        time.sleep(0.01)


def test_status_client_that_leaves_without_reading_is_no_error(tmp_path, capfd):
    """What another instance's probe does (serve_status finds the socket taken): connect and
    close at once. The serving side must not print a traceback for the broken pipe."""
    path = str(tmp_path / "status.sock")
    mon = monitor.Monitor(64)                  # a snapshot bigger than the socket's buffer
    mon.workers.update({i: dict(mon.workers[0], extra="x" * 4096) for i in range(64)})
    srv = monitor.serve_status(mon, path)
    try:
        for _ in range(5):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            c.close()
        _handlers_done()                        # they wrote into the closed peers
        assert monitor.query_status(path)["role"] == "sensor"
    finally:
        srv.shutdown()
        srv.shutdown()                          # a second stop is no error
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err
