"""Canonical bidirectional session key and its symmetric hash, for a whole batch.

The key of a datagram is (IP version, lower endpoint, higher endpoint, transport,
VLAN ids unless --no-vlan-key, tunnel context) where an endpoint is (address, port)
and "lower" is the lexicographic order of (address bytes, port). Both directions of
a session give the same key; the tunnel context (`tunnel_scope`) holds only what
both directions share. The 64-bit hash of that key is what the workers index their
tables by and what picks the worker (`hash % N`): every 64-bit word of the key
goes through a splitmix64 round, so IPv6 spreads as well as IPv4 (MMT sends all
IPv6 to worker 0) and a per-run seed keeps crafted collisions out of reach.

Fast path and slow path both fill EVENT rows and call `key_rows` once per batch:
the hash exists in exactly one place, vectorised.
"""
import functools

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_G = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(h):
    """splitmix64 finaliser, in place on a uint64 array."""
    h ^= h >> _S30
    h *= _M1
    h ^= h >> _S27
    h *= _M2
    h ^= h >> _S31
    return h


def key_rows(ev: np.ndarray, seed: int = 0, vlan_key: bool = True) -> None:
    """Fill ev["key"] and ev["dir"] from the endpoint, transport, VLAN and tunnel fields.
    `vlan_key=False` (`--no-vlan-key`): the VLAN fields stay in the rows but not in the
    key, which is then the key of the same row untagged."""
    if len(ev) == 0:
        return
    with np.errstate(over="ignore"):
        sh = ev["src_hi"].astype(np.uint64)
        sl = ev["src_lo"].astype(np.uint64)
        dh = ev["dst_hi"].astype(np.uint64)
        dl = ev["dst_lo"].astype(np.uint64)
        sp = ev["sport"].astype(np.uint64)
        dp = ev["dport"].astype(np.uint64)
        # dir = 1 when the source is the higher endpoint
        swap = (sh > dh) | ((sh == dh) & ((sl > dl) | ((sl == dl) & (sp > dp))))
        ev["dir"] = swap
        lo_h = np.where(swap, dh, sh)
        lo_l = np.where(swap, dl, sl)
        hi_h = np.where(swap, sh, dh)
        hi_l = np.where(swap, sl, dl)
        lo_p = np.where(swap, dp, sp)
        hi_p = np.where(swap, sp, dp)
        h = np.full(len(ev), np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _G, dtype=np.uint64)
        for word in (lo_h, lo_l, hi_h, hi_l):
            h ^= word
            h += _G
            _mix(h)
        misc = ((lo_p << np.uint64(48)) | (hi_p << np.uint64(32))
                | (ev["proto"].astype(np.uint64) << np.uint64(24))
                | (ev["ipver"].astype(np.uint64) << np.uint64(16)))
        if vlan_key:
            misc |= ev["nvlan"].astype(np.uint64)
        h ^= misc
        h += _G
        _mix(h)
        if vlan_key:
            h ^= (ev["vlan0"].astype(np.uint64) << np.uint64(16)) | ev["vlan1"].astype(np.uint64)
        h += _G
        _mix(h)
        h ^= ev["ctx"]
        h += _G
        _mix(h)
        ev["key"] = h


_M = 0xFFFFFFFFFFFFFFFF
_m1, _m2, _g = int(_M1), int(_M2), int(_G)


def _mix1(h: int) -> int:
    """`_mix` for one Python int (the slow path keys single rows; numpy on a
    one-element array costs a hundred times more)."""
    h ^= h >> 30
    h = (h * _m1) & _M
    h ^= h >> 27
    h = (h * _m2) & _M
    return h ^ (h >> 31)


def key_one(ipver, proto, nvlan, sport, dport, sh, sl, dh, dl, vlan0, vlan1, ctx, seed: int = 0,
            vlan_key: bool = True):
    """`key_rows` for one row, in plain integers: (key, dir). Must equal it bit for bit
    (tests/test_keying.py checks)."""
    if not vlan_key:
        nvlan = vlan0 = vlan1 = 0
    swap = sh > dh or (sh == dh and (sl > dl or (sl == dl and sport > dport)))
    if swap:
        lo_h, lo_l, hi_h, hi_l, lo_p, hi_p = dh, dl, sh, sl, dport, sport
    else:
        lo_h, lo_l, hi_h, hi_l, lo_p, hi_p = sh, sl, dh, dl, sport, dport
    h = (seed & _M) ^ _g
    for word in (lo_h, lo_l, hi_h, hi_l,
                 (lo_p << 48) | (hi_p << 32) | (proto << 24) | (ipver << 16) | nvlan,
                 (vlan0 << 16) | vlan1, ctx):
        h = _mix1(((h ^ word) + _g) & _M)
    return h, int(swap)


@functools.lru_cache(maxsize=1 << 14)       # a capture has few tunnels: the slow path asks again per frame
def tunnel_scope(outer_ctx: int, kind: int, space: int, a: bytes = b"", b: bytes = b"", vlans: tuple = ()) -> int:
    """The context of the sessions a tunnel carries (EVENT ctx, part of their key): the
    scope the tunnel's outer layer lives in, the tunnel kind, its address-space id
    (VNI, ...; 0 for none), two outer ends `a`, `b` (addresses, or address and port) in
    either order, and the outer VLAN ids. Only fields that are the same in both
    directions of a conversation, so one inner conversation is one session whichever
    outer sessions carry its packets (tunnels.SCOPES; docs/design.md, "Tunnel scope")."""
    lo, hi = (a, b) if a <= b else (b, a)
    words = [outer_ctx, (kind & 0xFFFFFFFF) << 24 | len(lo) << 16 | len(hi) << 8 | len(vlans), space & _M]
    for end in (lo, hi):
        words += (int.from_bytes(end[i:i + 8].ljust(8, b"\0"), "big") for i in range(0, len(end), 8))
    words += vlans
    h = _g
    for w in words:
        h = _mix1(((h ^ w) + _g) & _M)
    return h or 1
