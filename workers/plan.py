"""Which of a batch's sessions may take the batch path: the rule, as one pure function.

The batch path applies a session's rows of a batch at once, so it must give
what applying them packet by packet, between the batch's advances, gives. A
group of rows (one session, `groups.Groups`) stays on it unless
- the batch splits its session: an idle gap as long as its timeout (between
  two of its rows, or before its first one), a SYN after its FIN/RST, a SYN
  that reuses its tuple (close expiry on: `tcp.reuses`);
- its session is in a state the batch path does not follow: a handshake
  waiting for the client's ACK, a SYN after a FIN/RST seen earlier, not filed
  in the expiry wheel, an interim report waiting for its next packet;
- an expiry of the batch may look at it (its wheel slot, or a FIN/RST, falls
  inside the batch's time) and `Room` cannot show that no advance ends it before
  its last row there, or an interim report falls due inside the batch.
The rest go packet by packet (`Engine._feed_rows`). `stays` decides for new and
known sessions alike, over `Candidates`: what the engine knows of each group's
session (new ones: what opening it would make of it).

Time: an advance at `now` ends a session idle at `now` (`contracts.timeouts.
is_idle`: now - last >= timeout). A session may end at an advance after its
last row of the batch: by then its counters are all in, on both paths, so the
advance that ends it writes the same record (each path has it filed at or
before the time it becomes idle, and the first advance from then on ends it).
A closing session (FIN/RST, close expiry on) takes the close linger as its
timeout from its first FIN/RST on.
"""
import numpy as np

from contracts.timeouts import is_idle

from .session import FIRST
from .tcp import ACK, FIN, RST, SYN, waiting

_FAR = 9e15             # the expiry wheel files anything later in its last slot (`Wheel.file`)


class Room:
    """Per group, what lets its session stay on the batch path although an expiry of the
    batch may look at it (`room`): margins of packet time over the batch's advances.
    Packet by packet, an advance at `now` ends a session when now - (its last packet so
    far) >= its timeout; per row but the last (after which it may end: the module's
    docstring), the margin is (packet time's running maximum up to it) - (the last
    advance before the group's next row), and the session cannot end before its next row
    while margin + timeout > 0. Conservative: the session's
    old last time is left out of the running maximum, and the linger is assumed from the
    first FIN/RST on."""
    __slots__ = (
        "slack",    # least margin over all rows
        "opened",   # least margin over the rows before the first FIN/RST (None: no control in the batch)
        "closed",   # least margin from the first FIN/RST to the last row but one (the last may end)
        "after",    # largest gap between rows after the first FIN/RST: one as long as the linger splits it
        "pre",      # the last advance before the group's first row: the old last time + timeout must beat it
    )

    def __init__(self, slack, opened, closed, after, pre):
        self.slack, self.opened, self.closed, self.after, self.pre = slack, opened, closed, after, pre


def room(g, cuts, clock: float) -> Room:
    """`Room` for the groups `g` of a batch cut at `cuts` ([[end row, now], ...]). The
    advances' times are what `Engine._advance` makes of the cuts' (`clock`: the engine's
    time before the batch): a running maximum, since a batch's cut times may lie behind
    the engine's clock (several capture processes, idle ticks)."""
    runmax, order, starts = g.running_max(), g.order, g.starts
    n = len(runmax)
    ends = np.fromiter((e for e, _ in cuts), np.int64, len(cuts))
    nows = np.maximum.accumulate(np.maximum(np.fromiter((t for _, t in cuts), np.float64, len(cuts)), clock))
    seg = np.searchsorted(ends, order, side="right")          # segment of each grouped row
    back = np.where(seg > 0, nows[np.maximum(seg - 1, 0)], -np.inf)   # last advance before it
    bound = np.empty(n)
    bound[:-1] = back[1:]
    last_rows = np.append(starts[1:] - 1, n - 1)
    bound[last_rows] = -np.inf                            # no advance after the last row matters
    margin = runmax - bound
    slack = np.minimum.reduceat(margin, starts)
    if g.close_pos is None:
        return Room(slack, None, None, None, back[starts])
    pos = np.arange(n)
    fin = g.close_pos[g.gs]                               # each row's group's first FIN/RST
    opened = np.minimum.reduceat(np.where(pos < fin, margin, np.inf), starts)
    mid = (pos >= fin)
    mid[last_rows] = False
    closed = np.minimum.reduceat(np.where(mid, margin, np.inf), starts)
    after = np.maximum.reduceat(np.where(pos > fin, g.gap, -np.inf), starts)
    return Room(slack, opened, closed, after, back[starts])


def outlasts(timeout, linger: float, closing, r: Room):
    """Per group, from its `Room`: no advance of the batch can end its session (idle
    `timeout`) before its last row. A closing session's timeout becomes the linger from
    its first FIN/RST on, and a gap as long as that splits it."""
    idle_ok = r.slack + timeout > 0
    if r.opened is None:
        return idle_ok
    lt = np.minimum(timeout, linger)
    return np.where(closing, (r.opened + timeout > 0) & (r.closed + lt > 0) & (r.after < lt), idle_ok)


class Candidates:
    """Per group, the session the batch path would update (known) or open (new)."""
    __slots__ = (
        "known",        # the session is in the table
        "first_ts",     # the group's first packet time
        "last",         # known: its last packet time before the batch (new: NaN)
        "timeout",      # its idle timeout (new: its class's, from the first row)
        "slot",         # the expiry wheel's second it is filed in (new: would be); NaN: not filed
        "next_report",  # when its next interim report is due (inf: never)
        "held",         # known: in a state the batch path does not follow (see the module)
        "reused",       # a SYN of the group starts a new connection on the session's tuple (`tcp.reuses`)
    )

    def __init__(self, g, found: list, ev, timeouts, reports_due=()):
        """`found`: per group, its session in the table or None; `reports_due`: the sessions
        whose interim report waits for their next packet."""
        n = g.n
        self.known = known = np.fromiter([s is not None for s in found], bool, n)
        self.first_ts = t0 = ev["ts"][g.first]
        self.last = np.full(n, np.nan)
        self.timeout = np.empty(n)
        self.slot = np.empty(n)
        self.next_report = np.empty(n)
        self.held = np.zeros(n, bool)
        self.reused = _reused(g, found, known, ev) if timeouts.close_expiry and g.any_syn.any() else None
        kn = np.flatnonzero(known)
        if len(kn):
            ks = [found[j] for j in kn.tolist()]
            m = len(ks)
            self.last[kn] = np.fromiter([s.last for s in ks], np.float64, m)
            self.timeout[kn] = np.fromiter([s.timeout for s in ks], np.float64, m)
            slot = np.array([s.slot for s in ks], np.float64)          # None (not filed): NaN
            self.slot[kn] = slot
            self.next_report[kn] = np.fromiter([s.next_report for s in ks], np.float64, m)
            awaits_ack, fin_seen = waiting([s.tcp for s in ks])
            self.held[kn] = np.isnan(slot) | awaits_ack | (g.any_syn[kn] & fin_seen)
            if reports_due:
                self.held[kn] |= np.fromiter([s in reports_due for s in ks], bool, m)
        nw = np.flatnonzero(~known)
        if len(nw):
            first = g.first[nw]
            to = timeouts.idle_many(ev["proto"][first], ev["sport"][first], ev["dport"][first])
            t = t0[nw]
            nr = t + (timeouts.active if timeouts.active > 0 else np.inf)
            with np.errstate(invalid="ignore"):
                when = np.minimum(t + to, nr)                   # as `Engine._open` files it
            self.timeout[nw] = to
            self.next_report[nw] = nr
            self.slot[nw] = np.where(when < _FAR, np.trunc(when), np.inf)


def _reused(g, found, known, ev):
    """Per group: a SYN without ACK in it starts a new connection on its session's tuple
    (`tcp.reuses` before a close; after one, `Candidates.held` and `Groups.reopens` hold the
    group back already): not the session's opening SYN again, nor the SYN of the SYN-ACK it
    opened with. The session's first row is the group's own for a new one (its opening
    row itself reuses nothing)."""
    syn = np.flatnonzero(((g.flags & (SYN | ACK)) == SYN) & g.any_syn[g.gs])
    gj = g.gs[syn]
    fl, fseq, fack = (ev[name][g.first].astype(np.int64) for name in ("tcpflags", "seq", "ack"))
    kn = np.unique(gj[known[gj]]).tolist()
    if kn:
        r = np.frombuffer(b"".join([found[j].first for j in kn]), FIRST)
        fl[kn], fseq[kn], fack[kn] = r["tcpflags"], r["seq"], r["ack"]
    seq = ev["seq"][g.order[syn]].astype(np.int64)
    kind = fl[gj] & (SYN | ACK)
    again = ((kind == SYN) & (seq == fseq[gj])) | ((kind == SYN | ACK) & (seq == (fack[gj] - 1) & 0xFFFFFFFF))
    opener = (syn == g.starts[gj]) & ~known[gj]
    out = np.zeros(g.n, bool)
    out[gj[~again & ~opener]] = True
    return out


def stays(g, c: Candidates, r, horizon: float, timeouts):
    """Per group: whether its rows take the batch path (the module's rule). `r`: the
    batch's `Room`, None when it has none (a batch fed without cuts: only sessions no
    expiry up to `horizon` can touch stay)."""
    linger = timeouts.close_linger
    closing = ((g.flags_or & (FIN | RST)) != 0) & timeouts.close_expiry
    with np.errstate(invalid="ignore"):
        splits = g.reopens | (g.max_gap >= c.timeout) | c.held | (c.known & is_idle(c.first_ts, c.last, c.timeout))
        if c.reused is not None:
            splits |= c.reused
        due = closing & ((g.max_gap >= linger) | (np.trunc(g.close_ts + linger) <= horizon))
        due |= c.slot <= horizon
        if r is not None:
            safe = (c.next_report > horizon) & outlasts(c.timeout, linger, closing, r)
            safe &= ~c.known | (c.last + c.timeout > r.pre)     # not ended before its first row either
            due &= ~safe
    return ~(splits | due)
