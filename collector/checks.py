"""Checks of record batches from the network, derived from the record schema.

A standalone collector takes records from sensors it does not control: msgpack
is unpacked with limits on every size, and each record is checked field by
field against its declaration in `contracts.record` (kind, nullability,
range) before anything is written, so no output ever sees a value it cannot
write. A bad batch raises ValueError (one line): the server counts and refuses
it, never fatal. A field added to the schema is checked here with no change.
Sensors send the worker fields only (`WIRE_FIELDS`); the collector's own
fields are appended after these checks (collector/enrich.py).
"""
import ipaddress
import math

import msgpack

from contracts.link import MAX_MESSAGE
from contracts.record import INDEX, N_WIRE, WIRE_FIELDS

MAX_RECORDS = 65536             # records in one batch
_N = N_WIRE
_PLAIN_DEPTH = 8
_I_SENSOR = INDEX["sensor"]


def _plain(v, depth: int = _PLAIN_DEPTH) -> bool:
    """JSON's values: what every output can write (maps keyed by strings, bounded nesting)."""
    if v is None or isinstance(v, (str, bool, int)):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if depth <= 0:
        return False
    if isinstance(v, list):
        return all(_plain(x, depth - 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth - 1) for k, x in v.items())
    return False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_ip(v) -> bool:
    """An address text Python reads (a zone allowed)."""
    if not isinstance(v, str):
        return False
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _is_geo(v) -> bool:
    return (isinstance(v, dict) and v.keys() == {"lat", "lon"} and _is_number(v["lat"]) and _is_number(v["lon"])
            and -90 <= v["lat"] <= 90 and -180 <= v["lon"] <= 180)


def _test(kind):
    """The check of one kind of value (not null), from its declaration."""
    name = kind.name
    if name == "text":
        return lambda v: isinstance(v, str)
    if name == "bool":
        return lambda v: isinstance(v, bool)
    if name == "enum":
        values, types = kind.values, frozenset(map(type, kind.values))
        return lambda v: type(v) in types and v in values
    if name == "int":
        lo, hi = kind.lo, kind.hi
        return lambda v: _is_int(v) and lo <= v <= hi
    if name == "time":
        return _is_number
    if name == "seconds":
        return lambda v: _is_number(v) and v >= 0
    if name == "ip":
        return is_ip
    if name == "vlans":
        return lambda v: isinstance(v, list) and len(v) <= 8 and all(_is_int(x) and 0 <= x <= 4095 for x in v)
    if name == "ids":
        return lambda v: isinstance(v, list) and len(v) <= 4096 and all(_is_int(x) and 0 <= x < 1 << 64 for x in v)
    if name == "plain":
        return _plain
    if name == "geo":
        return _is_geo
    raise ValueError(f"unknown field kind {name!r}")


# (index, name, may be null, test) for every field a sensor sends, in wire order
_CHECKS = [(i, f.name, f.null, _test(f.kind)) for i, f in enumerate(WIRE_FIELDS)]


def check_record(r, sensor=None) -> None:
    """ValueError (one line) unless `r` is a wire record as the schema declares it
    (and, given `sensor`, that sensor's)."""
    if not isinstance(r, list) or not (_N <= len(r) <= _N + 1):
        raise ValueError("record of the wrong shape")
    for i, name, null, test in _CHECKS:
        v = r[i]
        if v is None:
            if not null:
                raise ValueError(f"record field {name} is null")
        elif not test(v):
            raise ValueError(f"record field {name} of the wrong type or out of range")
    if sensor is not None and r[_I_SENSOR] != sensor:
        raise ValueError("record of a sensor other than the batch's")
    if len(r) > _N and not (isinstance(r[_N], dict) and _plain(r[_N])):
        raise ValueError("record extension is not a map of plain values with string keys")


def unpack_records(raw: bytes, sensor: str = None) -> list:
    """A batch of wire records from the network, checked against the schema (and, given
    `sensor`, all of that sensor); ValueError if anything is off."""
    if len(raw) > MAX_MESSAGE:
        raise ValueError("batch too large")
    recs = msgpack.unpackb(raw, max_array_len=max(MAX_RECORDS, _N + 1),
                           max_map_len=1024, max_str_len=1 << 16, max_bin_len=0, max_ext_len=0)
    if not isinstance(recs, list) or len(recs) > MAX_RECORDS:
        raise ValueError("batch is not a list of records")
    for r in recs:
        check_record(r, sensor)
    return recs
