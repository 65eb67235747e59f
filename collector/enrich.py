"""The collector's own record fields, appended to each record as it comes in.

Why in the collector: every record passes through one (a sensor's own, or the
standalone `pipeline collector` that remote sensors feed), so what is
configured there (`--local-nets`, `--geoip-db`, `--asn-db`) serves every
sensor alike, and the workers' hot path pays nothing for it. The fields are
declared in contracts/record.py with origin "collector", after every worker
field: `Enricher.apply` puts their values after a record's worker fields,
before its dict of plugin fields, so outputs and aggregates see full records.

* `event_id`: 32 hex digits, BLAKE2b-128 of (sensor, session_id, start,
  report_number), the same whenever the same record is sent again (a
  re-sent batch, a collector restart), so Elasticsearch (`_id`) or a Kafka
  consumer can drop the copy. `start` is in it because session ids count
  frames and start again with each run of a sensor: a later run's session
  with the same id has another start, hence another event id.
* `local_orig`, `local_resp`, `direction` from `--local-nets`: as Elastic's
  network_direction processor (and Beats' add_network_direction) decide it,
  client to server: both inside `internal`, client only `outbound`, server
  only `inbound`, neither `external`. Without --local-nets all three are
  null (unknown, as Zeek leaves local_orig unset without Site::local_nets).
* `client_*`/`server_*` country, city, location, AS number and organization
  from the MaxMind databases (collector/geoip.py).

Cost: each address is looked up once while it stays among the last CACHE
distinct ones (functools.lru_cache: a C dict), so a batch costs a cached
call per address, not a database or network-list walk; without any option
the fields are one constant tuple of nulls plus the event id.
"""
import bisect
import hashlib
import ipaddress
import struct
from functools import lru_cache
from itertools import starmap
from operator import itemgetter

from contracts.record import COLLECTOR_NAMES, INDEX, N_WIRE, NAMES

from .geoip import GEO_FIELDS, NOTHING, Lookup

CACHE = 1 << 16                 # distinct addresses whose answers are kept
_PERSON = b"pipeline-evid-v1"   # BLAKE2b personalization: these ids and no other hash
_TAIL = struct.Struct("!QdI")   # session_id, start, report_number
_SENSORS_KEPT = 1024
_KEY = itemgetter(INDEX["sensor"], INDEX["session_id"], INDEX["start"], INDEX["report_number"])
_CIP, _SIP = INDEX["client_ip"], INDEX["server_ip"]
_N = len(NAMES)
# (client local, server local) -> ECS network.direction
DIRECTION = {(True, True): "internal", (True, False): "outbound", (False, True): "inbound",
             (False, False): "external"}
# the same as DIRECTION[client][server], None (unknown) where either is
_DIRECTION = {c: {s: DIRECTION.get((c, s)) for s in (True, False, None)} for c in (True, False, None)}
assert COLLECTOR_NAMES == ("event_id", "local_orig", "local_resp", "direction",
                           *(f"client_{g}" for g in GEO_FIELDS), *(f"server_{g}" for g in GEO_FIELDS)), \
    "Enricher.apply writes the collector fields in this order"

# Elastic's named networks (network_direction's internal_networks) that are lists of CIDRs
_MCAST6 = lambda scope: tuple(f"ff{x:x}{scope}::/16" for x in range(16))   # noqa: E731  ffX1::, ffX2::
NAMED_NETS = {
    "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"),
    "loopback": ("127.0.0.0/8", "::1/128"),
    "link_local_unicast": ("169.254.0.0/16", "fe80::/10"),
    "link_local_multicast": ("224.0.0.0/24",) + _MCAST6(2),
    "interface_local_multicast": _MCAST6(1),
    "multicast": ("224.0.0.0/4", "ff00::/8"),
    "unspecified": ("0.0.0.0/32", "::/128"),
}


class EnrichError(ValueError):
    """A bad --local-nets, --geoip-db or --asn-db, in one line."""


def parse_local_nets(text: str) -> tuple:
    """'10.0.0.0/8,fd00::/8,private' -> the networks (ipaddress objects); EnrichError if one
    is neither a CIDR (a bare address is a /32 or /128) nor one of NAMED_NETS."""
    nets = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        for cidr in NAMED_NETS.get(item.lower(), (item,)):
            try:
                nets.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise EnrichError(f"--local-nets: {item!r} is not a network (CIDR such as 10.0.0.0/8 or "
                                  f"2001:db8::/32, or one of {', '.join(NAMED_NETS)})") from None
    if not nets:
        raise EnrichError("--local-nets: no network given")
    return tuple(nets)


def options(args) -> dict:
    """The Enricher's keyword arguments from parsed flags (`pipeline start` or `collector`):
    the networks of every --local-nets together."""
    nets = tuple(n for group in (getattr(args, "local_nets", None) or ()) for n in group)
    return {"local_nets": nets, "geoip_db": getattr(args, "geoip_db", None), "asn_db": getattr(args, "asn_db", None)}


class LocalNets:
    """Whether an address is in any of the networks: each version's networks as merged,
    sorted integer ranges, searched by bisection (thousands of networks cost a few steps)."""

    def __init__(self, nets):
        self.ranges = {}
        for version in (4, 6):
            spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version)
            merged = []
            for lo, hi in spans:
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            self.ranges[version] = ([lo for lo, _ in merged], [hi for _, hi in merged])

    def __contains__(self, ip: str) -> bool:
        """Raises ValueError for what is not an address."""
        a = ipaddress.ip_address(ip.partition("%")[0])
        if a.version == 6 and a.ipv4_mapped is not None:     # ::ffff:a.b.c.d is IPv4, as Elastic reads it
            a = a.ipv4_mapped
        los, his = self.ranges[a.version]
        n = int(a)
        i = bisect.bisect_right(los, n) - 1
        return i >= 0 and n <= his[i]


class EventIds:
    """event_id of records: BLAKE2b-128 with the sensor's part hashed once per sensor."""

    def __init__(self):
        self.bases = {}

    def _base(self, sensor):
        if len(self.bases) >= _SENSORS_KEPT:
            self.bases.clear()
        b = hashlib.blake2b(digest_size=16, person=_PERSON)
        raw = str(sensor).encode("utf-8", "surrogatepass")
        b.update(len(raw).to_bytes(4, "big") + raw)
        self.bases[sensor] = b
        return b

    def one(self, sensor, session_id, start, report_number) -> str:
        h = (self.bases.get(sensor) or self._base(sensor)).copy()
        try:
            h.update(_TAIL.pack(session_id, start, report_number))
        except (struct.error, OverflowError, TypeError):    # beyond what records from workers hold
            h.update(repr((session_id, start, report_number)).encode())
        return h.hexdigest()

    def __call__(self, records) -> list:
        """The ids of a batch: one loop, the common case (a sensor already seen, values
        a struct packs) inline; anything else through `one`."""
        bases, pack, out = self.bases, _TAIL.pack, []
        add = out.append
        try:
            for sensor, sid, start, rn in map(_KEY, records):
                h = bases[sensor].copy()
                h.update(pack(sid, start, rn))
                add(h.hexdigest())
        except (KeyError, struct.error, OverflowError, TypeError):
            out.extend(starmap(self.one, map(_KEY, records[len(out):])))
        return out


class Enricher:
    """Appends the collector's fields to records (lists of the worker fields, then maybe
    the plugin dict), in place."""

    def __init__(self, local_nets=(), geoip_db: str = None, asn_db: str = None, cache: int = CACHE):
        self.ids = EventIds()
        self.local = LocalNets(local_nets) if local_nets else None
        try:
            self.geo = Lookup(geoip_db, asn_db) if (geoip_db or asn_db) else None
        except ValueError as e:
            raise EnrichError(str(e)) from None
        self.nulls = (None,) * (len(COLLECTOR_NAMES) - 1)
        self.side = lru_cache(cache)(self._side) if (self.local or self.geo) else None

    def _side(self, ip) -> tuple:
        """(local, (country, city, geo, asn, as_org)) of one address."""
        local = None
        if self.local is not None:
            try:
                local = ip in self.local
            except (ValueError, TypeError, AttributeError):    # not an address: unknown
                local = None
        return local, (self.geo(ip) if self.geo is not None and isinstance(ip, str) else NOTHING)

    def apply(self, records) -> None:
        """The collector fields into each wire record (after its worker fields); records
        already holding them (an embedder's, a test's full records) are left as they are."""
        if not records:
            return
        widths = set(map(len, records))
        if not widths <= {N_WIRE, N_WIRE + 1}:
            if widths <= {_N, _N + 1}:
                return
            records = [r for r in records if len(r) <= N_WIRE + 1]
            if not records:
                return
        ids = self.ids(records)
        w = N_WIRE
        side = self.side
        if side is None:
            nulls = self.nulls
            for r, eid in zip(records, ids):
                r[w:w] = (eid,) + nulls
            return
        direction = _DIRECTION
        for r, eid in zip(records, ids):
            cl, cg = side(r[_CIP])
            sl, sg = side(r[_SIP])
            r[w:w] = (eid, cl, sl, direction[cl][sl]) + cg + sg

    def close(self) -> None:
        if self.geo is not None:
            self.geo.close()
