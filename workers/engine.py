"""The worker's sans-IO core: keyed event batches and time in, session records out.

`feed(events)` and `feed_batch(events, cuts)` update sessions from the
front-end's precomputed columns (no parsing), `advance(now)` expires idle and
closed sessions and writes interim reports, `finish(now)` (or `finishing`, a
slice at a time) ends the stream: idle sessions as "idle", the rest as
"shutdown". `take_records()` hands the records over (lists in
`contracts.record.WIRE_NAMES` order). Time is packet time as given by the caller:
offline runs are deterministic and the same whatever the number of workers.

A batch's rows reach their sessions one of two ways that give the same records
(tests/test_engine_bulk.py):
- per packet (`_feed_rows`), the reference: one row at a time, in frame order;
- the batch path (`_bulk`): rows grouped by session (`groups.Groups`), each
  session's rows applied at once, for the sessions `plan.stays` admits; the
  others go per packet, between the batch's advances.
This module holds the API, the session table's use (`table.SessionTable`), the
expiry sweep and both paths' session updates; the rules they apply live beside
it: TCP (`tcp`; over the batch path's groups, `grouped_tcp`), which sessions may
take the batch path (`plan`), payload classification (`inspection`), the record
(`records`), timeouts and the idle rule (`contracts.timeouts`). docs/design.md
("Engine layout") maps them.
"""
from array import array
from itertools import repeat

import numpy as np

from contracts.record import CLOSED, EVICTED, IDLE, INTERIM, SHUTDOWN
from contracts.timeouts import Timeouts
from contracts.wire import DEPTH_BITS, EVENT, ID_SHIFT, NO_ADVANCE, row_struct, session_id, take_rows

from . import classify, grouped_tcp, inspection, orientation, plan
from . import tcp as tcpmod
from .groups import Groups, observe_groups, observed_rows
from .records import RecordWriter
from .session import FIRST, N_COUNTERS, Session, first_row, first_rows
from .table import CLASSES, HIGH, RECOVERY, SessionTable

_SYN, _ACK, _CONTROL = tcpmod.SYN, tcpmod.ACK, tcpmod.CONTROL
_REFUSE_MIN = 8          # first payloads in a call worth a vectorised refusal test
_NONE = np.zeros(0, np.intp)
_ROW_SIZE = EVENT.itemsize
_FIRST_SIZE = FIRST.itemsize
_COUNTS = N_COUNTERS      # a session's counters (Session.c, array "q")
_OPEN_FIELDS = row_struct("fidx", "proto", "depth", "sport", "dport", "path", "parent")   # from the first row's bytes
_OBSERVED = row_struct("nvlan", "vlan0", "vlan1", "parent")        # what `Session.observe` is shown of a row
_GROUPED_MIN = 64                      # smaller batches: the per-packet path is cheaper
_OPEN_SLICE = 4096                     # new sessions made at once by the batch path (`_open_groups`)
_SLICE_ROWS = 8192                    # rows of a batch fed at once (`feed_batch`)
_REPORTS_MIN = 32                      # fewer records at once: `RecordWriter.one` one by one is cheaper
_EXPIRED = None                        # `_end`'s reason for an idle session: "idle" or "closed"
EVICTED_BY = tuple("evicted_" + name for name in CLASSES)      # the stats' evictions per class


class Engine:
    """One worker's sessions (`max_sessions`: the table's capacity, 0: none; `vlan_key`: the
    front-end keys sessions by their VLAN ids, so a session's rows all carry the same ones;
    `marks`: the table's emergency mode's high and recovery marks, shares of the capacity)."""

    def __init__(self, worker: int = 0, timeouts: Timeouts = Timeouts(), sensor: str = "",
                 proc: int = 0, max_sessions: int = 0, plugins=(), classify: int = classify.BUDGET,
                 vlan_key: bool = True, marks=(HIGH, RECOVERY)):
        self.worker = worker
        self.watch_vlans = not vlan_key   # --no-vlan-key: a session's rows may carry several VLAN stacks
        self.timeouts = timeouts
        self._timeouts_by_value = {v: v for v in (timeouts.tcp, timeouts.udp, timeouts.icmp, timeouts.other,
                                                  timeouts.dns, timeouts.unanswered, timeouts.emergency)}
        self.sensor = sensor
        self.proc = proc
        self.bulk_min = _GROUPED_MIN      # batches this small take the per-packet path
        self.report_min = _REPORTS_MIN    # fewer records at once: written one by one
        self.refuse_min = _REFUSE_MIN     # fewer first payloads at once: each one's Inspector decides
        self.classify = classify          # payload packets inspected per direction, 0: no classification
        self.plugins = list(plugins)
        self.packet_plugins = [p for p in self.plugins if getattr(p, "per_packet", False)]
        self.table = SessionTable(max_sessions, timeouts, *marks)
        self.wheel = self.table.wheel
        self.paths = {}
        self.records = []
        self.reports_due = set()          # sessions whose interim report waits for their next packet
        self._ended = []                  # (place in records, session, reason): written by `_flush`
        self.now = float("-inf")   # packet time may be anything, even negative
        self.stats = {"events": 0, "sessions": 0, "records": 0, "final_records": 0, "evicted": 0,
                      **dict.fromkeys(EVICTED_BY, 0), "emergency_episodes": 0}
        self.writer = RecordWriter(sensor, worker, classify)
        self.slice_rows = _SLICE_ROWS      # a longer batch goes in slices (`feed_batch`); 0: whole
        self.slice_always = False          # slices whatever the table's room (tests: the records are the same)
        self.sink = None                  # called with the records so far between a batch's slices

    # -- input ---------------------------------------------------------------
    def add_paths(self, paths: dict) -> None:
        for k, v in paths.items():
            self.paths[int(k)] = v

    def feed(self, ev, payload=None) -> None:
        """Update sessions from one batch of EVENT rows (in frame order); `payload` holds
        the first payload bytes of young sessions' rows (EVENT ploff/pllen). The table is
        trimmed to its capacity at the end (`_settle`)."""
        self._feed(ev, payload)
        self._settle()

    def _feed(self, ev, payload=None) -> None:
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
        (`_bulk`) and only the others packet by packet, between the advances.

        A batch of more than `slice_rows` rows goes in slices (`slices`), each settled
        (table trimmed to its capacity) at its end and its records handed to `sink`
        when one is set: a flood's batch opens a session per row, and those sessions,
        the batch path's columns and the evicted sessions' records, all at once, were
        most of a worker's memory under a flood (docs/operations.md). Only a batch that
        could fill the table (each of its rows opening a session, as a flood's do) goes
        in slices: each slice costs the batch path's fixed work again and cuts long
        sessions' groups, a quarter of a worker's throughput on ordinary traffic."""
        n = len(ev)
        crowded = self.slice_always or (self.table.capacity and len(self.table) + n > self.table.capacity)
        if self.slice_rows and n > self.slice_rows and crowded and cuts and cuts[-1][0] == n:
            for lo, hi, part in slices(cuts, self.slice_rows):
                self._feed_batch(ev[lo:hi], part, payload)
                if self.sink is not None and hi < len(ev):
                    self.sink(self.take_records())
            return
        self._feed_batch(ev, cuts, payload)

    def _feed_batch(self, ev, cuts, payload) -> None:
        n = len(ev)
        if not cuts or cuts[-1][0] != n or self._per_packet(n):
            start = 0
            for end, now in cuts:
                self._feed(ev[start:end], payload)
                if now != NO_ADVANCE:
                    self._advance(now)
                start = end
            if start < n:
                self._feed(ev[start:], payload)
            self._settle()
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
            if now != NO_ADVANCE:
                self._advance(now)
            lo = hi
        self._settle()
        self._flush()

    def _per_packet(self, n) -> bool:
        """Small batches and per-packet plugins take the per-packet path for the whole batch."""
        return n < self.bulk_min or bool(self.packet_plugins)

    # -- per packet: the reference -------------------------------------------
    def _feed_rows(self, ev, rows) -> None:
        """The reference path: one packet at a time, in frame order (`rows`: the indexes
        of the rows to apply, None: all). `_bulk` must give the same sessions."""
        get = self.table.get
        expired = self.table.expired
        close_expiry = self.timeouts.close_expiry
        tcp_data, tcp_control, note, entry_bit, t_entry = (tcpmod.data, tcpmod.control, tcpmod.note,
                                                           tcpmod.ENTRY_BIT, tcpmod.T_ENTRY)
        new_tcp = tcpmod.TcpState
        hs_done = tcpmod.HS_DONE
        pp = self.packet_plugins
        due = self.reports_due
        for i, k, t, d, w, cl, nc, pl, fl, seq, ipl, lx, ob in _row_columns(ev, rows, self.watch_vlans):
            s = get(k)
            if s is None:
                s = self._open(ev, i, k, t, d, fl)
            elif t - s.last >= s.timeout and expired(s, t):
                self._end(s, _EXPIRED)
                s = self._open(ev, i, k, t, d, fl)
            elif fl & _SYN and not fl & _ACK and close_expiry and tcpmod.reuses(s.tcp, s.first, seq):
                self._end(s, CLOSED)            # a new connection on the tuple (Zeek's connection reuse)
                s = self._open(ev, i, k, t, d, fl)
            elif due and s in due:          # the session goes on: its interim report, as it was when due
                due.discard(s)
                self._report(s, False, INTERIM)
            if ob:                          # an outer session or VLAN stack the session may not have seen
                self._observe_row(ev, i, s)
            if t > s.last:
                s.last = t
            c = s.c
            o = 6 * d
            c[o] += 1
            c[o + 1] += w
            c[o + 2] += nc
            c[o + 3] += cl
            c[12 + d] += ipl             # IP_BYTE
            if pl:
                c[o + 4] += 1
                c[o + 5] += pl
            if fl:
                st = s.tcp
                if st is None:
                    st = s.tcp = new_tcp()
                if lx and not st.hist & entry_bit[lx]:
                    note(st, lx)            # the first of its kind in its direction: a history letter
                if not pl and not fl & _CONTROL and st.hs == hs_done:
                    st.flags |= fl          # a pure ACK after the handshake changes nothing else
                else:
                    if pl and tcp_data(st, d, seq, pl):
                        note(st, t_entry[d])    # a retransmission: the 1st, 10th, ... of its direction
                    if tcp_control(st, d, d == s.client_dir, fl, t, close_expiry and not c[6 - o]) and close_expiry:
                        s.timeout = self.table.limits.close_linger
                        self.wheel.file(s, s.last + s.timeout)
                        self.table.closed(s)
            if pp:
                for p in pp:
                    p.on_packet(s, ev[i])

    def _observe_row(self, ev, i, s) -> None:
        """`Session.observe` of row i's outer session and (watched) VLAN stack."""
        nv, v0, v1, par = _OBSERVED.unpack_from(ev.data, i * _ROW_SIZE)
        s.observe(par, (v0, v1)[:nv] if self.watch_vlans else None)

    def _open(self, ev, i, k, t, d, fl, first=None) -> Session:
        """A new session from row i (`first`: that row's bytes, when the caller has them),
        unanswered as it opens: its timeout starts at most at the unanswered timeout."""
        if first is None:
            first = ev[i].tobytes()
        fidx, proto, depth, sport, dport, pid, parent = _OPEN_FIELDS.unpack_from(first)
        client_dir = orientation.client_dir(d, proto, fl, sport, dport)
        timeout = self.table.limits.idle_for(proto, sport, dport)
        s = Session(k, session_id(fidx, depth, self.proc), parent, depth, client_dir, t, timeout,
                    first_row(first), self.paths.get(pid, ""))
        self.table[k] = s
        self.table.admit(s, t)
        self.stats["sessions"] += 1
        active = self.timeouts.active
        s.next_report = t + active if active > 0 else float("inf")
        self.wheel.file(s, min(t + timeout, s.next_report))
        for p in self.plugins:
            p.on_start(s)
        return s

    # -- the batch path --------------------------------------------------------
    def _bulk(self, ev, horizon, payload=None, cuts=None):
        """The batch path: the rows grouped by session key with numpy (`Groups`), so Python
        runs once per session per batch and once per control segment (SYN, FIN, RST, the
        handshake's last ACK), not once per packet: counters summed per group and
        direction, TCP control segments in rounds (`tcp.control_many`), retransmissions
        by running min/max of sequence numbers (`tcp.data_many`), payload rows to the
        classifier in rounds (`inspection.inspect_groups`). Which groups may take it is
        `plan.stays`' decision (`horizon`: the batch's last advance; `cuts`: its
        segments, for `plan.room`). The rest is left to `_feed_rows` (returned: their
        row indexes, in frame order). Both paths give the same sessions, as
        tests/test_engine_bulk.py checks."""
        g = Groups(ev, payload is not None)
        found = list(map(self.table.get, g.keys.tolist()))
        limits = self.table.limits          # the sessions' timeouts are lower bounds of these and no more
        c = plan.Candidates(g, found, ev, limits, self.reports_due)
        r = plan.room(g, cuts, self.now) if cuts is not None and horizon > float("-inf") else None
        bulk = plan.stays(g, c, r, horizon, limits)
        touched = grouped_tcp.Touched(g.n)
        kinds = g.kinds(ev)
        self._update_known(g, found, np.flatnonzero(bulk & c.known), touched, kinds)
        fresh = np.flatnonzero(bulk & ~c.known)
        if len(fresh):
            self._open_groups(ev, g, fresh, c, touched, kinds)
        seen = g.observed(ev, self.watch_vlans)
        if seen is not None:
            observe_groups(ev, g, found, bulk, seen, self.table.get, self.watch_vlans)
        if g.has_control:
            grouped_tcp.control(g, ((g.flags_or & tcpmod.CONTROL) != 0) & bulk, touched, self.table,
                                self.timeouts.close_expiry)
        scaled = grouped_tcp.retransmissions(ev, g, touched.data) if touched.data else _NONE
        if touched.history or len(scaled):
            grouped_tcp.history(ev, g, touched, scaled)
        if touched.inspect:
            inspection.inspect_groups(ev, payload, g.order, g.gs, g.payload_rows, touched.inspect, g.n,
                                      self.classify, self.refuse_min)
        if bulk.all():
            return _NONE
        return np.flatnonzero(~bulk[g.gid])

    def _update_known(self, g, found, kn, touched, kinds) -> None:
        """The batch's rows of the sessions already open in groups `kn`, applied at once:
        last time, counters, TCP flags; what is left for the later steps in `touched`
        (`kinds`: per group, the history kinds its rows bring, None: no TCP rows)."""
        new_tcp = tcpmod.TcpState
        inspector = inspection.Inspector         # a session still being classified has one
        for j, s, tm, m, fo, tp, gi, kd in zip(kn.tolist(), [found[j] for j in kn.tolist()], g.last_ts[kn].tolist(),
                                              g.counts[kn].tolist(), g.flags_or[kn].tolist(),
                                              g.tcp_data_n[kn].tolist(), g.payload_n[kn].tolist(),
                                              repeat(0) if kinds is None else kinds[kn].tolist()):
            if fo & _CONTROL:
                touched.control[j] = s
                touched.before[j] = s.last
            if tm > s.last:
                s.last = tm
            c = s.c
            if m[0]:
                c[0] += m[0]
                c[1] += m[1]
                c[2] += m[2]
                c[3] += m[3]
                c[12] += m[12]               # IP_BYTE
                if m[4]:
                    c[4] += m[4]
                    c[5] += m[5]
            if m[6]:
                c[6] += m[6]
                c[7] += m[7]
                c[8] += m[8]
                c[9] += m[9]
                c[13] += m[13]
                if m[10]:
                    c[10] += m[10]
                    c[11] += m[11]
            if fo:
                st = s.tcp
                if st is None:
                    st = s.tcp = new_tcp()
                st.flags |= fo
                if tp:
                    touched.data.append((j, s))
                if kd & st.hist != kd:      # a kind of letter the session has not seen
                    touched.history.append(j)
                    touched.history_states.append(st)
            if gi:
                ins = s.insp
                if ins is None or ins.__class__ is inspector:
                    touched.inspect.append((j, s))

    def _open_groups(self, ev, g, fresh, c, touched, kinds) -> None:
        """`_open` for the new sessions of groups `fresh` (whose rows all take the batch
        path; `c`: the plan's Candidates), in group order, with their counters: the first
        rows' fields are read as numpy columns, and each session's counters come from its
        group's sums at once; what is left for the later steps goes in `touched`. A slice
        of `_OPEN_SLICE` sessions at a time: the columns as Python objects cost ~600 bytes
        a session while they live, and a flood's batch opens tens of thousands."""
        for lo in range(0, len(fresh), _OPEN_SLICE):
            self._open_slice(ev, g, fresh[lo:lo + _OPEN_SLICE], c, touched, kinds)

    def _open_slice(self, ev, g, fresh, c, touched, kinds) -> None:
        rows = take_rows(ev, g.first[fresh])
        raw = first_rows(rows)
        n = len(fresh)
        d = rows["dir"]
        fl = rows["tcpflags"]
        cd = orientation.client_dirs(d, rows["proto"], fl, rows["sport"], rows["dport"]).tolist()
        sids = ((rows["fidx"] << np.uint64(ID_SHIFT)) | np.uint64(self.proc << DEPTH_BITS)
                | rows["depth"].astype(np.uint64)).tolist()
        ts = rows["ts"]
        tos = c.timeout[fresh]
        nrs = c.next_report[fresh]
        whens = np.minimum(ts + tos, nrs)
        by_value = self._timeouts_by_value     # the Timeouts' own float objects, not one new float per session
        paths = self.paths
        table = self.table
        plugins = self.plugins
        new_tcp = tcpmod.TcpState
        made = []
        # each session's counters: a slice of one array is an array of its exact size (one made
        # from bytes keeps room to grow: 24 bytes more a session)
        counts = array("q", g.counts[fresh].tobytes())
        for j, gg, k, sid, parent, depth, cdir, t, to, nr, path, tm, fo, tp, gi, kd in zip(
                range(n), fresh.tolist(), g.keys[fresh].tolist(), sids, rows["parent"].tolist(),
                rows["depth"].tolist(), cd, ts.tolist(), tos.tolist(), nrs.tolist(), rows["path"].tolist(),
                g.last_ts[fresh].tolist(), g.flags_or[fresh].tolist(), g.tcp_data_n[fresh].tolist(),
                g.payload_n[fresh].tolist(), repeat(0) if kinds is None else kinds[fresh].tolist()):
            m = counts[j * _COUNTS:(j + 1) * _COUNTS]
            s = Session(k, sid, parent, depth, cdir, t, by_value.get(to, to),
                        raw[j * _FIRST_SIZE:(j + 1) * _FIRST_SIZE], paths.get(path, ""), None if plugins else m)
            table[k] = s
            s.next_report = nr
            if plugins:                # as `_open`: filed, then shown to plugins before its counters
                self.wheel.file(s, float(whens[j]))
                table.admit(s, t)
                for p in plugins:
                    p.on_start(s)
                s.c[:] = m              # in place: a plugin may hold on to s.c
            else:
                made.append(s)         # filed together below
            if tm > t:
                s.last = tm
            if fo:
                st = s.tcp = new_tcp()
                st.flags = fo
                if tp:
                    touched.data.append((gg, s))
                if kd:
                    touched.history.append(gg)
                    touched.history_states.append(st)
                if fo & _CONTROL:
                    touched.control[gg] = s
                    touched.before[gg] = t
            if gi:
                touched.inspect.append((gg, s))
        if made:
            self.wheel.file_new(made, whens)
        table.admit_many(made, ts)
        self.stats["sessions"] += n

    # -- time ----------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Expire what is due at `now` and write interim reports of long sessions."""
        self._advance(now)
        self._settle()
        self._flush()

    def _advance(self, now: float) -> None:
        """The sweep (Suricata's flow-manager concern): the sessions the wheel has due by
        `now` end when idle (closed ones as "closed"), or write their interim report;
        the others are filed again at their next deadline."""
        if now > self.now:
            self.now = now
        now = self.now
        active = self.timeouts.active
        expired = self.table.expired
        refile = []
        for s in self.wheel.due(now):
            # `is_idle` inline (it runs for every due session) by the lower bound, then exactly
            if now - s.last >= s.timeout and expired(s, now):
                self._end(s, _EXPIRED)
                continue
            if s.next_report <= now:
                # the interim report waits for the session's next packet (`_feed_rows` writes it with
                # the counters as they are now): a session that ends first has its final record
                # only, which would have said the same
                self.reports_due.add(s)
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
        self._settle()
        left, order = self._by_id()
        for j in order.tolist():
            self._end(left[j], SHUTDOWN)
        self._flush()

    def finishing(self, now: float, size: int = 1024):
        """`finish` a slice at a time: yields the records so far (`take_records`) after
        the due expiries, then after each `size` sessions ended (0: all at once), so the
        worker sends each slice while it writes the next and the collector writes one
        while the next is made; all open sessions ending at once left it idle until
        the last. The same records in the same order as finish() then take_records()
        (a test checks)."""
        self._advance(now)
        self._settle()
        yield self.take_records()
        left, order = self._by_id()
        size = size if size > 0 else max(1, len(left))
        for i in range(0, len(left), size):
            for j in order[i:i + size].tolist():
                self._end(left[j], SHUTDOWN)
            yield self.take_records()

    def _by_id(self):
        """The open sessions and the order of their ids (the order the end of the stream
        ends them in). The ids go to numpy one at a time: a sort by a key function held
        an int object per session at once, the run's peak memory with a full table."""
        left = list(self.table.values())
        return left, np.argsort(np.fromiter((s.id for s in left), np.uint64, len(left)))

    # -- a batch's end -------------------------------------------------------
    def _settle(self) -> None:
        """The table back to its capacity (evicted sessions end as "evicted", in the
        table's eviction order), emergency mode in or out (`SessionTable.settle`)."""
        self.table.settle(self._evict)
        self.stats["emergency_episodes"] = self.table.episodes

    def _evict(self, s: Session, cls: int) -> None:
        self.stats["evicted"] += 1
        self.stats[EVICTED_BY[cls]] += 1
        self._end(s, EVICTED)

    @property
    def emergency(self) -> bool:
        """Whether the table is in emergency mode (`table.SessionTable.settle`)."""
        return self.table.emergency

    # -- output --------------------------------------------------------------
    def take_records(self) -> list:
        self._flush()
        r, self.records = self.records, []
        return r

    def _end(self, s: Session, reason: str) -> None:
        """The session ends: out of the table, plugins told. Its last record is written
        later, with the others of the batch (`_flush`), in its place among the records:
        an ended session changes no more. `_EXPIRED`: it ended idle, "closed" when it
        closed (FIN/RST) and closing counts."""
        if reason is _EXPIRED:
            reason = CLOSED if (s.tcp is not None and s.tcp.closed and self.timeouts.close_expiry) else IDLE
        s.ended = True
        self.reports_due.discard(s)                 # its final record says it all
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


def _row_columns(ev, rows, watch: bool):
    """The per-packet path's columns of the rows `rows` of `ev` (None: all), as Python
    values a row at a time: index, key, time, direction, lengths, payload, flags,
    sequence number, IP length, history entry, whether `Session.observe` is shown it."""
    sub = ev if rows is None else take_rows(ev, rows)
    idx = range(len(ev)) if rows is None else rows.tolist()
    obs = observed_rows(sub, watch)
    fls, pls, dirs = sub["tcpflags"], sub["payload"], sub["dir"]
    return zip(idx, sub["key"].tolist(), sub["ts"].tolist(), dirs.tolist(), sub["wirelen"].tolist(),
               sub["caplen"].tolist(), sub["ncap"].tolist(), pls.tolist(), fls.tolist(), sub["seq"].tolist(),
               sub["iplen"].tolist(), tcpmod.entries(fls, pls, dirs).tolist(),
               repeat(False) if obs is None else obs.tolist())


def slices(cuts, size: int):
    """A batch's cuts ([[end row, now], ...], the last at its end) as slices of at most
    `size` rows: (start, end, cuts relative to start). A slice ends at a cut where it
    can; a segment longer than `size` is cut where no advance was (time NO_ADVANCE:
    `feed_batch` makes none there; to the batch plan an advance at the engine's clock,
    which only keeps more rows on the per-packet path)."""
    lo, part = 0, []
    for end, now in cuts:
        if part and end - lo > size:        # this segment would overflow: the slice ends at the last cut
            hi = lo + part[-1][0]
            yield lo, hi, part
            lo, part = hi, []
        while end - lo > size:              # a segment longer than a slice on its own
            yield lo, lo + size, [[size, NO_ADVANCE]]
            lo += size
        part.append([end - lo, now])
    if part:
        yield lo, lo + part[-1][0], part
