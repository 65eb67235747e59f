"""TCP's rules over the batch path's groups: the steps that follow its session updates.

The batch path (`Engine._bulk`) first applies each group's counters and flags; these
steps then run `tcp`'s column rules over the only rows that can change a session's
TCP state: the control segments (`control`: handshake and close, `tcp.control_many`),
the data segments of sessions with a TcpState (`retransmissions`, `tcp.data_many`) and
the rows that may add a history letter (`history`, `tcp.note_many`). Each has its
scalar reference in `tcp` (`control`, `data`, `note`), which the per-packet path
applies; tests/test_engine_bulk.py holds the two paths to the same records.
"""
import numpy as np

from . import tcp as tcpmod


class Touched:
    """What the batch path's session updates leave for its later steps, per group."""
    __slots__ = ("control", "before", "data", "inspect", "history", "history_states")

    def __init__(self, ng: int):
        self.control = [None] * ng      # the session whose TCP control segments `control` applies
        self.before = [0.0] * ng        # its last packet time before the batch
        self.data = []                  # (group, session): TCP data segments to check for retransmissions
        self.inspect = []               # (group, session): payload rows, the session still being classified
        self.history = []               # groups whose rows may add history letters, ascending
        self.history_states = []        # their TcpStates


def control(g, groups, touched, table, close_expiry: bool) -> None:
    """The TCP flags' part (handshake, close) of the batch path's `groups`:
    `tcp.control_many` over the only segments that can change it, in frame order. A
    session that closes (`close_expiry`: closing counts) is filed in `table`'s wheel at
    its close-linger deadline, counted from its last packet up to the closing one."""
    ds = g.dirs
    pos = np.flatnonzero(tcpmod.control_segments(g.gs, ds, g.flags, groups[g.gs]))
    if not len(pos):
        return
    pos = pos[np.argsort(g.order[pos])]              # frame order
    g_of = g.gs[pos]
    has = np.zeros(g.n, bool)
    has[g_of] = True
    ug = np.flatnonzero(has).tolist()                # the groups with control segments, each once
    u_of = (np.cumsum(has) - 1)[g_of]
    ss = [touched.control[j] for j in ug]
    silent = _peer_silent(g, ds, pos, ss, u_of) if close_expiry else None
    closed = tcpmod.control_many([s.tcp for s in ss], np.fromiter([s.client_dir for s in ss], np.int8, len(ss)),
                                 u_of, ds[pos], g.flags[pos], g.ts[pos], silent)   # each has its TcpState
    if closed and close_expiry:
        linger = table.limits.close_linger
        file = table.wheel.file
        now_closed = table.closed
        us = u_of[closed].tolist()
        due = (np.maximum(np.fromiter([touched.before[ug[u]] for u in us], np.float64, len(us)),
                          g.running_max()[pos[closed]]) + linger).tolist()
        for u, when in zip(us, due):
            s = ss[u]
            s.timeout = linger
            file(s, when)
            now_closed(s)


def _peer_silent(g, ds, pos, ss, u_of):
    """For the control segments at grouped positions `pos` (of sessions `ss`, `u_of`):
    a FIN whose peer had sent nothing before it, in the batch or before it (`tcp.control`'s
    peer_silent); None when there is no FIN."""
    fin = (g.flags[pos] & (tcpmod.FIN | tcpmod.RST)) == tcpmod.FIN
    if not fin.any():
        return None
    n = len(ds)
    at = np.arange(n)
    first = np.stack([np.minimum.reduceat(np.where(ds == d, at, n), g.starts) for d in (0, 1)])   # per group
    peer = 1 - ds[pos].astype(np.intp)
    gj = g.gs[pos]
    out = fin & (first[peer, gj] > pos)          # the peer sent nothing in the batch before it
    ks = np.flatnonzero(out)
    if len(ks):                                  # nor before the batch (its counters less the batch's)
        out[ks] = np.fromiter([ss[u].c[6 * q] for u, q in zip(u_of[ks].tolist(), peer[ks].tolist())],
                              np.int64, len(ks)) == g.counts[gj[ks], 6 * peer[ks]]
    return out


def retransmissions(ev, g, data):
    """`tcp.data_many` for the data segments of the groups in `data` ((group, session)
    pairs). Returns the rows that add the history's T, ascending."""
    at = np.full(g.n, -1, np.intp)
    at[[j for j, _ in data]] = np.arange(len(data))
    rows = np.flatnonzero(g.tcp_data & (at[g.gid] >= 0))
    scaled = tcpmod.data_many([s.tcp for _, s in data], at[g.gid[rows]], ev["dir"][rows], ev["seq"][rows],
                              ev["payload"][rows])
    return rows[scaled]


def history(ev, g, touched, scaled) -> None:
    """The history letters of the batch path's groups in `touched.history` (those that
    may gain a kind) and of those with rows in `scaled` (a retransmission's T), in frame
    order, a row's letter before its T: `tcp.note_many` keeps the first of each kind a
    session has not seen. Only these groups' rows are looked at."""
    js, states = touched.history, touched.history_states
    if len(scaled):
        have = set(js)
        more = {j for j in g.gid[scaled].tolist() if j not in have}
        if more:
            js, states = js[:], states[:]
            for j, s in touched.data:
                if j in more:
                    js.append(j)
                    states.append(s.tcp)
    ja = np.array(js, np.intp)
    by_group = np.argsort(ja, kind="stable")        # known sessions' groups, then new ones': merged
    at = np.full(g.n, -1, np.intp)
    at[ja[by_group]] = np.arange(len(ja))
    states = [states[i] for i in by_group.tolist()]
    n = len(g.order)
    where = np.empty(n, np.intp)                     # each row's place in grouped order
    where[g.order] = np.arange(n)
    chosen = np.zeros(g.n, bool)
    chosen[ja] = True
    mine = np.flatnonzero(np.repeat(chosen, np.diff(np.append(g.starts, n))))   # their rows, grouped
    data = g.tcp_data[g.order[mine]]
    ge = tcpmod.entries(g.flags[mine], data, g.dirs[mine])
    kind = tcpmod.ENTRY_KIND[ge]                      # its kind's bit position, -1: none
    has = kind >= 0
    sel, kind = mine[has], kind[has]
    first = np.full(g.n * 16, n, np.intp)            # each group's first row of each kind
    np.minimum.at(first, g.gs[sel] * 16 + kind, sel)
    pos = first[first < n]
    tpos = where[scaled]
    key = np.concatenate([pos * 2, tpos * 2 + 1])
    e = np.concatenate([tcpmod.entries(g.flags[pos], g.tcp_data[g.order[pos]], g.dirs[pos]),
                        np.asarray(tcpmod.T_ENTRY, np.int64)[ev["dir"][scaled]]])
    o = np.argsort(key, kind="stable")
    tcpmod.note_many(states, at[g.gs[key[o] >> 1]], e[o], distinct=True)
