"""`contracts.wire.row_struct` reads and writes EVENT rows as numpy lays them out.

The workers read a session's first row from its bytes, and the front-end's slow
path packs its rows, with structs derived from EVENT's field offsets: numpy's own
view of the same bytes is the independent reference, for any choice of fields.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from contracts.wire import EVENT, row_struct

NAMES = EVENT.names


def random_rows(seed, n=20):
    rng = np.random.default_rng(seed)
    ev = np.frombuffer(rng.bytes(n * EVENT.itemsize), EVENT).copy()
    ev["ts"] = rng.uniform(-1e10, 1e10, n)           # no NaN: its payload bits need not survive a float
    return ev


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=len(NAMES), max_size=len(NAMES)),
       st.lists(st.booleans(), min_size=len(NAMES), max_size=len(NAMES)), st.integers(0, 2 ** 32))
def test_unpacked_fields_are_numpys(chosen, raw, seed):
    names = [n for n, c in zip(NAMES, chosen) if c]
    raws = {n for n, r in zip(NAMES, raw) if r and n in names}
    s = row_struct(*names, raw=raws)
    for row in random_rows(seed):
        got = s.unpack_from(row.tobytes())
        want = [row[n].tobytes() if n in raws else row[n].item() for n in names]
        assert list(got) == want


def test_a_whole_row_packs_to_numpys_bytes():
    ev = random_rows(5)
    pack = row_struct(*NAMES, whole=True).pack
    assert b"".join(pack(*row.tolist()) for row in ev) == ev.tobytes()
    some = [n for n in NAMES if n not in ("key", "dir", "pllen")]     # unnamed fields pack as zeros
    want = ev.copy()
    want[["key", "dir", "pllen"]] = 0
    assert np.frombuffer(b"".join(row_struct(*some, whole=True).pack(*(r[n].item() for n in some)) for r in ev),
                         EVENT).tobytes() == want.tobytes()


def test_fields_out_of_row_order_are_refused():
    with pytest.raises(ValueError):
        row_struct("proto", "fidx")
