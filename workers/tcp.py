"""Everything TCP-specific a session tracks: handshake RTT, close, retransmissions,
the sequence space each direction covered, and Zeek's history and conn_state.

Rules (the whole state machine is the two tables below):
- Handshake: a SYN from the client, a SYN-ACK from the server, then the client's
  first ACK; `rtt` = that ACK's time - the (last) SYN's time. A capture that
  starts after the SYN has no RTT.
- Close: FIN seen in both directions, or any RST, closes the session; so does a
  FIN from one side while the other has sent nothing (`peer_silent`: Zeek's close
  against an inactive peer; the worker asks for it only with close expiry on). The
  worker then ends it after the close linger (trailing ACKs stay inside), or at
  once when a new SYN reuses the tuple.
- Retransmission: a data segment whose whole sequence range [seq, seq+len) lies
  within the range already seen in its direction (serial-number arithmetic).
  Reordered segments that fill a gap count too: tracking holes is not worth
  its memory here.
- Sequence space (Zeek's orig_bytes/resp_bytes): each direction's data covered
  [lowest seq, highest end), the range the retransmission rule keeps (so a
  retransmission adds nothing and a gap counts: `seq_bytes`), and a jump past the
  highest end is a content gap (`gap`, Zeek's missed_bytes). Past 2 GiB a side the
  serial arithmetic starts the range again at the newest segment: what left it is
  banked (`banked`), so the sum goes on.
- History: Zeek's letters (`letter`), each direction's first of a kind, in
  order, kept compact in `hist`; a retransmission adds T at its direction's 1st,
  10th, 100th, ... (`data` returns True). `history_text` and `conn_state` read it.

Two forms of the same rules: `update` (`control` + `data`) takes one segment, the
per-packet path's and the reference; `control_many` and `data_many` take a batch's
segments of many sessions at once over numpy columns (the batch path), driven by
the same tables (`HS_NEXT`, `CLOSE_NEXT` are HANDSHAKE and CLOSE as lookups) and
proven equal to the one-segment form by tests/test_tcp.py.
"""
import functools
import re

import numpy as np

from contracts.wire import row_struct

from .rounds import ranks, rounds
from .session import FIRST

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
    __slots__ = ("hs", "t", "close", "lo0", "hi0", "lo1", "hi1", "retrans", "flags", "rt1", "gap", "hist", "banked")

    def __init__(self):
        self.hs = HS_NONE
        self.t = 0.0
        self.close = 0
        self.lo0 = self.hi0 = self.lo1 = self.hi1 = None
        self.retrans = 0
        self.flags = 0
        self.rt1 = 0            # of `retrans`, those of direction 1 (the history's T is per direction)
        self.gap = 0            # bytes jumped over past a direction's highest end (Zeek's missed_bytes)
        self.hist = 0           # the history: (letters, 5 bits each, the latest lowest) << 16 | the kinds seen
        self.banked = None      # [direction 0, 1]: sequence space the range dropped when it wrapped (> 2 GiB)

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


def update(st: TcpState, d: int, from_client: bool, flags: int, seq: int, payload: int, ts: float,
           peer_silent: bool = False) -> bool:
    """Apply one segment (canonical direction d): its letter, its data, its flags (the
    worker's per-packet path does the same steps, with the counters). Returns True when
    it closes the session."""
    e = entry(flags, payload, d)
    if e and not st.hist & ENTRY_BIT[e]:
        note(st, e)
    if payload and data(st, d, seq, payload):
        note(st, T_ENTRY[d])
    return control(st, d, from_client, flags, ts, peer_silent)


def control(st: TcpState, d: int, from_client: bool, flags: int, ts: float, peer_silent: bool = False) -> bool:
    """The flags' part of `update`: handshake and close (no sequence numbers; `peer_silent`:
    the other direction has sent nothing yet). Returns True when this segment closes the
    session."""
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
        if flags & RST:
            st.close |= 3 | CLOSED
        elif peer_silent:
            st.close |= (1 << d) | CLOSED
        else:
            st.close = CLOSE[(st.close, d)]
        return bool(st.close & CLOSED)
    return False


_FIRST_TCP = row_struct("tcpflags", "seq", "ack", dtype=FIRST)     # of a session's first row, for `reuses`
_POW10 = frozenset(10 ** k for k in range(20))
_POW10_LIST = sorted(_POW10)
_NONE = np.zeros(0, np.intp)


def data(st: TcpState, d: int, seq: int, payload: int) -> bool:
    """The data part of `update`, for a segment carrying `payload` bytes (independent of the
    flags: the worker may apply it in bulk). Returns True for a retransmission that is its
    direction's 1st, 10th, 100th, ... (the history's T)."""
    end = (seq + payload) & MASK
    if d == 0:
        lo, hi = st.lo0, st.hi0
    else:
        lo, hi = st.lo1, st.hi1
    if hi is None:
        lo, hi = seq, end
    elif ((seq - lo) & MASK) < HALF and ((hi - end) & MASK) < HALF:
        st.retrans += 1
        if d:
            st.rt1 += 1
            return st.rt1 in _POW10
        return st.retrans - st.rt1 in _POW10
    else:
        span = (hi - lo) & MASK
        ahead = (end - hi) & MASK
        if ahead < HALF:
            jump = (seq - hi) & MASK
            if 0 < jump < HALF:
                st.gap += jump
            hi = end
        else:
            ahead = 0
        if ((lo - seq) & MASK) < HALF:
            lo = seq
        lost = span + ahead - ((hi - lo) & MASK)
        if lost > 0:                # the range shrank: the serial window wrapped past 2 GiB
            if st.banked is None:
                st.banked = [0, 0]
            st.banked[d] += lost
    if d == 0:
        st.lo0, st.hi0 = lo, hi
    else:
        st.lo1, st.hi1 = lo, hi
    return False


def seq_bytes(st, d: int) -> int:
    """The sequence space direction d's data covered (Zeek's orig_bytes or resp_bytes)."""
    if st is None:
        return 0
    lo, hi = (st.lo0, st.hi0) if d == 0 else (st.lo1, st.hi1)
    span = 0 if hi is None else (hi - lo) & MASK
    return span + st.banked[d] if st.banked is not None else span


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


def control_many(states, client_dirs, session, dirs, flags, times, peer_silent=None) -> list:
    """`control` for the segments of many sessions (`session[i]`: segment i's index into
    `states` and `client_dirs`; segments in frame order; `peer_silent[i]`: its peer had
    sent nothing before it, None: never): each session's k-th segment in round k, the
    tables as numpy lookups, up to ROUNDS rounds; a session's later segments go through
    `control` one by one. Returns the indexes of the segments that closed their session,
    in order. The states end as `control` one segment at a time leaves
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
    silent = np.zeros(m, bool) if peer_silent is None else peer_silent
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
            nc = np.where(rst[r], c | (3 | CLOSED),
                          np.where(silent[r], c | (1 << dirs[r].astype(np.int8)) | CLOSED, CLOSE_NEXT[c, dirs[r]]))
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
    for j, u, d, f, t, c, q in zip(left.tolist(), *(x[left].tolist() for x in (session, dirs, flags, times, fc,
                                                                              silent))):
        if control(states[u], d, c, f, t, q):
            closers.append(j)
    closers.sort()
    return closers


def _stored_ranges(states):
    """The sessions' stored sequence ranges as rows lo0, hi0, lo1, hi1 (-1: none yet)."""
    stored = np.full((len(states), 4), -1, np.int64)
    for u, st in enumerate(states):
        if st.hi0 is not None:
            stored[u, 0] = st.lo0
            stored[u, 1] = st.hi0
        if st.hi1 is not None:
            stored[u, 2] = st.lo1
            stored[u, 3] = st.hi1
    return stored


def _scaled(states, rt, sidx, su, sd, ok, o) -> list:
    """`data_many`'s retransmissions (`rt`, in (session, direction) order `o`; `sidx`: each
    one's run, of session `su` and direction `sd`; `ok`: the run is inside the window) that
    are their direction's 1st, 10th, 100th, ...: those the history marks with a T."""
    rts = np.flatnonzero(rt)
    if not len(rts):
        return []
    run = sidx[rts]
    before = np.fromiter([states[u].rt1 if d else states[u].retrans - states[u].rt1
                          for u, d in zip(su[run].tolist(), sd[run].tolist())], np.int64, len(rts))
    nth = before + ranks(run)[0] + 1
    return o[rts[np.isin(nth, _POW10_LIST) & ok[run]]].tolist()


def data_many(states, session, dirs, seqs, lens):
    """`data` for the data segments of many sessions (`session[i]`: segment i's index into
    `states`; segments in frame order): a segment is a retransmission when it lies within
    [lowest seq, highest end) seen before it in its direction, found for all at once by a
    running min/max per session and direction; the gap a segment jumps is its distance
    past that max. Serial arithmetic becomes plain integers relative to a reference
    inside a window of +-2^30 (where a range cannot wrap); a direction whose numbers leave
    it goes through `data` segment by segment. Returns the indexes of the segments `data`
    returns True for (the history's T), ascending."""
    nr = len(session)
    if not nr:
        return _NONE
    stored = _stored_ranges(states)
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
    # the gap each segment jumps past the highest end before it (none for the first)
    first = exmax <= -_FAR
    jump = rel - exmax
    gaps = np.add.reduceat(np.where(first | (jump <= 0), 0, jump), sst)
    lowest, highest = np.minimum.reduceat(rel, sst), np.maximum.reduceat(endr, sst)
    newlo = (np.minimum(lowest, lo0) + ref) & MASK
    newhi = (np.maximum(highest, hi0) + ref) & MASK
    ok = ((lowest > -_WINDOW) & (highest < _WINDOW)
          & (~has | ((hi0 > -_WINDOW) & (hi0 < _WINDOW))))
    scaled = _scaled(states, rt, sidx, su, sd, ok, o)
    bounds = np.append(sst, nr).tolist()
    for j, (u, d, good, cnt, lo, hi, gp) in enumerate(zip(su.tolist(), sd.tolist(), ok.tolist(), count.tolist(),
                                                          newlo.tolist(), newhi.tolist(), gaps.tolist())):
        st = states[u]
        if not good:                    # numbers too far apart for the window: segment by segment
            for i in o[bounds[j]:bounds[j + 1]].tolist():
                if data(st, d, int(seqs[i]), int(lens[i])):
                    scaled.append(i)
            continue
        if d == 0:
            st.lo0, st.hi0 = lo, hi
        else:
            st.lo1, st.hi1 = lo, hi
        if cnt:
            st.retrans += cnt
            if d:
                st.rt1 += cnt
        if gp:
            st.gap += gp
    scaled.sort()
    return np.array(scaled, np.intp)


def reuses(st, first: bytes, seq: int) -> bool:
    """Whether a SYN without ACK with sequence number `seq` starts a new connection on an
    open session's tuple (Zeek's connection reuse; `st`: the session's TcpState, `first`:
    its first row): after a close, always; before, unless it is the session's opening SYN
    again (the same sequence number) or the SYN of a SYN-ACK seen first (its ack - 1)."""
    if st is not None and st.closed:
        return True
    flags, first_seq, first_ack = _FIRST_TCP.unpack_from(first)
    kind = flags & (SYN | ACK)
    if kind == SYN:
        return seq != first_seq
    if kind == SYN | ACK:
        return seq != (first_ack - 1) & MASK
    return True


def waiting(states):
    """Per state (None: no TCP state yet): whether its handshake waits for the client's ACK
    (a SYN-ACK seen), and whether a FIN or RST has been seen. `control_segments` picks a
    handshake's last ACK only after a SYN-ACK of the same batch, and a SYN after a close
    opens a new session: the batch path leaves such sessions to the per-packet path."""
    n = len(states)
    hs = np.fromiter([st.hs if st is not None else HS_NONE for st in states], np.int8, n)
    close = np.fromiter([st.close if st is not None else 0 for st in states], np.int8, n)
    return hs == HS_SYNACK, close != 0


# -- Zeek's history: which letter a segment adds, kept compact, and what it says --------------
#
# An entry is a letter's code | direction << 4 (canonical direction; the record writes the
# client's letters in upper case). A direction's S and H share one kind (one SYN each), as
# in Zeek; T is not a kind: it repeats at a direction's 1st, 10th, 100th, ... retransmission.
# Not produced: C (bad checksum: not checked), W (zero window: not in the rows), G (content
# gap: Zeek sees it in reassembly; `gap` counts the bytes), X, and the repeats of S, H, F
# and R that Zeek adds when their sequence number changes.
LETTERS = " SHADFRIQT"
L_S, L_H, L_A, L_D, L_F, L_R, L_I, L_Q, L_T = range(1, 10)
_KIND = {L_S: 1, L_H: 1, L_A: 2, L_D: 4, L_F: 8, L_R: 16, L_I: 32, L_Q: 64, L_T: 0}
ENTRY_BIT = [_KIND.get(e & 15, 0) << (8 * (e >> 4)) for e in range(32)]     # entry -> its kind's bit in `hist`
T_ENTRY = (L_T, L_T | 16)
_KINDS = 0xFFFF


def letter(flags: int, payload: int) -> int:
    """The letter a segment adds to its direction's history, if its kind is new there
    (Zeek's update_history): two of SYN/FIN/RST give I (FIN and RST) or Q; one gives S or H
    (SYN without or with ACK), F or R; none gives D for payload, else A for an ACK. A
    segment without any flag has no TCP state here and adds nothing."""
    if not flags:
        return 0
    syn, fin, rst = flags & SYN, flags & FIN, flags & RST
    n = (syn != 0) + (fin != 0) + (rst != 0)
    if n > 1:
        return L_I if fin and rst else L_Q
    if syn:
        return L_H if flags & ACK else L_S
    if fin:
        return L_F
    if rst:
        return L_R
    if payload:
        return L_D
    return L_A if flags & ACK else 0


def entry(flags: int, payload: int, d: int) -> int:
    """The history entry of one segment (0: none)."""
    e = letter(flags, payload)
    return e | d << 4 if e else 0


_ENTRY_OF = np.array([entry(i & 255, i >> 8 & 1, i >> 9) for i in range(1024)], np.int64)   # (flags, payload, d)


def entries(flags, payload, dirs):
    """`entry` over numpy columns: a lookup by flags byte, payload or not, direction."""
    i = flags.astype(np.uint16)
    i |= (payload != 0).astype(np.uint16) << 8
    i |= dirs.astype(np.uint16) << 9
    return _ENTRY_OF[i]


def _kinds_possible():
    """By (flags OR, any data) = i & 0xFF | data << 8: the kinds segments of one direction
    may bring (as direction 0's bits) whose flags OR to i & 0xFF, some of them carrying
    payload when data: a superset of what they bring. Each segment's own kind from
    its flags (a subset of the OR) and payload, ORed over all such segments; with numpy,
    as each worker makes it at start (131,072 Python steps took ~10 ms a worker)."""
    kind = np.array([_KIND.get(letter(i & 0xFF, i >> 8), 0) for i in range(512)], np.int64)
    flags = np.arange(256)
    subset = (flags[None, :] & flags[:, None]) == flags[None, :]    # [or, flags]: flags within the OR
    bare = np.bitwise_or.reduce(np.where(subset, kind[None, :256], 0), axis=1)
    data = bare | np.bitwise_or.reduce(np.where(subset, kind[None, 256:], 0), axis=1)
    return np.concatenate([bare, data])


KINDS_POSSIBLE = _kinds_possible()


_HISTORIES = {}             # history value -> one int object for all the sessions that have it
_HISTORIES_MAX = 4096       # crafted traffic makes many: past this, each keeps its own


def _shared(h: int) -> int:
    """One int object per common history (a handshake's is over 2^30: 32 bytes a session)."""
    if len(_HISTORIES) < _HISTORIES_MAX:
        return _HISTORIES.setdefault(h, h)
    return _HISTORIES.get(h, h)


def note(st: TcpState, e: int) -> None:
    """Append entry `e` to the history (the caller has checked that its kind is new, or that
    it is a T)."""
    h = st.hist
    st.hist = _shared(((h >> 16 << 5 | e) << 16) | (h & _KINDS) | ENTRY_BIT[e])


ENTRY_BITS = np.array(ENTRY_BIT, np.int64)
ENTRY_KIND = np.array([b.bit_length() - 1 for b in ENTRY_BIT], np.int64)     # its bit's position, -1: none
_PACKED = 12                    # entries packed in an int64 at once (60 bits)
_NEW = 9                        # entries of an empty history made whole in an int64 (45 bits, then 16 of kinds)


def note_many(states, u, e, distinct: bool = False) -> None:
    """`note` for events of many sessions: `u` each event's index into `states`, `e` its
    entry, the events grouped by state, in order inside a state. An event whose kind its
    state has, or that an earlier event of the state brings, adds nothing (as the
    per-packet path's check before `note`); T always adds. `distinct`: no two events of a
    state bring the same kind (the caller kept each kind's first)."""
    n = len(u)
    if not n:
        return
    hs = [st.hist for st in states]
    # the kinds each state has seen, and bit 20 where its history has letters (not empty)
    seen = np.fromiter([(h & _KINDS) | (h > _KINDS) << 20 for h in hs], np.int64, len(states))
    bit = ENTRY_BITS[e]
    keep = bit == 0
    kinds = np.flatnonzero(~keep)
    if len(kinds):
        if not distinct:
            _, at = np.unique(u[kinds] * 65536 + bit[kinds], return_index=True)
            kinds = kinds[at]
        keep[kinds[(seen[u[kinds]] & bit[kinds]) == 0]] = True
    ku, ke, kb = u[keep], e[keep], bit[keep]
    if not len(ku):
        return
    heads = np.flatnonzero(np.r_[True, ku[1:] != ku[:-1]])
    sizes = np.diff(np.r_[heads, len(ku)])
    rank = np.arange(len(ku)) - np.repeat(heads, sizes)
    shift = 5 * np.minimum(np.repeat(sizes, sizes) - 1 - rank, _PACKED)
    packed = np.add.reduceat(np.where(rank >= np.repeat(sizes, sizes) - _PACKED, ke << shift, 0), heads)
    bits = np.bitwise_or.reduceat(kb, heads)
    hu = ku[heads]
    new = (seen[hu] == 0) & (sizes <= _NEW)           # an empty history
    if new.any():                                      # takes the entries as they are: one int64 each
        for st, v in zip([states[uu] for uu in hu[new].tolist()], ((packed[new] << 16) | bits[new]).tolist()):
            st.hist = _shared(v)
        if new.all():
            return
    old = ~new
    for j, uu, k, p, b in zip(np.flatnonzero(old).tolist(), hu[old].tolist(), sizes[old].tolist(),
                              packed[old].tolist(), bits[old].tolist()):
        h = hs[uu]
        order = h >> 16
        if k > _PACKED:                 # the ones the int64 does not hold, one by one
            for x in ke[heads[j]:heads[j] + k - _PACKED].tolist():
                order = order << 5 | x
            k = _PACKED
        states[uu].hist = _shared((((order << (5 * k)) | p) << 16) | (h & _KINDS) | b)


def history_text(hist: int) -> str:
    """The history's letters in order, direction 0's in upper case."""
    order = hist >> 16
    out = []
    while order:
        e = order & 31
        out.append(LETTERS[e & 15] if e < 16 else LETTERS[e & 15].lower())
        order >>= 5
    return "".join(reversed(out))


# Zeek's TCP endpoint states (TCP_Endpoint.h), as its conn_state() reads them
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, EP_CLOSED, RESET = range(7)
_SEGMENT = {"S": SYN, "H": SYN | ACK, "A": ACK, "D": ACK, "F": FIN | ACK, "R": RST, "I": FIN | RST | ACK,
            "Q": SYN | FIN}
_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R.*")


def _from_inactive(st, move, orig: bool, payload: bool, syn, fin, rst, ack) -> None:
    """`endpoint_states`' step for a segment from an INACTIVE endpoint (`orig`: the
    originator's; `st`: the states by endpoint, `move`: its transition)."""
    me, peer = orig, not orig
    if syn:
        if orig:
            move(me, SYN_ACK_SENT if ack else SYN_SENT)
        else:
            if st[peer] == SYN_SENT:
                move(peer, ESTABLISHED)
            move(me, ESTABLISHED)
    if fin:
        move(me, EP_CLOSED)
    if rst:
        move(me, RESET)
    if st[me] == INACTIVE:
        if not orig and not payload and st[True] == SYN_SENT:
            pass                                  # an ACK before the SYN-ACK: still inactive
        elif ack and st[peer] == ESTABLISHED:
            move(me, ESTABLISHED)
        else:
            move(me, PARTIAL)


def endpoint_states(history: str) -> tuple:
    """Zeek's endpoint state machine (TCPSessionAdapter's UpdateStateMachine) run over the
    history's letters, each standing for its segment (D with an ACK, Q as SYN+FIN): the
    states change only at a direction's first segment of a kind, which is what the
    history holds, so this gives Zeek's states but where segments no letter stands for
    (a second zero-length ACK, a flagless segment) moved them. Upper case is the
    originator. Returns (originator's state, its previous, responder's, its previous)."""
    st = {True: INACTIVE, False: INACTIVE}
    prev = {True: INACTIVE, False: INACTIVE}

    def move(ep, to):
        if st[ep] != to:
            prev[ep], st[ep] = st[ep], to
    for ch in history:
        if ch == "^" or ch in "Tt":
            continue
        orig = ch.isupper()
        fl = _SEGMENT[ch.upper()]
        payload = ch in "Dd"
        syn, fin, rst, ack = fl & SYN, fl & FIN, fl & RST, fl & ACK
        me, peer = orig, not orig
        s = st[me]
        if s == INACTIVE:
            _from_inactive(st, move, orig, payload, syn, fin, rst, ack)
        elif s in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                move(me, EP_CLOSED)
            if rst:
                move(me, RESET)
        elif s in (ESTABLISHED, PARTIAL):
            if syn and s == PARTIAL and st[peer] == INACTIVE and not ack:
                move(me, SYN_SENT)
            if fin and not rst:
                move(me, EP_CLOSED)
                if st[peer] == RESET and prev[peer] == EP_CLOSED:
                    move(peer, EP_CLOSED)
            if rst:
                move(me, RESET)
        elif s == EP_CLOSED:
            if rst and st[peer] != EP_CLOSED:
                move(me, RESET)
    return st[True], prev[True], st[False], prev[False]


@functools.lru_cache(maxsize=4096)
def conn_state(history: str) -> str:
    """Zeek's conn_state of a TCP connection (base/protocols/conn/main.zeek) from its
    history (upper case: the originator, our client). REJ's "neither side sent data" is
    the history's: no D and no d."""
    os_, _, rs, _ = endpoint_states(history)
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and "D" not in history and "d" not in history):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os_ == RESET:
        if r_inactive:
            return "RSTOS0" if _RSTOS0.fullmatch(history) else "OTH"
        return "RSTO"
    if os_ == EP_CLOSED and rs == EP_CLOSED:
        return "SF"
    if os_ == EP_CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == EP_CLOSED:
        return "SHR" if o_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"
