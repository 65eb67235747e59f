"""The sensor-to-collector path (issues 4 and 6): real `pipeline start --collector` sensors
and a real `pipeline collector` over ZeroMQ on 127.0.0.1, killed, restarted, attacked;
and the sans-IO parts (journal, aggregates, spool) as units.

Expectations come from elsewhere: a sensor's records must equal what a local run of the
same trace writes (`pipeline start --read T --output jsonl:X`), aggregates must add up to
the sessions' own counters, and a restarted collector must leave the same final records
as an undisturbed one.
"""
import json
import math
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from collector import checks
from collector.aggregate import TOP, Aggregator
from collector.journal import Journal
from collector.outputs.jsonl import JsonLines
from contracts import wire
from contracts.record import COLLECTOR_NAMES, INDEX, N_WIRE, NAMES, WIRE_NAMES, as_dict
from pipeline.spool import Spool
from tests import runner

ROOT = runner.ROOT
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
ENV.pop("PIPELINE_TEST_KILL_AFTER_BATCHES", None)
RUN_TIMEOUT = 60
CHUNK_C = "256"          # small chunks: the long trace reaches the collector in many batches


# -- helpers -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_trace(folder: Path, name: str, sessions: int, seed: int) -> Path:
    path = folder / f"{name}.pcap"
    subprocess.run([sys.executable, "-m", "pipeline.tracegen", str(path), "--sessions", str(sessions),
                    "--seed", str(seed), "--truth", str(folder / f"{name}.truth.json")],
                   check=True, capture_output=True, env=ENV, cwd=ROOT, timeout=RUN_TIMEOUT)
    return path


class Collector:
    """A `pipeline collector` process on tcp://127.0.0.1:PORT writing jsonl:OUT."""

    def __init__(self, tmp: Path, port: int, *extra, env=None, host="127.0.0.1", name="collector"):
        self.tmp = tmp
        self.port = port
        self.addr = f"tcp://{host}:{port}"
        self.out = tmp / "out.jsonl"
        self.stats_path = tmp / "collector-stats.json"
        self.state = tmp / "state"
        self.log = tmp / f"{name}.log"
        self.extra = list(extra)
        self.env = dict(ENV, **(env or {}))
        self.proc = None

    def start(self, env=None):
        cmd = runner.pipeline_cmd() + ["collector", "--listen", self.addr, "--output", f"jsonl:{self.out}",
                                      "--stats-json", str(self.stats_path), "--state-dir", str(self.state),
                                      "--aggregate-interval", "1"] + self.extra
        self.logfh = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.logfh, env=dict(self.env, **(env or {})),
                                     cwd=ROOT)
        wait_listening(self.port, self.proc)
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(RUN_TIMEOUT)
        self.logfh.close()
        return rc

    def stats(self) -> dict:
        return json.loads(self.stats_path.read_text())

    def stderr(self) -> str:
        return self.log.read_text()

    def kill_if_running(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_listening(port: int, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port} after {timeout} s")


def sensor_cmd(trace: Path, addr: str, sensor: str, stats: Path, *extra):
    return runner.pipeline_cmd() + ["start", "--workers", "2", "--read", str(trace), "--collector", addr,
                                    "--sensor-id", sensor, "--stats-json", str(stats), "--quiet",
                                    "--aggregate-interval", "1"] + list(extra)


def run_sensor(trace, addr, sensor, stats, *extra, timeout=RUN_TIMEOUT):
    return subprocess.run(sensor_cmd(trace, addr, sensor, stats, *extra), capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=timeout)


def start_sensor(trace, addr, sensor, stats, *extra, log=None):
    return subprocess.Popen(sensor_cmd(trace, addr, sensor, stats, *extra), stdout=subprocess.DEVNULL,
                            stderr=log or subprocess.DEVNULL, env=ENV, cwd=ROOT, start_new_session=True)


def end_group(p):
    """Kill a sensor started by start_sensor (its own process group: supervisor and children)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(10)


def local_run(trace, tmp, sensor, *extra):
    """What the sensor's own collector writes for this trace: the independent expectation."""
    p, recs, stats = runner.run([trace], tmp, "--sensor-id", sensor, "--quiet", *extra, workers=2,
                                timeout=RUN_TIMEOUT)
    assert p.returncode == 0, p.stderr
    return recs


def read_lines(path: Path) -> list:
    """Every line of a JSON-lines output; fails on a broken (half or unparsable) line."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "output ends in a half line"
    return [json.loads(line) for line in data.splitlines()]


def sessions_of(lines, sensor=None):
    return [r for r in runner.sessions(lines) if sensor is None or r["sensor"] == sensor]


def assert_once(recs):
    keys = [(r["sensor"], r["session_id"], r["report_number"]) for r in recs]
    assert len(keys) == len(set(keys)), "a record was written twice"


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("traces")
    small_a = make_trace(d, "a", 200, 11)
    small_b = make_trace(d, "b", 250, 12)
    long_c = make_trace(d, "c", 3000, 13)
    expect = {}
    for name, trace in (("a", small_a), ("b", small_b)):
        expect[name] = local_run(trace, d / f"local-{name}", f"sensor-{name}")
    # the same chunking as the sensors that read it (records may differ with --chunk-frames)
    expect["c"] = local_run(long_c, d / "local-c", "sensor-c", "--chunk-frames", CHUNK_C)
    return {"a": small_a, "b": small_b, "c": long_c, "expect": expect}


# -- 1. two sensors, one collector ------------------------------------------------------------------

def test_two_sensors_into_one_collector(traces, tmp_path):
    col = Collector(tmp_path, free_port()).start()
    procs = {}
    try:
        results = {}
        procs = {name: start_sensor(traces[name], col.addr, f"sensor-{name}", tmp_path / f"{name}.json")
                 for name in ("a", "b")}
        for name, p in procs.items():
            results[name] = p.wait(RUN_TIMEOUT)
        assert results == {"a": 0, "b": 0}
        assert col.stop() == 0, col.stderr()
    finally:
        for p in procs.values():
            end_group(p)
        col.kill_if_running()
    lines = read_lines(col.out)
    recs = sessions_of(lines)
    assert_once(recs)
    assert {r["sensor"] for r in recs} == {"sensor-a", "sensor-b"}
    for name in ("a", "b"):
        sensor = f"sensor-{name}"
        mine = sessions_of(lines, sensor)
        assert runner.comparable(mine) == runner.comparable(traces["expect"][name])
        stats = json.loads((tmp_path / f"{name}.json").read_text())
        runner.check_identities(stats, mine)
        assert stats["records"] == len(mine)
        assert stats["outputs"] == {f"collector:{col.addr}": len(mine)}
    cstats = col.stats()
    assert cstats["sensors"] == {s: len(sessions_of(lines, s)) for s in ("sensor-a", "sensor-b")}
    assert cstats["rejected"] == 0 and cstats["duplicates"] == 0
    # aggregates are additive: per sensor, their packets add up to the sessions' own
    aggs = [r for r in lines if r.get("type") == "aggregate"]
    assert aggs and cstats["aggregates"] == len(aggs)
    for name in ("a", "b"):
        sensor = f"sensor-{name}"
        by_interval = {}
        for a in aggs:
            if a["sensor"] == sensor:
                by_interval[a["interval_start"]] = by_interval.get(a["interval_start"], 0) + a["packets"]
        assert by_interval, f"no aggregate of {sensor}"
        assert by_interval == expected_packets_by_interval(traces["expect"][name], 1.0)
        assert sum(by_interval.values()) == sum(r["packet_count"] for r in runner.finals(sessions_of(lines, sensor)))
        assert sum(by_interval.values()) == sum(r["packet_count"] for r in runner.finals(traces["expect"][name]))


def expected_packets_by_interval(recs, interval):
    """The packets each interval should count, from a local run's records: what is new in
    each record (interim records are cumulative) lands in the interval of its `end`."""
    out, last = {}, {}
    for r in sorted(runner.sessions(recs), key=lambda r: (r["session_id"], r["report_number"])):
        cum = r["ul_packet_count"] + r["dl_packet_count"]
        new = cum - last.get(r["session_id"], 0)
        last[r["session_id"]] = 0 if r["final"] else cum
        start = math.floor(r["end"] / interval) * interval
        out[start] = out.get(start, 0) + new
    return out


# -- 2. the collector killed mid-run and restarted ----------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("moment", ["hook-1", "hook-5", "first-records"])
def test_collector_killed_and_restarted(traces, tmp_path, moment):
    """`hook-N`: the collector SIGKILLs itself right after writing its N-th batch and before
    committing it (test hook PIPELINE_TEST_KILL_AFTER_BATCHES in collector/server.py), so the
    restart must cut that batch out of the file (journal) and the sensor sends it again.
    `first-records`: killed from outside as soon as the output holds anything."""
    col = Collector(tmp_path, free_port())
    env = {"PIPELINE_TEST_KILL_AFTER_BATCHES": moment.split("-")[1]} if moment.startswith("hook") else None
    col.start(env=env)
    sensor = start_sensor(traces["c"], col.addr, "sensor-c", tmp_path / "c.json", "--chunk-frames", CHUNK_C)
    try:
        if env:
            assert col.proc.wait(RUN_TIMEOUT) == -signal.SIGKILL
        else:
            deadline = time.monotonic() + RUN_TIMEOUT
            while not (col.out.exists() and col.out.stat().st_size) and time.monotonic() < deadline:
                time.sleep(0.01)
            col.stop(signal.SIGKILL)
        if env:      # killed before acknowledging a batch: the sensor cannot be done
            assert sensor.poll() is None, "the sensor must wait for the collector"
        time.sleep(1)
        col.start()
        assert sensor.wait(RUN_TIMEOUT) == 0
        assert col.stop() == 0, col.stderr()
    finally:
        end_group(sensor)
        col.kill_if_running()
    lines = read_lines(col.out)
    recs = sessions_of(lines)
    assert_once(recs)
    expect = traces["expect"]["c"]
    assert runner.comparable(recs) == runner.comparable(expect)
    assert len(recs) == len(runner.sessions(expect))      # interim records too, each once
    stats = json.loads((tmp_path / "c.json").read_text())
    runner.check_identities(stats, recs)
    assert stats["outputs"] == {f"collector:{col.addr}": len(recs)}
    if moment.startswith("hook"):
        assert "cut" in col.stderr(), "the restarted collector should have cut back the uncommitted batch"


# -- 3. the collector down at the start ---------------------------------------------------------------

@pytest.mark.slow
def test_collector_comes_up_late(traces, tmp_path):
    port = free_port()
    col = Collector(tmp_path, port)
    spool = tmp_path / "spool"
    sensor = start_sensor(traces["a"], col.addr, "sensor-a", tmp_path / "a.json", "--spool-dir", str(spool))
    try:
        time.sleep(3)
        assert sensor.poll() is None, "the sensor must wait for its collector"
        col.start()
        assert sensor.wait(RUN_TIMEOUT) == 0
        assert col.stop() == 0, col.stderr()
    finally:
        end_group(sensor)
        col.kill_if_running()
    recs = sessions_of(read_lines(col.out))
    assert_once(recs)
    assert runner.comparable(recs) == runner.comparable(traces["expect"]["a"])
    assert not [p for p in spool.iterdir() if p.name.endswith(".batch")], "acknowledged batches stay spooled"


def spooled(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".batch")) if folder.exists() else []


@pytest.mark.slow
def test_sensor_stopped_while_collector_away_leaves_its_batches_to_the_next_run(traces, tmp_path):
    """With --spool-dir, a sensor whose collector is away writes what is unacknowledged to
    disk once it has read everything; killed then, its next run sends those batches first."""
    col = Collector(tmp_path, free_port())
    spool = tmp_path / "spool"
    first = start_sensor(traces["a"], col.addr, "sensor-a", tmp_path / "a.json", "--spool-dir", str(spool))
    try:
        deadline, seen, stable_since = time.monotonic() + RUN_TIMEOUT, None, None
        while time.monotonic() < deadline:
            now = spooled(spool)
            if now and now == seen:
                if time.monotonic() - stable_since >= 0.5:
                    break
            else:
                seen, stable_since = now, time.monotonic()
            time.sleep(0.05)
        assert seen, "nothing spooled"
        assert first.poll() is None
    finally:
        end_group(first)         # as the supervisor kills its children after the stop grace
    col.start()
    try:
        p = run_sensor(traces["b"], col.addr, "sensor-b", tmp_path / "b.json", "--spool-dir", str(spool))
        assert p.returncode == 0, p.stderr
        assert "left in the spool by an earlier run" in p.stderr
        assert col.stop() == 0, col.stderr()
    finally:
        col.kill_if_running()
    lines = read_lines(col.out)
    assert_once(sessions_of(lines))
    for name in ("a", "b"):
        assert runner.comparable(sessions_of(lines, f"sensor-{name}")) == runner.comparable(traces["expect"][name])
    assert spooled(spool) == []


def _has_flag(flag: str) -> bool:
    p = subprocess.run(runner.pipeline_cmd() + ["start", "--help"], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=RUN_TIMEOUT)
    return flag in p.stdout


@pytest.mark.slow
def test_small_memory_bound_spools_to_disk(traces, tmp_path):
    if not _has_flag("--spool-mem-mb"):
        pytest.skip("pipeline start has no --spool-mem-mb yet (cfg spool_mem_bytes; the lead wires it)")
    big = make_trace(tmp_path, "big", 8000, 14)
    expect = local_run(big, tmp_path / "local", "sensor-big")
    size = len(msgpack.packb([[r[n] for n in WIRE_NAMES] for r in runner.sessions(expect)]))
    assert size > 1 << 20, "the trace must hold more than the 1 MiB memory bound"
    col = Collector(tmp_path, free_port())
    spool = tmp_path / "spool"
    sensor = start_sensor(big, col.addr, "sensor-big", tmp_path / "big.json", "--spool-dir", str(spool),
                          "--spool-mem-mb", "1")
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not spooled(spool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spooled(spool), "beyond the memory bound, batches go to the spool folder"
        time.sleep(1)
        col.start()
        assert sensor.wait(RUN_TIMEOUT) == 0
        assert col.stop() == 0, col.stderr()
    finally:
        end_group(sensor)
        col.kill_if_running()
    recs = sessions_of(read_lines(col.out))
    assert_once(recs)
    assert runner.comparable(recs) == runner.comparable(expect)
    assert spooled(spool) == []


def _batch(run, seq, nbytes):
    return (run, seq), msgpack.packb({"sensor": "s", "run": run, "seq": seq}), bytes([seq % 256]) * nbytes


def test_spool_spills_recovers_and_forgets(tmp_path):
    folder = tmp_path / "spool"
    sp = Spool(str(folder), mem_bytes=10_000, disk_bytes=50_000)
    batches = [_batch("r1", q, 3000) for q in range(1, 11)]
    for key, hdr, body in batches:
        sp.add(key, hdr, body)
    files = sorted(p.name for p in folder.iterdir())
    assert files and all(f.endswith(".batch") for f in files)
    assert sp.spooled == len(files)
    assert sp.in_memory <= 10_000
    assert len(sp) == 10
    for key, _, body in batches:                      # spilled or not, every body is there
        assert sp.body(key) == body
    assert sp.due(100.0, 5.0, 100) == [k for k, _, _ in batches]   # oldest first
    sp.sent(batches[0][0], 100.0)
    assert batches[0][0] not in sp.due(101.0, 5.0, 100)
    assert batches[0][0] in sp.due(105.0, 5.0, 100)

    # a crash: a new Spool on the same folder finds the spilled batches (and drops a half-written file)
    (folder / "r1-000000000099.batch.tmp").write_bytes(b"half")
    (folder / "garbage.batch").write_bytes(b"\xc1not msgpack")
    again = Spool(str(folder), mem_bytes=10_000, disk_bytes=50_000)
    spilled = {(b[0][0], b[0][1]) for b in batches if (folder / f"r1-{b[0][1]:012d}.batch").exists()}
    assert set(again.pending) == spilled
    for key in spilled:
        assert again.body(key) == dict((k, b) for k, _, b in batches)[key]
    assert not (folder / "r1-000000000099.batch.tmp").exists()
    assert (folder / "garbage.batch.bad").exists(), "a damaged spool file is set aside, not deleted"

    # acknowledged: its file goes
    for key in sorted(spilled):
        assert again.acked(key)
        assert not (folder / f"r1-{key[1]:012d}.batch").exists()
    assert not again.acked(min(spilled)), "a second acknowledgement is a no-op"
    assert len(again) == 0 and again.on_disk == 0


def test_spool_full():
    sp = Spool(None, mem_bytes=1000)
    sp.add(("r", 1), b"h", b"x" * 500)
    assert not sp.full()
    sp.add(("r", 2), b"h", b"x" * 600)
    assert sp.full()
    assert sp.acked(("r", 1)) and not sp.full()


def test_spool_full_on_disk(tmp_path):
    sp = Spool(str(tmp_path / "s"), mem_bytes=100, disk_bytes=2000)
    n = 0
    while not sp.full():
        n += 1
        sp.add(*_batch("r", n, 300))
        assert n < 50
    assert sp.on_disk >= 2000
    key = next(iter(sp.pending))              # the oldest: spilled first
    before = sp.on_disk
    assert sp.acked(key)
    assert sp.on_disk < before and not os.path.exists(sp._path(key))


# -- 4. CURVE -----------------------------------------------------------------------------------------

def keygen(dest: Path):
    p = subprocess.run(runner.pipeline_cmd() + ["keygen", str(dest)], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=RUN_TIMEOUT)
    assert p.returncode == 0, p.stderr
    return Path(str(dest) + ".key"), Path(str(dest) + ".key_secret")


def test_keygen_files_and_modes(tmp_path):
    pub, sec = keygen(tmp_path / "node")
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    public, secret = zmq.auth.load_certificate(str(sec))
    assert len(public) == 40 and len(secret) == 40
    assert zmq.auth.load_certificate(str(pub)) == (public, None)
    p = subprocess.run(runner.pipeline_cmd() + ["keygen", str(tmp_path / "missing" / "x")], capture_output=True,
                       text=True, env=ENV, cwd=ROOT, timeout=RUN_TIMEOUT)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_keygen_keeps_an_existing_pair_without_force(tmp_path):
    def keygen_again(*flags):
        return subprocess.run(runner.pipeline_cmd() + ["keygen", *flags, str(tmp_path / "node")],
                              capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=RUN_TIMEOUT)

    pub, sec = keygen(tmp_path / "node")
    before = (pub.read_bytes(), sec.read_bytes())
    again = keygen_again()
    assert again.returncode == 2 and again.stdout == ""
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "--force" in lines[0] and "exists" in lines[0], again.stderr
    assert (pub.read_bytes(), sec.read_bytes()) == before
    # half a pair left behind (the public file alone) is not overwritten either
    sec.unlink()
    assert keygen_again().returncode == 2 and pub.read_bytes() == before[0] and not sec.exists()
    forced = keygen_again("--force")
    assert forced.returncode == 0, forced.stderr
    public, secret = zmq.auth.load_certificate(str(sec))
    assert pub.read_bytes() != before[0] and zmq.auth.load_certificate(str(pub)) == (public, None)
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600


@pytest.mark.slow
def test_curve_admits_only_known_sensors(traces, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    keygen(keys / "collector")
    s1_pub, _ = keygen(keys / "sensor1")
    keygen(keys / "intruder")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(s1_pub, allowed / "sensor1.key")
    col = Collector(tmp_path, free_port(), "--curve-server-cert", str(keys / "collector.key_secret"),
                    "--curve-clients", str(allowed)).start()
    strangers = []
    try:
        strangers.append(start_sensor(traces["b"], col.addr, "intruder", tmp_path / "i.json",
                                      "--curve-client-cert", str(keys / "intruder.key_secret"),
                                      "--curve-server-cert", str(keys / "collector.key")))
        strangers.append(start_sensor(traces["b"], col.addr, "plaintext", tmp_path / "p.json"))
        p = run_sensor(traces["a"], col.addr, "sensor1", tmp_path / "s1.json",
                       "--curve-client-cert", str(keys / "sensor1.key_secret"),
                       "--curve-server-cert", str(keys / "collector.key"))
        assert p.returncode == 0, p.stderr
        time.sleep(2)            # the strangers have long read their trace and tried to send it
        assert all(s.poll() is None for s in strangers), "a stranger got its acknowledgements"
        assert col.stop() == 0, col.stderr()
    finally:
        for s in strangers:
            end_group(s)
        col.kill_if_running()
    lines = read_lines(col.out)
    recs = sessions_of(lines)
    assert {r["sensor"] for r in lines} == {"sensor1"}
    drop = ("worker", "event_id")          # the event id hashes the sensor's name
    assert runner.comparable(recs, drop) == runner.comparable(
        [dict(r, sensor="sensor1") for r in traces["expect"]["a"]], drop)
    assert set(col.stats()["sensors"]) == {"sensor1"}
    assert "WARNING" not in col.stderr()


def test_open_listen_without_curve_warns(tmp_path):
    port = free_port()
    col = Collector(tmp_path, port, "--quiet", host="0.0.0.0").start()
    assert col.stop() == 0
    warn = [line for line in col.stderr().splitlines() if "WARNING" in line]
    assert len(warn) == 1 and "0.0.0.0" in warn[0] and "--curve-server-cert" in warn[0]
    col2 = Collector(tmp_path, free_port(), "--quiet", name="loopback").start()
    assert col2.stop() == 0
    assert "WARNING" not in col2.stderr()


def test_collector_bad_config_is_one_line(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    keygen(keys / "collector")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cases = [
        ["--listen", "udp://1.2.3.4:5"],
        ["--listen", f"tcp://127.0.0.1:{port}", "--curve-server-cert", str(keys / "collector.key_secret")],
        ["--listen", f"tcp://127.0.0.1:{port}", "--curve-server-cert", str(keys / "collector.key"),
         "--curve-clients", str(keys)],
        ["--listen", f"tcp://127.0.0.1:{port}", "--curve-server-cert", str(keys / "nope"), "--curve-clients", str(keys)],
        # the port is taken: the CURVE authenticator thread must not keep the process alive
        ["--listen", f"tcp://127.0.0.1:{port}", "--curve-server-cert", str(keys / "collector.key_secret"),
         "--curve-clients", str(keys)],
        ["--listen", f"tcp://127.0.0.1:{port}"],
        ["--output", f"jsonl:{tmp_path}/no/such/dir/x.jsonl"],
    ]
    running = Collector(tmp_path, free_port()).start()
    # a second collector on the same --state-dir would cut back the first one's batches
    cases.append(["--listen", f"tcp://127.0.0.1:{free_port()}", "--state-dir", str(running.state)])
    try:
        for extra in cases:
            p = subprocess.run(runner.pipeline_cmd() + ["collector", "--quiet"] + extra, capture_output=True,
                               text=True, env=ENV, cwd=ROOT, timeout=20)
            assert p.returncode == 2, (extra, p.stderr)
            assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, (extra, p.stderr)
        assert running.stop() == 0
    finally:
        taken.close()
        running.kill_if_running()


# -- 5. untrusted messages ----------------------------------------------------------------------------

def good_record(sensor="x", sid=256, **kw):
    """A record as a sensor sends it: the worker fields (contracts.record.WIRE_NAMES)."""
    d = {n: None for n in WIRE_NAMES}
    d.update(type="session", final=True, end_reason="idle", session_id=sid, sensor=sensor, worker=0,
             report_number=1, start=1700000000.0, end=1700000001.0, duration=1.0, ip_version=4, transport=17,
             client_ip="10.0.0.1", client_port=1234, server_ip="10.0.0.2", server_port=53, proto_path="eth.ipv4.udp",
             rtt=None, tcp_flags=0, conn_state="SF", missed_bytes=0)
    for n in WIRE_NAMES:
        if n.endswith("_count"):
            d[n] = 1
    d.update(kw)
    return [d[n] for n in WIRE_NAMES]


def with_field(r, name, value):
    r = list(r)
    r[INDEX[name]] = value
    return r


def bad_messages():
    """Messages a collector must refuse without falling over, each with whether it can answer."""
    hdr = lambda seq, sensor="rogue": msgpack.packb({"sensor": sensor, "run": "r", "seq": seq})  # noqa: E731
    recs = lambda *rs: msgpack.packb(list(rs))  # noqa: E731
    n = N_WIRE
    out = [
        ([b"garbage"], False),
        ([b"R", b"\xc1", b"x"], False),                                    # header not msgpack
        ([b"X", hdr(1), recs(good_record("rogue"))], False),               # unknown kind
        ([b"R", hdr(1), recs(good_record("rogue")), b"more"], False),      # too many frames
        ([b"R", msgpack.packb({"sensor": 5, "run": "r", "seq": 1}), recs()], False),
        ([b"R", msgpack.packb({"sensor": "rogue", "run": "r", "seq": -1}), recs()], False),
        ([b"R", msgpack.packb({"sensor": "rogue", "run": "r", "seq": "1"}), recs()], False),
        ([b"R", msgpack.packb([1, 2, 3]), recs()], False),
        ([b"R", msgpack.packb({"sensor": "x" * 5000, "run": "r", "seq": 1}), recs()], False),
        ([b"R", hdr(2), b"\xc1"], True),                                   # records not msgpack
        ([b"R", hdr(3), msgpack.packb({"a": 1})], True),                   # not a list
        ([b"R", hdr(4), recs([1, 2, 3])], True),                           # wrong shape
        ([b"R", hdr(5), recs(good_record("rogue") + [{}, {}])], True),     # too long
        ([b"R", hdr(6), recs(good_record("rogue", final="yes"))], True),
        ([b"R", hdr(7), recs(with_field(good_record("rogue"), "sensor", 7))], True),
        ([b"R", hdr(8), recs(good_record("rogue", packet_count=-1))], True),
        ([b"R", hdr(9), recs(good_record("rogue", byte_count=1.5))], True),
        ([b"R", hdr(10), recs(good_record("rogue", end=float("nan")))], True),
        ([b"R", hdr(11), recs(good_record("rogue", start=float("inf")))], True),
        ([b"R", hdr(12), recs(good_record("rogue", app=["not", "hashable"]))], True),
        ([b"R", hdr(13), recs(good_record("rogue", client_ip="not an address"))], True),
        ([b"R", hdr(14), recs(good_record("rogue", client_ip=["10.0.0.1"]))], True),
        ([b"R", hdr(15), recs(good_record("rogue", client_port=70000))], True),
        ([b"R", hdr(16), recs(good_record("rogue", vlan="100"))], True),
        ([b"R", hdr(17), recs(good_record("rogue") + ["not a map"])], True),
        ([b"R", hdr(18), recs(good_record("rogue") + [{"nested": {1: 2}}])], True),   # map key not a string
        ([b"R", hdr(19), recs(good_record("rogue", session_id="256"))], True),
        ([b"R", hdr(20), recs(good_record("other-sensor"))], True),        # records of a sensor the header is not
        ([b"R", hdr(21), recs(good_record("rogue", type="aggregate"))], True),
        ([b"R", hdr(22), recs(good_record("rogue", transport=300))], True),
        ([b"R", hdr(23), b"\xdd\x00\x10\x00\x00" + b"\xc0" * 16], True),  # claims 1M elements
        ([b"R", hdr(24), msgpack.packb([[None] * n] * (checks.MAX_RECORDS + 1))], True),  # too many records
        ([b"R", hdr(25), msgpack.packb(["x" * 100_000])], True),
        ([b"R", hdr(26), recs(good_record("rogue", client_ip=b"\n\x00\x00\x01"))], True),
    ]
    return out


def test_untrusted_messages_are_counted_and_refused(traces, tmp_path):
    col = Collector(tmp_path, free_port()).start()
    msgs = bad_messages()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(col.addr)
        for parts, _ in msgs:
            dealer.send_multipart(parts)
        answered = [p for p, answers in msgs if answers]
        acks = []
        while len(acks) < len(answered) and dealer.poll(10_000):
            acks.append(dealer.recv_multipart())
        assert len(acks) == len(answered)
        for kind, body in acks:
            a = msgpack.unpackb(body)
            assert kind == wire.MSG_ACK and a["ok"] is False and a["run"] == "r", a
        assert sorted(msgpack.unpackb(b)["seq"] for _, b in acks) == list(range(2, 2 + len(answered)))
        assert col.proc.poll() is None, "the collector fell over"
        # the same batch numbers, now well formed, are still accepted: a refusal is not remembered as written
        dealer.send_multipart([b"R", msgpack.packb({"sensor": "rogue", "run": "r", "seq": 2}),
                               msgpack.packb([good_record("rogue")])])
        assert dealer.poll(10_000)
        assert msgpack.unpackb(dealer.recv_multipart()[1])["ok"] is True
        p = run_sensor(traces["a"], col.addr, "sensor-a", tmp_path / "a.json")
        assert p.returncode == 0, p.stderr
        assert col.stop() == 0, col.stderr()
    finally:
        dealer.close()
        ctx.term()
        col.kill_if_running()
    assert "Traceback" not in col.stderr()
    cstats = col.stats()
    assert cstats["rejected"] == len(msgs)
    lines = read_lines(col.out)
    assert runner.comparable(sessions_of(lines, "sensor-a")) == runner.comparable(traces["expect"]["a"])
    assert len(sessions_of(lines, "rogue")) == 1
    assert {r["sensor"] for r in sessions_of(lines)} == {"sensor-a", "rogue"}


def test_sensor_ignores_garbage_from_its_collector(traces, tmp_path):
    """A peer at the collector's address answering nonsense before each real acknowledgement:
    the sensor ignores the nonsense and ends once every batch is acknowledged."""
    port = free_port()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    stats_path = tmp_path / "a.json"
    sensor = start_sensor(traces["a"], f"tcp://127.0.0.1:{port}", "sensor-a", stats_path)
    garbage = [[b"A"], [b"A", b"\xc1"], [b"A", msgpack.packb({"run": [1], "seq": 1})],
               [b"A", msgpack.packb({"run": {"x": 1}, "seq": [2]})], [b"A", msgpack.packb(["run", "seq"])],
               [b"Z", msgpack.packb({"run": "r", "seq": 1})], [b"A", b"x", b"y"]]
    got = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while sensor.poll() is None and time.monotonic() < deadline:
            if not router.poll(200):
                continue
            ident, kind, hdr, body = router.recv_multipart()
            h = msgpack.unpackb(hdr)
            got.append(msgpack.unpackb(body))
            for g in garbage:
                router.send_multipart([ident] + g)
            router.send_multipart([ident, wire.MSG_ACK, msgpack.packb({"run": h["run"], "seq": h["seq"], "ok": True})])
        assert sensor.wait(RUN_TIMEOUT) == 0
    finally:
        end_group(sensor)
        router.close()
        ctx.term()
    recs = [r for batch in got for r in batch]
    # what a sensor sends: the worker fields; the collector's come at the collector
    assert all(len(r) <= N_WIRE + 1 for r in recs)
    drop = ("worker",) + COLLECTOR_NAMES
    assert runner.comparable([as_dict(r) for r in recs], drop) == runner.comparable(traces["expect"]["a"], drop)
    stats = json.loads(stats_path.read_text())
    assert stats["outputs"] == {f"collector:tcp://127.0.0.1:{port}": len(recs)}


def test_unpack_records_accepts_what_workers_send(traces):
    recs = [[r[n] for n in WIRE_NAMES] for r in runner.sessions(traces["expect"]["b"])]
    assert checks.unpack_records(msgpack.packb(recs)) == recs
    with_plugin = good_record() + [{"proc": "x", "deep": {"a": [1, 2.5, None, True]}}]
    assert checks.unpack_records(msgpack.packb([with_plugin])) == [with_plugin]
    assert checks.unpack_records(msgpack.packb([good_record(sensor="s")]), sensor="s")
    with pytest.raises(ValueError):
        checks.unpack_records(msgpack.packb([good_record(sensor="s")]), sensor="t")


# -- 6. units: the journal ----------------------------------------------------------------------------

def test_journal_seen_and_watermark(tmp_path):
    j = Journal(str(tmp_path / "st"))
    j.truncate_outputs([])
    for seq in (1, 2, 4, 5):
        j.begin("s", "r", seq, [])
        j.commit()
    assert [j.seen("s", "r", q) for q in range(1, 7)] == [True, True, False, True, True, False]
    assert not j.seen("s", "other", 1) and not j.seen("t", "r", 1)
    assert j.runs[("s", "r")] == [2, {4, 5}]
    j.begin("s", "r", 3, [])
    j.commit()
    assert j.runs[("s", "r")] == [5, set()]
    j.close()
    again = Journal(str(tmp_path / "st"))
    again.truncate_outputs([])
    assert all(again.seen("s", "r", q) for q in range(1, 6)) and not again.seen("s", "r", 6)
    again.close()


def test_journal_cuts_back_a_batch_begun_and_not_committed(tmp_path):
    out = tmp_path / "o.jsonl"
    state = str(tmp_path / "st")
    j = Journal(state)
    o = JsonLines(str(out))
    j.truncate_outputs([o])
    j.begin("s", "r", 1, [o])
    o.write([good_record("s", 256)])
    j.commit()
    committed = out.read_bytes()
    j.begin("s", "r", 2, [o])
    o.write([good_record("s", 512), good_record("s", 768)])
    # killed here: no commit; the file holds a batch nobody acknowledged
    written = len(out.read_bytes())
    assert written > len(committed)
    os.close(j.fd)        # the process is gone (nothing flushed, nothing closed in order; the kernel drops its lock)
    os.close(j.lock)
    o.file.fh.close()

    j2 = Journal(state)
    o2 = JsonLines(str(out), append=True)
    cut = j2.truncate_outputs([o2])
    assert cut == [(str(out), written - len(committed))]
    assert j2.unclean
    assert out.read_bytes() == committed
    assert o2.tell() == (str(out), len(committed))
    assert j2.seen("s", "r", 1) and not j2.seen("s", "r", 2)
    # the batch comes again and is written once
    j2.begin("s", "r", 2, [o2])
    o2.write([good_record("s", 512), good_record("s", 768)])
    j2.commit()
    o2.close()
    j2.close(clean=True)
    ids = [json.loads(line)["session_id"] for line in out.read_bytes().splitlines()]
    assert ids == [256, 512, 768]
    # a third start has nothing to cut
    j3 = Journal(state)
    o3 = JsonLines(str(out), append=True)
    assert j3.truncate_outputs([o3]) == []
    assert j3.seen("s", "r", 2) and not j3.unclean
    o3.close()
    j3.close()


def test_journal_survives_a_cut_line_and_compaction(tmp_path, monkeypatch):
    import collector.journal as journal_mod
    monkeypatch.setattr(journal_mod, "COMPACT_EVERY", 3)
    state = tmp_path / "st"
    j = Journal(str(state))
    j.truncate_outputs([])
    for seq in range(1, 8):
        j.begin("s", "r", seq, [])
        j.commit()
    j.close()
    assert len((state / "journal").read_text().splitlines()) < 7 * 2
    with open(state / "journal", "ab") as fh:
        fh.write(b'{"begin": ["s", "r", 8], "po')          # the kill cut this line
    j2 = Journal(str(state))
    assert j2.truncate_outputs([]) == []
    assert all(j2.seen("s", "r", q) for q in range(1, 8)) and not j2.seen("s", "r", 8)
    j2.begin("s", "r", 8, [])
    j2.commit()
    j2.close()
    j3 = Journal(str(state))
    j3.truncate_outputs([])
    assert j3.seen("s", "r", 8)
    j3.close()


def test_journal_is_one_collectors_at_a_time(tmp_path):
    j = Journal(str(tmp_path / "st"))
    with pytest.raises(OSError, match="in use by another running collector"):
        Journal(str(tmp_path / "st"))
    j.close()
    Journal(str(tmp_path / "st")).close()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_state_files_are_for_the_service_alone(tmp_path):
    """The journal and the spool hold records and where they went: 0600 files in 0700
    folders whatever the umask, and the files of an older version (0644) are made so too."""
    old_umask = os.umask(0o022)
    try:
        j = Journal(str(tmp_path / "st"))
        j.truncate_outputs([])
        j.begin("s", "r", 1, [])
        j.commit()
        j.close(clean=True)
        assert mode(tmp_path / "st") == 0o700
        assert {p.name: mode(p) for p in (tmp_path / "st").iterdir()} == {"journal": 0o600, "lock": 0o600}
        for p in (tmp_path / "st").iterdir():
            p.chmod(0o644)
        j = Journal(str(tmp_path / "st"))
        assert j.seen("s", "r", 1)
        j.truncate_outputs([])
        j.close()
        assert {p.name: mode(p) for p in (tmp_path / "st").iterdir()} == {"journal": 0o600, "lock": 0o600}
        sp = Spool(str(tmp_path / "spool"), mem_bytes=100)
        sp.add(*_batch("r", 1, 300))
        assert mode(tmp_path / "spool") == 0o700
        files = list((tmp_path / "spool").iterdir())
        assert files and {mode(p) for p in files} == {0o600}
    finally:
        os.umask(old_umask)


def test_journal_in_memory_only():
    j = Journal(None)
    assert j.truncate_outputs([]) == []
    j.begin("s", "r", 1, [])
    j.commit()
    assert j.seen("s", "r", 1) and not j.seen("s", "r", 2)
    j.close()


# -- 6. units: aggregates -----------------------------------------------------------------------------

def rec(sid, end, ul_p, dl_p, ul_b, dl_b, final=True, sensor="s", transport=6, app=None,
        client="10.0.0.1", server="10.0.0.2"):
    r = good_record(sensor, sid, end=end, start=end, final=final, end_reason="idle" if final else "active",
                    transport=transport, app=app, client_ip=client, server_ip=server)
    for name, v in (("ul_packet_count", ul_p), ("dl_packet_count", dl_p), ("ul_byte_count", ul_b),
                    ("dl_byte_count", dl_b)):
        r[INDEX[name]] = v
    return r[:N_WIRE] + [None] * len(COLLECTOR_NAMES) + r[N_WIRE:]      # as the collector has it


def test_aggregates_take_deltas_of_cumulative_interims():
    ag = Aggregator(interval=60, hold=120)
    assert ag.add([rec(1, 10.0, 2, 1, 200, 100, final=False)]) == []
    assert ag.add([rec(1, 70.0, 5, 4, 500, 400, final=False)]) == []
    assert ag.add([rec(1, 130.0, 6, 4, 600, 400, final=True)]) == []
    out = ag.flush()
    assert [(a["interval_start"], a["packets"], a["bytes"]) for a in out] == [(0.0, 3, 300), (60.0, 6, 600),
                                                                              (120.0, 1, 100)]
    assert sum(a["packets"] for a in out) == 10 and sum(a["bytes"] for a in out) == 1000
    assert [a["sessions_ended"] for a in out] == [0, 0, 1]
    assert all(a["type"] == "aggregate" and a["sensor"] == "s" and a["interval_end"] == a["interval_start"] + 60
               for a in out)
    assert out[0]["by_transport"] == {"6": {"sessions": 1, "packets": 3, "bytes": 300}}
    assert out[0]["by_app"] == {"unknown": {"sessions": 1, "packets": 3, "bytes": 300}}
    assert ag.emitted == 3


def test_aggregates_forget_a_session_at_its_final():
    ag = Aggregator(interval=60, hold=1e9)
    ag.add([rec(1, 10.0, 2, 2, 20, 20, final=False), rec(1, 20.0, 3, 3, 30, 30, final=True)])
    assert ag.last == {}
    # the same id again (a new session after the first ended) starts from zero
    ag.add([rec(1, 30.0, 1, 0, 10, 0, final=True)])
    (a,) = ag.flush()
    assert a["packets"] == 6 + 1 and a["bytes"] == 60 + 10 and a["sessions"] == 3 and a["sessions_ended"] == 2


def test_late_records_make_another_aggregate_for_an_emitted_interval():
    ag = Aggregator(interval=60, hold=60)
    ag.add([rec(1, 10.0, 1, 1, 10, 10)])
    first = ag.add([rec(2, 200.0, 1, 0, 5, 0)])
    assert [(a["interval_start"], a["packets"]) for a in first] == [(0.0, 2)]
    late = ag.add([rec(3, 30.0, 4, 0, 40, 0)])        # its interval was written already: another one, due now
    assert [(a["interval_start"], a["packets"], a["sessions"]) for a in late] == [(0.0, 4, 1)]
    rest = ag.flush()
    assert [(a["interval_start"], a["packets"]) for a in rest] == [(180.0, 1)]
    assert ag.emitted == 3
    totals = {}
    for a in first + late + rest:
        totals[(a["sensor"], a["interval_start"])] = totals.get((a["sensor"], a["interval_start"]), 0) + a["packets"]
    assert totals == {("s", 0.0): 6, ("s", 180.0): 1}


def test_aggregates_per_sensor_and_top_talkers():
    ag = Aggregator(interval=60, hold=1e9)
    recs = []
    for i in range(TOP + 3):                   # host 10.1.0.i sends i+1 packets of 100 bytes to the server
        recs.append(rec(100 + i, 5.0, i + 1, 0, (i + 1) * 100, 0, client=f"10.1.0.{i}", server="10.9.9.9"))
    recs.append(rec(1, 5.0, 1, 1, 50, 50, sensor="t", transport=17, app="dns"))
    ag.add(recs)
    out = {a["sensor"]: a for a in ag.flush()}
    assert set(out) == {"s", "t"}
    top = out["s"]["top_talkers"]
    assert len(top) == TOP
    total = sum((i + 1) * 100 for i in range(TOP + 3))
    assert top[0] == {"ip": "10.9.9.9", "bytes": total, "packets": sum(range(1, TOP + 4))}
    assert [t["ip"] for t in top[1:]] == [f"10.1.0.{i}" for i in range(TOP + 2, 2, -1)][:TOP - 1]
    assert [t["bytes"] for t in top] == sorted((t["bytes"] for t in top), reverse=True)
    assert out["t"]["by_app"] == {"dns": {"sessions": 1, "packets": 2, "bytes": 100}}
    assert out["t"]["by_transport"] == {"17": {"sessions": 1, "packets": 2, "bytes": 100}}
    assert not math.isnan(out["s"]["interval_start"])


def test_each_sensor_has_its_own_traffic_clock():
    """A sensor far ahead (another clock, a live feed beside a replay) does not flush the
    intervals of another sensor early, one small aggregate per batch."""
    ag = Aggregator(interval=60, hold=120)
    assert ag.add([rec(1, 10.0, 1, 0, 10, 0, sensor="replay")]) == []
    assert ag.add([rec(2, 1_000_000.0, 1, 0, 10, 0, sensor="live")]) == []
    assert ag.add([rec(3, 20.0, 1, 0, 10, 0, sensor="replay")]) == []
    out = ag.add([rec(4, 200.0, 1, 0, 10, 0, sensor="replay")])
    assert [(a["sensor"], a["interval_start"], a["packets"]) for a in out] == [("replay", 0.0, 2)]
    assert sorted((a["sensor"], a["interval_start"]) for a in ag.flush()) == [("live", 999960.0), ("replay", 180.0)]


def plain_aggregates(batches, interval, hold):
    """The aggregates worked out one record at a time, as the docstring of collector.aggregate
    says, to hold the batch-at-a-time Aggregator to (emitted after each batch, then at the end)."""
    last, buckets, clocks, out = {}, {}, {}, []
    g = {n: INDEX[n] for n in NAMES}

    def due(before=None):
        ready = sorted(k for k in buckets if k[1] + interval <= (clocks[k[0]] - hold if before is None else before))
        for sensor, start in ready:
            b = buckets.pop((sensor, start))
            top = sorted(b["hosts"].items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP]
            out.append({"type": "aggregate", "interval_start": start, "interval_end": start + interval,
                        "sensor": sensor, "sessions": b["sessions"], "sessions_ended": b["ended"],
                        "packets": b["packets"], "bytes": b["bytes"],
                        "by_transport": {k: dict(zip(("sessions", "packets", "bytes"), v))
                                         for k, v in sorted(b["transport"].items())},
                        "by_app": {k: dict(zip(("sessions", "packets", "bytes"), v)) for k, v in sorted(b["app"].items())},
                        "top_talkers": [{"ip": ip, "bytes": v[0], "packets": v[1]} for ip, v in top]})

    for batch in batches:
        for r in batch:
            k = (r[g["sensor"]], r[g["session_id"]])
            cur = [r[g[n]] for n in ("ul_packet_count", "dl_packet_count", "ul_byte_count", "dl_byte_count")]
            prev = last.pop(k, None) if r[g["final"]] else last.get(k)
            if not r[g["final"]]:
                last[k] = cur
            packets = cur[0] + cur[1] - (prev[0] + prev[1] if prev else 0)
            nbytes = cur[2] + cur[3] - (prev[2] + prev[3] if prev else 0)
            sensor, end = r[g["sensor"]], r[g["end"]]
            clocks[sensor] = max(clocks.get(sensor, end), end)
            b = buckets.setdefault((sensor, end - end % interval), {
                "sessions": 0, "ended": 0, "packets": 0, "bytes": 0, "transport": {}, "app": {}, "hosts": {}})
            b["sessions"] += 1
            b["ended"] += bool(r[g["final"]])
            b["packets"] += packets
            b["bytes"] += nbytes
            for table, name in ((b["transport"], str(r[g["transport"]])), (b["app"], r[g["app"]] or "unknown")):
                row = table.setdefault(name, [0, 0, 0])
                row[0] += 1
                row[1] += packets
                row[2] += nbytes
            for ip in (r[g["client_ip"]], r[g["server_ip"]]):
                h = b["hosts"].setdefault(ip, [0, 0])
                h[0] += nbytes
                h[1] += packets
        due()
    due(float("inf"))
    return out


def mixed_records(n, seed):
    """Sessions of several sensors reporting interims and finals, late ones, many hosts and apps."""
    import random
    rng = random.Random(seed)
    counters = {}
    out = []
    t = 1_700_000_000.0
    for _ in range(n):
        t += rng.random() * 0.5
        sensor = rng.choice(["a", "a", "a", "b", "c,d"])
        sid = rng.randrange(400)
        c = counters.setdefault((sensor, sid), [0, 0, 0, 0])
        for j, most in enumerate((5, 5, 3000, 3000)):
            c[j] += rng.randrange(most)
        final = rng.random() < 0.4
        end = t - rng.choice([0, 0, 0, 5, 60, 300, 3000])          # idle expiry writes a session long after its end
        r = rec(sid, end, *c, final=final, sensor=sensor, transport=rng.choice([6, 6, 17, 1, 132]),
                app=rng.choice([None, None, "dns", "http", "tls"] + [f"app{i}" for i in range(12)]),
                client=f"10.0.{rng.randrange(3)}.{rng.randrange(40)}", server=f"192.0.2.{rng.randrange(20)}")
        out.append(r)
        if final:
            del counters[(sensor, sid)]
    return out


def test_aggregates_of_batches_are_those_of_records_one_by_one():
    import random
    recs = mixed_records(6000, seed=11)
    rng = random.Random(4)
    for interval, hold in ((60, 600), (7, 30), (3600, 600)):
        cuts, i = [], 0
        while i < len(recs):                 # batches of 1 to 4096 records, some with one session twice
            k = rng.choice([1, 2, 17, 300, 4096])
            cuts.append(recs[i:i + k])
            i += k
        ag = Aggregator(interval=interval, hold=hold)
        got = []
        for batch in cuts:
            got += ag.add(batch)
        got += ag.flush()
        want = plain_aggregates(cuts, interval, hold)
        assert got == want, interval
        assert ag.emitted == len(want)
        assert len(want) > 3 and any(len(a["by_app"]) > 8 for a in want)


def test_merger_of_batches_is_that_of_records_one_by_one():
    from collector.merge import Merger
    recs = mixed_records(3000, seed=12)
    for i, r in enumerate(recs):
        r[INDEX["cap_packet_count"]] = i
        r[INDEX["parent_session_id"]] = None if i % 4 else 77
    m = Merger()
    i = 0
    for k in [1, 7, 250, 3, 1000] * 100:               # with and without two records of a session in a batch
        m.add(recs[i:i + k])
        i += k
    sessions, frames, finals = {}, 0, 0
    for r in recs:
        k = (r[INDEX["sensor"]], r[INDEX["session_id"]])
        if r[INDEX["final"]]:
            finals += 1
            frames += r[INDEX["cap_packet_count"]] if r[INDEX["parent_session_id"]] is None else 0
            sessions.pop(k, None)
        else:
            sessions[k] = r
    assert m.records == len(recs) and m.final_records == m.finished == finals
    assert m.frames == frames and m.sessions == sessions and len(sessions) > 50
