"""Per-interval aggregates, so dashboards need no second pass over the sessions.

Each session record adds what is new since that session's previous record
(interim records are cumulative, so the collector keeps the last counters per
(sensor, session_id) and forgets them at the final record). The traffic lands
in the interval of the record's `end` (last packet time). An interval is
written once the records' time (each sensor's own: sensors' clocks and replays
differ) has moved `hold` seconds past its end, or when the collector closes. A record that still arrives for an interval already
written (an idle session expires long after its last packet) opens a new
aggregate for the same interval: aggregates are additive, sum them by
(`sensor`, `interval_start`). Nothing is dropped. The state is in memory only:
a standalone collector killed (SIGKILL, OOM) loses the aggregates it still
held and counts in full again the sessions it had interim records of (it says
so when it starts again); its session records are exact (collector.journal).

An aggregate record (`"type": "aggregate"`):
    interval_start, interval_end   epoch seconds
    sensor                         the sensor, or "*" when records of several were merged
    sessions                       sessions seen in the interval (any record)
    sessions_ended                 final records in the interval
    packets, bytes                 new traffic in the interval
    by_transport                   {"6": {"sessions", "packets", "bytes"}, ...}
    by_app                         the same per `app` ("unknown" when unclassified)
    top_talkers                    the TOP hosts by bytes sent + received: [{"ip", "bytes", "packets"}]
"""
from pipeline.record import INDEX

TOP = 10
_I = {n: INDEX[n] for n in ("sensor", "session_id", "final", "end", "transport", "app", "client_ip", "server_ip",
                            "ul_packet_count", "dl_packet_count", "ul_byte_count", "dl_byte_count")}


class Aggregator:
    def __init__(self, interval: float = 60.0, hold: float = 600.0):
        self.interval = interval
        self.hold = hold
        self.last = {}          # (sensor, session_id) -> (ul_pkts, dl_pkts, ul_bytes, dl_bytes)
        self.open = {}          # (sensor, interval start) -> bucket
        self.clocks = {}        # sensor -> latest record end: each sensor's traffic time is its own
        self.emitted = 0

    def add(self, records) -> list:
        """Account a batch of wire records; returns the aggregate records now due."""
        i = _I
        iv = self.interval
        for r in records:
            sensor = r[i["sensor"]]
            k = (sensor, r[i["session_id"]])
            cur = (r[i["ul_packet_count"]], r[i["dl_packet_count"]], r[i["ul_byte_count"]], r[i["dl_byte_count"]])
            if r[i["final"]]:
                prev = self.last.pop(k, None)
            else:
                prev = self.last.get(k)
                self.last[k] = cur
            if prev is None:
                prev = (0, 0, 0, 0)
            up, dp, ub, db = (cur[j] - prev[j] for j in range(4))
            end = r[i["end"]]
            if end > self.clocks.get(sensor, float("-inf")):
                self.clocks[sensor] = end
            start = end - end % iv
            b = self.open.get((sensor, start))
            if b is None:
                b = self.open[(sensor, start)] = _Bucket()
            b.add(r, i, up + dp, ub + db, (up, ub), (dp, db))
        return self.due()

    def due(self, before: float = None) -> list:
        """The aggregates of the intervals that ended `hold` seconds before their sensor's
        latest record (or before `before`), sensor by sensor, oldest first."""
        out = []
        clocks, hold, iv = self.clocks, self.hold, self.interval
        for (sensor, start) in sorted(k for k in self.open
                                      if k[1] + iv <= (clocks[k[0]] - hold if before is None else before)):
            out.append(self.open.pop((sensor, start)).record(sensor, start, self.interval))
        self.emitted += len(out)
        return out

    def flush(self) -> list:
        return self.due(float("inf"))


class _Bucket:
    __slots__ = ("sessions", "ended", "packets", "bytes", "transport", "app", "hosts")

    def __init__(self):
        self.sessions = self.ended = self.packets = self.bytes = 0
        self.transport = {}
        self.app = {}
        self.hosts = {}

    def add(self, r, i, packets, nbytes, client, server) -> None:
        self.sessions += 1
        self.ended += 1 if r[i["final"]] else 0
        self.packets += packets
        self.bytes += nbytes
        for table, name in ((self.transport, str(r[i["transport"]])), (self.app, r[i["app"]] or "unknown")):
            t = table.get(name)
            if t is None:
                t = table[name] = [0, 0, 0]
            t[0] += 1
            t[1] += packets
            t[2] += nbytes
        # a host is credited with what it sent and what it received
        for ip, sent, got in ((r[i["client_ip"]], client, server), (r[i["server_ip"]], server, client)):
            h = self.hosts.get(ip)
            if h is None:
                h = self.hosts[ip] = [0, 0]
            h[0] += sent[1] + got[1]
            h[1] += sent[0] + got[0]

    def record(self, sensor, start, interval) -> dict:
        top = sorted(self.hosts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP]
        return {
            "type": "aggregate", "interval_start": start, "interval_end": start + interval, "sensor": sensor,
            "sessions": self.sessions, "sessions_ended": self.ended, "packets": self.packets, "bytes": self.bytes,
            "by_transport": {k: dict(zip(("sessions", "packets", "bytes"), v)) for k, v in sorted(self.transport.items())},
            "by_app": {k: dict(zip(("sessions", "packets", "bytes"), v)) for k, v in sorted(self.app.items())},
            "top_talkers": [{"ip": ip, "bytes": b, "packets": p} for ip, (b, p) in top],
        }
