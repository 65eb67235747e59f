"""Elastic Common Schema lines (`ecs:PATH`, `ecs:-`): sessions Elasticsearch/Kibana and
other ECS consumers understand without a mapping of their own.

One JSON object per record, nested objects (not dotted keys), ECS 9.4.0
(every field written outside `pipeline` is in ECS's field list with a value
of its type: tests/test_output_ecs.py holds it to Elastic's list):
`@timestamp` is the session's last packet time (for interim records too:
the time the counters reached), `event.*` says it is a network connection
that ended (`type` ["connection", "end"]) or is still going (["connection",
"info"]), plus "protocol" where the application was identified; `event.id`
is the record's event_id (the same for a record sent twice: use it as the
Elasticsearch `_id`). `source`/`client` is our client with its
client->server (ul) counters, `destination`/`server` our server with the dl
counters, MAC (`client_mac`/`server_mac`, written as ECS wants:
00-11-22-AA-BB-CC), GeoIP/AS data; `network.*` the transport, counters,
Community ID, direction, VLAN ids and application (`network.protocol`). The
fields that map to ECS as they are say so in their declaration
(contracts/record.py, `ecs`); the rest is worked out here, the classifiers'
metadata included (`_application`: TLS, DNS, HTTP into `tls.*`, `dns.*`,
`http.*`, `url.*`, `user_agent.*`; docs/outputs.md has the table). Every
record field, plugin fields included, is kept as is under `pipeline` so
nothing is lost in translation (JA4, which ECS has no field for, among
them). Fields without a value are left out, as ECS expects; so is a
classifier value of a type ECS's field cannot take.
A time ECS cannot say (outside years 1-9999) is written as the nearest one it
can and counted, and so is an `event.duration` beyond a signed 64-bit count of
nanoseconds (limits.py); `pipeline.start` and `pipeline.end` keep the values. A
counter beyond ECS's long (2^63 - 1) is written as that and counted
(`counters_clamped`); `pipeline.*` keeps it.
An address's zone (fe80::1%eth0) is not part of an ECS `ip`: left out there.
Same file handling and rotation options as JSON lines (files.py).
"""
import re
from operator import itemgetter
from urllib.parse import urlsplit

from contracts.community_id import community_id
from contracts.record import FIELDS, IP, TIME, as_dict

from ..checks import is_ip
from . import limits
from .limits import iso
from .files import LineOutput
from .jsonl import ENCODER

ECS_VERSION = "9.4.0"
NAMESPACE = "pipeline"
# IANA protocol keywords, lower case, as ECS asks for network.transport
TRANSPORT_NAMES = {1: "icmp", 2: "igmp", 4: "ipv4", 6: "tcp", 17: "udp", 33: "dccp", 41: "ipv6",
                   46: "rsvp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 89: "ospfigp",
                   103: "pim", 112: "vrrp", 115: "l2tp", 132: "sctp", 136: "udplite", 137: "mpls-in-ip"}
_CATEGORY = ["network"]
_FINAL, _INTERIM = ["connection", "end"], ["connection", "info"]
_FINAL_APP, _INTERIM_APP = _FINAL + ["protocol"], _INTERIM + ["protocol"]
# our tls.version names (workers/classify/tls.py) -> ECS's tls.version_protocol and tls.version
TLS_VERSIONS = {"1.0": ("tls", "1.0"), "1.1": ("tls", "1.1"), "1.2": ("tls", "1.2"), "1.3": ("tls", "1.3"),
                "ssl3": ("ssl", "3.0"), "ssl2": ("ssl", "2.0"), "dtls1.0": ("dtls", "1.0"),
                "dtls1.2": ("dtls", "1.2"), "dtls1.3": ("dtls", "1.3")}
DNS_PREFIXES = ("dns", "mdns", "llmnr")       # DNS messages, wherever they were read
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5,}")


def _put(out: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        out = out.setdefault(k, {})
    out[path[-1]] = value


def _as_is(v):
    return v


def _time(v):
    return iso(round(v * 1e6))


def _ip(v):
    """An address as an ECS ip: without a zone (fe80::1%eth0), which ECS's ip has no room for."""
    return v if "%" not in v else v.partition("%")[0]


# the record fields ECS takes as they are (their `ecs` names in contracts.record), in record
# order: (index, ECS path, conversion); the careful way does the times apart
_DIRECT = [(i, tuple(f.ecs.split(".")), _time if f.kind is TIME else _ip if f.kind is IP else _as_is)
           for i, f in enumerate(FIELDS) if f.ecs]
_UNTIMED = [d for d in _DIRECT if d[2] is not _time]
# the 64-bit counters ECS takes as longs (signed): one beyond 2^63 - 1 is written as that, and counted
_LONGS = [(i, path) for i, path, _ in _DIRECT
          if FIELDS[i].kind.name == "int" and FIELDS[i].kind.hi > limits.I64_MAX]
_longs = itemgetter(*(i for i, _ in _LONGS))


def _community_id(d: dict):
    if d.get("community_id"):
        return d["community_id"]
    try:
        return community_id(d["transport"], d["client_ip"], d["server_ip"], d["client_port"], d["server_port"],
                            icmp_type=d.get("icmp_type"), icmp_code=d.get("icmp_code"))
    except (ValueError, TypeError):
        return None


def ecs_mac(v):
    """A MAC address as ECS writes it (RFC 7042: upper-case hex, hyphens), or None if `v` is
    not one (six or more octets, colon or hyphen separated)."""
    if isinstance(v, str) and _MAC.fullmatch(v):
        return v.replace(":", "-").upper()
    return None


def _text(d: dict, key: str):
    v = d.get(key)
    return v if isinstance(v, str) and v else None


def _host_port(host: str) -> tuple:
    """An HTTP Host header as (domain, port or None): 'example.com:8080', '[2001:db8::1]:443'."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    return name, (int(port) if port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536
                  else None)


def _tls(out: dict, d: dict):
    """tls.*; the server name it gives, or None."""
    tls = {}
    sni = _text(d, "tls.sni") or _text(d, "quic.sni")
    if sni:
        tls["client"] = {"server_name": sni}
    ja3 = _text(d, "tls.ja3")
    if ja3:
        tls.setdefault("client", {})["ja3"] = ja3
    version = TLS_VERSIONS.get(_text(d, "tls.version") or _text(d, "quic.tls_version"))
    if version:
        tls["version_protocol"], tls["version"] = version
    alpn = _text(d, "tls.alpn_selected")
    if alpn:
        tls["next_protocol"] = alpn.lower()
    if tls:
        out["tls"] = tls
    return sni


def _dns(out: dict, d: dict):
    """dns.* from the first DNS-like classifier with a query; the name asked, or None."""
    for prefix in DNS_PREFIXES:
        query = _text(d, prefix + ".query")
        if query is None:
            continue
        dns = out["dns"] = {"question": {"name": query}, "type": "query"}
        qtype = _text(d, prefix + ".qtype")
        if qtype:
            dns["question"]["type"] = qtype
        rcode = _text(d, prefix + ".rcode")
        if rcode:
            dns["response_code"] = rcode
            dns["type"] = "answer"
        answers = d.get(prefix + ".answers")
        data = [a for a in answers if isinstance(a, str) and a] if isinstance(answers, list) else []
        if data:
            dns["answers"] = [{"data": a} for a in data]
            ips = [a for a in data if is_ip(a) and "%" not in a]
            if ips:
                dns["resolved_ip"] = ips
        return query
    return None


def _http(out: dict, d: dict) -> None:
    http = {}
    method = _text(d, "http.method")
    if method:
        http["request"] = {"method": method}
    status = d.get("http.status")
    if type(status) is int and 100 <= status <= 999:
        http["response"] = {"status_code": status}
    if http:
        out["http"] = http
    agent = _text(d, "http.user_agent")
    if agent:
        out["user_agent"] = {"original": agent}


def _url(out: dict, d: dict):
    """url.* from HTTP's Host and request target; the host's domain, or None."""
    url = {}
    host = _text(d, "http.host")
    if host:
        domain, port = _host_port(host)
        if domain:
            url["domain"] = domain
        if port is not None:
            url["port"] = port
    uri = _text(d, "http.uri")
    if uri:
        url["original"] = uri
        try:
            parts = urlsplit(uri)
        except ValueError:
            parts = None
        if parts is not None and parts.path.startswith("/"):
            url["path"] = parts.path
            if parts.query:
                url["query"] = parts.query
    if url:
        out["url"] = url
    return url.get("domain")


def _application(out: dict, d: dict) -> bool:
    """The classifiers' metadata (docs/classification.md) into ECS's own fields; True when
    the application was identified (not guessed from a port): then `network.protocol`."""
    app = _text(d, "app")
    identified = app is not None and not d.get("app_guess")
    if identified:
        out["network"]["protocol"] = app.lower()
    sni = _tls(out, d)
    query = _dns(out, d)
    _http(out, d)
    web = _url(out, d)
    domain = sni or web        # the server's name (not a DNS query's: that is another host)
    if domain:
        out["destination"]["domain"] = domain
    hosts = [h for h in (sni, query, web) if h]
    if hosts:
        out["related"]["hosts"] = list(dict.fromkeys(hosts))
    return identified


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
        if max(_longs(r)) > limits.I64_MAX:
            raise OverflowError("a counter beyond an ECS long")
    else:
        big = [path for i, path in _LONGS if isinstance(r[i], int) and r[i] > limits.I64_MAX]
        for path in big:
            _put(out, path, limits.I64_MAX)
        if big:
            limits.count(careful, "counters_clamped", 1, "a record's counter is beyond a signed 64-bit ECS long: "
                                                         "written as 2^63 - 1 (pipeline.* keeps it)")
        start, end, duration = _bounded_times(careful, d["start"], d["end"])
        event["start"], event["end"] = iso(start), iso(end)
    out["@timestamp"] = event["end"]
    event["duration"] = duration
    if d.get("end_reason") is not None:
        event["reason"] = d["end_reason"]
    source, destination = out["client"], out["server"] = out["source"], out["destination"]
    mac = ecs_mac(d.get("client_mac"))
    if mac:
        source["mac"] = mac
    mac = ecs_mac(d.get("server_mac"))
    if mac:
        destination["mac"] = mac
    network = out["network"]
    cid = _community_id(d)
    if cid:
        network["community_id"] = cid
    vlan = d.get("vlan")
    if vlan:
        network["vlan"] = {"id": str(vlan[0])}
        if len(vlan) > 1:
            network["inner"] = {"vlan": {"id": str(vlan[1])}}
    ips = [source["ip"], destination["ip"]]
    out["related"] = {"ip": ips if ips[0] != ips[1] else ips[:1]}
    if _application(out, d):
        event["type"] = _FINAL_APP if d["final"] else _INTERIM_APP
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
    ISSUES = ("times_clamped", "counters_clamped")

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
