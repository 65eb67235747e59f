"""Elastic Common Schema lines (`ecs:PATH`, `ecs:-`): sessions Elasticsearch/Kibana and
other ECS consumers understand without a mapping of their own.

One JSON object per record, nested objects (not dotted keys), ECS 8.11:
`@timestamp` is the session's last packet time (for interim records too:
the time the counters reached), `event.*` says it is a network connection
that ended (`type` ["connection", "end"]) or is still going (["connection",
"info"]), `source`/`client` is our client with its client->server (ul)
counters, `destination`/`server` our server with the dl counters, and
`network.*` the transport, counters, Community ID and VLAN ids. The fields
that map to ECS as they are say so in their declaration (contracts/record.py,
`ecs`); the rest is worked out here. Every native
field, plugin fields included, is kept as is under `pipeline` so nothing is
lost in translation. Fields without a value are left out, as ECS expects.
ICMP sessions have no `network.community_id` (see contracts/community_id.py).
A time ECS cannot say (outside years 1-9999) is written as the nearest one it
can and counted, and so is an `event.duration` beyond a signed 64-bit count of
nanoseconds (limits.py); `pipeline.start` and `pipeline.end` keep the values.
Same file handling and rotation options as JSON lines (files.py).
"""
from contracts.community_id import community_id
from contracts.record import FIELDS, TIME, as_dict

from . import limits
from .limits import iso
from .files import LineOutput
from .jsonl import ENCODER

ECS_VERSION = "8.11.0"
NAMESPACE = "pipeline"
# IANA protocol keywords, lower case, as ECS asks for network.transport
TRANSPORT_NAMES = {1: "icmp", 2: "igmp", 4: "ipv4", 6: "tcp", 17: "udp", 33: "dccp", 41: "ipv6",
                   46: "rsvp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 89: "ospfigp",
                   103: "pim", 112: "vrrp", 115: "l2tp", 132: "sctp", 136: "udplite", 137: "mpls-in-ip"}
_CATEGORY = ["network"]
_FINAL, _INTERIM = ["connection", "end"], ["connection", "info"]


def _put(out: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        out = out.setdefault(k, {})
    out[path[-1]] = value


def _as_is(v):
    return v


def _time(v):
    return iso(round(v * 1e6))


# the record fields ECS takes as they are (their `ecs` names in contracts.record), in wire
# order: (index, ECS path, conversion); the careful way does the times apart
_DIRECT = [(i, tuple(f.ecs.split(".")), _time if f.kind is TIME else _as_is)
           for i, f in enumerate(FIELDS) if f.ecs]
_UNTIMED = [d for d in _DIRECT if d[2] is not _time]


def _community_id(d: dict):
    if d.get("community_id"):
        return d["community_id"]
    try:
        return community_id(d["transport"], d["client_ip"], d["server_ip"], d["client_port"], d["server_port"])
    except (ValueError, TypeError):
        return None


def as_ecs(r, careful=None) -> dict:
    """One wire record as an ECS event (nested dicts): the fields declared with an ECS
    name, then what ECS wants worked out (event type and duration, network names).
    OverflowError where a time or the duration is more than ECS can say, unless
    `careful` (the output counting it): then they are clamped."""
    d = as_dict(r)
    proto = d["transport"]
    out = {"@timestamp": None, "ecs": {"version": ECS_VERSION},
           "event": {"kind": "event", "category": _CATEGORY, "type": _FINAL if d["final"] else _INTERIM},
           "source": {}, "destination": {},
           "network": {"transport": TRANSPORT_NAMES.get(proto, str(proto)),
                       "type": f"ipv{d['ip_version']}", "iana_number": str(proto)}}
    for i, path, conv in _DIRECT if careful is None else _UNTIMED:
        v = r[i]
        if v is not None:
            _put(out, path, conv(v))
    event = out["event"]
    if careful is None:
        duration = (round(d["end"] * 1e6) - round(d["start"] * 1e6)) * 1000
        if not limits.I64_MIN <= duration <= limits.I64_MAX:        # an ECS long
            raise OverflowError("event.duration out of range")
    else:
        start, end, duration = _bounded_times(careful, d["start"], d["end"])
        event["start"], event["end"] = iso(start), iso(end)
    out["@timestamp"] = event["end"]
    event["duration"] = duration
    if d.get("end_reason") is not None:
        event["reason"] = d["end_reason"]
    out["client"], out["server"] = out["source"], out["destination"]
    network = out["network"]
    cid = _community_id(d)
    if cid:
        network["community_id"] = cid
    vlan = d.get("vlan")
    if vlan:
        network["vlan"] = {"id": str(vlan[0])}
        if len(vlan) > 1:
            network["inner"] = {"vlan": {"id": str(vlan[1])}}
    ips = [d["client_ip"], d["server_ip"]]
    out["related"] = {"ip": ips if ips[0] != ips[1] else ips[:1]}
    out[NAMESPACE] = d
    return out


def _bounded_times(output, start, end) -> tuple:
    """(start, end) in epoch microseconds within ECS's dates, and the duration in
    nanoseconds within a long; a record with any of them clamped is counted."""
    s, c1 = limits.bounded(start, 1000000, limits.DATE_MIN_US, limits.DATE_MAX_US)
    e, c2 = limits.bounded(end, 1000000, limits.DATE_MIN_US, limits.DATE_MAX_US)
    duration, c3 = limits.bounded(e - s, 1000, limits.I64_MIN, limits.I64_MAX)
    if c1 or c2 or c3:
        limits.clamped(output, "start, end or duration")
    return s, e, duration


class EcsLines(LineOutput):
    kind = "ecs"
    ISSUES = ("times_clamped",)

    def write(self, records) -> None:
        if not records:
            return
        try:
            lines = [ENCODER.encode(as_ecs(r)) + b"\n" for r in records]
        except Exception:  # noqa: BLE001 - a record ECS cannot say as it is: one at a time
            lines = limits.each(self, records, self._line, self._careful_line)
        self.file.write(lines)
        self.written += len(lines)

    @staticmethod
    def _line(r) -> bytes:
        return ENCODER.encode(as_ecs(r)) + b"\n"

    def _careful_line(self, r) -> bytes:
        return ENCODER.encode(as_ecs(r, careful=self)) + b"\n"


OUTPUT = EcsLines     # for the registry in collector/outputs/__init__.py
