"""JSON lines: one session record per line, the native format (`jsonl:PATH`, `jsonl:-`).

`PATH?rotate=100MB&rotate_every=1h&keep=N` rotates the file; files are 0640,
written a batch of whole lines at a time and fsynced on close (files.py).

orjson serialises. A dict per record (or an orjson call per record, each
allocating its own buffer) costs more than the whole rest of the collector,
so a batch is written without either: orjson serialises the values of a
slice of records as one flat list, the list is cut at its commas into one
JSON text per value, and the field names are put back between them. A value
that itself holds a comma (a string with one, a QinQ VLAN list, plugin
fields' own lists) would shift the cut: the count of pieces says so, and such
records go through the plain way (a dict each). Plugin and classification
fields (the dict after the values) are serialised by themselves and put
before the line's closing brace. The bytes are the same either way.
"""
from functools import reduce
from operator import iadd, itemgetter

import orjson

from pipeline.record import NAMES, as_dict

from .files import LineOutput, open_private  # noqa: F401 (open_private: re-exported)

__all__ = ["JsonLines", "OUTPUT", "as_json", "as_line", "as_lines", "open_private"]   # open_private: moved to files.py, kept here

_NEWLINE = orjson.OPT_APPEND_NEWLINE
_WIDTH = len(NAMES)
_PLAIN, _EXTENDED = {_WIDTH}, {_WIDTH, _WIDTH + 1}
_NAMESET = frozenset(NAMES)
_FIELDS = itemgetter(slice(0, _WIDTH))
_SEEN = {}           # one-field plugin dicts already serialised: (name, type, value) -> bytes
_KEEPABLE = frozenset((str, bool, int))
_SLICE = 64          # records serialised per orjson call: small enough that the buffers are reused
# what goes before each value: its field name, and the end of the previous line before the first
_KEYS = tuple((b"}\n{" if i == 0 else b",") + orjson.dumps(n) + b":" for i, n in enumerate(NAMES))


def as_json(r) -> bytes:
    return orjson.dumps(as_dict(r), default=str)


def as_line(r) -> bytes:
    return orjson.dumps(as_dict(r), default=str, option=_NEWLINE)


def _frame(n: int) -> list:
    """The field names of n lines, with a place (None) for each value between them."""
    out = [None] * (2 * _WIDTH * n)
    out[0::2] = _KEYS * n
    out[0] = b"{" + _KEYS[0][3:]
    out.append(b"}\n")
    return out


_FRAME = _frame(_SLICE)


def _join(records):
    """The lines of records of _WIDTH values each, plus at most a dict of plugin fields
    (its keys strings and none a record field's name), as one bytes; None if a value
    holds a comma or a record is otherwise."""
    n = len(records)
    widths = set(map(len, records))
    if widths == _PLAIN:
        exts = None
        flat = reduce(iadd, records, [])
    elif widths <= _EXTENDED:
        exts = [_extension(r) for r in records]
        if None in exts:
            return None
        flat = reduce(iadd, map(_FIELDS, records), [])
    else:
        return None
    values = orjson.dumps(flat, default=str)[1:-1].split(b",")
    if len(values) != _WIDTH * n:       # a comma inside a value: each comma there adds a piece
        return None
    out = _FRAME.copy() if n == _SLICE else _frame(n)
    out[1:-1:2] = values
    if exts:
        step = 2 * _WIDTH
        for i, e in enumerate(exts):
            if e:                       # the plugin fields go just before the line's closing brace
                j = step * (i + 1) if i + 1 < n else -1
                out[j] = e + out[j]
    return b"".join(out)


def _extension(r):
    """b',"name":value,...' of a record's plugin fields (b'' for none), None when as_dict
    would not simply append them (a key that is not a string or is a field's name).
    The same few small dicts come back again and again (a port guess's
    {"app_guess": true}): their bytes are remembered."""
    if len(r) == _WIDTH:
        return b""
    e = r[_WIDTH]
    if e.__class__ is not dict:
        if not isinstance(e, dict):
            return b""                  # as_dict ignores it too
    if not e:
        return b""
    key = None
    if len(e) == 1:
        (k, v), = e.items()
        if v.__class__ in _KEEPABLE:    # (a float's -0.0 equals 0.0: never remembered)
            key = (k, v.__class__, v)
            b = _SEEN.get(key)
            if b is not None:
                return b
    if not e.keys().isdisjoint(_NAMESET):
        return None
    try:
        b = b"," + orjson.dumps(e, default=str)[1:-1]
    except TypeError:                   # a key that is not a string
        return None
    if key is not None:
        if len(_SEEN) >= 4096:
            _SEEN.clear()
        _SEEN[key] = b
    return b


def as_lines(records) -> list:
    """The JSON lines of a batch of wire records, exactly as as_line writes them one by one,
    in a few blocks of whole lines (bytes)."""
    blocks = []
    for i in range(0, len(records), _SLICE):
        part = records[i:i + _SLICE]
        block = _join(part)
        if block is None:
            blocks += _slowly(part)
        else:
            blocks.append(block)
    return blocks


def _slowly(records) -> list:
    """Record by record: those _join cannot take the plain way (a dict each)."""
    out = []
    for r in records:
        block = _join((r,))
        out.append(as_line(r) if block is None else block)
    return out


class JsonLines(LineOutput):
    kind = "jsonl"

    def write(self, records) -> None:
        if not records:
            return
        self.file.write_blocks(as_lines(records))
        self.written += len(records)

    def write_aggregates(self, aggregates) -> None:
        """Aggregate records (dicts, `"type": "aggregate"`) go in the same stream."""
        self.file.write([orjson.dumps(a, option=_NEWLINE) for a in aggregates])



OUTPUT = JsonLines     # for the registry in collector/outputs/__init__.py
