"""Zeek logs (`zeek:DIR`): conn.log, open_conn.log, dns.log, ssl.log and http.log in DIR,
in Zeek's ASCII format (tab-separated, with its `#` header and `#close` footer) or,
with `?format=json`, Zeek's JSON lines (same field names, unset fields left out).

Final records go to conn.log, interim ones to open_conn.log (the layout of the
zeek-open-connections package: conn.log's columns, cumulative counters, the
same uid as the session's conn.log line). A final record whose classification
found DNS, TLS/QUIC or HTTP metadata also makes a dns.log, ssl.log or http.log
row, linked by uid. Each log is declared below as a table, as Zeek declares
its `Info` records: (Zeek field, Zeek type, where the value comes from). A
source is a record field read by NAME (the record's own fields, then its
plugin and classification fields: what contracts.record.as_dict gives), a
function of the batch for what is worked out (uid, proto, service, ...), or
None where Zeek has a field we never know: written unset (`-`), never
invented. docs/outputs.md has the tables with the reasons.

Speed (the collector writes a few hundred thousand records a second): each
line is one `template % row`, in C. The record fields whose declaration
promises what the template can take (counters, times, addresses) go from the
record into the row by one itemgetter; the others are made as columns (a list
per field, fetched once by name, worked out with map() over dict lookups),
each column checked once (all ints? all finite? any string to escape?) and
then handed as it is (`%d`, `%.6f`) or formatted as a whole column. Unset
fields are written into the template. A value of an unexpected type (a
plugin's) sends its column, or at worst its batch, the slow way: value by
value, never a traceback.

Files: each log is a LineFile (files.py: 0640, whole lines, `?rotate=`,
`rotate_every=`, `keep=`) that writes Zeek's header whenever it opens a file and
`#close` whenever it closes one, rotated or at the end. A log's file is
created with its first line (Zeek makes no empty logs); a file of ours left by
an earlier run is truncated (or set aside, when rotating) at start like the
other outputs do, so no stale rows stay beside the new ones.
"""
import json
import math
import os
import re
import sys
import time
from dataclasses import replace
from functools import partial
from itertools import compress, repeat
from operator import add, getitem, is_not, itemgetter

from contracts.record import BY_NAME, INDEX, NAMES

from . import zeek_uid
from .files import LineFile, LineOutput, check_target, parse_target

# -- Zeek types, as #types writes them ---------------------------------------------------------------

TIME, INTERVAL, COUNT, INT, PORT, BOOL = "time", "interval", "count", "int", "port", "bool"
STRING, ADDR, ENUM = "string", "addr", "enum"
STRING_SET, STRING_VECTOR, ENUM_SET = "set[string]", "vector[string]", "set[enum]"
INTERVAL_VECTOR = "vector[interval]"
UNKNOWN = None                 # source of a field Zeek has and we never know: always unset

_WIDTH = len(NAMES)
_NONE_TYPE = type(None)
_TCP, _UDP, _ICMP, _ICMP6 = 6, 17, 1, 58


# -- the batch, as columns ----------------------------------------------------------------------------

class Batch:
    """A log's rows of a batch: each record field's values as a list, fetched once, by name
    (a record field first, then the record's plugin/classification dict, as as_dict does)."""

    def __init__(self, records, columns=None):
        self.records = records
        self.n = len(records)
        self._cols = columns if columns is not None else {}
        self._plugins = False       # each record's plugin dict, once looked at
        self._keys = frozenset()

    def __getitem__(self, name: str) -> list:
        col = self._cols.get(name)
        if col is None:
            col = self._cols[name] = self._fetch(name)
        return col

    def _fetch(self, name):
        i = INDEX.get(name)
        if i is not None:
            try:
                return list(map(itemgetter(i), self.records))
            except IndexError:
                return [r[i] if len(r) > i else None for r in self.records]
        if name not in self.plugin_keys():
            return [None] * self.n
        return list(map(dict.get, self._plugins, repeat(name)))

    def plugin_keys(self):
        """The names in the records' plugin dicts (kept: each record's dict, {} where none)."""
        if self._plugins is False:
            self._plugins, self._keys = None, frozenset()
            widths = set(map(len, self.records))
            if max(widths, default=0) > _WIDTH:
                if widths == {_WIDTH + 1}:
                    col = list(map(itemgetter(_WIDTH), self.records))
                else:
                    col = [r[_WIDTH] if len(r) > _WIDTH else None for r in self.records]
                if set(map(type, col)) != {dict}:
                    col = [p if isinstance(p, dict) else {} for p in col]
                self._plugins = col
                self._keys = frozenset().union(*col)
        return self._keys

    def derived(self, key: str, make) -> list:
        """A worked-out column (the uids), made once per batch and kept by its subsets."""
        col = self._cols.get(key)
        if col is None:
            col = self._cols[key] = make(self)
        return col

    def rows_with(self, names) -> list:
        """Indices of the rows where any of these fields has a value."""
        found = set()
        for name in names:
            col = self[name]
            if col.count(None) != self.n:
                found.update(compress(range(self.n), map(is_not, col, repeat(None))))
        return sorted(found)

    def subset(self, rows):
        """These rows as a Batch (the columns fetched so far come along)."""
        if len(rows) == self.n:
            return self
        pick = itemgetter(*rows) if len(rows) > 1 else (lambda c: (c[rows[0]],))
        return Batch(list(pick(self.records)) if rows else [],
                     {k: type(v)(pick(v)) for k, v in self._cols.items()} if rows else {})


# -- what is worked out ------------------------------------------------------------------------------
# Each works on whole columns, in C where it can (map over dict lookups, operator functions):
# a per-row Python expression costs as much as writing the row's line.

class Plain(list):
    """A worked-out column whose values are what their Zeek type wants (None: unset; else an int
    >= 0, a finite float, or a word that needs no escaping in TSV or JSON and is no reserved
    value): its cells skip the checks that a column of record or plugin values gets."""


class _Table(dict):
    """key -> fn(*key), worked out once per key: the same few keys come again and again."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __missing__(self, key):
        value = self.fn(*key)
        if len(self) < 4096:
            self[key] = value
        return value


def _pick(chosen, fallback):
    """chosen's value where it has one, else fallback's."""
    unset = chosen.count(None)
    if not unset:
        return chosen
    if unset == len(chosen):
        return fallback
    return list(map(getitem, zip(fallback, chosen), map(is_not, chosen, repeat(None))))


def _where(values, mask):
    """values where mask's value is set, else None."""
    return list(map(getitem, zip(repeat(None), values), map(is_not, mask, repeat(None))))


def _texts(col) -> bool:
    """Every value that is set a str."""
    return set(map(type, col)) <= {str, _NONE_TYPE}


def _sparse(col, fn, unset=None):
    """fn of each value that is set, `unset` elsewhere (for columns that are mostly unset)."""
    out = [unset] * len(col)
    for i in compress(range(len(col)), map(is_not, col, repeat(None))):
        out[i] = fn(col[i])
    return out


def _uid(b):
    return b.derived(" uid", lambda b: Plain(zeek_uid.uids(b["sensor"], b["session_id"])))


_PROTO_NAMES = {_TCP: "tcp", _UDP: "udp", _ICMP: "icmp", _ICMP6: "icmp"}


def _proto(b):
    return Plain(map(_PROTO_NAMES.get, b["transport"], repeat("unknown_transport")))


# our `app` -> Zeek's service name, where they differ (docs/outputs.md). A dict picks by transport;
# None: Zeek names no service (it never does for ICMP). Apps not listed keep their name.
SERVICES = {"tls": "ssl", "imaps": "ssl", "smtps": "ssl", "pop3s": "ssl", "quic": "quic",
            "mdns": "dns", "llmnr": "dns", "kerberos": {_TCP: "krb_tcp", _UDP: "krb"},
            "ldap": {_TCP: "ldap_tcp", _UDP: "ldap_udp"}, "icmp": None, "icmpv6": None, "igmp": None}


_BY_APP = {app: name for app, name in SERVICES.items() if not isinstance(name, dict)}.get
_BY_TRANSPORT = {app: name for app, name in SERVICES.items() if isinstance(name, dict)}
_NOT_GUESSED = {True: None}.get         # (app_guess, name): no name where it is a port guess


def _service(b):
    """Zeek names the analyzers that confirmed the protocol: a port guess (app_guess) is none.
    QUIC whose TLS ClientHello was read is `quic,ssl`, as Zeek's QUIC analyzer hands it to SSL."""
    apps = b["app"]
    if apps.count(None) == b.n:
        return apps
    out = list(map(_BY_APP, apps, apps))
    present = set(out)
    for app, names in _BY_TRANSPORT.items():
        if app in present:
            out = [names.get(t, a) if a == app else a for a, t in zip(out, b["transport"])]
    guess = b["app_guess"]
    if guess.count(None) != b.n:
        out = list(map(_NOT_GUESSED, guess, out))
    if "quic" in present:
        tls = b["quic.tls_version"]
        out = ["quic,ssl" if s == "quic" and t is not None else s for s, t in zip(out, tls)]
    return out


_ZERO_UNSET = {0: None}.get


def _duration(b):
    """Zeek logs duration, orig_bytes and resp_bytes only when the duration is above 0."""
    return b.derived(" duration", lambda b: Plain(map(_ZERO_UNSET, b["duration"], b["duration"])))


# payload bytes are Zeek's orig/resp_bytes for UDP (UDP payload) and ICMP (after the 8-byte header)
_PAYLOAD_IS_ZEEKS = {_UDP: 1, _ICMP: 1, _ICMP6: 1}.get


def _bytes(seq_field, data_field):
    def source(b):
        seq = b[seq_field]
        payload = list(map(getitem, zip(repeat(None), b[data_field]),
                           map(_PAYLOAD_IS_ZEEKS, b["transport"], repeat(0))))
        got = _where(_pick(seq, payload), _duration(b))
        return Plain(got) if seq.count(None) == b.n else got
    source.__name__ = f"{seq_field}, else {data_field} for UDP/ICMP"
    return source


def _sides(b):
    """(transport, client sent anything, server sent anything) of each row."""
    return b.derived(" sides", lambda b: list(zip(b["transport"], map(bool, b["ul_packet_count"]),
                                                  map(bool, b["dl_packet_count"]))))


# Zeek's conn_state and history where they follow from who sent anything: UDP (both SF, client
# only S0, server only SHR; D and d for each side's first packet), ICMP and others (OTH, none)
_STATES = _Table(lambda t, u, d: None if t == _TCP else "OTH" if t != _UDP else
                 ("SF" if d else "S0") if u else ("SHR" if d else "OTH"))
_HISTORIES = _Table(lambda t, u, d: ((("D" if u else "") + ("d" if d else "")) or None) if t == _UDP else None)


def _conn_state(b):
    """The record's conn_state; until the engine writes it: UDP's and ICMP's from who sent
    anything (_STATES), TCP's unset."""
    return _pick(b["conn_state"], Plain(map(_STATES.__getitem__, _sides(b))))


def _history(b):
    """The record's history; until the engine writes it: UDP's D/d, none for ICMP, TCP's unset."""
    return _pick(b["history"], Plain(map(_HISTORIES.__getitem__, _sides(b))))


_MISSED = {_TCP: None}.get


def _missed_bytes(b):
    """The record's missed_bytes; until the engine writes it: 0 where Zeek cannot miss any (no
    reassembly: UDP, ICMP, ...), TCP's unset."""
    return _pick(b["missed_bytes"], Plain(map(_MISSED, b["transport"], repeat(0))))


def _tunnel_parents(b):
    """uids of the enclosing sessions: the record's tunnel_parents (session ids), else its
    parent_session_id (the tunnel's outer session); unset at top level."""
    parents = b["tunnel_parents"]
    if parents.count(None) == b.n:
        parents = b["parent_session_id"]
    sensors = b["sensor"]
    out = [None] * b.n
    for i in compress(range(b.n), map(is_not, parents, repeat(None))):
        p = parents[i]
        out[i] = [zeek_uid.uid(sensors[i], x) for x in (p if isinstance(p, (list, tuple)) else [p])]
    return out


def _vlan(i):
    def source(b):
        return Plain(_sparse(b["vlan"], lambda v: v[i] if len(v) > i else None))
    source.__name__ = f"vlan[{i}]"
    return source


# -- dns, ssl, http ----------------------------------------------------------------------------------

def _meta(*names):
    """The first of these metadata fields that a row has (DNS comes as dns.*, mdns.* or llmnr.*)."""
    def source(b):
        first = b[names[0]]
        for name in names[1:]:
            first = _pick(first, b[name])
        return first
    source.__name__ = " or ".join(names)
    return source


def _mapped(source, table, default):
    """Values of `source` looked up in `table`; `default(value)` where it has none."""
    def mapped(b):
        return [None if v is None else table[v] if v in table else default(v) for v in source(b)]
    mapped.__name__ = source.__name__
    return mapped


def _number(v):
    """The number our classifier wrote as text where it has no name for it ("65280")."""
    return int(v) if isinstance(v, str) and v.isdigit() and len(v) < 6 else None


def _name(pattern):
    """Zeek's name for a number it has no name for (its &default: query-N, rcode-N)."""
    return lambda v: pattern % int(v) if isinstance(v, str) and v.isdigit() and len(v) < 6 else None


# IANA DNS types and response codes under the names our DNS classifier writes -> their numbers,
# and Zeek's names where they differ from ours (base/protocols/dns/consts.zeek: ANY is "*")
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16, "AAAA": 28,
          "SRV": 33, "NAPTR": 35, "DNAME": 39, "OPT": 41, "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48,
          "TLSA": 52, "SVCB": 64, "HTTPS": 65, "SPF": 99, "AXFR": 252, "ANY": 255, "CAA": 257}
QTYPE_NAMES = {name: ("*" if name == "ANY" else name) for name in QTYPES}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
          "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}
RCODE_NAMES = {name: ("NXRRSet" if name == "NXRRSET" else name) for name in RCODES}
# our TLS version names (workers/classify/tls.py) -> Zeek's (base/protocols/ssl/consts.zeek)
TLS_VERSIONS = {"ssl2": "SSLv2", "ssl3": "SSLv3", "1.0": "TLSv10", "1.1": "TLSv11", "1.2": "TLSv12",
                "1.3": "TLSv13", "dtls1.0": "DTLSv10", "dtls1.2": "DTLSv12", "dtls1.3": "DTLSv13"}


def _unknown_version(v):
    # a version we have no name for is written "0x7f1c"; Zeek writes unknown-N
    if isinstance(v, str) and re.fullmatch(r"0x[0-9a-f]{1,4}", v):
        return "unknown-%d" % int(v, 16)
    return v


_DNS = ("dns", "mdns", "llmnr")
_dns_query, _dns_qtype, _dns_rcode, _dns_answers = (_meta(*(f"{p}.{k}" for p in _DNS))
                                                    for k in ("query", "qtype", "rcode", "answers"))
DNS_KEYS = tuple(f"{p}.{k}" for p in _DNS for k in ("query", "qtype", "rcode", "answers"))
SSL_KEYS = ("tls.version", "tls.sni", "tls.ja3", "tls.ja4", "quic.sni", "quic.tls_version", "quic.ja4")
HTTP_KEYS = ("http.method", "http.host", "http.uri", "http.user_agent", "http.status")

# -- the logs ----------------------------------------------------------------------------------------

_ID = (
    ("ts",              TIME,           "start"),
    ("uid",             STRING,         _uid),
    ("id.orig_h",       ADDR,           "client_ip"),
    ("id.orig_p",       PORT,           "client_port"),
    ("id.resp_h",       ADDR,           "server_ip"),
    ("id.resp_p",       PORT,           "server_port"),
)

CONN = _ID + (
    ("proto",           ENUM,           _proto),
    ("service",         STRING,         _service),
    ("duration",        INTERVAL,       _duration),
    ("orig_bytes",      COUNT,          _bytes("ul_seq_byte_count", "ul_data_byte_count")),
    ("resp_bytes",      COUNT,          _bytes("dl_seq_byte_count", "dl_data_byte_count")),
    ("conn_state",      STRING,         _conn_state),
    ("local_orig",      BOOL,           "local_orig"),
    ("local_resp",      BOOL,           "local_resp"),
    ("missed_bytes",    COUNT,          _missed_bytes),
    ("history",         STRING,         _history),
    ("orig_pkts",       COUNT,          "ul_packet_count"),
    ("orig_ip_bytes",   COUNT,          "ul_ip_byte_count"),
    ("resp_pkts",       COUNT,          "dl_packet_count"),
    ("resp_ip_bytes",   COUNT,          "dl_ip_byte_count"),
    ("tunnel_parents",  STRING_SET,     _tunnel_parents),
    ("ip_proto",        COUNT,          "transport"),
    # Zeek's policy scripts: community-id-logging, vlan-logging, mac-logging
    ("community_id",    STRING,         "community_id"),
    ("vlan",            INT,            _vlan(0)),
    ("inner_vlan",      INT,            _vlan(1)),
    ("orig_l2_addr",    STRING,         "client_mac"),
    ("resp_l2_addr",    STRING,         "server_mac"),
    # ours (MMT's session model), after Zeek's
    ("sensor",          STRING,         "sensor"),
    ("session_id",      COUNT,          "session_id"),
    ("end_reason",      STRING,         "end_reason"),
    ("app",             STRING,         "app"),
    ("proto_path",      STRING,         "proto_path"),
    ("rtt",             INTERVAL,       "rtt"),
    ("retransmissions", COUNT,          "retransmission_count"),
    ("orig_l2_bytes",   COUNT,          "ul_byte_count"),
    ("resp_l2_bytes",   COUNT,          "dl_byte_count"),
    ("orig_payload_pkts", COUNT,        "ul_data_packet_count"),
    ("resp_payload_pkts", COUNT,        "dl_data_packet_count"),
    ("orig_payload_bytes", COUNT,       "ul_data_byte_count"),
    ("resp_payload_bytes", COUNT,       "dl_data_byte_count"),
    ("tcp_flags",       COUNT,          "tcp_flags"),
)

DNS = _ID + (
    ("proto",           ENUM,           _proto),
    ("trans_id",        COUNT,          UNKNOWN),
    ("rtt",             INTERVAL,       UNKNOWN),
    ("query",           STRING,         _dns_query),
    ("qclass",          COUNT,          UNKNOWN),
    ("qclass_name",     STRING,         UNKNOWN),
    ("qtype",           COUNT,          _mapped(_dns_qtype, QTYPES, _number)),
    ("qtype_name",      STRING,         _mapped(_dns_qtype, QTYPE_NAMES, _name("query-%d"))),
    ("rcode",           COUNT,          _mapped(_dns_rcode, RCODES, _number)),
    ("rcode_name",      STRING,         _mapped(_dns_rcode, RCODE_NAMES, _name("rcode-%d"))),
    ("AA",              BOOL,           UNKNOWN),
    ("TC",              BOOL,           UNKNOWN),
    ("RD",              BOOL,           UNKNOWN),
    ("RA",              BOOL,           UNKNOWN),
    ("Z",               COUNT,          UNKNOWN),
    ("answers",         STRING_VECTOR,  _dns_answers),
    ("TTLs",            INTERVAL_VECTOR, UNKNOWN),
    ("rejected",        BOOL,           UNKNOWN),
    ("opcode",          COUNT,          UNKNOWN),
    ("opcode_name",     STRING,         UNKNOWN),
)

SSL = _ID + (
    ("version",         STRING,         _mapped(_meta("tls.version", "quic.tls_version"), TLS_VERSIONS,
                                                _unknown_version)),
    ("cipher",          STRING,         UNKNOWN),
    ("curve",           STRING,         UNKNOWN),
    ("server_name",     STRING,         _meta("tls.sni", "quic.sni")),
    ("resumed",         BOOL,           UNKNOWN),
    ("last_alert",      STRING,         UNKNOWN),
    ("next_protocol",   STRING,         "tls.alpn_selected"),
    ("established",     BOOL,           UNKNOWN),
    ("ssl_history",     STRING,         UNKNOWN),
    ("cert_chain_fps",  STRING_VECTOR,  UNKNOWN),
    ("client_cert_chain_fps", STRING_VECTOR, UNKNOWN),
    ("sni_matches_cert", BOOL,          UNKNOWN),
    # the ja3 (salesforce) and ja4 (FoxIO) packages' fields
    ("ja3",             STRING,         "tls.ja3"),
    ("ja4",             STRING,         _meta("tls.ja4", "quic.ja4")),
)

HTTP = _ID + (
    ("trans_depth",     COUNT,          UNKNOWN),
    ("method",          STRING,         "http.method"),
    ("host",            STRING,         "http.host"),
    ("uri",             STRING,         "http.uri"),
    ("referrer",        STRING,         UNKNOWN),
    ("version",         STRING,         UNKNOWN),
    ("user_agent",      STRING,         "http.user_agent"),
    ("origin",          STRING,         UNKNOWN),
    ("request_body_len", COUNT,         UNKNOWN),
    ("response_body_len", COUNT,        UNKNOWN),
    ("status_code",     COUNT,          "http.status"),
    ("status_msg",      STRING,         UNKNOWN),
    ("info_code",       COUNT,          UNKNOWN),
    ("info_msg",        STRING,         UNKNOWN),
    ("tags",            ENUM_SET,       UNKNOWN),
    ("username",        STRING,         UNKNOWN),
    ("password",        STRING,         UNKNOWN),
    ("proxied",         STRING_SET,     UNKNOWN),
    ("orig_fuids",      STRING_VECTOR,  UNKNOWN),
    ("orig_filenames",  STRING_VECTOR,  UNKNOWN),
    ("orig_mime_types", STRING_VECTOR,  UNKNOWN),
    ("resp_fuids",      STRING_VECTOR,  UNKNOWN),
    ("resp_filenames",  STRING_VECTOR,  UNKNOWN),
    ("resp_mime_types", STRING_VECTOR,  UNKNOWN),
)

# (log path, columns): conn.log takes the final records, open_conn.log the interim ones, and the
# others a final record that has any of the metadata fields of ROWS_OF
LOGS = (("conn", CONN), ("open_conn", CONN), ("dns", DNS), ("ssl", SSL), ("http", HTTP))
ROWS_OF = {"dns": DNS_KEYS, "ssl": SSL_KEYS, "http": HTTP_KEYS}

_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError)


# how often a batch took the slow ways (values' row by row, lines' value by value): records as
# the contracts declare them never do (the tests hold it to 0); odd plugin values may
SLOW = {"values": 0, "lines": 0}


def values(b: Batch, source):
    """A column's values (None: unset) for the batch's rows. A source that fails on some
    value (a plugin's odd type) is asked again row by row; a row it fails on is unset."""
    if source is UNKNOWN:
        return None
    if isinstance(source, str):
        return Plain(b[source]) if source in _PLAIN_FIELDS else b[source]
    try:
        return source(b)
    except _ERRORS:
        SLOW["values"] += 1
        out = []
        for i in range(b.n):
            try:
                out.append(source(b.subset([i]))[0])
            except _ERRORS:
                out.append(None)
        return out


# -- TSV cells ---------------------------------------------------------------------------------------
# Zeek's ASCII writer: `\` doubled, the separator and control bytes as \xNN, a value that is exactly
# "-" or "(empty)" escaped, "" written (empty). We also escape `#` and `"` (pandas, under zat's
# LogToDataFrame, cuts a line at any # and reads a quote as the start of a quoted field that may
# run over tabs and lines), the line separators of str.splitlines (NEL, U+2028/9), and
# lone surrogates (a byte that was not UTF-8: \udcNN is the byte NN), so a reader that decodes \xNN
# (Zeek's, parsezeeklogs) gets the value back and no reader splits a line in two.

def _escapes():
    table = {c: "\\x%02x" % c for c in range(0x20)}
    table.update({0x7f: "\\x7f", ord("\\"): "\\\\", ord("#"): "\\x23", ord('"'): "\\x22"})
    for c in (0x85, 0x2028, 0x2029, *range(0xd800, 0xe000)):
        raw = chr(c).encode("utf-8", "surrogatepass") if not 0xdc80 <= c <= 0xdcff else bytes([c - 0xdc00])
        table[c] = "".join("\\x%02x" % x for x in raw)
    return table


_ESCAPES = _escapes()
_SET_ESCAPES = {**_ESCAPES, ord(","): "\\x2c"}
_NEEDS_ESCAPE = re.compile('[\x00-\x1f\x7f\\\\#"\x85\u2028\u2029\ud800-\udfff]')
_RESERVED = {"": "(empty)", "-": "\\x2d", "(empty)": "\\x28empty)", None: "-"}
_BOOL_TEXT = {True: "T", False: "F"}
_BOOL_JSON = {True: "true", False: "false"}
# Zeek's JSON writer: unset fields left out, times as epoch numbers, sets as arrays, UTF-8 kept
_json_string = json.encoder.encode_basestring       # C
_isfinite = math.isfinite
_time_text = "%.6f".__mod__
# C-level helpers over whole columns: d.get(value, other) picks per row
_UNSET_OR = {None: "-"}.get             # (value, text): "-" where the value is unset
_OMITTED_OR = {None: ""}.get            # (value, fragment): nothing where the value is unset
_NAN_FOR_NONE = {None: math.nan}.get    # (value, value): a number to format in place of unset
_EMPTY_FOR_NONE = {None: ""}.get
_KIND = {TIME: "time", INTERVAL: "time", COUNT: "count", PORT: "count", INT: "int", BOOL: "bool",
         STRING: "string", ADDR: "string", ENUM: "string"}


def _kind(ztype) -> str:
    return _KIND.get(ztype, "container" if "[" in ztype else "string")


def _text(v) -> str:
    """Any value as text (what a string field holds when it is not a string)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "surrogateescape")
    return str(v)


def _items(v) -> list:
    return list(v) if isinstance(v, (list, tuple, set, frozenset)) else [v]


def _finite(col) -> bool:
    """Every value that is set a finite number (what %.6f may take)."""
    try:
        return all(map(_isfinite, filter(None, col)))
    except (TypeError, ValueError, OverflowError):
        return False


def _counts(col, signed) -> bool:
    """Every value that is set an int (not a bool) that the field can hold."""
    return set(map(type, col)) <= {int, _NONE_TYPE} and (signed or min(filter(None, col), default=0) >= 0)


# one value at a time: the way for values of unexpected types (never a traceback)

def _tsv_value(kind, v) -> str:
    if v is None:
        return "-"
    if kind == "time":
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            return "-"
        return _time_text(f) if _isfinite(f) else "-"
    if kind in ("count", "int"):
        if type(v) is int and (kind == "int" or v >= 0):
            try:
                return "%d" % v
            except ValueError:          # more digits than int -> str allows
                pass
        return "-"
    if kind == "bool":
        return _BOOL_TEXT[v] if isinstance(v, bool) else "-"
    if kind == "container":
        items = _items(v)
        return ",".join(_tsv_string(x, _SET_ESCAPES) for x in items) if items else "(empty)"
    return _tsv_string(v)


def _tsv_string(v, escapes=_ESCAPES) -> str:
    s = _text(v).translate(escapes)
    return _RESERVED.get(s, s)


def _json_value(kind, v):
    """JSON text, or None where the value is unset or has none."""
    if kind == "string":
        return None if v is None else _json_string(_text(v))
    if kind == "container":
        return None if v is None else "[" + ",".join(_json_string(_text(x)) for x in _items(v)) + "]"
    if kind == "bool":
        return _BOOL_JSON[v] if isinstance(v, bool) else None
    text = _tsv_value(kind, v)
    return None if text == "-" else text


def _tsv_cells(ztype, col, safe=False):
    """(template spec, column) of one TSV column: `%d`/`%.6f`/`%s` taking the values as they are,
    `%s` taking texts made here for the whole column, or "-" (no column) where all are unset.
    `safe`: each value on its own (the way for a batch the others misjudged)."""
    if col is None or col.count(None) == len(col):
        return "-", None
    kind = _kind(ztype)
    whole = not col.count(None)
    plain = type(col) is Plain
    if safe:
        pass
    elif kind == "time" and (plain or _finite(col)):
        return ("%.6f", col) if whole else ("%s", list(map(_UNSET_OR, col, map(_time_text, map(_NAN_FOR_NONE, col, col)))))
    elif kind in ("count", "int") and (plain or _counts(col, kind == "int")):
        return ("%d", col) if whole else ("%s", list(map(_UNSET_OR, col, col)))     # %s: str() of an int
    elif kind == "bool":
        try:
            return "%s", list(map(_BOOL_TEXT.get, col, repeat("-")))
        except TypeError:           # an unhashable value: one by one
            pass
    elif kind == "string" and plain:
        return ("%s", col) if whole else ("%s", list(map(_UNSET_OR, col, col)))
    elif kind == "string" and _texts(col):
        if _NEEDS_ESCAPE.search("".join(filter(None, col))):
            col = [v if v is None else v.translate(_ESCAPES) for v in col]
        return "%s", list(map(_RESERVED.get, col, col))
    elif kind == "container":
        return "%s", _sparse(col, partial(_tsv_value, kind), "-")
    return "%s", [_tsv_value(kind, v) for v in col]


def _json_cells(name, ztype, col, first, safe=False):
    """(template fragment, column) of one JSON column: `,"name":%d` taking the values as they are,
    `%s` taking each row's fragment made here (nothing where unset, as Zeek's JSON), or no fragment.
    The first field (ts) is always written, as null where it has no value."""
    key = ("" if first else ",") + _json_string(name) + ":"
    omitted = {None: key + "null"}.get if first else _OMITTED_OR
    if col is None or col.count(None) == len(col):
        return (key + "null", None) if first else ("", None)
    kind = _kind(ztype)
    whole = not col.count(None)
    plain = type(col) is Plain
    with_key = key.__add__
    if safe:
        pass
    elif kind == "time" and (plain or _finite(col)):
        if whole:
            return key + "%.6f", col
        return "%s", list(map(omitted, col, map(with_key, map(_time_text, map(_NAN_FOR_NONE, col, col)))))
    elif kind in ("count", "int") and (plain or _counts(col, kind == "int")):
        return (key + "%d", col) if whole else ("%s", list(map(omitted, col, map(with_key, map(str, col)))))
    elif kind == "string" and plain and whole:
        return key + '"%s"', col
    elif kind == "string" and _texts(col):
        texts = map(_json_string, map(_EMPTY_FOR_NONE, col, col))
        return (key + "%s", list(texts)) if whole else ("%s", list(map(omitted, col, map(with_key, texts))))
    texts = [_json_value(kind, v) for v in col]
    gone = omitted(None)
    return "%s", [gone if t is None else key + t for t in texts]


# -- lines -------------------------------------------------------------------------------------------

_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.:]+")


def _plain_field(field) -> bool:
    """Whether a record field's declaration (contracts/record.py; held at the collector's door by
    collector/checks.py) promises Plain values: integers >= 0, finite times, addresses, or an enum
    of plain words."""
    k = field.kind
    if k.name in ("int", "time", "seconds", "ip"):
        return k.lo >= 0
    return k.name == "enum" and all(isinstance(v, str) and v != "-" and _PLAIN_WORD.fullmatch(v) for v in k.values)


_PLAIN_FIELDS = frozenset(f.name for f in BY_NAME.values() if _plain_field(f))
_DIRECT_SPECS = {"count": "%d", "int": "%d", "string": "%s"}


def _direct_spec(ztype, source):
    """The %-spec that takes a column's values straight from the record: for Plain fields that
    are never null, where the field's kind is what the Zeek type wants. Not times: they are
    checked against TIME_LIMIT."""
    field = BY_NAME.get(source) if isinstance(source, str) else None
    if field is None or field.null or source not in _PLAIN_FIELDS:
        return None
    wanted = {"int": ("count", "int"), "ip": ("string",), "enum": ("string",)}.get(field.kind.name, ())
    kind = _kind(ztype)
    return _DIRECT_SPECS[kind] if kind in wanted else None


class Layout:
    """A log's columns, and which of them go from the record straight into the line: those are
    taken by one itemgetter per record; the others are made as columns (Batch, values)."""

    def __init__(self, columns):
        self.columns = columns
        direct = {k: (INDEX[source], spec) for k, (_, ztype, source) in enumerate(columns)
                  if (spec := _direct_spec(ztype, source))}
        if len(direct) < 2:             # itemgetter of one index gives no tuple: not worth it
            direct = {}
        self.direct = direct
        self.getter = itemgetter(*(i for i, _ in direct.values())) if direct else None
        self.rank = {k: r for r, k in enumerate(direct)}


# What every reader of these logs can hold: pandas (zat's readers) and Arrow keep times as int64
# nanoseconds, 1677-09-21 to 2262-04-11. A time outside (a capture read with the wrong byte order
# says year 150,000) is written as the nearest one it can hold and its row counted (times_clamped);
# the native outputs keep the number.
TIME_LIMIT = 9223372036.0


def _clamp(v):
    if type(v) in (int, float):
        if v != v:                  # NaN: no time at all (never from checked records): unset
            return None
        return TIME_LIMIT if v > TIME_LIMIT else -TIME_LIMIT if v < -TIME_LIMIT else v
    return v


def _bounded(col, clamped: set):
    """A time column within ±TIME_LIMIT; the rows it changed are added to `clamped`."""
    if col is None:
        return col
    try:
        numbers = list(filter(None, col))
        if not numbers or (-TIME_LIMIT <= min(numbers) and max(numbers) <= TIME_LIMIT
                           and all(map(_isfinite, numbers))):
            return col
    except (TypeError, OverflowError):      # not all numbers (the cells' careful way sees to
        pass                                # them), or an int beyond floats: clamped below
    out = list(map(_clamp, col))
    clamped.update(i for i, (a, b) in enumerate(zip(col, out)) if a is not b)
    return Plain(out) if type(col) is Plain else out


def lines(b: Batch, layout: Layout, fmt: str):
    """The batch's lines of a log (bytes, each ending with a newline), and how many of its rows
    had a time clamped."""
    clamped = set()
    try:
        return _lines(b, layout, fmt, False, clamped), len(clamped)
    except (TypeError, ValueError, OverflowError, IndexError):  # a value the fast paths misjudged
        SLOW["lines"] += 1
        clamped.clear()
        return _lines(b, layout, fmt, True, clamped), len(clamped)


def _lines(b, layout, fmt, safe, clamped):
    """One %-template per line: unset fields written into it, the others taken from each row's
    tuple: the direct fields, then the made columns, put in the log's order by one itemgetter."""
    tsv = fmt == "tsv"
    direct = {} if safe else layout.direct
    specs, made, order = [], [], []
    for k, (name, ztype, source) in enumerate(layout.columns):
        if k in direct:
            spec = direct[k][1]
            if not tsv:
                spec = ("" if k == 0 else ",") + _json_string(name) + ":" + ('"%s"' if spec == "%s" else spec)
            specs.append(spec)
            order.append(layout.rank[k])
            continue
        col = values(b, source)
        if ztype in (TIME, INTERVAL):
            col = _bounded(col, clamped)
        spec, col = _tsv_cells(ztype, col, safe) if tsv else _json_cells(name, ztype, col, k == 0, safe)
        if col is not None and col.count(col[0]) == len(col):     # one value in the batch (a sensor,
            spec, col = (spec % col[0]).replace("%", "%%"), None   # an unset field): into the template
        specs.append(spec)
        if col is not None:
            order.append(len(direct) + len(made))
            made.append(col)
    template = "\t".join(specs) if tsv else "{" + "".join(specs) + "}"
    rows = map(layout.getter, b.records) if direct else None
    if made:
        rows = zip(*made) if rows is None else map(add, rows, zip(*made))
    if rows is None:
        text = "\n".join(repeat(template % (), b.n))
    else:
        if order != list(range(len(order))):
            rows = map(itemgetter(*order), rows)
        text = "\n".join(map(template.__mod__, rows))
    text += "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:                      # a lone surrogate in JSON text: \udcNN
        return text.encode("utf-8", "backslashreplace")


# -- files -------------------------------------------------------------------------------------------

_CLOSE = "#close\t%s\n"
_STAMP_LEN = len("2024-01-02-03-04-05")
FOOTER_LEN = len(_CLOSE % ("x" * _STAMP_LEN))


def _stamp(t: float) -> str:
    """Zeek's #open/#close time: the writer's wall clock, local time, %Y-%m-%d-%H-%M-%S."""
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(t))


def header_lines(path: str, columns) -> list:
    """Zeek's header, #open's value left out (it is the time the file is opened)."""
    return ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-",
            f"#path\t{path}", "#open\t", "#fields\t" + "\t".join(n for n, _, _ in columns),
            "#types\t" + "\t".join(t for _, t, _ in columns)]


class ZeekFile(LineFile):
    """One log's file: files.py's LineFile, writing Zeek's header on each file it opens and
    `#close` on each it closes (rotated or at the end). In JSON: neither, as Zeek.

    Appending (a standalone collector's restart) continues a file of the same columns: its
    `#close` line is cut first, so it stays one log with one header and, once closed again, one
    footer. A file with other columns (or the other format) is set aside as rotation would,
    since no reader could read rows of two layouts under one header."""

    def __init__(self, target, lines, clock, append):
        self.lines = lines          # header lines, or None for JSON
        self.set_aside = False
        path = target.path
        if append and lines is not None and os.path.isfile(path) and os.path.getsize(path) > 0:
            if self._same_layout(path):
                self._cut_close(path)
            else:
                self.set_aside, append = True, False
        elif append and lines is None and os.path.isfile(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as fh:
                if fh.read(1) == b"#":
                    self.set_aside, append = True, False
        super().__init__(target, header=self._header(clock()), clock=clock, append=append)

    def _header(self, t) -> bytes:
        if self.lines is None:
            return b""
        lines = list(self.lines)
        lines[5] += _stamp(t)
        return ("\n".join(lines) + "\n").encode()

    def _same_layout(self, path) -> bool:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16).decode("utf-8", "replace").split("\n")
        if len(head) < 9:
            return False
        mine = self.lines
        return head[:5] == mine[:5] and head[5].startswith("#open\t") and head[6:8] == mine[6:8]

    @staticmethod
    def _cut_close(path) -> None:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 4096))
            tail = fh.read()
        if tail.endswith(b"\n"):
            start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
            if tail[start:].startswith(b"#close\t"):
                os.truncate(path, size - (len(tail) - start))

    def _open(self) -> None:
        if self.set_aside:
            self.set_aside = False
            if os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
                self._move_aside()
        self.header = self._header(self.clock())
        super()._open()

    def _finish(self) -> None:
        if self.lines is not None and self.fh is not None:
            self._put((_CLOSE % _stamp(self.clock())).encode())
        super()._finish()

    def discard(self) -> None:
        """Close without a footer and remove the file (the journal cut it back to nothing)."""
        fh, self.fh = self.fh, None
        if fh is not None:
            fh.close()
        os.unlink(self.path)


class Log:
    """One Zeek log of the output: its columns and, once it has a line, its file."""

    def __init__(self, path, columns, folder, target, fmt, clock):
        self.columns = columns
        self.lines = header_lines(path, columns) if fmt == "tsv" else None
        rotate = target.rotate_bytes
        if rotate is not None and self.lines is not None:
            rotate = max(1, rotate - FOOTER_LEN)     # the #close line stays within the size too
        self.target = replace(target, path=os.path.join(folder, f"{path}.log"), rotate_bytes=rotate)
        self.layout = Layout(columns)
        self.format = fmt
        self.clock = clock
        self.file = None

    def open(self, append=False) -> None:
        self.file = ZeekFile(self.target, self.lines, self.clock, append)

    def write(self, b: Batch) -> int:
        """Write the batch's lines; returns how many had a time clamped."""
        if not b.n:
            return 0
        data, clamped = lines(b, self.layout, self.format)
        if self.file is None:
            self.open()
        self.file.write([data])
        return clamped

    def size(self) -> int:
        return self.file.size if self.file is not None else 0

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Position(int):
    """Where the output's files end, for the collector's journal, which keeps one (path, size)
    per output: each log's size in 48 bits of one integer (conn.log's highest). Files only grow
    between the journal's begin and a restart, so `>` says whether any did; `-` says by how much.
    (A log rotated within the unfinished batch keeps what went into the rotated file, as the
    other file outputs do: then that part is written twice, never lost.)"""
    BITS = 48

    @classmethod
    def pack(cls, sizes):
        v = 0
        for s in sizes:
            v = (v << cls.BITS) | min(s, (1 << cls.BITS) - 1)
        return cls(v)

    @classmethod
    def unpack(cls, v: int, n: int) -> list:
        mask = (1 << cls.BITS) - 1
        return [(v >> (cls.BITS * (n - 1 - i))) & mask for i in range(n)]

    def __sub__(self, other):
        n = len(LOGS)
        return sum(max(0, a - b) for a, b in zip(self.unpack(self, n), self.unpack(int(other), n)))


FORMATS = ("tsv", "json")


def parse_zeek_target(target: str):
    """`DIR[?format=tsv|json][&rotate=..][&rotate_every=..][&keep=..]` -> (DIR, format, the file
    options: a target string of DIR/conn.log); ValueError (one line) if bad."""
    folder, sep, query = target.partition("?")
    fmt, rest = None, []
    for part in query.split("&") if sep else []:
        key, _, value = part.partition("=")
        if key != "format":
            rest.append(part)
        elif fmt is not None:
            raise ValueError(f"{target!r}: option 'format' given twice")
        elif value not in FORMATS:
            raise ValueError(f"{target!r}: format={value}: expected tsv or json")
        else:
            fmt = value
    if not folder:
        raise ValueError(f"{target!r}: no directory")
    if folder == "-":
        raise ValueError(f"{target!r}: zeek writes several logs: give a directory, not standard output")
    files = _file_target(folder, "conn", "&".join(rest))
    parse_target(files)
    return folder, fmt or "tsv", files


def _file_target(folder, path, options) -> str:
    return os.path.join(folder, f"{path}.log") + ("?" + options if options else "")


class ZeekLogs(LineOutput):
    """`--output zeek:DIR`: see the module's docstring and docs/outputs.md. A line output
    (it appends on a collector's restart and its journal cuts it back), of several files."""
    kind = "zeek"

    def __init__(self, target: str, clock=time.time, append: bool = False):
        self.target = target
        self.folder, self.format, files = parse_zeek_target(target)
        files = parse_target(files)
        os.makedirs(self.folder, mode=0o750, exist_ok=True)
        self.logs = {path: Log(path, columns, self.folder, files, self.format, clock) for path, columns in LOGS}
        self.written = 0
        self.issues = {"records_unwritable": 0, "times_clamped": 0}    # as the other outputs count them
        try:
            for log in self.logs.values():
                if os.path.exists(log.target.path):     # ours from an earlier run: continued or replaced now
                    log.open(append)
        except OSError:
            self.close()
            raise

    @staticmethod
    def check(target: str) -> None:
        folder, _, files = parse_zeek_target(target)
        options = files.partition("?")[2]
        if os.path.exists(folder):
            if not os.path.isdir(folder):
                raise ValueError(f"{folder}: not a directory")
            for path, _ in LOGS:
                check_target(_file_target(folder, path, options))
        else:
            parent = os.path.dirname(os.path.abspath(folder))
            if not os.path.isdir(parent):
                raise ValueError(f"{folder}: no such directory {parent}")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"{folder}: cannot be created: directory {parent} not writable")

    def write(self, records) -> None:
        if not records:
            return
        b = Batch(records)
        final = b["final"]
        if all(final):
            finals, interims = b, None
        else:
            finals = b.subset([i for i, f in enumerate(final) if f])
            interims = b.subset([i for i, f in enumerate(final) if not f])
        clamped = self.logs["conn"].write(finals)
        if interims is not None:
            clamped += self.logs["open_conn"].write(interims)
        if clamped:
            if not self.issues["times_clamped"]:
                print(f"pipeline: warning: output {self.kind}:{self.target}: a record's time is outside what "
                      "readers of Zeek logs hold (years 1677-2262): written as the nearest one; counted in "
                      "times_clamped, further ones are not logged", file=sys.stderr, flush=True)
            self.issues["times_clamped"] += clamped
        if finals.n:
            for path, keys in ROWS_OF.items():
                rows = finals.rows_with(keys)
                if rows:
                    self.logs[path].write(finals.subset(rows))
        self.written += b.n

    # -- the journal's hooks (collector/journal.py)

    def tell(self):
        return self.folder, Position.pack([log.size() for log in self.logs.values()])

    def truncate(self, position) -> None:
        """Cut each file back to where it ended at the journal's begin; a file that did not
        exist then is removed (the batch written again makes it anew, header first)."""
        for log, size in zip(self.logs.values(), Position.unpack(int(position), len(self.logs))):
            if log.file is None or log.file.size <= size:
                continue
            if size == 0:
                log.file.discard()
                log.file = None
            else:
                log.file.truncate(size)

    def close(self) -> None:
        """Close every file (each gets its #close); the first error is raised after all are tried."""
        error = None
        for log in self.logs.values():
            try:
                log.close()
            except OSError as e:
                error = error or e
        if error is not None:
            raise error


OUTPUT = ZeekLogs     # for the registry in collector/outputs/__init__.py
