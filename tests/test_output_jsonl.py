"""JSON lines written a batch at a time (collector/outputs/jsonl.py): the same bytes as one
dict per record, whatever the values hold (commas, QinQ lists, plugin fields, odd text),
and whatever the plugin/classification dict holds (fields as_dict drops: a non-dict,
a key naming a record field, a non-string key; floats equal but printed apart)."""
import base64
import json
import os
import random

import orjson

import pytest

from collector.outputs.jsonl import JsonLines, as_line, as_lines
from contracts.record import INDEX, NAMES, as_dict
from tests.test_collector import good_record

ODD_TEXT = ["plain", "a,b", ",", "],[", '"', "\\", '\\",', "\x00", "\x1f,\x1f", "\n", "été", "日本", "😀,",
            "%b", "%s%%", '"type":', '},{"type":', ""]


def record(i: int, rng: random.Random) -> list:
    d = {n: 0 for n in NAMES}
    d.update(type="session", final=rng.random() < 0.7, end_reason=rng.choice(["idle", "active", "closed"]),
             session_id=i << 8, parent_session_id=rng.choice([None, 5 << 8]), sensor=rng.choice(["s1", "d,c"]),
             report_number=1, start=1.7e9 + i / 7, end=1.7e9 + i / 3, duration=rng.choice([0.0, 1e-7, 2.5, 1e16]),
             ip_version=rng.choice([4, 6]), transport=rng.choice([6, 17, 1]),
             client_ip=rng.choice(["10.0.0.1", "2001:db8::1"]), client_port=rng.choice([None, 1234]),
             server_ip="192.0.2.1", server_port=443, vlan=rng.choice([None, [10], [10, 20], []]),
             proto_path=rng.choice(["eth.ipv4.tcp", "eth.vlan.ipv4.udp"]), rtt=rng.choice([None, 0.012, -0.0]),
             packet_count=rng.choice([0, 7, 2 ** 63 + 1]), app=rng.choice([None, "http"] + ODD_TEXT),
             community_id=rng.choice([None, "1:abc+/="]))
    r = [d[n] for n in NAMES]
    c = rng.random()
    if c < 0.05:
        r.append({"plugin": rng.choice(ODD_TEXT), "n": [1, 2], "app": "not the native one"})
    elif c < 0.07:
        r.append({})
    elif c < 0.09:
        r[INDEX["family"]] = b"raw,bytes"                     # not JSON: written as base64
    return r


def expected(records) -> bytes:
    """One dict per record (as_line); what those dicts hold is checked by parsing, against orjson's text of them."""
    return b"".join(as_line(r) for r in records)


def test_batches_give_the_bytes_of_one_dict_per_record():
    rng = random.Random(3)
    records = [record(i, rng) for i in range(1500)]
    for size in (0, 1, 2, 63, 64, 65, 129, 1500):
        batch = records[:size]
        data = b"".join(as_lines(batch))
        assert data == expected(batch), size
        assert [json.loads(line) for line in data.splitlines()] == [json.loads(orjson.dumps(as_dict(r), default=text))
                                                                     for r in batch]


def text(v) -> str:
    """What a value JSON has no type for becomes: bytes their base64 (as JSON tools
    carry binary), anything else its str()."""
    return base64.b64encode(v).decode() if isinstance(v, bytes) else str(v)


def test_plain_records_keep_their_field_order():
    rng = random.Random(5)
    recs = []
    while len(recs) < 200:
        r = record(len(recs), rng)
        if len(r) == len(NAMES) and not any(isinstance(v, (str, bytes, list)) and "," in str(v) for v in r):
            recs.append(r)
    lines = b"".join(as_lines(recs)).splitlines()
    assert len(lines) == 200
    for line, r in zip(lines, recs):
        d = json.loads(line)
        assert list(d) == list(NAMES)
        assert d["session_id"] == r[INDEX["session_id"]] and d["vlan"] == r[INDEX["vlan"]]


def test_file_holds_every_record_in_order_and_rotates_between_lines(tmp_path):
    rng = random.Random(9)
    records = [record(i, rng) for i in range(700)]
    out = tmp_path / "s.jsonl"
    o = JsonLines(f"{out}?rotate=50KB")
    for i in range(0, 700, 97):
        o.write(records[i:i + 97])
    o.close()
    assert o.written == 700
    def age(name):                      # s.jsonl.STAMP[.N]: oldest first
        stamp, _, n = name[len("s.jsonl."):].partition(".")
        return stamp, int(n or 0)
    files = sorted((p for p in os.listdir(tmp_path) if p != "s.jsonl"), key=age) + ["s.jsonl"]
    assert len(files) > 3
    data = b""
    for name in files:
        part = (tmp_path / name).read_bytes()
        assert len(part) <= 50_000 and part.endswith(b"\n"), name
        data += part
    assert data == expected(records)


EXTENSIONS = [
    None, {}, {"app_guess": True}, {"app_guess": 1}, {"tls.sni": "a,b.example"}, {"dns.answers": ["1.2.3.4", "5.6.7.8"]},
    {"app": "shadowed", "x": 1}, {1: "int key"}, "not a dict", {"v": -0.0}, {"v": 0.0}, {"v": 0}, {"v": False},
    {"v": float("nan")}, {"h": {"nested": [1, 2]}}, {"u": "ünïcødé \"quoted\" \\ back"},
]


def extended_records(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = good_record(rng.choice(["s", "s,t", "ünï"]), i, end=1.7e9 + rng.random(), start=1.7e9,
                        app=rng.choice([None, "dns", "http"]))
        if rng.random() < 0.2:
            r[INDEX["vlan"]] = rng.choice([[100], [100, 200]])
        if rng.random() < 0.1:
            r[INDEX["proto_path"]] = "eth.ipv4,odd"
        e = rng.choice(EXTENSIONS)
        if e is not None:
            r = r + [e]
        out.append(r)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_batch_lines_equal_record_lines(seed):
    recs = extended_records(random.Random(seed).choice([1, 63, 64, 65, 500]), seed)
    assert b"".join(as_lines(recs)) == b"".join(as_line(r) for r in recs)


def test_plain_records_take_the_batch_way():
    """The comparison above means something only if batches do go the batch way: a
    block holds many lines."""
    recs = [good_record("s", i, end=1.7e9 + i, start=1.7e9) + [{"app_guess": True}] for i in range(200)]
    blocks = as_lines(recs)
    assert len(blocks) < 10 and sum(b.count(b"\n") for b in blocks) == 200
