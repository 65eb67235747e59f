"""The worker's sans-IO core: keyed event batches and time in, session records out.

`feed(events)` updates sessions from the precomputed columns (no parsing),
`advance(now)` expires idle and closed sessions and writes interim reports,
`finish(now)` ends the stream (idle ones as "idle", the rest as "shutdown").
Records accumulate in `records` (lists in `contracts.record.FIELDS` order) until
the shell takes them. Time is packet time as given by the caller: offline
runs are deterministic and the same whatever the number of workers.
"""
from array import array
from itertools import repeat

import numpy as np

from contracts.record import CLOSED, EVICTED, IDLE, INTERIM, SHUTDOWN
from contracts.timeouts import Timeouts
from contracts.wire import DEPTH_BITS, EVENT, ID_SHIFT, row_struct, session_id, take_rows

from . import classify, inspection
from . import tcp as tcpmod
from .expiry import Wheel
from .groups import running_max
from .records import RecordWriter
from .session import Session

_SYN, _ACK = tcpmod.SYN, tcpmod.ACK
_REFUSE_MIN = 8          # first payloads in a call worth a vectorised refusal test
_NONE = np.zeros(0, np.intp)
_ROW_SIZE = EVENT.itemsize
_COUNTS_SIZE = 12 * 8     # a session's counters (Session.c, array "q") in bytes
_OPEN_FIELDS = row_struct("fidx", "proto", "depth", "sport", "dport", "path", "parent")   # from the first row's bytes
_GROUPED_MIN = 64                      # smaller batches: the per-packet path is cheaper
_REPORTS_MIN = 32                      # fewer records at once: `RecordWriter.one` one by one is cheaper


def _outlasts(timeout, linger, closing, slack, opened, closed, after) -> bool:
    """From `Engine._room`'s figures for a group: no advance of the batch can end its
    session (idle `timeout`) before its last row. A closing session's timeout becomes
    the linger from its first FIN/RST on, and a gap as long as that splits it."""
    if not closing:
        return slack + timeout > 0
    lt = min(timeout, linger)
    return opened + timeout > 0 and closed + lt > 0 and after < lt


class Engine:
    def __init__(self, worker: int = 0, timeouts: Timeouts = Timeouts(), sensor: str = "",
                 proc: int = 0, max_sessions: int = 0, plugins=(), classify: int = classify.BUDGET):
        self.worker = worker
        self.timeouts = timeouts
        self._timeouts_by_value = {v: v for v in (timeouts.tcp, timeouts.udp, timeouts.icmp, timeouts.other,
                                                  timeouts.dns)}
        self.sensor = sensor
        self.proc = proc
        self.max_sessions = max_sessions
        self.bulk_min = _GROUPED_MIN      # batches this small take the per-packet path
        self.report_min = _REPORTS_MIN    # fewer records at once: written one by one
        self.refuse_min = _REFUSE_MIN     # fewer first payloads at once: each one's Inspector decides
        self.classify = classify          # payload packets inspected per direction, 0: no classification
        self.plugins = list(plugins)
        self.packet_plugins = [p for p in self.plugins if getattr(p, "per_packet", False)]
        self.table = {}
        self.wheel = Wheel()
        self.paths = {}
        self.records = []
        self._ended = []                  # (place in records, session, reason): written by `_flush`
        self.now = float("-inf")   # packet time may be anything, even negative
        self.stats = {"events": 0, "sessions": 0, "records": 0, "final_records": 0, "evicted": 0}
        self.writer = RecordWriter(sensor, worker, classify)

    # -- input ---------------------------------------------------------------
    def add_paths(self, paths: dict) -> None:
        for k, v in paths.items():
            self.paths[int(k)] = v

    def feed(self, ev, payload=None) -> None:
        """Update sessions from one batch of EVENT rows (in frame order); `payload` holds
        the first payload bytes of young sessions' rows (EVENT ploff/pllen)."""
        n = len(ev)
        if not n:
            return
        self.stats["events"] += n
        inspecting = payload is not None and len(payload) and self.classify
        if self._per_packet(n):
            self._feed_rows(ev, None)
            if inspecting:
                inspection.inspect(self.table, ev, payload, None, self.classify, self.refuse_min)
        else:
            rest = self._bulk(ev, float("-inf"), payload if inspecting else None)
            if len(rest):
                self._feed_rows(ev, rest)
                if inspecting:
                    inspection.inspect(self.table, ev, payload, rest, self.classify, self.refuse_min)

    def feed_batch(self, ev, cuts, payload=None) -> None:
        """A front-end batch: its rows cut in segments, `cuts` = [[end row, now], ...]
        (rows [previous end, end) then `advance(now)`). The same as feed + advance per
        segment, but the sessions no expiry in the batch can touch are updated in bulk
        (`_bulk`) and only the others packet by packet, between the advances."""
        n = len(ev)
        if not cuts or cuts[-1][0] != n or self._per_packet(n):
            start = 0
            for end, now in cuts:
                self.feed(ev[start:end], payload)
                self._advance(now)
                start = end
            if start < n:
                self.feed(ev[start:], payload)
            self._flush()
            return
        self.stats["events"] += n
        inspecting = payload is not None and len(payload) and self.classify
        rest = self._bulk(ev, max(self.now, max(now for _, now in cuts)), payload if inspecting else None, cuts)
        bounds = np.searchsorted(rest, [end for end, _ in cuts]).tolist()
        lo = 0
        for (end, now), hi in zip(cuts, bounds):
            if hi > lo:
                part = rest[lo:hi]
                self._feed_rows(ev, part)
                if inspecting:
                    inspection.inspect(self.table, ev, payload, part, self.classify, self.refuse_min)
            self._advance(now)
            lo = hi
        self._flush()

    def _per_packet(self, n) -> bool:
        """Small batches, per-packet plugins and a table that may overflow inside the
        batch (the evictions then follow packet order) take the per-packet path for the
        whole batch."""
        return n < self.bulk_min or bool(self.packet_plugins) or bool(
            self.max_sessions and len(self.table) + n > self.max_sessions)

    def _feed_rows(self, ev, rows) -> None:
        """The reference path: one packet at a time, in frame order (`rows`: the indexes
        of the rows to apply, None: all). `_bulk` must give the same sessions."""
        sub = ev if rows is None else take_rows(ev, rows)
        idx = range(len(ev)) if rows is None else rows.tolist()
        cols = zip(idx, sub["key"].tolist(), sub["ts"].tolist(), sub["dir"].tolist(), sub["wirelen"].tolist(),
                   sub["caplen"].tolist(), sub["ncap"].tolist(), sub["payload"].tolist(),
                   sub["tcpflags"].tolist(), sub["seq"].tolist())
        get = self.table.get
        close_expiry = self.timeouts.close_expiry
        tcp_update = tcpmod.update
        new_tcp = tcpmod.TcpState
        hs_done = tcpmod.HS_DONE
        pp = self.packet_plugins
        for i, k, t, d, w, cl, nc, pl, fl, seq in cols:
            s = get(k)
            if s is None:
                s = self._open(ev, i, k, t, d, fl)
            elif t - s.last >= s.timeout or (fl & _SYN and not fl & _ACK and close_expiry
                                             and s.tcp is not None and s.tcp.closed):
                self._end(s, CLOSED if (s.tcp is not None and s.tcp.closed and close_expiry) else IDLE)
                s = self._open(ev, i, k, t, d, fl)
            if t > s.last:
                s.last = t
            c = s.c
            o = 6 * d
            c[o] += 1
            c[o + 1] += w
            c[o + 2] += nc
            c[o + 3] += cl
            if pl:
                c[o + 4] += 1
                c[o + 5] += pl
            if fl:
                st = s.tcp
                if st is None:
                    st = s.tcp = new_tcp()
                if not pl and not fl & 0x07 and st.hs == hs_done:
                    st.flags |= fl          # a pure ACK after the handshake changes nothing else
                elif tcp_update(st, d, d == s.client_dir, fl, seq, pl, t) and close_expiry:
                    s.timeout = self.timeouts.close_linger
                    self.wheel.file(s, s.last + s.timeout)
            if pp:
                for p in pp:
                    p.on_packet(s, ev[i])

    def _bulk(self, ev, horizon, payload=None, cuts=None):
        """The batch path: rows grouped by session key with numpy, so Python runs once
        per session per batch and once per control segment (SYN, FIN, RST, the
        handshake's last ACK), not once per packet. Counters are summed per group and
        direction; retransmissions are found by segmented running min/max of sequence
        numbers. A group is done here only when nothing in the batch can split its
        session (an idle gap, a SYN after the close), no interim report of it is due
        up to `horizon` (the batch's last advance), and no advance of the batch can end
        it before its last row there: its expiry slot is past the horizon, or, with
        the batch's `cuts`, `_room` shows it row by row (an advance may still refile
        it, or end a closing session after its last row: its counters are all in by
        then). The rest is left to `_feed_rows` (returned: their row indexes, in frame
        order). Both paths give the same sessions, as the differential test checks.
        With `payload`, the bulk groups' payload rows are inspected here too
        (`inspection.inspect_groups`), only for sessions not yet classified."""
        n = len(ev)
        keys = ev["key"]
        order = np.argsort(keys, kind="stable")        # stable: frame order inside a group
        sk = keys[order]
        brk = np.empty(n, bool)
        brk[0] = True
        np.not_equal(sk[1:], sk[:-1], out=brk[1:])
        starts = np.flatnonzero(brk)
        ng = len(starts)
        gs = np.cumsum(brk) - 1                         # group of each sorted row
        gid = np.empty(n, np.intp)
        gid[order] = gs
        first = order[starts]
        ts = ev["ts"]
        tss = ts[order]
        tmax = np.maximum.reduceat(tss, starts)
        gap = np.empty(n)
        gap[1:] = tss[1:] - tss[:-1]
        gap[starts] = -np.inf
        maxgap = np.maximum.reduceat(gap, starts)
        fl = ev["tcpflags"]
        fls = fl[order]
        flor = np.bitwise_or.reduceat(fls, starts)
        proto, sport, dport = ev["proto"], ev["sport"], ev["dport"]
        d = ev["dir"]
        pl = ev["payload"]
        lab = gid * 2 + d
        m2 = 2 * ng
        haspl = pl != 0
        sums = np.empty((m2, 6), np.int64)
        sums[:, 0] = np.bincount(lab, minlength=m2)
        sums[:, 1] = np.bincount(lab, ev["wirelen"], m2)
        sums[:, 2] = np.bincount(lab, ev["ncap"], m2)
        sums[:, 3] = np.bincount(lab, ev["caplen"], m2)
        sums[:, 4] = np.bincount(lab, haspl, m2)
        sums[:, 5] = np.bincount(lab, pl, m2)
        tcppl = haspl & (fl != 0)
        gtcppl = np.bincount(gid, tcppl, ng)
        if payload is not None:
            plrows = ev["pllen"] != 0
            gins = np.bincount(gid, plrows, ng)
        else:
            gins = np.zeros(ng, np.intp)
        # close and reopen: when the first FIN/RST comes, and whether a SYN (no ACK) follows it
        ctl = (flor & 0x07) != 0
        fr_pos = None
        if ctl.any():
            pos = np.arange(n)
            fr = (fls & 0x05) != 0
            syn = (fls & 0x12) == 0x02
            fr_ts = np.minimum.reduceat(np.where(fr, tss, np.inf), starts)
            fr_pos = np.minimum.reduceat(np.where(fr, pos, n), starts)
            syn_pos = np.maximum.reduceat(np.where(syn, pos, -1), starts)
            reopen = syn_pos > fr_pos
            anysyn = syn_pos >= 0
        else:
            reopen = anysyn = np.zeros(ng, bool)
            fr_ts = np.full(ng, np.inf)
        room = cuts is not None and horizon > float("-inf")
        # the running maximum of packet time per group: for `_room`, and for `_control` to
        # file a closing session from its last packet up to the close
        closers = self.timeouts.close_expiry and bool((flor & 0x05).any())
        runmax = running_max(tss, gs) if room or closers else None
        if room:
            slack, opened, closed, after, pre = self._room(cuts, self.now, order, starts, gs, runmax, gap, horizon,
                                                           fr_pos)
        else:
            slack = opened = closed = after = pre = None

        new_tcp = tcpmod.TcpState
        synack = tcpmod.HS_SYNACK
        inspector = inspection.Inspector         # a session still being classified has one
        linger = self.timeouts.close_linger
        close_expiry = self.timeouts.close_expiry
        retx = []
        look = []
        sess = [None] * ng
        before = [0.0] * ng
        # A group may stay here when no expiry of the batch can touch its session (its
        # expiry slot is past the horizon), or, failing that, when `_room` shows that
        # none can end it before its last row and no interim report is due. A closing
        # group's timeout becomes the linger at the close: it may end after its last
        # row (at an advance of this batch: its counters are all in by then). A SYN
        # after the close opens a new session: such a group is left to `_feed_rows`.
        found = list(map(self.table.get, sk[starts].tolist()))
        known = np.fromiter([x is not None for x in found], bool, ng)
        closes = (flor & 0x05) != 0
        reopens = closes & reopen
        closes &= close_expiry
        rest, fresh, fresh_to = self._new_groups(np.flatnonzero(~known), ts[first], proto[first], sport[first],
                                                 dport[first], closes, reopens, maxgap, fr_ts, horizon, slack,
                                                 opened, closed, after)
        rest += np.flatnonzero(known & reopens).tolist()
        kn = np.flatnonzero(known & ~reopens)
        kl = kn.tolist()
        slack, opened, closed, after, pre = (x[kn].tolist() if x is not None else repeat(None)
                                             for x in (slack, opened, closed, after, pre))
        for g, s, t, fo, mg, tm, m, tp, asyn, frt, gi, sl, so, sc, ma, pb in zip(
                kl, [found[g] for g in kl], ts[first[kn]].tolist(), flor[kn].tolist(), maxgap[kn].tolist(),
                tmax[kn].tolist(), sums.reshape(ng, 12)[kn].tolist(), gtcppl[kn].tolist(), anysyn[kn].tolist(),
                fr_ts[kn].tolist(), gins[kn].tolist(), slack, opened, closed, after, pre):
            closing = fo & 0x05 and close_expiry
            strict = closing and (mg >= linger or int(frt + linger) <= horizon)
            st = s.tcp
            tmo = s.timeout
            if (mg >= tmo or t - s.last >= tmo or s.slot is None
                    or (st is not None and (st.hs == synack or (asyn and st.close)))
                    or ((strict or s.slot <= horizon) and not (
                        sl is not None and s.next_report > horizon and s.last + tmo > pb
                        and _outlasts(tmo, linger, closing, sl, so, sc, ma)))):
                rest.append(g)
                continue
            if fo & 0x07:
                sess[g] = s
                before[g] = s.last
            if tm > s.last:
                s.last = tm
            c = s.c
            if m[0]:
                c[0] += m[0]
                c[1] += m[1]
                c[2] += m[2]
                c[3] += m[3]
                if m[4]:
                    c[4] += m[4]
                    c[5] += m[5]
            if m[6]:
                c[6] += m[6]
                c[7] += m[7]
                c[8] += m[8]
                c[9] += m[9]
                if m[10]:
                    c[10] += m[10]
                    c[11] += m[11]
            if fo:
                if st is None:
                    st = s.tcp = new_tcp()
                st.flags |= fo
                if tp:
                    retx.append((g, st))
            if gi:
                ins = s.insp
                if ins is None or ins.__class__ is inspector:
                    look.append((g, s))
        if fresh:
            self._open_groups(ev, first, fresh, fresh_to, sk[starts], tmax, sums, flor, gtcppl, gins,
                              sess, before, retx, look)
        left = None
        if rest:
            left = np.zeros(ng, bool)
            left[rest] = True
        if ctl.any():
            self._control(ev, order, gs, fls, tss, runmax, ctl if left is None else ctl & ~left, sess, before)
        if retx:
            self._retransmissions(ev, gid, tcppl, retx, ng)
        if look:
            inspection.inspect_groups(ev, payload, order, gs, plrows, look, ng, self.classify, self.refuse_min)
        if left is None:
            return _NONE
        return np.flatnonzero(left[gid])

    def _new_groups(self, nw, t0, proto, sport, dport, closing, reopens, maxgap, fr_ts, horizon, slack, opened,
                    closed, after):
        """`_bulk`'s decision for the groups `nw` whose session is new, over numpy columns
        (per group, as `_bulk` has them; `closing`: a FIN or RST with close expiry on).
        A new session stays on the bulk path unless the batch splits it (an idle gap, a
        SYN after the close) or it may be due (idle or report) by the horizon and `_room`
        (`slack`...: None without it) cannot show that no advance ends it before its last
        row (`_outlasts`). Returns (groups left to `_feed_rows`, groups to open, their
        idle timeouts)."""
        if not len(nw):
            return [], [], []
        to = self.timeouts.idle_many(proto[nw], sport[nw], dport[nw])
        active = self.timeouts.active if self.timeouts.active > 0 else np.inf
        linger = self.timeouts.close_linger
        t = t0[nw]
        cl = closing[nw]
        mg = maxgap[nw]
        with np.errstate(invalid="ignore"):
            strict = cl & ((mg >= linger) | (np.trunc(fr_ts[nw] + linger) <= horizon))
            when = t + np.minimum(to, active)
            due = strict | ((when < 9e15) & (np.trunc(when) <= horizon))
        if slack is not None:
            outlasts = slack[nw] + to > 0
            if opened is not None:
                lt = np.minimum(to, linger)
                outlasts = np.where(cl, (opened[nw] + to > 0) & (closed[nw] + lt > 0) & (after[nw] < lt), outlasts)
            due &= ~((t + active > horizon) & outlasts)
        left = reopens[nw] | (mg >= to) | due
        # the timeouts as the Timeouts' own float objects, not one new float per session
        by_value = self._timeouts_by_value
        return nw[left].tolist(), nw[~left].tolist(), [by_value.get(v, v) for v in to[~left].tolist()]

    def _open_groups(self, ev, first, fresh, tos, gkeys, tmax, sums, flor, gtcppl, gins, sess, before, retx,
                     look) -> None:
        """`_open` for the bulk groups `fresh` (new sessions whose whole group stays on the
        bulk path; `tos`: their idle timeouts), in group order, with their counters: the
        first rows' fields are read as numpy columns, and each session's counters come
        from its group's sums at once. Adds to `_bulk`'s lists like its loop does."""
        g = np.asarray(fresh, np.intp)
        rows = take_rows(ev, first[g])
        raw = rows.tobytes()
        n = len(fresh)
        d = rows["dir"]
        fl = rows["tcpflags"]
        cd = np.where((fl & (_SYN | _ACK)) == (_SYN | _ACK), 1 - d, d).tolist()   # a SYN-ACK first: mid-handshake
        sids = ((rows["fidx"] << np.uint64(ID_SHIFT)) | np.uint64(self.proc << DEPTH_BITS)
                | rows["depth"].astype(np.uint64)).tolist()
        ts = rows["ts"]
        active = self.timeouts.active
        nrs = (ts + active).tolist() if active > 0 else [float("inf")] * n
        whens = np.minimum(ts + np.asarray(tos), ts + active if active > 0 else np.inf)
        paths = self.paths
        table = self.table
        plugins = self.plugins
        new_tcp = tcpmod.TcpState
        made = []
        counts = sums.reshape(-1, 12)[g].tobytes()     # each session's 12 counters, as array("q") takes them
        for j, gg, k, sid, parent, depth, c, t, to, nr, path, tm, fo, tp, gi in zip(
                range(n), fresh, gkeys[g].tolist(), sids, rows["parent"].tolist(), rows["depth"].tolist(), cd,
                ts.tolist(), tos, nrs, rows["path"].tolist(), tmax[g].tolist(),
                flor[g].tolist(), gtcppl[g].tolist(), gins[g].tolist()):
            m = counts[j * _COUNTS_SIZE:(j + 1) * _COUNTS_SIZE]
            s = Session(k, sid, parent, depth, c, t, to, raw[j * _ROW_SIZE:(j + 1) * _ROW_SIZE],
                        paths.get(path, ""), None if plugins else array("q", m))
            table[k] = s
            s.next_report = nr
            if plugins:                # as `_open`: filed, then shown to plugins before its counters
                self.wheel.file(s, float(whens[j]))
                for p in plugins:
                    p.on_start(s)
                s.c[:] = array("q", m)  # in place: a plugin may hold on to s.c
            else:
                made.append(s)         # filed together below
            if tm > t:
                s.last = tm
            if fo:
                st = s.tcp = new_tcp()
                st.flags = fo
                if tp:
                    retx.append((gg, st))
                if fo & 0x07:
                    sess[gg] = s
                    before[gg] = t
            if gi:
                look.append((gg, s))
        if made:
            self.wheel.file_new(made, whens)
        self.stats["sessions"] += n

    @staticmethod
    def _room(cuts, clock, order, starts, gs, runmax, gap, horizon, fr_pos):
        """Per group, what lets a session stay on the bulk path although an expiry in
        the batch may look at it: packet by packet, an advance at `now` ends it when
        its last packet so far plus its timeout is <= now. For each row, the margin
        is (packet time's running maximum up to it) - (the last advance before the
        group's next row, or the horizon after its last row); the session cannot end
        while margin + timeout > 0. Returns lists per group: slack (least margin over
        all rows), opened (over the rows before the first FIN/RST), closed (over the
        rows from it to the last but one: the linger applies there; the last row may
        end), after (largest gap between rows after it: one as long as the linger
        splits the session), pre (the last advance before the group's first row: the
        session's old last time plus timeout must beat it). Conservative: the old last
        time is left out of the running maximum, and the linger is assumed from the
        first FIN/RST on. The advances' times are what `_advance` makes of the cuts'
        (`clock`: the engine's time before the batch): a running maximum, since a
        batch's cut times may lie behind the engine's clock (several capture
        processes, idle ticks)."""
        n = len(runmax)
        ends = np.fromiter((e for e, _ in cuts), np.int64, len(cuts))
        nows = np.maximum.accumulate(np.maximum(np.fromiter((t for _, t in cuts), np.float64, len(cuts)), clock))
        seg = np.searchsorted(ends, order, side="right")          # segment of each grouped row
        back = np.where(seg > 0, nows[np.maximum(seg - 1, 0)], -np.inf)   # last advance before it
        bound = np.empty(n)
        bound[:-1] = back[1:]
        last_rows = np.append(starts[1:] - 1, n - 1)
        bound[last_rows] = horizon
        margin = runmax - bound
        slack = np.minimum.reduceat(margin, starts)
        if fr_pos is None:
            opened = closed = after = None
        else:
            pos = np.arange(n)
            fin = fr_pos[gs]                                  # each row's group's first FIN/RST
            inf = np.inf
            opened = np.minimum.reduceat(np.where(pos < fin, margin, inf), starts)
            mid = (pos >= fin)
            mid[last_rows] = False
            closed = np.minimum.reduceat(np.where(mid, margin, inf), starts)
            after = np.maximum.reduceat(np.where(pos > fin, gap, -inf), starts)
        return slack, opened, closed, after, back[starts]

    def _control(self, ev, order, gs, fls, tss, runmax, groups, sess, before) -> None:
        """The TCP flags' part (handshake, close) of the bulk groups: `tcp.control_many`
        over the only segments that can change it, in frame order. A session that closes
        is filed at its close-linger deadline, counted from its last packet up to the
        closing one."""
        ds = ev["dir"][order]
        pos = np.flatnonzero(tcpmod.control_segments(gs, ds, fls, groups[gs]))
        if not len(pos):
            return
        pos = pos[np.argsort(order[pos])]                # frame order
        g_of = gs[pos]
        has = np.zeros(len(groups), bool)
        has[g_of] = True
        ug = np.flatnonzero(has).tolist()                # the groups with control segments, each once
        u_of = (np.cumsum(has) - 1)[g_of]
        ss = [sess[g] for g in ug]
        closed = tcpmod.control_many([s.tcp for s in ss], np.fromiter([s.client_dir for s in ss], np.int8, len(ss)),
                                     u_of, ds[pos], fls[pos], tss[pos])     # `_bulk` made every group's TcpState
        if closed and self.timeouts.close_expiry:
            linger = self.timeouts.close_linger
            file = self.wheel.file
            us = u_of[closed].tolist()
            due = (np.maximum(np.fromiter([before[ug[u]] for u in us], np.float64, len(us)),
                              runmax[pos[closed]]) + linger).tolist()
            for u, when in zip(us, due):
                s = ss[u]
                s.timeout = linger
                file(s, when)

    def _retransmissions(self, ev, gid, tcppl, retx, ng) -> None:
        """`tcp.data_many` for the data segments of the groups in `retx` ((group, TcpState)
        pairs)."""
        at = np.full(ng, -1, np.intp)
        at[[g for g, _ in retx]] = np.arange(len(retx))
        rows = np.flatnonzero(tcppl & (at[gid] >= 0))
        tcpmod.data_many([st for _, st in retx], at[gid[rows]], ev["dir"][rows], ev["seq"][rows], ev["payload"][rows])

    def _open(self, ev, i, k, t, d, fl, first=None) -> Session:
        """A new session from row i (`first`: that row's bytes, when the caller has them)."""
        if self.max_sessions and len(self.table) >= self.max_sessions:
            victim = self.wheel.oldest()
            if victim is not None:
                self.stats["evicted"] += 1
                self._end(victim, EVICTED)
        if first is None:
            first = ev[i].tobytes()
        fidx, proto, depth, sport, dport, pid, parent = _OPEN_FIELDS.unpack_from(first)
        # the first packet's sender is the client, unless it is a SYN-ACK (capture began mid-handshake)
        client_dir = d if not (fl & _SYN and fl & _ACK) else 1 - d
        timeout = self.timeouts.idle_for(proto, sport, dport)
        s = Session(k, session_id(fidx, depth, self.proc), parent, depth, client_dir, t, timeout,
                    first, self.paths.get(pid, ""))
        self.table[k] = s
        self.stats["sessions"] += 1
        active = self.timeouts.active
        s.next_report = t + active if active > 0 else float("inf")
        self.wheel.file(s, min(t + timeout, s.next_report))
        for p in self.plugins:
            p.on_start(s)
        return s

    # -- time ----------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Expire what is due at `now` and write interim reports of long sessions."""
        self._advance(now)
        self._flush()

    def _advance(self, now: float) -> None:
        if now > self.now:
            self.now = now
        now = self.now
        active = self.timeouts.active
        close_expiry = self.timeouts.close_expiry
        refile = []
        for s in self.wheel.due(now):
            if now - s.last >= s.timeout:         # `is_idle`, inline: it runs for every due session
                self._end(s, CLOSED if (s.tcp is not None and s.tcp.closed and close_expiry) else IDLE)
                continue
            if s.next_report <= now:
                self._report(s, False, INTERIM)      # now: the session goes on changing
                # the next report is the first multiple of `active` after now (no loop:
                # a long-idle clock jump must not cost one step per period)
                s.next_report += active * (int((now - s.next_report) // active) + 1)
                if s.next_report <= now:        # float precision at huge times
                    s.next_report = now + active
            refile.append(s)
        for s in refile:
            self.wheel.file(s, min(s.last + s.timeout, s.next_report))

    def finish(self, now: float) -> None:
        """End of stream: expire what is due, then end every open session as shutdown."""
        self._advance(now)
        for s in sorted(self.table.values(), key=lambda x: x.id):
            self._end(s, SHUTDOWN)
        self._flush()

    def finishing(self, now: float, size: int = 1024):
        """`finish` a slice at a time: yields the records so far (`take_records`) after
        the due expiries, then after each `size` sessions ended (0: all at once), so the
        worker sends each slice while it writes the next and the collector writes one
        while the next is made; all open sessions ending at once left it idle until
        the last. The same records in the same order as finish() then take_records()
        (a test checks)."""
        self._advance(now)
        yield self.take_records()
        left = sorted(self.table.values(), key=lambda x: x.id)
        size = size if size > 0 else max(1, len(left))
        for i in range(0, len(left), size):
            for s in left[i:i + size]:
                self._end(s, SHUTDOWN)
            yield self.take_records()

    # -- output --------------------------------------------------------------
    def take_records(self) -> list:
        self._flush()
        r, self.records = self.records, []
        return r

    def _end(self, s: Session, reason: str) -> None:
        """The session ends: out of the table, plugins told. Its last record is written
        later, with the others of the batch (`_flush`), in its place among the records:
        an ended session changes no more."""
        s.ended = True
        if self.table.get(s.key) is s:
            del self.table[s.key]
        for p in self.plugins:
            p.on_expire(s)
        self._ended.append((len(self.records), s, reason))
        self.records.append(None)

    def _flush(self) -> None:
        """Write the last records of the sessions ended since the last flush, together
        (`RecordWriter.many`), or one by one when they are few."""
        if self._ended:
            ended, self._ended = self._ended, []
            items = [(s, True, why) for _, s, why in ended]
            if len(items) < self.report_min:
                made = [self.writer.one(*it) for it in items]
            else:
                made = self.writer.many(items)
            recs = self.records
            for (j, _, _), rec in zip(ended, made):
                recs[j] = rec
            self.stats["records"] += len(made)
            self.stats["final_records"] += len(made)

    def _report(self, s: Session, final: bool, reason: str) -> None:
        """A record of the session as it is now, written at once."""
        self.records.append(self.writer.one(s, final, reason))
        self.stats["records"] += 1
        if final:
            self.stats["final_records"] += 1
