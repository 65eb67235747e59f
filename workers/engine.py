"""The worker's sans-IO core: keyed event batches and time in, session records out.

`feed(events)` updates sessions from the precomputed columns (no parsing),
`advance(now)` expires idle and closed sessions and writes interim reports,
`finish(now)` ends the stream (idle ones as "idle", the rest as "shutdown").
Records accumulate in `records` (lists in `pipeline.record.FIELDS` order) until
the shell takes them. Time is packet time as given by the caller: offline
runs are deterministic and the same whatever the number of workers.
"""
import numpy as np

from pipeline.community_id import community_id
from pipeline.record import INDEX, TYPE_SESSION
from pipeline.wire import session_id

from . import classify
from . import tcp as tcpmod
from .expiry import Wheel
from .session import Session
from .timeouts import Timeouts

IDLE, CLOSED, SHUTDOWN, EVICTED, ACTIVE = "idle", "closed", "shutdown", "evicted", "active"
_SYN, _ACK = tcpmod.SYN, tcpmod.ACK
_Inspector = classify.Inspector
_I_APP, _I_FAMILY, _I_PATH = INDEX["app"], INDEX["family"], INDEX["proto_path"]
_I_CCLASS, _I_CTYPE, _I_CFLAGS = INDEX["content_class"], INDEX["content_type"], INDEX["content_flags"]
_EXT_FIELDS = tuple((INDEX[n], n) for n in ("content_class", "content_type", "content_flags", "app", "family"))


class Engine:
    def __init__(self, worker: int = 0, timeouts: Timeouts = Timeouts(), sensor: str = "",
                 proc: int = 0, max_sessions: int = 0, plugins=(), classify: int = classify.BUDGET):
        self.worker = worker
        self.timeouts = timeouts
        self.sensor = sensor
        self.proc = proc
        self.max_sessions = max_sessions
        self.classify = classify          # payload packets inspected per direction, 0: no classification
        self.plugins = list(plugins)
        self.packet_plugins = [p for p in self.plugins if getattr(p, "per_packet", False)]
        self.table = {}
        self.wheel = Wheel()
        self.paths = {}
        self.records = []
        self.now = float("-inf")   # packet time may be anything, even negative
        self.stats = {"events": 0, "sessions": 0, "records": 0, "final_records": 0, "evicted": 0}

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
        cols = zip(ev["key"].tolist(), ev["ts"].tolist(), ev["dir"].tolist(), ev["wirelen"].tolist(),
                   ev["caplen"].tolist(), ev["ncap"].tolist(), ev["payload"].tolist(),
                   ev["tcpflags"].tolist(), ev["seq"].tolist())
        get = self.table.get
        close_expiry = self.timeouts.close_expiry
        tcp_update = tcpmod.update
        new_tcp = tcpmod.TcpState
        hs_done = tcpmod.HS_DONE
        pp = self.packet_plugins
        for i, (k, t, d, w, cl, nc, pl, fl, seq) in enumerate(cols):
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
        if payload is not None and len(payload) and self.classify:
            self._inspect(ev, payload)

    def _inspect(self, ev, payload) -> None:
        """Classification: the rows that carry payload bytes (young sessions only), after
        the batch's counters, so the hot loop above pays nothing for it. A session whose
        inspector is done (or that has none to have) is skipped at once."""
        idx = np.flatnonzero(ev["pllen"])
        raw = payload if isinstance(payload, bytes) else bytes(payload)
        get = self.table.get
        budget = self.classify
        sub = ev[idx]
        for k, d, o, n, proto, sp, dp in zip(sub["key"].tolist(), sub["dir"].tolist(), sub["ploff"].tolist(),
                                             sub["pllen"].tolist(), sub["proto"].tolist(), sub["sport"].tolist(),
                                             sub["dport"].tolist()):
            s = get(k)
            if s is None:
                continue
            ins = s.insp
            if ins is not None and ins.__class__ is not _Inspector:
                continue                            # done (its result) or nothing to inspect (False)
            if ins is None:
                if proto != 6 and proto != 17:
                    s.insp = False
                    continue
                # this row's sender is the client when its direction is the client's
                cport, sport = (sp, dp) if d == s.client_dir else (dp, sp)
                ins = s.insp = classify.Inspector(proto, cport, sport, budget)
            fc = d == s.client_dir
            want = ins.wants(fc)
            if want and ins.feed(raw[o:o + min(want, n)], fc):
                s.insp = ins.result()               # the result replaces the inspector

    def _open(self, ev, i, k, t, d, fl) -> Session:
        if self.max_sessions and len(self.table) >= self.max_sessions:
            victim = self.wheel.oldest()
            if victim is not None:
                self.stats["evicted"] += 1
                self._end(victim, EVICTED)
        row = ev[i]
        (_, fidx, _, _, _, _, _, _, proto, depth, _, _, sport, dport, _, _, _,
         _, _, _, _, _, _, pid, _, parent, _, _) = row.item()
        # the first packet's sender is the client, unless it is a SYN-ACK (capture began mid-handshake)
        client_dir = d if not (fl & _SYN and fl & _ACK) else 1 - d
        timeout = self.timeouts.idle_for(proto, sport, dport)
        s = Session(k, session_id(fidx, depth, self.proc), parent, depth, client_dir, t, timeout,
                    row.tobytes(), self.paths.get(pid, ""))
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
        if now > self.now:
            self.now = now
        now = self.now
        active = self.timeouts.active
        close_expiry = self.timeouts.close_expiry
        refile = []
        for s in self.wheel.due(now):
            deadline = s.last + s.timeout
            if deadline <= now:
                self._end(s, CLOSED if (s.tcp is not None and s.tcp.closed and close_expiry) else IDLE)
                continue
            if s.next_report <= now:
                self._report(s, False, ACTIVE)
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
        self.advance(now)
        for s in sorted(self.table.values(), key=lambda x: x.id):
            self._end(s, SHUTDOWN)

    # -- output --------------------------------------------------------------
    def take_records(self) -> list:
        r, self.records = self.records, []
        return r

    def _end(self, s: Session, reason: str) -> None:
        s.ended = True
        if self.table.get(s.key) is s:
            del self.table[s.key]
        for p in self.plugins:
            p.on_expire(s)
        self._report(s, True, reason)

    def _classified(self, s, rec, proto, cport, sport) -> None:
        """app, family, content and the protocol path's application part, from the
        session's inspection (or its port, marked as a guess). Returns the metadata,
        which go with the plugin fields (dotted names: tls.sni, http.host, ...)."""
        ins = s.insp
        if ins.__class__ is dict:
            cls = ins
        elif ins:
            cls = ins.result()
        else:
            if proto in classify.NOPORT:
                cls = classify.classify_noport(proto)
            else:
                cls = classify.guess_by_port(proto, cport, sport)
        if cls["app"] is None:
            return None
        rec[_I_APP] = cls["app"]
        rec[_I_FAMILY] = cls["family"]
        rec[_I_CCLASS] = cls["content_class"]
        rec[_I_CTYPE] = cls["content_type"]
        rec[_I_CFLAGS] = cls["content_flags"]
        suffix = cls["path_suffix"]
        if suffix and not rec[_I_PATH].endswith("." + suffix):     # icmp is already the path's end
            rec[_I_PATH] = rec[_I_PATH] + "." + suffix
        if cls["guess"]:
            return dict(cls["meta"], app_guess=True)
        return cls["meta"] or None

    def _report(self, s: Session, final: bool, reason: str) -> None:
        s.reports += 1
        c = s.c
        u = 6 * s.client_dir
        dn = 6 - u
        ipver, proto, lip, lport, hip, hport, vlans, path = s.meta
        if s.client_dir == 0:
            cip, cport, sip, sport = lip, lport, hip, hport
        else:
            cip, cport, sip, sport = hip, hport, lip, lport
        st = s.tcp
        rec = [TYPE_SESSION, final, reason, s.id, s.parent_id or None, self.sensor, self.worker, s.reports,
               round(s.start, 6), round(s.last, 6), round(s.last - s.start, 6), ipver, proto,
               cip, cport, sip, sport, list(vlans) if vlans else None, path,
               c[0] + c[6], c[u], c[dn],
               c[1] + c[7], c[u + 1], c[dn + 1],
               c[2] + c[8], c[u + 2], c[dn + 2],
               c[3] + c[9], c[u + 3], c[dn + 3],
               c[4] + c[10], c[u + 4], c[dn + 4],
               c[5] + c[11], c[u + 5], c[dn + 5],
               round(st.rtt, 6) if st is not None and st.rtt is not None else None,
               st.retrans if st is not None else 0,
               st.flags if st is not None else 0,
               None, None, None, None, None, community_id(proto, cip, sip, cport, sport)]
        meta = self._classified(s, rec, proto, cport, sport) if self.classify else None
        ext = s.ext
        if ext:
            for j, name in _EXT_FIELDS:
                if name in ext:
                    rec[j] = ext[name]              # a plugin's values win
            if ext.get("extra"):
                meta = dict(meta, **ext["extra"]) if meta else ext["extra"]
        if meta:
            rec.append(meta)
        self.records.append(rec)
        self.stats["records"] += 1
        if final:
            self.stats["final_records"] += 1
