"""Vectorised decode of the common case: Ethernet (up to two VLAN tags), IPv4 or
IPv6 without extension headers or fragmentation, TCP or UDP on a non-tunnel port
whose payload does not look like Teredo.

One numpy pass over a whole chunk fills EVENT rows for every frame it accepts and
hands every other frame (tunnels, fragments, odd link types, truncated or
malformed headers, other transports) to the slow path, which decides. The fast
path never judges a frame malformed: that keeps one authority for every odd
case, and `tests/test_fastpath.py` proves both paths agree on every frame the
fast path accepts, over every shared capture.
"""
import numpy as np

from contracts.wire import EVENT
from .tunnels import UDP_TUNNEL_PORTS

LINKTYPE_ETHERNET = 1
_VLAN_TPIDS = (0x8100, 0x88A8)
_TUNNEL_PORT = np.zeros(1 << 16, bool)     # a port of the tunnel registry, by port number
_TUNNEL_PORT[sorted(UDP_TUNNEL_PORTS)] = True


_BLOCK = 104     # bytes of each frame gathered at once: the furthest word read ends at byte 98
                 # (two VLAN tags, a 60-byte IPv4 header, then the TCP flags word)


class _Words:
    """Big-endian 64-bit words at given offsets of each frame. The first _BLOCK bytes of
    every frame are first copied out in one gather, so the word gathers that follow read
    a compact array the cache holds; gathered straight from the capture buffer, each
    of the six words missed the cache anew for every frame, which cost 2-3x more. A
    word is one gather per field (a stride-1 view; numpy reads unaligned words). Reads
    past a frame's capture or its block give bytes that the caller's length checks
    mask out. The words are gathered as raw 8-byte items (a plain copy) and come back
    as native uint64, so that the arithmetic on them does not byte-swap at every
    operation."""

    def __init__(self, data, offsets):
        n = len(data)
        if n < _BLOCK:
            data, n = bytes(data) + bytes(_BLOCK - n), _BLOCK
        start = np.minimum(offsets, n - _BLOCK)           # a block never runs past the buffer
        blocks = np.ndarray((n - _BLOCK + 1,), dtype=f"V{_BLOCK}", buffer=data, strides=(1,))[start]
        m = len(offsets)
        self.top = m * _BLOCK - 8
        self.v = np.ndarray((self.top + 1,), dtype="V8", buffer=blocks, strides=(1,))
        self.row0 = np.arange(0, m * _BLOCK, _BLOCK) + (offsets - start)   # each frame's start in the blocks

    def __call__(self, rel, rows=None):
        """The word at byte `rel` of each frame (of `rows` only, when given)."""
        at = (self.row0 if rows is None else self.row0[rows]) + rel
        return self.v[np.minimum(at, self.top)].view(">u8").astype(np.uint64)


_S = {k: np.uint64(k) for k in (8, 16, 24, 32, 40, 48, 56)}
_M8, _M16, _M32 = np.uint64(0xFF), np.uint64(0xFFFF), np.uint64(0xFFFFFFFF)
_M14 = np.uint64(0x3FFF)      # IPv4 MF flag and fragment offset (DF and the reserved bit do not matter)


def _f(word, shift, mask):
    """Field of a gathered word, as int64."""
    return ((word >> _S[shift]) & mask).astype(np.int64) if shift else (word & mask).astype(np.int64)


PAYLOAD_MAX = 1500       # payload bytes of one packet kept for classification


class PathIds:
    """Interns proto_path strings to small ids (the batch header carries new ones).
    Capture process k numbers from k * PER_PROC + 1, so several front-ends feeding
    the same workers never give one id two meanings."""
    PER_PROC = 4096

    def __init__(self, proc: int = 0):
        self.ids = {}
        self.new = {}
        self.base = proc * self.PER_PROC

    def get(self, path: str) -> int:
        i = self.ids.get(path)
        if i is None:
            if len(self.ids) + 1 >= self.PER_PROC:
                raise OverflowError("more than 4095 distinct protocol paths")
            i = self.ids[path] = self.base + len(self.ids) + 1
            self.new[i] = path
        return i

    def take_new(self) -> dict:
        new, self.new = self.new, {}
        return new


_TEREDO_PREFIX = np.uint64(0x20010000)
_S60 = np.uint64(60)


def _maybe_teredo(w):
    """First 8 bytes of a UDP payload that may start Teredo: an IPv6 version nibble, or a
    Teredo header (0x0000 origin indication, 0x0001 authentication). Most payloads fail
    this, so the full test runs on few rows."""
    return ((w >> _S60) == 6) | ((w >> _S[48]) <= 1)


def _teredo_shaped(data, start, avail, size, first=None):
    """tunnels.teredo_by_shape over numpy columns, for UDP payloads starting at `start`
    in `data` (absolute offsets), `avail` bytes of them captured, `size` long by the IP
    lengths; `first`: their first 8 bytes, when already read. Words are read straight
    from the buffer: the headers may lie beyond the block `_Words` keeps per frame.
    Where fewer bytes are captured than the test needs, the answer is no, as in the
    slow path (which then sees too short a payload)."""
    n = len(data)
    raw = np.ndarray((n - 7,), dtype="V8", buffer=data, strides=(1,))

    def at(off):
        return raw[np.minimum(start + off, n - 8)].view(">u8").astype(np.uint64)

    w = at(0) if first is None else first
    tag = w >> _S[48]
    off = np.where(tag == 1, 13 + _f(w, 40, _M8) + _f(w, 32, _M8), 0)   # authentication header
    auth = off > 0
    if auth.any():
        w = np.where(auth, at(off), w)
        tag = np.where(auth, w >> _S[48], tag)
    origin = (tag == 0) & (avail >= off + 2)                              # origin indication
    if origin.any():
        off = off + np.where(origin, 8, 0)
        w = np.where(origin, at(off), w)
    plen = _f(w, 16, _M16)
    shaped = ((w >> _S60) == 6) & (avail >= off + 40) & (
        (off + 40 + plen == size) | ((plen == 0) & (_f(w, 8, _M8) == 59)))
    direct = shaped & (off == 0)
    if direct.any():
        teredo_addr = ((at(8) >> _S[32]) == _TEREDO_PREFIX) | ((at(24) >> _S[32]) == _TEREDO_PREFIX)
        shaped &= ~direct | teredo_addr
    return shaped


def _link(word, n: int):
    """Ethernet with up to two VLAN tags, per frame: (ethertype, tag count, first tag's id,
    second tag's id, link header length); the tag columns are None where no frame has a
    tag (the second's where none has two)."""
    w = word(12)                       # ethertype, then a possible VLAN tag
    et = _f(w, 48, _M16)
    tag1 = (et == _VLAN_TPIDS[0]) | (et == _VLAN_TPIDS[1])
    if not tag1.any():
        return et, None, None, None, np.full(n, 14, np.int64)
    vlan0 = np.where(tag1, _f(w, 32, _M16) & 0x0FFF, 0)
    et = np.where(tag1, _f(w, 16, _M16), et)
    tag2 = tag1 & ((et == _VLAN_TPIDS[0]) | (et == _VLAN_TPIDS[1]))
    if tag2.any():
        w2 = word(16)                # the second tag: TPID, TCI, then the ethertype
        vlan1 = np.where(tag2, _f(w2, 32, _M16) & 0x0FFF, 0)
        et = np.where(tag2, _f(w2, 16, _M16), et)
    else:
        vlan1 = None
    nvlan = tag1.astype(np.int64) + tag2
    return et, nvlan, vlan0, vlan1, 14 + 4 * nvlan


def _ip(word, l2, et, ok):
    """The IP layer of the frames in `ok`: IPv4 that is not a fragment, IPv6 read as having
    no extension header (its next header is the transport). Returns (IPv4 and IPv6 masks,
    transport, IPv4 total length, IPv6 payload length, IP payload length, transport
    header's offset)."""
    h0 = word(l2)                          # version/IHL, TOS, total length (v4) / payload length (v6 at +4)
    h1 = word(l2 + 4)                      # v4: ident, flags/offset, TTL, proto / v6: plen, next header
    v4 = ok & (et == 0x0800)
    v6 = ok & (et == 0x86DD)
    vb = _f(h0, 56, _M8)
    ihl = (vb & 0x0F) * 4
    v4 &= ((vb >> 4) == 4) & (ihl >= 20)
    v6 &= (vb >> 4) == 6
    total = _f(h0, 32, _M16)
    v4 &= ((h0 & _M14) == 0) & (total >= ihl) & (total > 0)
    plen6 = _f(h1, 48, _M16)
    v6 &= plen6 > 0
    proto = np.where(v6, _f(h1, 40, _M8), _f(h1, 16, _M8))
    l3len = np.where(v6, 40, ihl)
    ip_payload = np.where(v6, plen6, total - ihl)
    return v4, v6, proto, total, plen6, ip_payload, l2 + l3len


def _drop_teredo(ok, udp, payload, t1, data, o, l4, cl) -> None:
    """Accepted UDP payloads shaped like Teredo left to the slow path (`t1`: each frame's
    word after the UDP header, the payload's first 8 bytes)."""
    cand = np.flatnonzero(ok & udp & (payload >= 40))
    first = t1[cand]
    maybe = _maybe_teredo(first)
    if maybe.any():
        cand, first = cand[maybe], first[maybe]
        start = l4[cand] + 8
        avail = np.minimum(payload[cand], cl[cand] - start)
        ok[cand[_teredo_shaped(data, o[cand] + start, avail, payload[cand], first)]] = False


def decode_fast(data, offsets, caplen, wirelen, ts, linktype, paths: PathIds, base: int = 0,
                teredo_any_port: bool = True):
    """Decode what the fast path can. Returns (events, slow) where events holds one
    row per accepted frame (fidx left as the frame's position in the chunk) and
    slow is a bool mask of the frames left to the slow path. `teredo_any_port`: UDP
    payloads shaped like Teredo go to the slow path, which decodes them."""
    n = len(offsets)
    o = offsets.astype(np.int64)
    cl = caplen.astype(np.int64)
    ok = (linktype == LINKTYPE_ETHERNET) & (cl >= 14 + 20 + 8)
    if not ok.any() or len(data) < 64:
        return np.zeros(0, EVENT), np.ones(n, bool)
    word = _Words(data, o)
    et, nvlan, vlan0, vlan1, l2 = _link(word, n)
    v4, v6, proto, total, plen6, ip_payload, l4 = _ip(word, l2, et, ok)
    tcp = proto == 6
    udp = proto == 17
    ok = (v4 | v6) & (tcp | udp)
    ok &= cl >= l4 + np.where(tcp, 20, 8)
    t0 = word(l4)                          # ports, TCP sequence number
    sport = _f(t0, 48, _M16)
    dport = _f(t0, 32, _M16)
    ok &= ~(udp & (_TUNNEL_PORT[sport] | _TUNNEL_PORT[dport]))
    t1 = word(l4 + 8)                      # TCP ack, data offset, flags, window
    doff = (_f(t1, 24, _M8) >> 4) * 4
    payload = np.where(tcp, ip_payload - doff, ip_payload - 8)
    ok &= (payload >= 0) & ~(tcp & (doff < 20))
    if teredo_any_port:           # t1 holds each UDP payload's first 8 bytes
        _drop_teredo(ok, udp, payload, t1, data, o, l4, cl)
    slow = ~ok
    idx = np.flatnonzero(ok)
    m = len(idx)
    ev = np.zeros(m, EVENT)
    if m == 0:
        return ev, slow
    is6 = v6[idx]
    t0, t1 = t0[idx], t1[idx]
    is_tcp = tcp[idx]
    ev["fidx"] = idx
    ev["ts"] = ts[idx]
    ev["wirelen"] = wirelen[idx]
    ev["caplen"] = caplen[idx]
    ev["ncap"] = 1
    ev["ipver"] = np.where(is6, 6, 4)
    ev["proto"] = proto[idx]
    ev["sport"] = sport[idx]
    ev["dport"] = dport[idx]
    ev["payload"] = payload[idx]
    ev["iplen"] = np.where(is6, plen6[idx] + 40, total[idx])
    ev["tcpflags"] = np.where(is_tcp, _f(t1, 16, _M8), 0)
    ev["seq"] = np.where(is_tcp, _f(t0, 0, _M32), 0)
    ev["ack"] = np.where(is_tcp, _f(t1, 32, _M32), 0)
    if nvlan is not None:
        ev["nvlan"] = nvlan[idx]
        ev["vlan0"] = vlan0[idx]
        if vlan1 is not None:
            ev["vlan1"] = vlan1[idx]
    _addresses(ev, word, idx, l2[idx], is6)
    ev["path"] = _path_ids(paths, is6, is_tcp, None if nvlan is None else nvlan[idx])
    # where the payload starts in the chunk (the front-end keeps the bytes of young sessions)
    # (relative to the chunk's lowest frame offset, `base`: it fits 32 bits whatever the file's size)
    start = l4[idx] + np.where(is_tcp, doff[idx], 8)
    rel = o[idx] + start - base
    ev["ploff"] = rel
    ev["pllen"] = np.where(rel < 1 << 32, np.clip(np.minimum(payload[idx], cl[idx] - start), 0, PAYLOAD_MAX), 0)
    return ev, slow


def _addresses(ev, word, idx, l2a, is6) -> None:
    """The accepted rows' MAC and IP addresses (`l2a`: where each one's IP header starts),
    gathered for the rows of each IP version only."""
    m = len(idx)
    ev["dmac"] = word(0, idx) >> _S[16]      # Ethernet destination and source addresses
    ev["smac"] = word(6, idx) >> _S[16]
    n6 = int(np.count_nonzero(is6))
    if n6:
        j6 = np.flatnonzero(is6) if n6 < m else slice(None)
        rows, a = idx[j6], l2a[j6]
        for name, at in (("src_hi", 8), ("src_lo", 16), ("dst_hi", 24), ("dst_lo", 32)):
            ev[name][j6] = word(a + at, rows)
    if n6 < m:
        j4 = np.flatnonzero(~is6) if n6 else slice(None)
        a4 = word(l2a[j4] + 12, idx[j4])   # source and destination addresses
        ev["src_hi"][j4] = a4 & ~_M32
        ev["dst_hi"][j4] = a4 << _S[32]


def _path_ids(paths: PathIds, is6, is_tcp, nvlan):
    """The accepted rows' proto_path ids: one per (VLAN count, IP version, transport)."""
    combo = is6 * 2 + is_tcp
    if nvlan is not None:
        combo = combo + nvlan * 4
    pid = np.zeros(12, np.uint16)
    for c in np.flatnonzero(np.bincount(combo, minlength=12)):
        c = int(c)
        pid[c] = paths.get("eth" + ".vlan" * (c // 4) + (".ipv6" if c & 2 else ".ipv4") + (".tcp" if c & 1 else ".udp"))
    return pid[combo]
