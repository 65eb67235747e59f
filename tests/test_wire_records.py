"""Workers pack records with msgspec (workers.process.pack), the collector and the
uplink unpack them with msgpack: the bytes must be msgpack's own for what records are
made of (plugin dicts, lists, odd text, floats, the integer range's ends), and a value a
plugin adds that msgspec refuses (numpy scalars) must still go through."""
import datetime

import msgpack
import numpy as np
from hypothesis import given, settings, strategies as st

from workers.process import pack

SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1), st.text(max_size=40),
                   st.floats(allow_nan=False), st.binary(max_size=8),
                   st.sampled_from([float("inf"), -0.0, 1e16, 2 ** 32, -2 ** 31 - 1, 255, 256, 65536]))
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(VALUE, max_size=50), max_size=20))
def test_records_pack_as_msgpack_packs_them(records):
    data = pack(records)
    assert data == msgpack.packb(records)
    assert msgpack.unpackb(data) == records


def test_a_string_past_the_short_forms():
    for n in (31, 32, 255, 256, 65535, 65536):
        r = [["x" * n, b"y" * n, list(range(n % 40))]]
        assert pack(r) == msgpack.packb(r)


def test_a_plugins_numpy_values_go_msgpacks_way():
    r = [["session", 1, {"score": np.float64(0.25), "label": np.str_("ok"), "n": 3}]]
    assert pack(r) == msgpack.packb(r)
    assert msgpack.unpackb(pack(r)) == [["session", 1, {"score": 0.25, "label": "ok", "n": 3}]]


def test_an_aware_datetime_reaches_the_collector_as_one():
    """msgpack.packb refused it (the worker died); msgspec writes a msgpack timestamp,
    which the collector reads back as the same instant, and JSON lines write it in ISO 8601."""
    from collector.outputs.jsonl import ENCODER
    from collector.process import records
    t = datetime.datetime(2024, 1, 1, 12, 30, 0, 250000, tzinfo=datetime.timezone.utc)
    got = records(pack([[{"seen": t}]]))
    assert got == [[{"seen": t}]]
    assert ENCODER.encode(got) == b'[[{"seen":"2024-01-01T12:30:00.250000Z"}]]'
