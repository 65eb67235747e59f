"""The front-end's shortcuts for splitting rows (and `wire.take_rows`, which the workers
use too) must give exactly what the plain numpy idioms give (fancy indexing of
structured rows, a stable argsort): the expectations here are computed the plain way."""
import numpy as np
import pytest

from pipeline.frontend.core import _shares, _stable_order, merge_rows
from contracts.wire import EVENT, take_rows


def _events(n, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, n * EVENT.itemsize, dtype=np.uint8)
    return raw.view(EVENT)          # every byte of every row random, keys included


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_rows_equal_fancy_indexing(n):
    ev = _events(n, n)
    for idx in (np.arange(n), np.arange(n)[::-3], np.random.default_rng(1).integers(0, max(n, 1), n if n else 0)):
        got = take_rows(ev, idx)
        assert got.dtype == EVENT and got.flags.c_contiguous
        assert got.tobytes() == ev[idx].tobytes()
        if len(got):
            got["ploff"][0] += 1     # a copy, not a view
            assert got.tobytes() != ev[idx].tobytes()


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7, 8, 9, 16])
def test_shares_are_the_stable_split_by_key(workers):
    ev = _events(3000, workers)
    w = (ev["key"] % np.uint64(workers)).astype(np.int64)
    order = np.argsort(w, kind="stable")
    bounds = np.searchsorted(w[order], np.arange(workers + 1))
    got = _shares(ev["key"], workers)
    assert len(got) == workers
    for i in range(workers):
        assert np.array_equal(got[i], order[bounds[i]:bounds[i + 1]])
    assert sum(len(g) for g in got) == len(ev)


@pytest.mark.parametrize("bits", [1, 8, 23, 31, 40])
def test_stable_order_is_a_stable_argsort(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 2, 1000):
        values = rng.integers(0, min(1 << bits, 50), n).astype(np.int64)   # many ties
        assert np.array_equal(_stable_order(values, bits), np.argsort(values, kind="stable"))
        values = rng.integers(0, 1 << bits, n).astype(np.int64)
        assert np.array_equal(_stable_order(values, bits), np.argsort(values, kind="stable"))


def _framed(n, frames, seed, distinct=True):
    """n rows with (frame number, depth) pairs among `frames` frames (distinct: each
    pair one row's, as the front-end makes them), the rest of each row random."""
    rng = np.random.default_rng(seed)
    ev = _events(n, seed + 1000)
    place = rng.choice(frames * 8, n, replace=not distinct)
    ev["fidx"], ev["depth"] = place // 8, place % 8
    return ev


@pytest.mark.parametrize("distinct", [True, False])
@pytest.mark.parametrize("na,nb", [(0, 0), (0, 5), (5, 0), (1, 1), (300, 3), (3, 300), (4000, 1000)])
def test_merge_rows_is_the_stable_sort_of_both(na, nb, distinct):
    """`merge_rows` against concatenating both and sorting by (frame, depth), the way the
    front-end merged them before: the same rows, the same bytes (with pairs repeated too:
    a's row first, then b's in their order)."""
    both = _framed(na + nb, max(na + nb, 1) // (1 if distinct else 8) + 1, na * 7 + nb, distinct)
    a, b = both[:na], both[na:]
    a = a[np.argsort(a["fidx"] * 16 + a["depth"], kind="stable")]      # `a` comes in frame order
    cat = np.concatenate([a, b])
    want = cat[np.argsort(cat["fidx"] * 16 + cat["depth"], kind="stable")]
    got = merge_rows(a, b)
    assert got.dtype == EVENT and len(got) == na + nb
    assert got.tobytes() == want.tobytes()
