"""Workers pack records with msgspec (workers.process.pack), the collector and the
uplink unpack them with msgpack: the bytes must be msgpack's own, whatever a record
holds (plugin dicts, lists, odd text, floats, the integer range's ends)."""
import msgpack
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
