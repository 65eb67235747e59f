"""The canonical key and its hash: symmetric, sensitive to every key part, well spread."""
import numpy as np
import pytest

from tests.rows import rows

BASE = dict(src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=443, proto=6, ts=0.0)


def _key(**kw):
    ev = rows([dict(BASE, **kw)])
    return int(ev["key"][0]), int(ev["dir"][0])


def test_both_directions_give_the_same_key_and_opposite_dir():
    k1, d1 = _key()
    k2, d2 = _key(src="10.0.0.2", dst="10.0.0.1", sport=443, dport=40000)
    assert k1 == k2 and {d1, d2} == {0, 1}


def test_ipv6_symmetric():
    k1, d1 = _key(src="2001:db8::1", dst="2001:db8::2")
    k2, d2 = _key(src="2001:db8::2", dst="2001:db8::1", sport=443, dport=40000)
    assert k1 == k2 and d1 != d2


def test_same_address_ordered_by_port():
    k1, d1 = _key(src="10.0.0.1", dst="10.0.0.1", sport=1, dport=2)
    k2, d2 = _key(src="10.0.0.1", dst="10.0.0.1", sport=2, dport=1)
    assert k1 == k2 and (d1, d2) == (0, 1)


@pytest.mark.parametrize("change", [
    dict(sport=40001), dict(dport=444), dict(proto=17), dict(dst="10.0.0.3"),
    dict(vlans=(10,)), dict(vlans=(10, 20)), dict(ctx=12345),
])
def test_every_part_of_the_key_matters(change):
    assert _key(**change)[0] != _key()[0]


def test_vlan_order_matters():
    assert _key(vlans=(10, 20))[0] != _key(vlans=(20, 10))[0]


def test_seed_changes_the_hash():
    a = rows([BASE], seed=0)["key"][0]
    b = rows([BASE], seed=1)["key"][0]
    assert a != b


@pytest.mark.parametrize("v6", [False, True])
def test_spread_over_workers(v6):
    """10k sessions between a few hosts on sequential ports spread evenly over 8 workers."""
    specs = []
    for i in range(10000):
        src = f"2001:db8::{i % 7 + 1:x}" if v6 else f"192.168.0.{i % 7 + 1}"
        dst = "2001:db8::ff" if v6 else "10.1.1.1"
        specs.append(dict(src=src, dst=dst, sport=1024 + i, dport=80, proto=6, ts=0.0))
    ev = rows(specs)
    counts = np.bincount((ev["key"] % np.uint64(8)).astype(np.int64), minlength=8)
    assert counts.min() > 10000 / 8 * 0.85, counts
