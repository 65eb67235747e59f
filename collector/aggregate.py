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
import heapq
from collections import deque
from functools import reduce
from itertools import compress, repeat
from operator import add, eq, iadd, itemgetter, mod, sub

from contracts.record import INDEX, NAMES

TOP = 10
_I = {n: INDEX[n] for n in ("sensor", "session_id", "final", "end", "transport", "app", "client_ip", "server_ip",
                            "ul_packet_count", "dl_packet_count", "ul_byte_count", "dl_byte_count")}
_WIDTH = len(NAMES)
_FIELDS = itemgetter(slice(0, _WIDTH))
_KEY = itemgetter(_I["sensor"], _I["session_id"])
_COUNTERS = itemgetter(_I["ul_packet_count"], _I["dl_packet_count"], _I["ul_byte_count"], _I["dl_byte_count"])
_BYTES = itemgetter(0)
_FEW = 4                # up to so many intervals in a batch are picked out with masks, more one record at a time


def _columns(records) -> dict:
    """The columns the aggregates need (name -> list), taken as slices of all the values
    one after another (one pass in C, not one per column)."""
    if min(map(len, records)) < _WIDTH:     # a short record: fails as a column of it would
        return {n: list(map(itemgetter(i), records)) for n, i in _I.items()}
    flat = reduce(iadd, map(_FIELDS, records), [])
    return {n: flat[i::_WIDTH] for n, i in _I.items()}


class Aggregator:
    """Works a batch at a time: the batch is cut into columns, split by interval, and summed
    with builtins; the previous counters of sessions that sent interim records and the sums
    per host are the only steps taken per record in Python."""

    def __init__(self, interval: float = 60.0, hold: float = 600.0):
        self.interval = interval
        self.hold = hold
        self.last = {}          # (sensor, session_id) -> (ul_pkts, dl_pkts, ul_bytes, dl_bytes)
        self.open = {}          # (sensor, interval start) -> bucket
        self.clocks = {}        # sensor -> latest record end: each sensor's traffic time is its own
        self.emitted = 0

    def add(self, records) -> list:
        """Account a batch of wire records; returns the aggregate records now due."""
        if not records:
            return self.due()
        col = _columns(records)
        sensors, ends = col["sensor"], col["end"]
        finals = list(map(bool, col["final"]))
        columns = [finals, col["transport"], col["app"], col["client_ip"], col["server_ip"],
                   list(map(add, col["ul_packet_count"], col["dl_packet_count"])),
                   list(map(add, col["ul_byte_count"], col["dl_byte_count"]))]
        if self.last or not all(finals):
            self._deltas(records, finals, columns[5], columns[6])
        one_sensor = sensors.count(sensors[0]) == len(sensors)
        self._clocks(sensors, ends, one_sensor)
        starts = list(map(sub, ends, map(mod, ends, repeat(self.interval))))     # end - end % interval
        keys = starts if one_sensor else list(zip(sensors, starts))
        groups = dict.fromkeys(keys)    # the intervals, each named as its first record does
        if len(groups) == 1:
            picks = [(keys[0], columns)]
        elif len(groups) <= _FEW:
            picks = []
            for k in groups:
                sel = list(map(eq, keys, repeat(k)))
                picks.append((k, [list(compress(col, sel)) for col in columns]))
        else:
            for i, k in enumerate(keys):
                idx = groups[k]
                if idx is None:
                    groups[k] = [i]
                else:
                    idx.append(i)
            picks = [(k, [[col[i] for i in idx] for col in columns]) for k, idx in groups.items()]
        for k, cols in picks:
            self._bucket((sensors[0], k) if one_sensor else k).add(*cols)
        return self.due()

    def _deltas(self, records, finals, packets, nbytes) -> None:
        """What is new since each session's previous record: subtract its counters, if it had one,
        and keep those of interim records (forgotten at the final)."""
        last = self.last
        keys = list(map(_KEY, records))
        if len(set(keys)) == len(keys):         # one record per session: the order does not matter
            prevs = list(map(last.get, keys)) if last else [None] * len(keys)
            interim = [not f for f in finals]
            deque(map(last.pop, compress(keys, finals), repeat(None)), 0)
            last.update(zip(compress(keys, interim), map(_COUNTERS, compress(records, interim))))
        else:
            prevs = []
            for k, r, final in zip(keys, records, finals):
                if final:
                    prevs.append(last.pop(k, None))
                else:
                    prevs.append(last.get(k))
                    last[k] = _COUNTERS(r)
        for i in compress(range(len(prevs)), prevs):     # those that had a previous record
            prev, cur = prevs[i], _COUNTERS(records[i])
            packets[i] = (cur[0] - prev[0]) + (cur[1] - prev[1])
            nbytes[i] = (cur[2] - prev[2]) + (cur[3] - prev[3])

    def _clocks(self, sensors, ends, one_sensor: bool) -> None:
        clocks = self.clocks
        if one_sensor:
            latest = max(ends)
            if latest == latest:                # not NaN (a NaN end never moves the clock)
                sensor = sensors[0]
                if latest > clocks.get(sensor, float("-inf")):
                    clocks[sensor] = latest
                return
        for sensor, end in zip(sensors, ends):
            if end > clocks.get(sensor, float("-inf")):
                clocks[sensor] = end

    def _bucket(self, key):
        b = self.open.get(key)
        if b is None:
            b = self.open[key] = _Bucket()
        return b

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

    def add(self, finals, transports, apps, clients, servers, packets, nbytes) -> None:
        """Records of this interval, as columns (a session's new packets and bytes)."""
        n, p, b = len(finals), sum(packets), sum(nbytes)
        self.sessions += n
        self.ended += sum(finals)
        self.packets += p
        self.bytes += b
        if set(map(type, transports)) == {int}:      # the usual: name the few distinct numbers only
            _tally(self.transport, transports, packets, nbytes, n, p, b, str)
        else:
            _tally(self.transport, list(map(str, transports)), packets, nbytes, n, p, b)
        _tally(self.app, [a or "unknown" for a in apps], packets, nbytes, n, p, b)
        # a host is credited with what it sent and what it received: both ends get the session's traffic
        hosts = self.hosts
        get = hosts.get
        for ips in (clients, servers):
            for ip, b, p in zip(ips, nbytes, packets):
                h = get(ip)
                if h is None:
                    hosts[ip] = [0 + b, 0 + p]
                else:
                    h[0] += b
                    h[1] += p

    def record(self, sensor, start, interval) -> dict:
        hosts = self.hosts
        if len(hosts) > TOP:            # only hosts with at least the TOP-th largest byte count can be in the top
            cut = heapq.nlargest(TOP, map(_BYTES, hosts.values()))[-1]
            hosts = {ip: h for ip, h in hosts.items() if h[0] >= cut}
        top = sorted(hosts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP]
        return {
            "type": "aggregate", "interval_start": start, "interval_end": start + interval, "sensor": sensor,
            "sessions": self.sessions, "sessions_ended": self.ended, "packets": self.packets, "bytes": self.bytes,
            "by_transport": {k: dict(zip(("sessions", "packets", "bytes"), v)) for k, v in sorted(self.transport.items())},
            "by_app": {k: dict(zip(("sessions", "packets", "bytes"), v)) for k, v in sorted(self.app.items())},
            "top_talkers": [{"ip": ip, "bytes": b, "packets": p} for ip, (b, p) in top],
        }


def _tally(table, names, packets, nbytes, n, p, b, name_of=None) -> None:
    """Sessions, packets and bytes per name (a transport, an application), given the totals
    n, p, b of the columns: few names, many records. name_of: what names the table by."""
    distinct = set(names)
    if len(distinct) > 8 or not set(map(type, distinct)) <= {str, int}:    # many, or odd ones: one by one
        if name_of is not None:
            names = list(map(name_of, names))
        for name, p, b in zip(names, packets, nbytes):
            row = table.get(name)
            if row is None:
                row = table[name] = [0, 0, 0]
            row[0] += 1
            row[1] += p
            row[2] += b
        return
    rest = len(distinct)
    for name in distinct:
        rest -= 1
        if rest:
            sel = list(map(eq, names, repeat(name)))
            sums = sel.count(True), sum(compress(packets, sel)), sum(compress(nbytes, sel))
            n, p, b = n - sums[0], p - sums[1], b - sums[2]
        else:                           # the last name has what the others left
            sums = n, p, b
        if name_of is not None:
            name = name_of(name)
        row = table.get(name)
        if row is None:
            row = table[name] = [0, 0, 0]
        row[0] += sums[0]
        row[1] += sums[1]
        row[2] += sums[2]
