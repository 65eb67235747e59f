"""What an output does with a record it cannot write as it is: it never fails, it counts.

A record that passed the checks (collector/checks.py: any finite time, any
64-bit counter, any address Python reads) may still hold what a format cannot
say: a capture whose timestamps say year 150,000 (a pcapng read with the wrong
byte order) has no date in ECS, RFC 5424 or CEF. One such record must never
stop an output, let alone the collector: a standalone collector would stop
for every sensor, and the sensor's spool would send the same batch again when
it is restarted, a crash loop. So:

* a time a format cannot say is written as the nearest one it can
  (`bounded`), the record is counted in the output's `times_clamped`, and
  the native value stays where the format has room for it (ECS `pipeline.*`);
* a record an output still cannot encode is left out of that output only and
  counted in its `records_unwritable`; the other outputs and the rest of the
  batch go on.

Each is warned about once per output, in one line; the counts are in
--stats-json (`output_issues`) and the metrics. The normal case pays nothing:
an output encodes a batch as before, inside one try; only a batch that raised
is encoded again one record at a time (`each`), through the output's careful
encoder.
"""
import sys
from datetime import datetime, timedelta

# what a date can say (RFC 3339 / ISO 8601 with four-digit years, Python's datetime):
# years 1 to 9999, as epoch microseconds
DATE_MIN_US = -62135596800 * 10 ** 6          # 0001-01-01T00:00:00Z
DATE_MAX_US = 253402300800 * 10 ** 6 - 1      # 9999-12-31T23:59:59.999999Z
U64 = (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


_EPOCH = datetime(1970, 1, 1)


def iso(us: int) -> str:
    """Epoch microseconds as RFC 3339 UTC with microseconds and a four-digit year, e.g.
    2024-05-01T12:00:00.250000Z; OverflowError outside years 1-9999."""
    return (_EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds") + "Z"


def bounded(t, scale: int, lo: int, hi: int) -> tuple:
    """round(t * scale) (t: epoch seconds, an int or a finite float) within [lo, hi]:
    (value, whether t had to be clamped to get there). Never raises on a number."""
    if lo / scale - 1 < t < hi / scale + 1:      # t * scale stays finite
        v = round(t * scale)
        if lo <= v <= hi:
            return v, False
        return (lo if v < lo else hi), True
    return (lo if t < 0 else hi), True


def counters(*names) -> dict:
    """An output's issue counters (see docs/outputs.md), every one at 0."""
    return dict.fromkeys(("records_unwritable",) + names, 0)


def warn(out, msg: str) -> None:
    print(f"pipeline: warning: output {out.kind}:{out.target}: {msg}", file=sys.stderr, flush=True)


def count(out, issue: str, n: int = 1, why: str = "") -> None:
    """Add n to an issue counter of `out`; the first time, one line says what and why."""
    if not out.issues[issue]:
        warn(out, f"{why or issue}; counted in {issue}, further ones are not logged")
    out.issues[issue] += n


def clamped(out, what: str) -> None:
    """A record had a time the output's format cannot say: written with the nearest one."""
    count(out, "times_clamped", 1, f"a record's {what} is outside what this format can say: "
                                   f"written as the nearest time it can")


def unwritable(out, error: BaseException, n: int = 1) -> None:
    """n records this output cannot write at all: left out of it, counted."""
    count(out, "records_unwritable", n, f"a record it cannot write ({type(error).__name__}: {error}) "
                                        f"is left out of this output")


def each(out, records, encode, careful) -> list:
    """encode(r) of each record, for a batch whose fast encoding raised: a record
    encode fails on goes through careful(r) (which clamps and counts), one that
    fails that too is left out (unwritable). Returns what was encoded, in order."""
    done = []
    for r in records:
        try:
            done.append(encode(r))
        except Exception:  # noqa: BLE001 - any failure on one record: try the careful way
            try:
                done.append(careful(r))
            except Exception as e:  # noqa: BLE001 - never fatal: one record, counted
                unwritable(out, e)
    return done
