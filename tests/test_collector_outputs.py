"""A standalone collector never dies on a record (issue 25, item 1).

One sensor's capture had timestamps of year ~150,000 (a pcapng read with the wrong byte
order): the ECS output raised, the collector died for every sensor, and the sensor's
spool sent the same batch again after each restart. Here real collectors with every
kind of output take such records (from a crafted batch over ZeroMQ, and from a real
sensor reading that capture) while another sensor's records must all be written, as a
local run of the same trace writes them.
"""
import json
import socket
import time

import msgpack
import pytest
import zmq

from contracts.record import INDEX
from tests import runner
from tests.shared import PCAPS
from tests.test_collector import (RUN_TIMEOUT, Collector, free_port, good_record, local_run, make_trace,
                                  read_lines, run_sensor, sessions_of)

ODD_CAPTURE = PCAPS / "nfstream" / "dhcp_big_endian.pcapng"
U64 = (1 << 64) - 1


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trace_b(tmp_path_factory):
    d = tmp_path_factory.mktemp("traces")
    trace = make_trace(d, "b", 250, 12)
    return trace, local_run(trace, d / "local-b", "sensor-b")


def every_output(tmp):
    """Every kind of output a collector can have without a broker: files, and UDP receivers
    that are not there (fire-and-forget: they must not end the run either)."""
    return ["--output", f"ecs:{tmp / 'out.ecs'}", "--output", f"csv:{tmp / 'out.csv'}",
            "--output", f"syslog:udp://127.0.0.1:{free_udp_port()}?format=cef",
            "--output", f"syslog:udp://127.0.0.1:{free_udp_port()}",
            "--output", f"ipfix:udp://127.0.0.1:{free_udp_port()}"]


def check_second_sensor(col, tmp, expect):
    """sensor-b's records, all of them, in the JSON lines and the ECS file."""
    lines = read_lines(col.out)
    assert runner.comparable(sessions_of(lines, "sensor-b")) == runner.comparable(expect)
    ecs = [json.loads(x) for x in (tmp / "out.ecs").read_text().splitlines()]
    assert len([e for e in ecs if e["observer"]["name"] == "sensor-b"]) == len(sessions_of(lines, "sensor-b"))
    assert "Traceback" not in col.stderr()
    return lines, ecs


def test_records_of_absurd_times_never_stop_the_collector(trace_b, tmp_path):
    trace, expect = trace_b
    col = Collector(tmp_path, free_port(), *every_output(tmp_path)).start()
    odd = [good_record("odd", sid=256 * (i + 1), start=t, end=t)
           for i, t in enumerate((4734231571822.834, -1e300, 1e300, U64, -(1 << 63)))]
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(col.addr)
        for _ in range(2):          # the same batch again, as a sensor's spool would send it
            dealer.send_multipart([b"R", msgpack.packb({"sensor": "odd", "run": "r", "seq": 1}),
                                   msgpack.packb(odd)])
            assert dealer.poll(RUN_TIMEOUT * 1000)
            assert msgpack.unpackb(dealer.recv_multipart()[1])["ok"] is True
        assert col.proc.poll() is None, "the collector fell over"
        p = run_sensor(trace, col.addr, "sensor-b", tmp_path / "b.json")
        assert p.returncode == 0, p.stderr
        assert col.proc.poll() is None
        assert col.stop() == 0, col.stderr()
    finally:
        dealer.close()
        ctx.term()
        col.kill_if_running()
    lines, ecs = check_second_sensor(col, tmp_path, expect)
    assert len(sessions_of(lines, "odd")) == len(odd)              # written once, as they are
    assert [r["start"] for r in sessions_of(lines, "odd")] == [r[INDEX["start"]] for r in odd]
    clamped = [e for e in ecs if e["observer"]["name"] == "odd"]
    assert len(clamped) == len(odd)
    assert {e["@timestamp"] for e in clamped} <= {"9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00.000000Z"}
    assert [e["pipeline"]["start"] for e in clamped] == [r[INDEX["start"]] for r in odd]   # the native value
    stats = col.stats()
    issues = stats["output_issues"]
    assert issues[f"ecs:{tmp_path / 'out.ecs'}"]["times_clamped"] == len(odd)
    assert all(v["records_unwritable"] == 0 for v in issues.values())
    assert all(v["datagrams_refused"] > 0 for k, v in issues.items() if "udp://" in k)
    assert stats["duplicates"] == 1


@pytest.mark.skipif(not ODD_CAPTURE.is_file(), reason=f"{ODD_CAPTURE} is absent (../shared)")
def test_sensor_with_the_odd_capture_and_another_into_one_collector(trace_b, tmp_path):
    trace, expect = trace_b
    col = Collector(tmp_path, free_port(), *every_output(tmp_path)).start()
    try:
        p = run_sensor(ODD_CAPTURE, col.addr, "sensor-odd", tmp_path / "odd.json")
        assert p.returncode == 0, p.stderr
        time.sleep(0.2)
        assert col.proc.poll() is None, "the collector fell over: " + col.stderr()
        p = run_sensor(trace, col.addr, "sensor-b", tmp_path / "b.json")
        assert p.returncode == 0, p.stderr
        assert col.stop() == 0, col.stderr()
    finally:
        col.kill_if_running()
    lines, ecs = check_second_sensor(col, tmp_path, expect)
    odd = sessions_of(lines, "sensor-odd")
    assert odd and len([e for e in ecs if e["observer"]["name"] == "sensor-odd"]) == len(odd)
    assert json.loads((tmp_path / "odd.json").read_text())["records"] == len(odd)
    assert col.stats()["output_issues"][f"ecs:{tmp_path / 'out.ecs'}"]["times_clamped"] == len(odd)
