"""CSV (`csv:PATH`, `csv:-`): session records for spreadsheets and tools that take tables.

The header row is the record's field names (contracts.record.NAMES), then the
application fields of APP_COLUMNS (the classifiers' names, e.g. `tls.sni`,
`http.host`: docs/classification.md), then one session record per row, in
that order. A table needs fixed columns, so of the record's extension fields
(the optional dict after the native values) only those are written, empty
where a record has none: use jsonl or ecs for the others. Cells: null is
empty, booleans are true/false, the VLAN list is its ids joined with "."
(outermost first), a map (a location: `{"lat":58.4167,"lon":15.6167}`) as
the JSON outputs write it, numbers as Python writes them (floats round-trip
exactly). Rows end with "\\n"; any cell holding a comma, quote or line break
is quoted (the csv module quotes a lone carriage return only when it is in
the row terminator: such rows are written again by a writer whose is).
Same file handling and rotation options as JSON lines (files.py); every
rotated file starts with the header row.
"""
import csv
import io
import time

from contracts.record import NAMES

from . import limits
from .files import LineOutput
from .jsonl import ENCODER

N = len(NAMES)
# the extension fields CSV has a column for, after the record's own (add, never rename)
APP_COLUMNS = ("tls.sni", "tls.ja3", "tls.ja4", "quic.sni", "dns.query", "dns.qtype", "dns.rcode",
               "http.method", "http.host", "http.uri", "http.user_agent", "http.status")
_NO_APP = [""] * len(APP_COLUMNS)
_APP_SET = frozenset(APP_COLUMNS)


def _cell(v):
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (list, tuple, dict)):
        if type(v) is dict:             # a location ({"lat", "lon"}), a plugin's map: as the JSON outputs write it
            return ENCODER.encode(v).decode()
        return ".".join(str(x) for x in v)
    return v


class _Rows(list):
    """What csv.writer writes to: it writes each row with one write() call."""
    write = list.append


def _header() -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(NAMES + APP_COLUMNS)
    return buf.getvalue().encode()


def cells(r) -> list:
    """A wire record's row: its fields, then its application fields."""
    row = [_cell(v) for v in r[:N]]
    if len(r) > N and isinstance(r[N], dict) and not _APP_SET.isdisjoint(r[N]):
        return row + list(map(_cell, map(r[N].get, APP_COLUMNS)))
    return row + _NO_APP


class CsvFile(LineOutput):
    kind = "csv"

    header = _header()

    def __init__(self, target: str, clock=time.time, append: bool = False):
        super().__init__(target, clock, append)
        self.rows = _Rows()
        self.writer = csv.writer(self.rows, lineterminator="\n")
        self.cr_writer = csv.writer(self.rows, lineterminator="\r\n")

    def write(self, records) -> None:
        if not records:
            return
        rows, writerow = self.rows, self.writer.writerow
        rows.clear()
        try:
            table = list(map(cells, records))
        except Exception:  # noqa: BLE001 - a record csv cannot write (limits.py): one at a time
            table = limits.each(self, records, cells, cells)
        for row in table:
            writerow(row)
        n = len(table)
        if len(rows) == n and "\r" in "".join(rows):     # rare: one pass over the batch's text says so
            self._quote_carriage_returns(table)
        if len(rows) == n:
            self.file.write([row.encode() for row in rows])
        else:                             # a writer that split rows: keep the batch whole
            self.file.write(["".join(rows).encode()])
        rows.clear()
        self.written += n

    def _quote_carriage_returns(self, table) -> None:
        """The rows holding a carriage return, written again with it quoted."""
        rows = self.rows
        for i in range(len(table)):
            if "\r" in rows[i]:
                self.cr_writer.writerow(table[i])           # appended: taken off at once
                rows[i] = rows.pop()[:-2] + "\n"


OUTPUT = CsvFile     # for the registry in collector/outputs/__init__.py
