"""ECS events held to Elastic's own field list: tests/data/ecs_fields_<version>.json.

That file is made from ECS's generated/ecs/ecs_flat.yml at a release tag
(tests/data/make_ecs_fields.py says how; its header names the tag and commit).
`problems(event)` lists every field of an event (outside the `pipeline`
namespace, ours) that ECS does not have, or whose value is not of the
field's type as Elasticsearch maps it: keyword -> a string, long -> an
integer a long holds, ip -> an address (no zone), date -> an RFC 3339 time,
geo_point -> {"lat", "lon"} in range, boolean, object -> an object of fields
ECS lists under it; a field ECS normalizes to an array is an array of such
values, any other is not an array; and a value ECS constrains (pattern,
allowed or expected values) is one of them.
"""
import ipaddress
import json
import math
import re
from pathlib import Path

FILE = Path(__file__).parent / "data" / "ecs_fields_9.4.0.json"
_DOC = json.loads(FILE.read_text(encoding="utf-8"))
VERSION = _DOC["ecs_version"]
FIELDS = _DOC["fields"]
PREFIXES = {name.rsplit(".", i)[0] for name in FIELDS for i in range(1, name.count(".") + 1)}
DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
TEXT_TYPES = {"keyword", "wildcard", "constant_keyword", "match_only_text", "text"}
INT_BITS = {"long": 64, "integer": 32, "short": 16, "byte": 8}


def _integer(v, bits) -> bool:
    return type(v) is int and -(1 << (bits - 1)) <= v < 1 << (bits - 1)


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _ip(v) -> bool:
    """An address as Elasticsearch's ip type takes it: text, no zone."""
    try:
        return "%" not in v and ipaddress.ip_address(v) is not None
    except (TypeError, ValueError):
        return False


def _scalar(kind: str, v) -> bool:
    if kind in TEXT_TYPES:
        return isinstance(v, str)
    if kind in INT_BITS:
        return _integer(v, INT_BITS[kind])
    if kind in ("float", "double", "scaled_float", "half_float"):
        return _number(v)
    if kind == "boolean":
        return type(v) is bool
    if kind == "ip":
        return _ip(v)
    if kind == "date":
        return isinstance(v, str) and DATE.fullmatch(v) is not None
    if kind == "geo_point":
        return (isinstance(v, dict) and v.keys() == {"lat", "lon"} and _number(v["lat"]) and _number(v["lon"])
                and -90 <= v["lat"] <= 90 and -180 <= v["lon"] <= 180)
    if kind == "flattened":
        return isinstance(v, dict)
    return False


def problems(event: dict, skip=("pipeline",)) -> list:
    """What is not ECS in `event` (nested objects, as the ECS output writes them)."""
    out = []
    for key, value in event.items():
        if key not in skip:
            _walk(key, value, out)
    return out


def fields_of(event: dict, skip=("pipeline",)) -> set:
    """The dotted names of the fields an event sets (objects of ECS's own, such as
    dns.answers, by their name and their members')."""
    names = set()

    def walk(path, value):
        names.add(path)
        if isinstance(value, dict) and (path in PREFIXES or FIELDS.get(path, {}).get("type") == "object"):
            for k, v in value.items():
                walk(f"{path}.{k}", v)
        elif isinstance(value, list) and FIELDS.get(path, {}).get("type") == "object":
            for item in value:
                for k, v in (item.items() if isinstance(item, dict) else ()):
                    walk(f"{path}.{k}", v)
    for key, value in event.items():
        if key not in skip:
            walk(key, value)
    return names


def _walk(path: str, value, out: list) -> None:
    spec = FIELDS.get(path)
    if spec is None:
        if path in PREFIXES and isinstance(value, dict):
            for k, v in value.items():
                _walk(f"{path}.{k}", v, out)
        else:
            out.append(f"{path}: not an ECS {VERSION} field")
        return
    kind = spec["type"]
    if kind == "object":
        items = value if spec["array"] and isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, dict):
                out.append(f"{path}: {item!r} is not an object")
                continue
            for k, v in item.items():
                _walk(f"{path}.{k}", v, out)
        return
    if spec["array"]:
        if not isinstance(value, list):
            out.append(f"{path}: ECS makes it an array, not {value!r}")
            return
        values = value
    elif isinstance(value, list):
        out.append(f"{path}: not an array in ECS: {value!r}")
        return
    else:
        values = [value]
    for v in values:
        if not _scalar(kind, v):
            out.append(f"{path}: {v!r} is not a {kind}")
        elif "pattern" in spec and not re.fullmatch(spec["pattern"], v):
            out.append(f"{path}: {v!r} does not match {spec['pattern']}")
        elif v not in spec.get("allowed_values", [v]) or v not in spec.get("expected_values", [v]):
            out.append(f"{path}: {v!r} is not one of ECS's values")
