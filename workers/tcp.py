"""Everything TCP-specific a session tracks: handshake RTT, close, retransmissions.

Rules (the whole state machine is the two tables below):
- Handshake: a SYN from the client, a SYN-ACK from the server, then the client's
  first ACK; `rtt` = that ACK's time - the (last) SYN's time. A capture that
  starts after the SYN has no RTT.
- Close: FIN seen in both directions, or any RST, closes the session; the worker
  then ends it after the close linger (trailing ACKs stay inside), or at once
  when a new SYN reuses the tuple.
- Retransmission: a data segment whose whole sequence range [seq, seq+len) lies
  within the range already seen in its direction (serial-number arithmetic).
  Reordered segments that fill a gap count too: tracking holes is not worth
  its memory here.

Two forms of the same rules: `update` (`control` + `data`) takes one segment, the
per-packet path's and the reference; `control_many` and `data_many` take a batch's
segments of many sessions at once over numpy columns (the batch path), driven by
the same tables (`HS_NEXT`, `CLOSE_NEXT` are HANDSHAKE and CLOSE as lookups) and
proven equal to the one-segment form by tests/test_tcp.py.
"""
import numpy as np

from .rounds import ranks, rounds

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
CONTROL = SYN | FIN | RST      # the flags that can change handshake or close state
MASK = 0xFFFFFFFF
HALF = 0x80000000

# handshake states
HS_NONE, HS_SYN, HS_SYNACK, HS_DONE = range(4)
# handshake events
EV_SYN_CLIENT, EV_SYNACK_SERVER, EV_ACK_CLIENT = range(3)

HANDSHAKE = {
    (HS_NONE, EV_SYN_CLIENT): HS_SYN,
    (HS_SYN, EV_SYN_CLIENT): HS_SYN,          # retransmitted SYN: RTT counts from the last one
    (HS_SYN, EV_SYNACK_SERVER): HS_SYNACK,
    (HS_SYNACK, EV_SYNACK_SERVER): HS_SYNACK,
    (HS_SYNACK, EV_ACK_CLIENT): HS_DONE,      # RTT measured here
}

# close: bit 0 = FIN seen from direction 0, bit 1 = from direction 1; CLOSED once both, or RST
CLOSED = 4
CLOSE = {
    (0, 0): 1, (0, 1): 2, (1, 1): 3 | CLOSED, (2, 0): 3 | CLOSED,
    (1, 0): 1, (2, 1): 2,
}


class TcpState:
    """A session's TCP state. `t` is the client's last SYN time until the handshake is
    done, then the RTT: one float object, not two (a table holds 200k states)."""
    __slots__ = ("hs", "t", "close", "lo0", "hi0", "lo1", "hi1", "retrans", "flags")

    def __init__(self):
        self.hs = HS_NONE
        self.t = 0.0
        self.close = 0
        self.lo0 = self.hi0 = self.lo1 = self.hi1 = None
        self.retrans = 0
        self.flags = 0

    @property
    def closed(self) -> bool:
        return bool(self.close & CLOSED)

    @property
    def rtt(self):
        """The handshake's RTT (the client's last SYN to its ACK of the SYN-ACK), None before."""
        return self.t if self.hs == HS_DONE else None

    @property
    def syn_ts(self):
        """The client's last SYN time while the handshake is not done (None after)."""
        return self.t if self.hs != HS_DONE else None


def handshake_event(flags: int, from_client: bool):
    if flags & SYN:
        if flags & ACK:
            return None if from_client else EV_SYNACK_SERVER
        return EV_SYN_CLIENT if from_client else None
    if flags & ACK and from_client:
        return EV_ACK_CLIENT
    return None


def update(st: TcpState, d: int, from_client: bool, flags: int, seq: int, payload: int, ts: float) -> bool:
    """Apply one segment (canonical direction d). Returns True when it closes the session."""
    if payload:
        data(st, d, seq, payload)
    return control(st, d, from_client, flags, ts)


def control(st: TcpState, d: int, from_client: bool, flags: int, ts: float) -> bool:
    """The flags' part of `update`: handshake and close (no sequence numbers). Returns
    True when this segment closes the session."""
    st.flags |= flags
    if st.hs != HS_DONE:
        ev = handshake_event(flags, from_client)
        if ev is not None:
            nxt = HANDSHAKE.get((st.hs, ev))
            if nxt is not None:
                if ev == EV_SYN_CLIENT:
                    st.t = ts
                elif nxt == HS_DONE:
                    st.t = max(0.0, ts - st.t)           # the RTT from now on
                st.hs = nxt
    if flags & (FIN | RST) and not st.close & CLOSED:
        st.close = (st.close | 3 | CLOSED) if flags & RST else CLOSE[(st.close, d)]
        return bool(st.close & CLOSED)
    return False


def data(st: TcpState, d: int, seq: int, payload: int) -> None:
    """The retransmission part of `update`, for a segment carrying `payload` bytes
    (independent of the flags: the worker may apply it in bulk)."""
    end = (seq + payload) & MASK
    if d == 0:
        lo, hi = st.lo0, st.hi0
    else:
        lo, hi = st.lo1, st.hi1
    if hi is None:
        lo, hi = seq, end
    elif ((seq - lo) & MASK) < HALF and ((hi - end) & MASK) < HALF:
        st.retrans += 1
    else:
        if ((end - hi) & MASK) < HALF:
            hi = end
        if ((lo - seq) & MASK) < HALF:
            lo = seq
    if d == 0:
        st.lo0, st.hi0 = lo, hi
    else:
        st.lo1, st.hi1 = lo, hi


# -- the same rules over numpy columns: many sessions' segments at once -----------------

def _tables():
    """HANDSHAKE and CLOSE as numpy lookups: next handshake state by (state, event), -1
    for none; next close state by (close state, direction)."""
    hs = np.full((4, 3), -1, np.int8)
    for (a, e), b in HANDSHAKE.items():
        hs[a, e] = b
    cl = np.zeros((8, 2), np.int8)
    for (a, d), b in CLOSE.items():
        cl[a, d] = b
    return hs, cl


HS_NEXT, CLOSE_NEXT = _tables()
ROUNDS = 8          # a session's first segments taken in vectorised rounds; the rest one by one
_WINDOW = 1 << 30   # relative sequence numbers used only inside +-2^30
_FAR = 1 << 40      # beyond any relative sequence number
_SEG = 1 << 44      # running min/max: one offset step per (session, direction)


def control_segments(gs, dirs, flags, chosen):
    """Which segments can change a session's handshake or close state, for rows in grouped
    order (`gs`: each row's group, non-decreasing, frame order inside one; `chosen`: each
    row's group is being applied): SYN, FIN and RST segments, and after each SYN-ACK its
    group's next ACK the other way (the handshake's last). Any other segment only adds
    its flags to `TcpState.flags`. A bool mask over the rows."""
    ctl = chosen & ((flags & CONTROL) != 0)
    sa = np.flatnonzero(ctl & ((flags & (SYN | ACK)) == (SYN | ACK)))
    if len(sa):
        ack = np.flatnonzero(chosen & ((flags & (SYN | ACK)) == ACK))   # a SYN-ACK itself is no handshake ACK
        n = len(flags)
        ka = (gs[ack] * 2 + dirs[ack]) * n + ack
        o = np.argsort(ka)
        ka, ack = ka[o], ack[o]
        want = (gs[sa] * 2 + 1 - dirs[sa]) * n + sa + 1
        j = np.searchsorted(ka, want)
        ok = j < len(ka)
        j = j[ok]
        ctl[ack[j][ka[j] // n == want[ok] // n]] = True
    return ctl


def control_many(states, client_dirs, session, dirs, flags, times) -> list:
    """`control` for the segments of many sessions (`session[i]`: segment i's index into
    `states` and `client_dirs`; segments in frame order): each session's k-th segment in
    round k, the tables as numpy lookups, up to ROUNDS rounds; a session's later segments
    go through `control` one by one. Returns the indexes of the segments that closed
    their session, in order. The states end as `control` one segment at a time leaves
    them, but for `TcpState.flags`: the caller ORs those in (the batch path does it for
    all of a session's segments at once, control segments or not)."""
    m, n = len(session), len(states)
    if not m:
        return []
    o = np.argsort(session, kind="stable")
    ranked = ranks(session[o])[0]
    rank = np.empty(m, np.intp)
    rank[o] = ranked
    hs = np.fromiter([st.hs for st in states], np.int8, n)
    t = np.fromiter([st.t for st in states], np.float64, n)
    done = hs == HS_DONE
    syn = np.where(done, np.nan, t)
    rtt = np.where(done, t, np.nan)
    close = np.fromiter([st.close for st in states], np.int8, n)
    fc = dirs == client_dirs[session]                # from the client
    syn_f, ack_f = (flags & SYN) != 0, (flags & ACK) != 0
    event = np.where(syn_f, np.where(ack_f, np.where(fc, -1, EV_SYNACK_SERVER), np.where(fc, EV_SYN_CLIENT, -1)),
                     np.where(ack_f & fc, EV_ACK_CLIENT, -1))     # `handshake_event`
    ends, rst = (flags & (FIN | RST)) != 0, (flags & RST) != 0
    closers = []
    taken = rounds(rank, ROUNDS)
    for r in taken:
        u = session[r]
        e = event[r]
        h = hs[u]
        nxt = np.where((h != HS_DONE) & (e >= 0), HS_NEXT[h, np.maximum(e, 0)], -1)
        go = nxt >= 0
        if go.any():
            w = go & (e == EV_SYN_CLIENT)
            syn[u[w]] = times[r[w]]
            w = go & (e != EV_SYN_CLIENT) & (nxt == HS_DONE)
            with np.errstate(invalid="ignore"):        # inf - inf: max(0.0, NaN) is 0.0, as fmax
                rtt[u[w]] = np.fmax(0.0, times[r[w]] - syn[u[w]])
            hs[u[go]] = nxt[go]
        c = close[u]
        w = ends[r] & ((c & CLOSED) == 0)
        if w.any():
            nc = np.where(rst[r], c | (3 | CLOSED), CLOSE_NEXT[c, dirs[r]])
            close[u[w]] = nc[w]
            closers += r[w & ((nc & CLOSED) != 0)].tolist()
    for st, h, sy, rt, c in zip(states, hs.tolist(), syn.tolist(), rtt.tolist(), close.tolist()):
        if h == HS_DONE:
            if st.hs != HS_DONE:                     # done in this batch: `t` becomes the RTT
                st.t = rt
        elif sy != st.t:                             # only new values: each float is an object
            st.t = sy
        st.hs, st.close = h, c
    left = np.flatnonzero(rank >= len(taken))        # a session's segments past the rounds: one by one
    for j, u, d, f, t, c in zip(left.tolist(), *(x[left].tolist() for x in (session, dirs, flags, times, fc))):
        if control(states[u], d, c, f, t):
            closers.append(j)
    closers.sort()
    return closers


def data_many(states, session, dirs, seqs, lens) -> None:
    """`data` for the data segments of many sessions (`session[i]`: segment i's index into
    `states`; segments in frame order): a segment is a retransmission when it lies within
    [lowest seq, highest end) seen before it in its direction, found for all at once by a
    running min/max per session and direction. Serial arithmetic becomes plain integers
    relative to a reference inside a window of +-2^30; a direction whose numbers leave it
    goes through `data` segment by segment."""
    nr = len(session)
    if not nr:
        return
    stored = np.full((len(states), 4), -1, np.int64)       # lo0, hi0, lo1, hi1 (-1: none yet)
    for u, st in enumerate(states):
        if st.hi0 is not None:
            stored[u, 0] = st.lo0
            stored[u, 1] = st.hi0
        if st.hi1 is not None:
            stored[u, 2] = st.lo1
            stored[u, 3] = st.hi1
    seg = session * 2 + dirs
    o = np.argsort(seg, kind="stable")
    seg = seg[o]
    seq = seqs[o].astype(np.int64)
    plen = lens[o].astype(np.int64)
    b = np.empty(nr, bool)
    b[0] = True
    np.not_equal(seg[1:], seg[:-1], out=b[1:])
    sst = np.flatnonzero(b)
    sidx = np.cumsum(b) - 1
    su, sd = seg[sst] // 2, seg[sst] % 2
    lo_st, hi_st = stored[su, 2 * sd], stored[su, 2 * sd + 1]
    has = hi_st >= 0
    ref = np.where(has, lo_st, seq[sst])
    rel = (seq - ref[sidx]) & MASK
    rel -= (rel >= HALF) * (1 << 32)
    endr = rel + plen
    h = (hi_st - ref) & MASK
    h -= (h >= HALF) * (1 << 32)
    lo0 = np.where(has, 0, _FAR)                    # the stored range, relative to ref
    hi0 = np.where(has, h, -_FAR)
    off = sidx * _SEG
    incmax = np.maximum.accumulate(endr + off) - off  # running max/min inside each (session, direction)
    incmin = np.minimum.accumulate(rel - off) + off
    exmax = np.empty(nr, np.int64)
    exmin = np.empty(nr, np.int64)
    exmax[1:] = incmax[:-1]
    exmin[1:] = incmin[:-1]
    exmax[sst] = -_FAR
    exmin[sst] = _FAR
    np.maximum(exmax, hi0[sidx], out=exmax)
    np.minimum(exmin, lo0[sidx], out=exmin)
    rt = (rel >= exmin) & (endr <= exmax)
    count = np.add.reduceat(rt, sst)
    lowest, highest = np.minimum.reduceat(rel, sst), np.maximum.reduceat(endr, sst)
    newlo = (np.minimum(lowest, lo0) + ref) & MASK
    newhi = (np.maximum(highest, hi0) + ref) & MASK
    ok = ((lowest > -_WINDOW) & (highest < _WINDOW)
          & (~has | ((hi0 > -_WINDOW) & (hi0 < _WINDOW))))
    bounds = np.append(sst, nr).tolist()
    for j, (u, d, good, cnt, lo, hi) in enumerate(zip(su.tolist(), sd.tolist(), ok.tolist(), count.tolist(),
                                                      newlo.tolist(), newhi.tolist())):
        st = states[u]
        if not good:                    # numbers too far apart for the window: segment by segment
            for q, ln in zip(seqs[o[bounds[j]:bounds[j + 1]]].tolist(), lens[o[bounds[j]:bounds[j + 1]]].tolist()):
                data(st, d, q, ln)
            continue
        st.retrans += cnt
        if d == 0:
            st.lo0, st.hi0 = lo, hi
        else:
            st.lo1, st.hi1 = lo, hi


def waiting(states):
    """Per state (None: no TCP state yet): whether its handshake waits for the client's ACK
    (a SYN-ACK seen), and whether a FIN or RST has been seen. `control_segments` picks a
    handshake's last ACK only after a SYN-ACK of the same batch, and a SYN after a close
    opens a new session: the batch path leaves such sessions to the per-packet path."""
    n = len(states)
    hs = np.fromiter([st.hs if st is not None else HS_NONE for st in states], np.int8, n)
    close = np.fromiter([st.close if st is not None else 0 for st in states], np.int8, n)
    return hs == HS_SYNACK, close != 0
