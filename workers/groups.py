"""A batch's rows grouped by session: what the batch path knows of each group at once.

A batch's rows sorted by session key with a stable sort are "in grouped order":
each session's rows together, in frame order inside the group. `Groups` holds
that order and every per-group figure the batch path needs (counters summed
per direction, the first FIN/RST, ...), worked out with numpy once per batch.
Rules applied segment by segment (TCP's control segments, the classifier's
payload rows) run over grouped rows in rounds (`rounds`).
"""
from itertools import repeat

import numpy as np

from .rounds import running_max
from .session import DATA_PKT, IP_BYTE, N_COUNTERS
from .tcp import ACK, CONTROL, FIN, KINDS_POSSIBLE, RST, SYN


def stack_ids(ev):
    """Each row's VLAN stack as one number (count, then the first two ids)."""
    return (ev["nvlan"].astype(np.int64) << 24) | (ev["vlan0"].astype(np.int64) << 12) | ev["vlan1"]


def stack_of(sid: int) -> tuple:
    """A `stack_ids` number as the tuple of VLAN ids, outermost first."""
    return ((sid >> 12) & 0xFFF, sid & 0xFFF)[:sid >> 24]


def observed_rows(ev, vlans: bool):
    """Per row (frame order), whether the per-packet path shows it to `Session.observe`: the
    first row of each session key and every row whose parent (or, with `vlans`, VLAN
    stack) differs from the previous row of its key, where there is anything to observe;
    None when nothing is (no parents, VLANs in the key). A session's later rows repeat what
    it has seen, and a session opened inside the batch starts from its own first row."""
    par = ev["parent"]
    if not vlans and not par.any():
        return None
    keys = ev["key"]
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    change = np.empty(len(ev), bool)
    change[0] = True
    np.not_equal(sk[1:], sk[:-1], out=change[1:])
    gp = par[order]
    change[1:] |= gp[1:] != gp[:-1]
    if vlans:
        gs = stack_ids(ev)[order]
        change[1:] |= gs[1:] != gs[:-1]
    else:
        change &= gp != 0
    out = np.empty(len(ev), bool)
    out[order] = change
    return out


class Groups:
    """The rows of one batch (`ev`, EVENT rows in frame order) grouped by session key.
    Arrays "per row" are in frame order, "per grouped row" in grouped order, "per group"
    indexed by group (groups numbered in key order)."""
    __slots__ = (
        "n",            # number of groups
        "order",        # per grouped row: its row
        "starts",       # per group: where its rows start in grouped order
        "gs",           # per grouped row: its group
        "gid",          # per row: its group
        "first",        # per group: its first row
        "keys",         # per group: its session key
        "ts",           # per grouped row: packet time
        "flags",        # per grouped row: TCP flags
        "gap",          # per grouped row: time since the group's previous row (-inf at its first)
        "last_ts",      # per group: the latest packet time
        "max_gap",      # per group: the longest gap between two of its rows
        "flags_or",     # per group: its rows' TCP flags ORed
        "counts",       # per group: its counters, as Session.c holds them
        "tcp_data",     # per row: a TCP segment with payload (the retransmission rule's rows)
        "tcp_data_n",   # per group: its rows in tcp_data
        "payload_rows",  # per row: it carries payload bytes for the classifier (None: no payload sent)
        "payload_n",    # per group: its rows in payload_rows
        "has_control",  # any SYN, FIN or RST in the batch
        "close_ts",     # per group: time of its first FIN or RST (inf: none)
        "close_pos",    # per group: grouped position of its first FIN or RST (n rows: none); None: no control
        "reopens",      # per group: a SYN (no ACK) comes after its first FIN or RST
        "any_syn",      # per group: it has a SYN without ACK
        "_runmax",
        "_dirs",
        "_ev",
    )

    def __init__(self, ev, with_payload: bool):
        n = len(ev)
        keys = ev["key"]
        self.order = order = np.argsort(keys, kind="stable")        # stable: frame order inside a group
        sk = keys[order]
        brk = np.empty(n, bool)
        brk[0] = True
        np.not_equal(sk[1:], sk[:-1], out=brk[1:])
        self.starts = starts = np.flatnonzero(brk)
        self.n = ng = len(starts)
        self.gs = gs = np.cumsum(brk) - 1
        self.gid = gid = np.empty(n, np.intp)
        gid[order] = gs
        self.first = order[starts]
        self.keys = sk[starts]
        self.ts = tss = ev["ts"][order]
        self.last_ts = np.maximum.reduceat(tss, starts)
        self.gap = gap = np.empty(n)
        gap[1:] = tss[1:] - tss[:-1]
        gap[starts] = -np.inf
        self.max_gap = np.maximum.reduceat(gap, starts)
        fl = ev["tcpflags"]
        self.flags = fls = fl[order]
        self.flags_or = flor = np.bitwise_or.reduceat(fls, starts)
        self._sums(ev, ng)
        if with_payload:
            self.payload_rows = ev["pllen"] != 0
            self.payload_n = np.bincount(gid, self.payload_rows, ng)
        else:
            self.payload_rows = None
            self.payload_n = np.zeros(ng, np.intp)
        self.has_control = bool(((flor & CONTROL) != 0).any())
        self._closes(n, ng)
        self._runmax = None
        self._dirs = None
        self._ev = ev

    def _sums(self, ev, ng) -> None:
        """The counters per group and direction (bincount over group * 2 + direction), laid
        out as Session.c: six per direction, then the IP lengths' sums (IP_BYTE)."""
        gid = self.gid
        lab = gid * 2 + ev["dir"]
        m2 = 2 * ng
        pl = ev["payload"]
        haspl = pl != 0
        sums = np.empty((m2, 6), np.int64)
        sums[:, 0] = np.bincount(lab, minlength=m2)
        sums[:, 1] = np.bincount(lab, ev["wirelen"], m2)
        sums[:, 2] = np.bincount(lab, ev["ncap"], m2)
        sums[:, 3] = np.bincount(lab, ev["caplen"], m2)
        sums[:, 4] = np.bincount(lab, haspl, m2)
        sums[:, 5] = np.bincount(lab, pl, m2)
        counts = np.zeros((ng, N_COUNTERS), np.int64)
        counts[:, :12] = sums.reshape(ng, 12)
        counts[:, IP_BYTE:IP_BYTE + 2] = np.bincount(lab, ev["iplen"], m2).reshape(ng, 2)
        self.counts = counts
        self.tcp_data = haspl & (ev["tcpflags"] != 0)
        self.tcp_data_n = np.bincount(gid, self.tcp_data, ng)

    def _closes(self, n, ng) -> None:
        """When each group's first FIN/RST comes, and whether a SYN (no ACK) follows it."""
        if not self.has_control:
            self.close_pos = None
            self.reopens = self.any_syn = np.zeros(ng, bool)
            self.close_ts = np.full(ng, np.inf)
            return
        fls, starts = self.flags, self.starts
        pos = np.arange(n)
        fr = (fls & (FIN | RST)) != 0
        syn = (fls & (SYN | ACK)) == SYN
        self.close_ts = np.minimum.reduceat(np.where(fr, self.ts, np.inf), starts)
        self.close_pos = np.minimum.reduceat(np.where(fr, pos, n), starts)
        syn_pos = np.maximum.reduceat(np.where(syn, pos, -1), starts)
        self.reopens = syn_pos > self.close_pos
        self.any_syn = syn_pos >= 0

    def kinds(self, ev):
        """Per group, the history kinds its rows may bring (a superset, from each direction's
        flags ORed and whether it has data: `tcp.KINDS_POSSIBLE`), so that the rows themselves
        are looked at only for sessions that may gain one; None when no row has TCP flags."""
        if not self.flags_or.any():
            return None
        up = self.dirs != 0
        out = 0
        for d, rows in ((0, ~up), (1, up)):
            f = np.bitwise_or.reduceat(np.where(rows, self.flags, 0), self.starts).astype(np.intp)
            out = out | KINDS_POSSIBLE[f | (self.counts[:, 6 * d + DATA_PKT] > 0) << 8] << 8 * d
        return out

    def observed(self, ev, vlans: bool):
        """Per group, what the rows carried beyond one value each: whether its outer
        sessions (EVENT parent) or, with `vlans`, its VLAN stacks vary inside the group,
        and its first row's parent and stack. None when no row has a parent and VLAN
        stacks are not watched (`vlans` False: they are in the key, so one per session)."""
        par = ev["parent"]
        if not vlans and not par.any():
            return None
        starts = self.starts
        gp = par[self.order]
        mixed = np.minimum.reduceat(gp, starts) != np.maximum.reduceat(gp, starts)
        stack = None
        if vlans:
            gsk = stack_ids(ev)[self.order]
            mixed |= np.minimum.reduceat(gsk, starts) != np.maximum.reduceat(gsk, starts)
            stack = gsk[starts]
        return mixed, gp[starts], stack

    def distinct(self, col, j: int) -> list:
        """Group j's distinct values of `col` (a column per row, frame order), in the order
        of their first row."""
        rows = self.order[self.starts[j]:self.starts[j + 1] if j + 1 < self.n else len(self.order)]
        u, at = np.unique(col[rows], return_index=True)
        return u[np.argsort(at)].tolist()

    @property
    def dirs(self):
        """Per grouped row: its direction (made once)."""
        if self._dirs is None:
            self._dirs = self._ev["dir"][self.order]
        return self._dirs

    def running_max(self):
        """Per grouped row: packet time's running maximum inside its group (made once)."""
        if self._runmax is None:
            self._runmax = running_max(self.ts, self.gs)
        return self._runmax


def observe_groups(ev, g, found, bulk, seen, get, watch: bool) -> None:
    """`Session.observe` for the batch path's groups that carry an outer session (or,
    watched, a VLAN stack) their session may not have seen: a group whose rows vary,
    a known session's group whose first row differs from the session's first; each
    value once, in the order of its first row (`found`: the groups' known sessions, `get`:
    the table's lookup, for the new ones; `watch`: VLAN stacks are watched)."""
    mixed, parent, stack = seen
    todo = bulk & (mixed | (parent != 0) | watch)
    parents, stacks = ev["parent"], stack_ids(ev) if watch else None
    for j, mx, p, sk in zip(np.flatnonzero(todo).tolist(), mixed[todo].tolist(), parent[todo].tolist(),
                            repeat(None) if stack is None else stack[todo].tolist()):
        s = found[j] or get(int(g.keys[j]))
        if not mx:
            if found[j] is not None:        # a new session's only values are its first row's
                s.observe(p, None if sk is None else stack_of(sk))
            continue
        for q in g.distinct(parents, j):
            s.observe(q, None)
        if watch:
            for q in g.distinct(stacks, j):
                s.observe(0, stack_of(q))
