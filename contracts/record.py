"""The session record: every field declared once, in wire order, with its type and meaning.

Workers send records as lists in this order (msgpack, see `contracts.wire`);
the collector zips them back into dicts for its outputs. Everything else about
a field derives from its declaration here: the collector's checks of records
from the network (`collector.checks`), the CSV header, the JSON names, the
ECS names (`ecs`), the docs' field list. A field is added here or nowhere.
Field names are a public contract: add, never rename.

A record may be followed on the wire by one dict of plugin and classifier
fields (dotted names such as `tls.sni`); outputs write it after the native
fields.

Who fills a field is part of its declaration (`origin`). Workers (and remote
sensors) send the worker fields only (WIRE_FIELDS, in this order, then the
optional dict); the collector appends its own fields (enrichment: local
networks, direction, GeoIP/ASN, event id; collector/enrich.py) as records come
in, before its aggregates and outputs, so everything after that sees full
records (FIELDS, NAMES, INDEX; the dict, if any, last). Collector fields come
after every worker field, so a worker field's place on the wire never moves.
"""
from dataclasses import dataclass
from functools import partial
from typing import Optional

# end_reason: why a final record was written (one list; workers, checks and outputs use it)
END_REASONS = ("idle", "closed", "shutdown", "evicted")
INTERIM = "active"             # the end_reason of an interim (non-final) report
REASONS = END_REASONS + (INTERIM,)
IDLE, CLOSED, SHUTDOWN, EVICTED = END_REASONS
TYPE_SESSION = "session"
U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Kind:
    """What a field's values are. `name` is one of: text, bool, enum (one of `values`),
    int (an integer in [lo, hi]), time (finite epoch seconds), seconds (finite, >= 0),
    ip (an address text), vlans (a list of 802.1Q ids, outermost first), ids (a list
    of session ids), geo (a location {"lat": -90..90, "lon": -180..180}, ECS's
    geo_point), plain (any JSON value: maps keyed by strings, lists, scalars)."""
    name: str
    lo: int = 0
    hi: int = U64
    values: tuple = ()


TEXT = Kind("text")
BOOL = Kind("bool")
COUNT = Kind("int")                 # a counter: 0 .. 2^64 - 1
ID = Kind("int")                    # a 64-bit session id
BYTE = Kind("int", 0, 255)
PORT = Kind("int", 0, 65535)
SMALL = Kind("int", 0, 1 << 31)     # small non-negative numbers (worker index, report number)
TIME = Kind("time")
SECONDS = Kind("seconds")
IP = Kind("ip")
VLANS = Kind("vlans")
IDS = Kind("ids")
PLAIN = Kind("plain")
GEO = Kind("geo")
ASN = Kind("int", 0, (1 << 32) - 1)     # an autonomous system number (32 bits, RFC 6793)

WORKER, COLLECTOR = "worker", "collector"           # a field's origin: who fills it
# ECS's network.direction seen from a perimeter (collector/enrich.py says which applies)
DIRECTIONS = ("inbound", "outbound", "internal", "external")


def enum(*values) -> Kind:
    return Kind("enum", values=tuple(values))


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    doc: str
    null: bool = False              # may be null (JSON null, an empty CSV cell)
    ecs: Optional[str] = None       # the ECS field it maps to as is (collector/outputs/ecs.py), if any
    origin: str = WORKER            # who fills it: WORKER (on the wire) or COLLECTOR (appended on arrival)


F = Field
C = partial(Field, origin=COLLECTOR)
FIELDS = (
    F("type", enum(TYPE_SESSION), "always \"session\""),
    F("final", BOOL, "true for the record written when the session ends, false for interim reports"),
    F("end_reason", enum(*REASONS), "final: " + " | ".join(END_REASONS) + "; interim: " + INTERIM),
    F("session_id", ID, "64-bit id, unique in the run: (number of the frame that opened it, from 1 << 8) | "
      "(capture process << 4) | tunnel depth"),
    F("parent_session_id", ID, "the tunnel's outer session, else null", null=True),
    F("sensor", TEXT, "sensor id (--sensor-id, default the host name)", ecs="observer.name"),
    F("worker", SMALL, "index of the worker that owns the session"),
    F("report_number", SMALL, "1 for the first record of a session, +1 for each later one"),
    F("start", TIME, "first packet time, epoch seconds (µs precision)", ecs="event.start"),
    F("end", TIME, "last packet time, epoch seconds (µs precision)", ecs="event.end"),
    F("duration", SECONDS, "end - start, seconds"),
    F("ip_version", enum(4, 6), "4 or 6"),
    F("transport", BYTE, "IP protocol number of the session's transport"),
    F("client_ip", IP, "initiator: the first packet's sender, corrected by SYN/SYN-ACK", ecs="source.ip"),
    F("client_port", PORT, "initiator's port, null where the transport has none", null=True, ecs="source.port"),
    F("server_ip", IP, "responder", ecs="destination.ip"),
    F("server_port", PORT, "responder's port, null where the transport has none", null=True,
      ecs="destination.port"),
    F("vlan", VLANS, "list of 802.1Q ids, outermost first, or null", null=True),
    F("proto_path", TEXT, "dotted protocol names from the link layer up, e.g. eth.vlan.ipv4.udp.gtp.ipv4.tcp"),
    F("packet_count", COUNT, "IP datagrams, both directions (a fragmented datagram counts once)",
      ecs="network.packets"),
    F("ul_packet_count", COUNT, "datagrams client -> server", ecs="source.packets"),
    F("dl_packet_count", COUNT, "datagrams server -> client", ecs="destination.packets"),
    F("byte_count", COUNT, "sum of the frames' wire (original) lengths", ecs="network.bytes"),
    F("ul_byte_count", COUNT, "client -> server", ecs="source.bytes"),
    F("dl_byte_count", COUNT, "server -> client", ecs="destination.bytes"),
    F("cap_packet_count", COUNT, "captured frames (each fragment once)"),
    F("ul_cap_packet_count", COUNT, "client -> server"),
    F("dl_cap_packet_count", COUNT, "server -> client"),
    F("cap_byte_count", COUNT, "sum of captured lengths"),
    F("ul_cap_byte_count", COUNT, "client -> server"),
    F("dl_cap_byte_count", COUNT, "server -> client"),
    F("data_packet_count", COUNT, "datagrams carrying transport payload"),
    F("ul_data_packet_count", COUNT, "client -> server"),
    F("dl_data_packet_count", COUNT, "server -> client"),
    F("data_byte_count", COUNT, "transport payload bytes (from the IP lengths)"),
    F("ul_data_byte_count", COUNT, "client -> server"),
    F("dl_data_byte_count", COUNT, "server -> client"),
    F("rtt", SECONDS, "TCP handshake time, SYN to the ACK that completes it, seconds; else null", null=True),
    F("retransmission_count", COUNT, "TCP data segments whose sequence range was already seen in that direction"),
    F("tcp_flags", BYTE, "OR of the TCP flags seen, both directions (0 for other transports)"),
    F("content_class", PLAIN, "content class (classification issue), else null", null=True),
    F("content_type", PLAIN, "content type, else null", null=True),
    F("content_flags", PLAIN, "content flags, else null", null=True),
    F("app", TEXT, "application name (lower case), else null", null=True),
    F("family", PLAIN, "application family, else null", null=True),
    F("community_id", TEXT, "Community ID v1 (seed 0) of the 5-tuple, to join with Zeek/Suricata/Elastic; "
      "null for ICMP, whose id needs one type/code", null=True, ecs="network.community_id"),
) + (
    # the collector's (collector/enrich.py), appended to each record as it comes in
    C("event_id", TEXT, "32 hex digits, the same for a record however often it is sent: BLAKE2b-128 of "
      "(sensor, session_id, start, report_number); to de-duplicate downstream (Elasticsearch _id, Kafka key)",
      ecs="event.id"),
    C("local_orig", BOOL, "the client is in --local-nets (Zeek's local_orig); null without --local-nets", null=True),
    C("local_resp", BOOL, "the server is in --local-nets (Zeek's local_resp); null without --local-nets", null=True),
    C("direction", enum(*DIRECTIONS), "from --local-nets, client to server: inbound, outbound, internal or "
      "external (ECS network.direction, as Elastic's network_direction processor); null without --local-nets",
      null=True, ecs="network.direction"),
    C("client_country", TEXT, "ISO 3166-1 alpha-2 country of the client's address (--geoip-db), else null",
      null=True, ecs="source.geo.country_iso_code"),
    C("client_city", TEXT, "the client's city, English name (--geoip-db), else null", null=True,
      ecs="source.geo.city_name"),
    C("client_geo", GEO, "the client's location {\"lat\": ..., \"lon\": ...} (--geoip-db), else null", null=True,
      ecs="source.geo.location"),
    C("client_asn", ASN, "autonomous system number of the client's address (--asn-db), else null", null=True,
      ecs="source.as.number"),
    C("client_as_org", TEXT, "that autonomous system's organization (--asn-db), else null", null=True,
      ecs="source.as.organization.name"),
    C("server_country", TEXT, "as client_country, for the server", null=True, ecs="destination.geo.country_iso_code"),
    C("server_city", TEXT, "as client_city, for the server", null=True, ecs="destination.geo.city_name"),
    C("server_geo", GEO, "as client_geo, for the server", null=True, ecs="destination.geo.location"),
    C("server_asn", ASN, "as client_asn, for the server", null=True, ecs="destination.as.number"),
    C("server_as_org", TEXT, "as client_as_org, for the server", null=True, ecs="destination.as.organization.name"),
)

NAMES = tuple(f.name for f in FIELDS)
INDEX = {name: i for i, name in enumerate(NAMES)}
BY_NAME = {f.name: f for f in FIELDS}
# what workers and sensors send: the worker fields, in the same places as in FIELDS
WIRE_FIELDS = tuple(f for f in FIELDS if f.origin == WORKER)
WIRE_NAMES = tuple(f.name for f in WIRE_FIELDS)
N_WIRE = len(WIRE_FIELDS)
COLLECTOR_FIELDS = FIELDS[N_WIRE:]
COLLECTOR_NAMES = NAMES[N_WIRE:]
assert FIELDS[:N_WIRE] == WIRE_FIELDS, "collector fields come after every worker field"
_COLLECTOR_NULLS = dict.fromkeys(COLLECTOR_NAMES)


def as_dict(values) -> dict:
    """A record (list in FIELDS order, possibly followed by a dict of plugin fields) as an
    ordered dict. A wire record (the worker fields only, as a worker sends it) reads
    with its collector fields null."""
    n = len(NAMES)
    if len(values) <= N_WIRE + 1:
        d = dict(zip(WIRE_NAMES, values))
        d.update(_COLLECTOR_NULLS)
        n = N_WIRE
    else:
        d = dict(zip(NAMES, values))
    if len(values) > n and isinstance(values[n], dict):
        for k, v in values[n].items():
            d.setdefault(str(k), v)
    return d
