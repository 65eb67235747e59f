"""JSON lines: one session record per line, the native format (`jsonl:PATH`, `jsonl:-`).

`PATH?rotate=100MB&rotate_every=1h&keep=N` rotates the file; files are 0640,
written a batch of whole lines at a time and fsynced on close (files.py).

msgspec serialises. A dict per record costs more than the whole rest of the
collector (building it, and then every field name escaped and copied again by
the encoder), and so does any pass over the text after it is written (cutting
it into lines to put fields in: this VM moves about 1 GB/s). So each record
becomes a msgspec Struct, built in C from the record's values and, after
them, the values of its plugin and classification fields (the dict after the
values): its type (`_Types`, one per set of plugin keys) has the field names
encoded once, when it is made. One `encode_lines` call writes a slice. A
record that as_dict would not simply extend (a plugin key that is not a
string or is a field's name, another width) goes the plain way, as_line: a
dict. The bytes are the same either way (tests/test_jsonl_batch.py).
"""
from itertools import chain, starmap
from operator import add, itemgetter

import msgspec

from contracts.record import NAMES, as_dict

from . import limits
from .files import LineOutput, open_private  # noqa: F401 (open_private: re-exported)

__all__ = ["ENCODER", "JsonLines", "OUTPUT", "as_json", "as_line", "as_lines", "open_private"]   # open_private: files.py's, a public name here too

_WIDTH = len(NAMES)
_STRIDE = _WIDTH + 1                # a record's values, then its plugin fields
_NAMESET = frozenset(NAMES)
_VALUES = itemgetter(slice(0, _WIDTH))
_PLUGINS = itemgetter(_WIDTH)
_NONE = {}                          # "no plugin fields" (never changed)
_SLICE = 4096                       # records per encode_lines call
# How every session output writes JSON (ECS, syslog and Kafka too), so a value reads the
# same in each: bytes as base64, a value JSON has no type for (a numpy integer, ...) as
# its str(), floats as their shortest repr (1e16 without the "+").
ENCODER = msgspec.json.Encoder(enc_hook=str)
_ERRORS = (TypeError, ValueError, msgspec.EncodeError)


def as_json(r) -> bytes:
    """One record as a JSON object (what the syslog and Kafka outputs send)."""
    return ENCODER.encode(as_dict(r))


def as_line(r) -> bytes:
    return as_json(r) + b"\n"


class _Types(dict):
    """The keys of a record's plugin fields (a tuple) -> the Struct type of such a
    record: the record's fields, then these (a Struct type encodes its field names
    once, when it is made). None where as_dict would not simply append them: a key
    that is not a string or names a record field. msgspec refuses names with a quote,
    a backslash or a control character; those go the plain way too. The same few
    come back again and again."""

    def __missing__(self, keys: tuple):
        if len(self) >= 1024:
            self.clear()
        t = self[keys] = _struct(keys)
        return t


class _Constants(dict):
    """The same for batches whose records all have the same one plugin field (the port
    guesses' `{"app_guess": True}`, on most sessions): (key, value) pairs -> a Struct
    type whose plugin fields have those values as defaults, made from the values alone."""

    def __missing__(self, items: tuple):
        if len(self) >= 1024:
            self.clear()
        t = self[items] = _struct(tuple(k for k, _ in items), tuple(v for _, v in items))
        return t


def _struct(keys: tuple, defaults: tuple = None):
    """A record's Struct type with these plugin fields after its fields (None: see _Types)."""
    if all(type(k) is str for k in keys) and _NAMESET.isdisjoint(keys):
        try:
            return msgspec.defstruct("_Record", _FIELDS + [
                (f"plugin{i}", object, msgspec.field(name=k) if defaults is None else
                 msgspec.field(name=k, default=defaults[i])) for i, k in enumerate(keys)], gc=False)
        except (TypeError, ValueError):
            pass
    return None


_FIELDS = [(name, object) for name in NAMES]
_TYPES = _Types()
_CONSTANTS = _Constants()
_EXACT = frozenset((str, bool, type(None)))     # values that are equal only where they write the same JSON
_Record = _TYPES[()]


def as_lines(records) -> list:
    """The JSON lines of a batch of wire records, exactly as as_line writes them one by one,
    in a few blocks of whole lines (bytes)."""
    blocks = []
    for i in range(0, len(records), _SLICE):
        part = records[i:i + _SLICE]
        block = _block(part)
        if block is None:
            block = b"".join([_block([r]) or as_line(r) for r in part])
        blocks.append(block)
    return blocks


def _block(records):
    """The lines of records whose plugin fields (if any) simply extend them; None otherwise."""
    widths = set(map(len, records))
    if widths == {_WIDTH}:
        structs = list(starmap(_Record, map(_VALUES, records)))
    elif widths <= {_WIDTH, _STRIDE}:
        structs = _with_plugins(records, widths)
        if structs is None:
            return None
    else:
        return None
    try:
        return ENCODER.encode_lines(structs)
    except _ERRORS:                     # as_line says which record and why
        return None


def _with_plugins(records, widths):
    """The Structs of records of which some have plugin fields; None if one's do not simply extend it."""
    if set(map(type, records)) != {list}:
        records = list(map(list, records))          # tuples (embedders'): their values joined to lists below
    if widths == {_STRIDE}:
        column = list(map(_PLUGINS, records))
        head = column[0]
        if (set(map(type, column)) == {dict} and len(head) == 1
                and _EXACT.issuperset(map(type, chain.from_iterable(map(dict.values, column))))
                and column.count(head) == len(column)):
            # plain dicts, all equal (True == 1 == 1.0: hence _EXACT; and no value's == can
            # raise), one key each (equal dicts of more keys may hold them in another order)
            t = _CONSTANTS[tuple(head.items())]
            if t is None:
                return None
            return list(starmap(t, map(_VALUES, records)))
    else:
        column = [r[_WIDTH] if len(r) > _WIDTH else None for r in records]
    if set(map(type, column)) != {dict}:
        if any(isinstance(p, dict) and type(p) is not dict for p in column):
            return None                             # a dict subclass (OrderedDict, ...): as_dict's way
        column = [p if type(p) is dict else _NONE for p in column]     # as_dict ignores what is not a dict
    kinds = list(map(tuple, column))
    types = list(map(_TYPES.__getitem__, kinds))
    if None in types:
        return None
    values = map(add, map(_VALUES, records), map(list, map(dict.values, column)))
    if len(set(kinds)) == 1:
        return list(starmap(types[0], values))
    return list(map(_make, types, values))


def _make(t, values):
    return t(*values)


class JsonLines(LineOutput):
    kind = "jsonl"

    def write(self, records) -> None:
        if not records:
            return
        try:
            blocks, n = as_lines(records), len(records)
        except Exception:  # noqa: BLE001 - a value JSON cannot carry (an embedder's plugin field)
            blocks = limits.each(self, records, as_line, as_line)
            n = len(blocks)
        self.file.write_blocks(blocks)
        self.written += n

    def write_aggregates(self, aggregates) -> None:
        """Aggregate records (dicts, `"type": "aggregate"`) go in the same stream."""
        self.file.write([ENCODER.encode(a) + b"\n" for a in aggregates])


OUTPUT = JsonLines     # for the registry in collector/outputs/__init__.py
