"""systemd's readiness and watchdog protocol (contracts/notify.py, issue 25): a real datagram
socket stands in for systemd (NOTIFY_SOCKET, a path or an abstract name), and real
`pipeline collector` and `pipeline start` processes talk to it."""
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid

import pytest

from contracts import notify
from tests import runner
from tests.test_collector import ENV, ROOT, RUN_TIMEOUT, free_port, make_trace


class Systemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, tmp_path, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"pipeline-test-notify-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(tmp_path / "notify")
            self.sock.bind(self.address)

    def next(self, timeout=RUN_TIMEOUT) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram(tmp_path, monkeypatch, abstract):
    systemd = Systemd(tmp_path, abstract)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
        assert notify.enabled() and notify.notify("READY=1\nSTATUS=x")
        assert systemd.next(5) == "READY=1\nSTATUS=x"
    finally:
        systemd.close()
    assert not notify.notify("READY=1")               # nobody listens any more: False, no exception
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify.enabled() and not notify.notify("READY=1")


def test_watchdog_pings_at_half_the_interval_and_only_for_its_process(tmp_path, monkeypatch):
    systemd = Systemd(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    try:
        assert notify.Watchdog({"WATCHDOG_USEC": "4000000"}).every == 2.0
        assert notify.Watchdog({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}).every == 0
        assert notify.Watchdog({}).every == 0 and notify.Watchdog({"WATCHDOG_USEC": "x"}).every == 0
        dog = notify.Watchdog({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())})
        dog.ping()
        dog.ping()                                     # 30 s not yet gone: nothing more
        assert systemd.next(5) == "WATCHDOG=1"
        with pytest.raises(socket.timeout):
            systemd.next(0.3)
    finally:
        systemd.close()


def collect(systemd, until, timeout=RUN_TIMEOUT):
    """Datagrams until one equal to or starting with `until`."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got.append(systemd.next(max(0.1, deadline - time.monotonic())))
        if got[-1].startswith(until):
            return got
    raise AssertionError(f"no {until!r} in {got}")


@contextlib.contextmanager
def running(cmd, env, systemd):
    """A pipeline command under our stand-in for systemd; killed if a check fails."""
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        systemd.close()


def stop(p, systemd):
    """SIGTERM, as `systemctl stop` sends it: STOPPING=1, then an orderly exit."""
    p.send_signal(signal.SIGTERM)
    assert collect(systemd, "STOPPING=1")[-1] == "STOPPING=1"
    _, err = p.communicate(timeout=RUN_TIMEOUT)
    assert p.returncode == 0, err


def test_collector_says_ready_once_it_listens_then_pings_then_stopping(tmp_path):
    systemd = Systemd(tmp_path, abstract=True)
    port = free_port()
    env = dict(ENV, NOTIFY_SOCKET=systemd.address, WATCHDOG_USEC="200000")
    cmd = [*runner.pipeline_cmd(), "collector", "--listen", f"tcp://127.0.0.1:{port}",
           "--output", f"jsonl:{tmp_path / 'o.jsonl'}", "--status-socket", str(tmp_path / "s.sock")]
    with running(cmd, env, systemd) as p:
        first = systemd.next()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()     # it listens when it says so
        assert first == f"READY=1\nSTATUS=listening on tcp://127.0.0.1:{port}"
        pings = [systemd.next(5) for _ in range(4)]                          # every 0.1 s
        assert pings == ["WATCHDOG=1"] * 4
        stop(p, systemd)


PLUGIN = """
import os, time
class SlowStart:
    '''Each worker makes one at start: a second, then a mark that this process got past it.'''
    def __init__(self):
        time.sleep(1.0)
        open(os.path.join({folder!r}, f"up-{{os.getpid()}}"), "w").close()
    def on_expire(self, s):
        pass
"""


def test_sensor_says_ready_once_its_workers_are_up(tmp_path):
    """READY=1 comes after every worker has made its plugins (a second each here), not as soon
    as the processes are forked; WATCHDOG=1 while it runs, STOPPING=1 on SIGTERM."""
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "slowstart.py").write_text(PLUGIN.format(folder=str(marks)))
    trace = make_trace(tmp_path, "t", 3000, 5)
    systemd = Systemd(tmp_path)
    env = dict(ENV, NOTIFY_SOCKET=systemd.address, WATCHDOG_USEC="400000",
               PYTHONPATH=os.pathsep.join([str(tmp_path), ENV["PYTHONPATH"]]))
    cmd = [*runner.pipeline_cmd(), "start", "--read", str(trace), "--workers", "2", "--chunk-frames", "8",
           "--plugin", "slowstart:SlowStart", "--output", f"jsonl:{tmp_path / 'o.jsonl'}"]
    with running(cmd, env, systemd) as p:
        ready = collect(systemd, "READY=1")[-1]           # watchdog pings may come before it
        up = {m.name for m in marks.iterdir()} - {f"up-{p.pid}"}      # the command made one to check it
        assert ready == "READY=1\nSTATUS=reading, 2 workers"
        assert len(up) == 2, up
        assert collect(systemd, "WATCHDOG=1", timeout=5)[-1] == "WATCHDOG=1"
        stop(p, systemd)
