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


from hypothesis import given, settings, strategies as st  # noqa: E402

from pipeline.frontend.keying import key_one  # noqa: E402
from contracts.wire import EVENT  # noqa: E402

U64 = st.integers(0, 2**64 - 1)
U16 = st.integers(0, 2**16 - 1)


@settings(max_examples=300, deadline=None)
@given(ipver=st.sampled_from([4, 6]), proto=st.integers(0, 255), nvlan=st.integers(0, 2), sport=U16, dport=U16,
       sh=U64, sl=U64, dh=U64, dl=U64, v0=st.integers(0, 4095), v1=st.integers(0, 4095), ctx=U64,
       seed=st.integers(0, 2**64 - 1), same=st.booleans(), vlan_key=st.booleans())
def test_scalar_key_equals_vectorised_key(ipver, proto, nvlan, sport, dport, sh, sl, dh, dl, v0, v1, ctx, seed, same,
                                          vlan_key):
    if same:                      # exercise the tie-breaks: same address, ordered by port
        dh, dl = sh, sl
    ev = np.zeros(1, EVENT)
    for f, v in dict(ipver=ipver, proto=proto, nvlan=nvlan, sport=sport, dport=dport, src_hi=sh, src_lo=sl,
                     dst_hi=dh, dst_lo=dl, vlan0=v0, vlan1=v1, ctx=ctx).items():
        ev[f] = v
    from pipeline.frontend.keying import key_rows
    key_rows(ev, seed, vlan_key)
    assert key_one(ipver, proto, nvlan, sport, dport, sh, sl, dh, dl, v0, v1, ctx, seed, vlan_key) == \
        (int(ev["key"][0]), int(ev["dir"][0]))


def test_without_vlan_key_a_tagged_row_keys_as_untagged():
    """--no-vlan-key: the VLAN fields stay in the rows but leave the key, so both directions
    of a conversation tapped on different VLANs share one key."""
    from pipeline.frontend.keying import key_rows as kr
    up = rows([dict(BASE, vlans=(10,))])
    down = rows([dict(BASE, src=BASE["dst"], dst=BASE["src"], sport=443, dport=40000, vlans=(20, 30))])
    plain = rows([BASE])
    assert int(up["key"][0]) != int(down["key"][0])
    for ev in (up, down):
        kr(ev, 0, vlan_key=False)
        assert int(ev["key"][0]) == int(plain["key"][0])
    assert (int(up["vlan0"][0]), int(down["vlan0"][0]), int(down["vlan1"][0]), int(down["nvlan"][0])) == (10, 20, 30, 2)


def test_tunnel_scope_is_symmetric_and_sensitive():
    from pipeline.frontend.keying import tunnel_scope
    a, b, c = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([10, 0, 0, 3])
    base = tunnel_scope(0, 7, 0, a, b)
    assert base == tunnel_scope(0, 7, 0, b, a) != 0
    others = [tunnel_scope(1, 7, 0, a, b), tunnel_scope(0, 8, 0, a, b), tunnel_scope(0, 7, 5, a, b),
              tunnel_scope(0, 7, 0, a, c), tunnel_scope(0, 7, 0, a, b, (10,)), tunnel_scope(0, 7, 0),
              tunnel_scope(0, 7, 0, a.rjust(16, b"\0"), b.rjust(16, b"\0"))]
    assert len({base, *others}) == len(others) + 1
    assert tunnel_scope(0, 7, 0, a, b, (10, 20)) != tunnel_scope(0, 7, 0, a, b, (20, 10))
