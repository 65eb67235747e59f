"""JSON lines: one session record per line, the native format (`jsonl:PATH`, `jsonl:-`).

`PATH?rotate=100MB&rotate_every=1h&keep=N` rotates the file; files are 0640,
written a batch of whole lines at a time and fsynced on close (files.py).

orjson serialises. A dict per record (or an orjson call per record, each
allocating its own buffer) costs more than the whole rest of the collector,
so a batch is written without either: orjson serialises the values of a
slice of records as one flat list, the list is cut at its commas into one
JSON text per value, and the field names are put back between them (one
join). A value that itself holds a comma (a string with one, a QinQ VLAN
list) would shift the cut: the count of pieces says so, and that slice is
cut a column at a time instead, a column holding such a value a value at a
time. Plugin and classification fields (the dict after the values) of a
slice are serialised together, a list of dicts cut between them, and go
before their line's closing brace; a dict that as_dict would not simply
append (a key that is not a string or is a field's name) sends its record
the plain way (a dict). The bytes are the same either way
(tests/test_jsonl_batch.py).
"""
from functools import reduce
from operator import iadd, itemgetter

import orjson

from pipeline.record import NAMES, as_dict

from .files import LineOutput, open_private  # noqa: F401 (open_private: re-exported)

__all__ = ["JsonLines", "OUTPUT", "as_json", "as_line", "as_lines", "open_private"]   # open_private: moved to files.py, kept here

_NEWLINE = orjson.OPT_APPEND_NEWLINE
_WIDTH = len(NAMES)
_STRIDE = _WIDTH + 1                # in a flat list: a record's values, then a place for its plugin fields
_NAMESET = frozenset(NAMES)
_PLUGINS = itemgetter(_WIDTH)
_NONE = {}                          # "no plugin fields", in a dump (never changed)
_SLICE = 256         # records per orjson call: small enough that the pieces stay in the caches
_HOLES = [None] * _SLICE
# what goes before each value, and before the plugin fields (nothing); the end of the line before the next
_KEYS = [b"{" + orjson.dumps(NAMES[0]) + b":"] + [b"," + orjson.dumps(n) + b":" for n in NAMES[1:]] + [b""]
_ENDS = [b"}\n" + _KEYS[0]] + _KEYS[1:]


def _frame(n: int) -> list:
    """n lines' field names, with a place (None) for each value and each record's plugin fields between them."""
    out = [None] * (2 * _STRIDE * n + 1)
    out[0::2] = _ENDS * n + [b"}\n"]
    out[0] = _KEYS[0]
    return out


_FRAME = _frame(_SLICE)


def as_json(r) -> bytes:
    return orjson.dumps(as_dict(r), default=str)


def as_line(r) -> bytes:
    return orjson.dumps(as_dict(r), default=str, option=_NEWLINE)


class _Members(dict):
    """The JSON text inside a plugin dict's braces -> what it adds after its line's last
    value (b',"app_guess":true'), or None where as_dict would not simply append its
    fields (a key naming a record field: as_dict keeps the field). The same few come
    back again and again."""

    def __missing__(self, inside: bytes):
        if len(self) >= 4096:
            self.clear()
        if not inside:
            b = b""
        elif _NAMESET.isdisjoint(orjson.loads(b"{" + inside + b"}")):
            b = b"," + inside
        else:
            b = None
        self[inside] = b
        return b


_MEMBERS = _Members()


def as_lines(records) -> list:
    """The JSON lines of a batch of wire records, exactly as as_line writes them one by one,
    in a few blocks of whole lines (bytes)."""
    blocks = []
    for i in range(0, len(records), _SLICE):
        blocks += _slice(records[i:i + _SLICE])
    return blocks


def _slice(records) -> list:
    widths = set(map(len, records))
    if widths == {_STRIDE}:
        plugins = _plugins(list(map(_PLUGINS, records)))
        if plugins is not None:
            return [_block(reduce(iadd, records, []), plugins)]
    elif widths == {_WIDTH}:
        return [_block(_flat(records), [b""] * len(records))]
    elif widths == {_WIDTH, _STRIDE}:
        plugins = _plugins([r[_WIDTH] if len(r) > _WIDTH else None for r in records])
        if plugins is not None:
            return [_block(_flat(records), plugins)]
    return _one_by_one(records)


def _flat(records) -> list:
    """The records' values one after another, each record's followed by its plugin fields or a place for them."""
    flat = []
    for r in records:
        flat += r
        if len(r) == _WIDTH:
            flat.append(None)
    return flat


def _plugins(column):
    """What each record's plugin fields (its element after the values, None if it has
    none) add to its line, as bytes; None when one is not plainly a dict of new fields."""
    if set(map(type, column)) != {dict}:
        column = [p or _NONE for p in column]   # as_dict ignores what is not a dict
        if set(map(type, column)) != {dict}:
            return None
    try:
        text = orjson.dumps(column, default=str)
    except TypeError:                   # a key that is not a string: as_dict makes it one
        return None
    inside = text[2:-2].split(b"},{")
    if len(inside) != len(column):      # "},{" inside a value
        return None
    plugins = list(map(_MEMBERS.__getitem__, inside))
    return None if None in plugins else plugins


def _one_by_one(records) -> list:
    """Records _slice cannot take together (another width, an odd plugin dict, ...):
    each that _block can take, and the others as as_line writes them."""
    out = []
    for r in records:
        plugins = None
        if len(r) == _WIDTH:
            plugins = [b""]
        elif len(r) == _STRIDE:
            plugins = _plugins([r[_WIDTH]])
        out.append(as_line(r) if plugins is None else _block(_flat([r]), plugins))
    return out


def _block(flat, plugins) -> bytes:
    """The lines of records from their values, flat (see _flat), and what their plugin fields add."""
    n = len(plugins)
    flat[_WIDTH::_STRIDE] = _HOLES if n == _SLICE else [None] * n   # the plugin fields' own JSON is in plugins
    pieces = orjson.dumps(flat, default=str)[1:-1].split(b",")
    if len(pieces) != _STRIDE * n:      # a comma inside a value: each comma there adds a piece
        pieces = _by_column(flat, n)
    pieces[_WIDTH::_STRIDE] = plugins
    out = _FRAME.copy() if n == _SLICE else _frame(n)
    out[1::2] = pieces
    return b"".join(out)


def _by_column(flat, n: int) -> list:
    """_block's pieces a column at a time; a column whose values hold commas a value at a time."""
    pieces = [None] * (_STRIDE * n)
    for f in range(_WIDTH):
        column = flat[f::_STRIDE]
        texts = orjson.dumps(column, default=str)[1:-1].split(b",")
        if len(texts) != n:
            texts = [orjson.dumps(v, default=str) for v in column]
        pieces[f::_STRIDE] = texts
    return pieces


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
