"""End to end: the real command, real worker and collector processes, real sockets."""
import json
import struct

import pytest

from pipeline import tracegen
from tests import runner
from tests.shared import all_captures, capture_ids, needs_shared


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    frames, truth = tracegen.build(seed=5, sessions=300)
    tracegen.write_pcap(str(d / "demo.pcap"), frames)
    return d / "demo.pcap", truth, len(frames)


def test_run_matches_ground_truth(demo, tmp_path):
    pcap, truth, nframes = demo
    p, recs, stats = runner.run([pcap], tmp_path, workers=2)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    runner.check_identities(stats, recs)
    assert stats["frames_read"] == nframes
    fin = runner.finals(recs)
    got = {}
    for r in fin:
        got.setdefault((r["client_ip"], r["client_port"], r["server_ip"], r["server_port"], r["transport"]), []).append(r)
    missing = []
    for t in truth:
        k = (t["client_ip"], t["client_port"], t["server_ip"], t["server_port"], t["transport"])
        cands = got.get(k, [])
        fields = ("packet_count", "ul_packet_count", "dl_packet_count", "byte_count", "ul_byte_count",
                  "dl_byte_count", "data_byte_count", "retransmission_count", "cap_packet_count")
        if not any(all(r[f] == t[f] for f in fields if f in t) for r in cands):
            missing.append((t, cands))
    assert not missing, missing[:2]
    assert stats["sessions"] == len(fin)
    assert all(r["sensor"] for r in fin)
    assert len({r["session_id"] for r in fin}) == len(fin)


def test_output_does_not_depend_on_worker_count(demo, tmp_path):
    pcap, _, _ = demo
    a = runner.run([pcap], tmp_path / "a", workers=1)
    b = runner.run([pcap], tmp_path / "b", workers=3)
    assert a[0].returncode == 0 and b[0].returncode == 0
    assert runner.comparable(a[1]) == runner.comparable(b[1])
    assert {r["worker"] for r in b[1]} == {0, 1, 2}


def test_several_files_are_one_stream(demo, tmp_path):
    pcap, _, nframes = demo
    p, recs, stats = runner.run([pcap, pcap], tmp_path, workers=2)
    assert p.returncode == 0, p.stderr
    assert stats["frames_read"] == 2 * nframes
    runner.check_identities(stats, recs)


def test_tunnel_children_name_their_parent(demo, tmp_path):
    pcap, _, _ = demo
    p, recs, stats = runner.run([pcap], tmp_path, workers=3)
    fin = runner.finals(recs)
    by_id = {r["session_id"]: r for r in fin}
    children = [r for r in fin if r["parent_session_id"] is not None]
    assert children, "the generated trace has a GTP tunnel"
    for c in children:
        parent = by_id[c["parent_session_id"]]
        assert parent["proto_path"].endswith(".gtp") and c["proto_path"].startswith(parent["proto_path"] + ".")


def test_worker_process_title(demo, tmp_path):
    plugin = tmp_path / "titleplugin.py"
    plugin.write_text("class Title:\n"
                      "    def on_expire(self, s):\n"
                      "        s.extra = {'proc_title': open('/proc/self/cmdline').read().replace('\\0', ' ').strip()}\n")
    import os
    os.environ["PYTHONPATH"] = str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")
    try:
        p, recs, _ = runner.run([demo[0]], tmp_path / "o", "--plugin", "titleplugin:Title", workers=2)
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert p.returncode == 0, p.stderr
    titles = {r["proc_title"] for r in runner.finals(recs)}
    assert titles == {"pipeline: worker 0", "pipeline: worker 1"}


@pytest.mark.parametrize("content,what", [
    (None, "no such file"), (b"", "empty"), (b"hello, this is text\n" * 10, "not a pcap"),
    (b"\x1f\x8b\x08\x00" + b"\0" * 60, "compressed"),
])
def test_bad_input_files_exit_2_with_one_line(tmp_path, content, what):
    f = tmp_path / "bad.pcap"
    if content is not None:
        f.write_bytes(content)
    p, recs, stats = runner.run([f], tmp_path / "o")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.pcap" in lines[0] and "Traceback" not in p.stderr


def test_unknown_link_type_is_counted_not_fatal(tmp_path):
    f = tmp_path / "lt.pcap"
    recs = b"".join(struct.pack("<IIII", 1_700_000_000 + i, 0, 20, 20) + bytes(range(20)) for i in range(5))
    f.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147) + recs)
    p, out, stats = runner.run([f], tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert stats["frames_read"] == 5 and stats["frames_non_ip"] == 5
    runner.check_identities(stats, out)


def test_bad_flags_are_one_line_errors(tmp_path, demo):
    for extra in (["--output", "nosuch:x"], ["--plugin", "nosuchmodule:X"], ["--workers", "0"],
                  ["--output", f"jsonl:{tmp_path}/no/such/dir/s.jsonl"], ["--idle-timeout", "-1"],
                  ["--active-timeout", "1e-9"], ["--bogus"]):
        p, _, _ = runner.run([demo[0]], tmp_path, *extra)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, (extra, p.stderr)


CAPS = all_captures()


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("path", CAPS, ids=capture_ids(CAPS))
def test_shared_capture_same_for_1_and_3_workers(path, tmp_path):
    """Every shared capture: exit 0 (or 2 with one line for an unreadable file), no traceback,
    both identities, and the same final sessions with 1 and 3 workers."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:     # both runs at once: mostly start-up, two cores
        fa = pool.submit(runner.run, [path], tmp_path / "a", workers=1)
        fb = pool.submit(runner.run, [path], tmp_path / "b", workers=3)
        a, b = fa.result(), fb.result()
    assert "Traceback" not in a[0].stderr, a[0].stderr
    if a[0].returncode == 2:
        assert len(a[0].stderr.strip().splitlines()) == 1
        assert b[0].returncode == 2
        return
    assert a[0].returncode == 0, a[0].stderr
    runner.check_identities(a[2], a[1])
    assert b[0].returncode == 0, b[0].stderr
    runner.check_identities(b[2], b[1])
    assert runner.comparable(a[1]) == runner.comparable(b[1])


def test_sigterm_writes_every_open_session_and_exits_0(tmp_path):
    """SIGTERM mid-run: stop reading, end every open session as "shutdown", exit 0, stats consistent."""
    import signal
    import subprocess
    import time
    frames, _ = tracegen.build(seed=9, sessions=15000)
    pcap = tmp_path / "big.pcap"
    tracegen.write_pcap(str(pcap), frames)
    out, st = tmp_path / "s.jsonl", tmp_path / "st.json"
    copies = 8          # the same capture 8 times over: far more work than the second before the signal
    p = subprocess.Popen(runner.pipeline_cmd() + ["start", "--workers", "2", *["--read", str(pcap)] * copies,
                                                  "--output", f"jsonl:{out}", "--stats-json", str(st),
                                                  "--chunk-frames", "1024"],
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    t = time.monotonic()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0 and time.monotonic() - t < 10, err
    stats = json.loads(st.read_text())
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    runner.check_identities(stats, recs)
    assert stats["interrupted"] and stats["frames_read"] < copies * len(frames)
    assert any(r["end_reason"] == "shutdown" for r in runner.finals(recs))
