"""Line-output files (collector/outputs/files.py) through the JSON lines output: 0640,
whole lines, size and time rotation (injected clock: no sleeping), keep=N, bad targets."""
import json
import os
import random
import re
import stat
import time

import pytest

from collector.outputs import files
from collector.outputs.files import LineFile, check_target, parse_target
from collector.outputs.jsonl import JsonLines, as_line, open_private
from contracts.record import NAMES, as_dict

STAMPED = re.compile(r"\.(\d{8}T\d{6})(?:\.(\d+))?$")


def record(i: int, end: float = 1.7e9) -> list:
    """A plausible wire record; session_id i identifies it."""
    d = {n: 0 for n in NAMES}
    d.update(type="session", final=i % 3 != 0, end_reason="idle" if i % 3 else "active",
             session_id=i, parent_session_id=None, sensor="s1", report_number=1,
             start=end - 1.5, end=end, duration=1.5, ip_version=4, transport=6,
             client_ip=f"10.0.{i % 256}.1", client_port=1024 + i % 60000,
             server_ip="192.0.2.1", server_port=443, vlan=[10, 20] if i % 5 == 0 else None,
             proto_path="eth.ipv4.tcp", rtt=None, app="x" * (i % 97))
    return [d[n] for n in NAMES]


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def rotated(path) -> list:
    """Rotated files of PATH on disk, oldest first, by their stamped names."""
    folder, base = os.path.split(str(path))
    found = []
    for name in os.listdir(folder):
        m = STAMPED.search(name)
        if name.startswith(base + ".") and m and name[len(base):] == m.group(0):
            found.append((m.group(1), int(m.group(2) or 0), os.path.join(folder, name)))
    return [p for *_, p in sorted(found)]


def read_ids(path) -> list:
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with half a line"
    return [json.loads(line)["session_id"] for line in data.splitlines()]


def test_size_rotation_keeps_every_record_once_in_order(tmp_path):
    out = tmp_path / "s.jsonl"
    clock = Clock(1.7e9)
    o = JsonLines(f"{out}?rotate=20KB", clock=clock)
    rng = random.Random(7)
    n = 0
    for _ in range(300):
        batch = [record(n + k) for k in range(rng.randint(1, 40))]
        n += len(batch)
        o.write(batch)
        clock.t += rng.choice((0, 0, 0.4, 1))           # several rotations share a second: .N names
        assert read_ids(out) is not None                 # between batches the file holds whole lines
    o.close()
    assert o.written == n
    paths = rotated(out) + [str(out)]
    assert len(paths) > 20
    assert any(STAMPED.search(p).group(2) for p in paths[:-1]), "no same-second rotation exercised"
    ids = []
    for p in paths:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640, p
        assert os.path.getsize(p) <= 20000, p
        ids += read_ids(p)
    assert ids == list(range(n))                         # nothing lost, nothing twice, in order


def test_keep_deletes_the_oldest_rotated_files(tmp_path):
    out = tmp_path / "s.jsonl"
    clock = Clock(1.7e9)
    o = JsonLines(f"{out}?rotate=4KiB&keep=3", clock=clock)
    for i in range(400):
        o.write([record(i)])
        clock.t += 0.5
    o.close()
    kept = rotated(out)
    assert len(kept) == 3
    ids = [i for p in kept + [str(out)] for i in read_ids(p)]
    assert ids == list(range(ids[0], 400)) and ids[0] > 0   # the newest records, contiguous


def test_time_rotation_on_interval_boundaries(tmp_path):
    out = tmp_path / "s.jsonl"
    t0 = 1_700_000_000 // 3600 * 3600                    # on the hour
    clock = Clock(t0 + 100)
    o = JsonLines(f"{out}?rotate_every=1h", clock=clock)
    plan = [(t0 + 200, 0), (t0 + 3599, 1), (t0 + 3600, 2), (t0 + 3700, 3),
            (t0 + 3 * 3600 + 5, 4), (t0 + 3 * 3600 + 6, 5)]
    for t, i in plan:
        clock.t = t
        o.write([record(i)])
    clock.t = t0 + 10 * 3600
    o.write([])                                          # nothing to write: no rotation, no file
    o.close()
    paths = rotated(out)
    stamps = [time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) for t in (t0 + 3600, t0 + 3 * 3600 + 5)]
    assert [os.path.basename(p) for p in paths] == [f"s.jsonl.{s}" for s in stamps]
    assert [read_ids(p) for p in paths + [str(out)]] == [[0, 1], [2, 3], [4, 5]]


def test_empty_file_is_not_rotated_by_time(tmp_path):
    out = tmp_path / "s.jsonl"
    clock = Clock(1_700_000_000)
    o = JsonLines(f"{out}?rotate_every=60s", clock=clock)
    clock.t += 600
    o.write([record(1)])
    o.close()
    assert rotated(out) == [] and read_ids(out) == [1]


def test_rotation_moves_an_earlier_file_aside_instead_of_truncating(tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_bytes(b'{"session_id": 99}\n')
    o = JsonLines(f"{out}?rotate=1MB", clock=Clock(1.7e9))
    o.write([record(1)])
    o.close()
    (old,) = rotated(out)
    assert read_ids(old) == [99] and read_ids(out) == [1]


def test_without_a_query_jsonl_is_unchanged(tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_bytes(b"left over from an earlier run\n")
    o = JsonLines(str(out))
    recs = [record(i) for i in range(50)]
    o.write(recs[:20])
    o.write([])
    o.write(recs[20:])
    o.close()
    assert o.written == 50
    assert out.read_bytes() == b"".join(as_line(r) for r in recs)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [as_dict(r) for r in recs]
    assert rotated(out) == []                            # an existing file keeps its mode, as before


def test_stdout(capsysbinary):
    o = JsonLines("-")
    o.write([record(1), record(2)])
    o.close()
    assert [json.loads(line)["session_id"] for line in capsysbinary.readouterr().out.splitlines()] == [1, 2]


def test_header_starts_every_file(tmp_path):
    out = tmp_path / "t.txt"
    f = LineFile(f"{out}?rotate=100B", header=b"h\n", clock=Clock(0))
    for i in range(30):
        f.write([b"%08d\n" % i])
    f.close()
    lines = []
    for p in rotated(out) + [str(out)]:
        body = open(p, "rb").read().splitlines()
        assert body[0] == b"h" and len(body) > 1 and os.path.getsize(p) <= 100
        lines += body[1:]
    assert lines == [b"%08d" % i for i in range(30)]


def test_open_private_is_still_exported_by_jsonl(tmp_path):
    assert open_private is files.open_private
    with open_private(str(tmp_path / "p"), "w") as fh:
        fh.write(b"x")
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o640


@pytest.mark.parametrize("query,expected", [
    ("rotate=100MB", (100_000_000, None, None)),
    ("rotate=1KiB", (1024, None, None)),
    ("rotate=2mib", (2 * 1024 ** 2, None, None)),
    ("rotate=1GB&keep=5", (10 ** 9, None, 5)),
    ("rotate=1.5KB", (1500, None, None)),
    ("rotate=512", (512, None, None)),
    ("rotate_every=1h", (None, 3600, None)),
    ("rotate_every=15m&rotate=3GiB", (3 * 1024 ** 3, 900, None)),
    ("rotate_every=1d&keep=7", (None, 86400, 7)),
    ("rotate_every=90s", (None, 90, None)),
])
def test_query_values(tmp_path, query, expected):
    t = parse_target(f"{tmp_path}/s.jsonl?{query}")
    assert t.path == f"{tmp_path}/s.jsonl"
    assert (t.rotate_bytes, t.rotate_every, t.keep) == expected


@pytest.mark.parametrize("target", [
    "s.jsonl?rotate=10XB", "s.jsonl?rotate=", "s.jsonl?rotate", "s.jsonl?rotate=0", "s.jsonl?rotate=-1MB",
    "s.jsonl?rotate_every=1w", "s.jsonl?rotate_every=0s", "s.jsonl?rotate_every=1.5h",
    "s.jsonl?colour=blue", "s.jsonl?keep=3", "s.jsonl?rotate=1MB&keep=0", "s.jsonl?rotate=1MB&keep=x",
    "s.jsonl?rotate=1MB&rotate=2MB", "-?rotate=1MB", "?rotate=1MB", "s.jsonl?rotate=1MB&",
])
def test_bad_query_is_one_line_value_error(tmp_path, target):
    with pytest.raises(ValueError) as e:
        JsonLines.check(str(tmp_path / target) if not target.startswith(("-", "?")) else target)
    assert "\n" not in str(e.value) and str(e.value)
    with pytest.raises(ValueError):
        JsonLines(str(tmp_path / target) if not target.startswith(("-", "?")) else target)


def test_check_looks_at_the_file_system(tmp_path):
    check_target(str(tmp_path / "s.jsonl?rotate=1MB"))
    check_target("-")
    for bad in (tmp_path / "missing" / "s.jsonl", tmp_path):
        with pytest.raises(ValueError) as e:
            check_target(str(bad))
        assert "\n" not in str(e.value)
