"""Watching a standalone collector (issue 25): its figures per sensor in `pipeline status` and
/metrics, the sensors it refuses said at both ends once per episode, and where `pipeline
status` finds it. Real `pipeline collector` and `pipeline start --collector` processes over
ZeroMQ on 127.0.0.1, as in test_collector.py, whose helpers these are."""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
import zmq

from contracts import link, monitor
from tests import runner
from tests.test_collector import (
    ENV,
    ROOT,
    RUN_TIMEOUT,
    Collector,
    end_group,
    free_port,
    good_record,
    keygen,
    make_trace,
    run_sensor,
    start_sensor,
)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return make_trace(tmp_path_factory.mktemp("watch"), "w", 150, 21)


def status(*flags, env=ENV):
    return subprocess.run([*runner.pipeline_cmd(), "status", *flags], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=RUN_TIMEOUT)


def metrics(port) -> tuple:
    """/metrics: its text, and {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return text, {m[1]: float(m[2]) for m in re.finditer(r"^(pipeline_\S+) (\S+)$", text, re.M)}


def send(dealer, hdr, body) -> dict:
    dealer.send_multipart([b"R", msgpack.packb(hdr), body])
    assert dealer.poll(10_000), "no acknowledgement"
    return msgpack.unpackb(dealer.recv_multipart()[1])


# -- per-sensor figures ------------------------------------------------------------------------------

def test_collector_figures_per_sensor(trace, tmp_path):
    """Batches sent by hand (one written, the same again, one with bad records, one with no
    header) and a real sensor: each counted for its sensor in status, in /metrics and in
    --stats-json, with the time it was last heard from; no sensor-only tables."""
    port, sock = free_port(), tmp_path / "col.sock"
    col = Collector(tmp_path, free_port(), "--metrics-port", str(port), "--status-socket", str(sock)).start()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(col.addr)
        before = time.time()
        three = msgpack.packb([good_record("hand", sid=256 + i) for i in range(3)])
        assert send(dealer, {"sensor": "hand", "run": "r", "seq": 1}, three)["ok"] is True
        assert send(dealer, {"sensor": "hand", "run": "r", "seq": 1}, three)["ok"] is True     # a duplicate
        assert send(dealer, {"sensor": "hand", "run": "r", "seq": 2}, b"\xc1")["ok"] is False   # refused
        dealer.send_multipart([b"R", b"\xc1", b"x"])                                            # no header
        p = run_sensor(trace, col.addr, "sensor-a", tmp_path / "a.json")
        assert p.returncode == 0, p.stderr
        after = time.time()
        snap = json.loads(status("--collector", "--socket", str(sock), "--json").stdout)
        table = status("--collector", "--socket", str(sock))
        text, seen = metrics(port)
        assert col.stop() == 0, col.stderr()
    finally:
        dealer.close()
        ctx.term()
        col.kill_if_running()
    sent = json.loads((tmp_path / "a.json").read_text())["records"]         # what the sensor sent
    figures = snap["collector"]["sensors"]
    assert set(figures) == {"hand", "sensor-a"}
    hand, a = figures["hand"], figures["sensor-a"]
    assert {k: hand[k] for k in ("records", "batches", "duplicates", "rejected")} == \
        {"records": 3, "batches": 1, "duplicates": 1, "rejected": 1}
    assert a["records"] == sent and a["batches"] >= 1 and a["duplicates"] == a["rejected"] == 0
    assert before <= hand["last_seen"] <= a["last_seen"] <= after
    col_fig = snap["collector"]
    assert (col_fig["batches"], col_fig["duplicates"], col_fig["rejected"]) == (1 + a["batches"], 1, 2)
    assert snap["role"] == "collector" and snap["workers"] == []
    # the table: the sensors, not a sensor's front-end and workers
    assert table.returncode == 0
    assert "front-end" not in table.stdout and "worker" not in table.stdout
    row = [line.split() for line in table.stdout.splitlines() if line.startswith("hand ")]
    assert row and row[0][:5] == ["hand", "3", "1", "1", "1"], table.stdout
    assert any(line.startswith("sensor-a ") and f"{sent:,}" in line for line in table.stdout.splitlines())
    # /metrics: the same figures, and no empty worker families
    assert seen['pipeline_collector_sensor_records_total{sensor="hand"}'] == 3
    assert seen['pipeline_collector_sensor_records_total{sensor="sensor-a"}'] == sent
    assert seen['pipeline_collector_sensor_duplicate_batches_total{sensor="hand"}'] == 1
    assert seen['pipeline_collector_sensor_rejected_batches_total{sensor="hand"}'] == 1
    assert seen['pipeline_collector_sensor_batches_total{sensor="sensor-a"}'] == a["batches"]
    assert seen["pipeline_collector_rejected_batches_total"] == 2
    assert seen["pipeline_collector_duplicate_batches_total"] == 1
    assert before <= seen['pipeline_collector_sensor_last_seen_timestamp_seconds{sensor="sensor-a"}'] <= after
    assert "pipeline_worker_frames" not in text and "pipeline_frames_read" not in text
    assert seen['pipeline_process_anonymous_bytes{process="collector"}'] > 0
    # --stats-json: the old per-sensor record counts, and the new figures beside them
    st = col.stats()
    assert st["sensors"] == {"hand": 3, "sensor-a": sent}
    assert {k: v for k, v in st["per_sensor"]["hand"].items() if k != "last_seen"} == \
        {"records": 3, "batches": 1, "duplicates": 1, "rejected": 1}


def test_episodes_say_a_failure_once_while_it_goes_on():
    e = link.Episodes(gap=300.0, limit=3)
    assert e.new("a", now=0.0)
    assert not e.new("a", now=2.0) and not e.new("a", now=290.0) and not e.new("a", now=580.0)   # retries
    assert e.new("a", now=900.0)                     # quiet for more than the gap: a new episode
    assert e.new("b", now=901.0) and e.new("c", now=902.0)
    assert e.new("d", now=903.0)                     # the oldest ("a") goes: at most `limit` remembered
    assert set(e.last) == {"b", "c", "d"}
    assert e.new("a", now=904.0)


# -- refusals, said at both ends ------------------------------------------------------------------------

def _lines(path, text):
    return [line for line in path.read_text().splitlines() if text in line]


@pytest.mark.slow
def test_refused_sensors_are_said_at_both_ends_once(trace, tmp_path):
    """An unknown key, a sensor without CurveZMQ and a sensor with another collector's key,
    each retrying for a few seconds: the collector says each once (the unknown key with the
    peer's address and the key's first Z85 characters), each sensor says once why it is not
    taken. With its key added and the collector restarted, the refused sensor delivers."""
    keys = tmp_path / "keys"
    keys.mkdir()
    keygen(keys / "collector")
    keygen(keys / "other-collector")
    intruder_pub, _ = keygen(keys / "intruder")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    curve = ("--curve-server-cert", str(keys / "collector.key_secret"), "--curve-clients", str(allowed))
    sock = tmp_path / "col.sock"
    col = Collector(tmp_path, free_port(), *curve, "--status-socket", str(sock)).start()
    logs = {name: tmp_path / f"{name}.log" for name in ("intruder", "plain", "wrongkey")}
    handles = {name: open(path, "wb") for name, path in logs.items()}
    sensors = {}
    try:
        sensors["intruder"] = start_sensor(trace, col.addr, "intruder", tmp_path / "i.json",
                                           "--curve-client-cert", str(keys / "intruder.key_secret"),
                                           "--curve-server-cert", str(keys / "collector.key"), log=handles["intruder"])
        sensors["plain"] = start_sensor(trace, col.addr, "plain", tmp_path / "p.json", log=handles["plain"])
        sensors["wrongkey"] = start_sensor(trace, col.addr, "wrongkey", tmp_path / "w.json",
                                           "--curve-client-cert", str(keys / "intruder.key_secret"),
                                           "--curve-server-cert", str(keys / "other-collector.key"),
                                           log=handles["wrongkey"])
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:        # several tries each (every 5 s after a refusal)
            snap = json.loads(status("--collector", "--socket", str(sock), "--json").stdout)["collector"]
            if snap["curve_refused"] >= 3 and snap["handshake_failed"] >= 6:
                break
            time.sleep(0.5)
        assert snap["curve_refused"] >= 3 and snap["handshake_failed"] >= 6, snap
        assert all(s.poll() is None for s in sensors.values()), "a refused sensor ended"
        said = col.stderr()
        kid = link.key_id(zmq.utils.z85.decode(zmq.auth.load_certificate(str(intruder_pub))[0]))
        refused = [line for line in said.splitlines() if "refused a sensor" in line]
        assert len(refused) == 1, said
        assert "at 127.0.0.1" in refused[0] and f"key {kid}" in refused[0] and str(allowed) in refused[0]
        assert len([line for line in said.splitlines() if "without CurveZMQ" in line]) == 1, said
        assert len([line for line in said.splitlines() if "cryptographic error" in line]) == 1, said
        assert "Traceback" not in said
        assert len(_lines(logs["intruder"], "refused this sensor's key (CurveZMQ): is intruder.key in its "
                                             "--curve-clients?")) == 1
        assert len(_lines(logs["plain"], "requires CurveZMQ")) == 1
        assert len(_lines(logs["wrongkey"], "dropped the CurveZMQ handshake: is --curve-server-cert "
                                            f"{keys / 'other-collector.key'} its public key?")) == 1
        # the operator's fix: the key in --curve-clients, the collector restarted
        end_group(sensors.pop("plain"))
        end_group(sensors.pop("wrongkey"))
        assert col.stop() == 0
        shutil.copy(intruder_pub, allowed / "intruder.key")
        col.start()
        assert sensors["intruder"].wait(RUN_TIMEOUT) == 0
        assert col.stop() == 0
    finally:
        for s in sensors.values():
            end_group(s)
        for h in handles.values():
            h.close()
        col.kill_if_running()
    assert len(_lines(logs["intruder"], "accepts this sensor now")) == 1
    assert len(_lines(logs["intruder"], "refused this sensor's key")) == 1
    assert set(col.stats()["sensors"]) == {"intruder"}
    assert "records from 1 sensor (0 duplicate batches, 0 rejected batches)" in col.stderr()


# -- where `pipeline status` looks ------------------------------------------------------------------------

def _status_socket(path: Path, col, timeout: float = 20.0) -> bool:
    """Whether the collector's status socket shows at `path` within `timeout` seconds: it
    listens on its port (what `Collector.start` waits for) before it opens the socket."""
    deadline = time.monotonic() + timeout
    while not path.is_socket() and time.monotonic() < deadline and col.proc.poll() is None:
        time.sleep(0.05)
    return path.is_socket()


def test_status_socket_follows_the_runtime_directory(tmp_path):
    """Under systemd (RuntimeDirectory=) the service's socket goes to $RUNTIME_DIRECTORY, not to
    a /tmp of its own (PrivateTmp), and `pipeline status` given the same finds it."""
    run = tmp_path / "run"
    run.mkdir()
    service = dict(ENV, RUNTIME_DIRECTORY=str(run), TMPDIR=str(tmp_path / "private-tmp"))
    service.pop("XDG_RUNTIME_DIR", None)
    col = Collector(tmp_path, free_port(), env=service).start()
    try:
        assert _status_socket(run / "pipeline-collector.sock", col)
        r = status("--collector", "--json", env=dict(ENV, RUNTIME_DIRECTORY=str(run)))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["role"] == "collector"
        assert col.stop() == 0
    finally:
        col.kill_if_running()
    assert not (run / "pipeline-collector.sock").exists()
    r = status("--collector", env=dict(ENV, RUNTIME_DIRECTORY=str(run)))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and str(run) in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="makes /run/pipeline, as tmpfiles.d does on a host")
def test_status_finds_the_service_in_run_pipeline(tmp_path):
    """A service as deploy/'s units start it (RUNTIME_DIRECTORY=/run/pipeline, a /tmp of its own)
    and `pipeline status --collector` from an operator's shell (neither set, XDG_RUNTIME_DIR its
    own): the command looks where the service puts its socket."""
    if os.path.exists(monitor.RUN_DIR):
        pytest.skip(f"{monitor.RUN_DIR} exists on this host (a real install): not touching it")
    os.mkdir(monitor.RUN_DIR, 0o750)
    try:
        service = dict(ENV, RUNTIME_DIRECTORY=monitor.RUN_DIR, XDG_RUNTIME_DIR=str(tmp_path / "service-xdg"))
        shell = dict(ENV, XDG_RUNTIME_DIR=str(tmp_path / "shell-xdg"))
        shell.pop("RUNTIME_DIRECTORY", None)
        col = Collector(tmp_path, free_port(), env=service).start()
        try:
            assert _status_socket(Path(monitor.RUN_DIR) / "pipeline-collector.sock", col)
            r = status("--collector", "--json", env=shell)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["processes"]["collector"]["pid"] == col.proc.pid
            assert col.stop() == 0
        finally:
            col.kill_if_running()
        gone = status("--collector", env=shell)
        assert gone.returncode == 1 and f"{monitor.RUN_DIR}, {tmp_path / 'shell-xdg'}" in gone.stderr
    finally:
        shutil.rmtree(monitor.RUN_DIR, ignore_errors=True)
