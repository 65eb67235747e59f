"""Where records end up, whoever collects them: enrich, merge, aggregate, write every output.

Used by the run's own collector process and by the standalone `pipeline
collector` alike, so both write the same thing. Records come in as workers
send them (the worker fields, then maybe a dict of plugin fields); the
collector's own fields are appended first (enrich.py), so the merge, the
aggregates and every output see full records. Aggregate records go to the
outputs that can carry them (those with `write_aggregates`); the others get
sessions only (see docs/outputs.md).

An output that cannot deliver (a disk full, a TCP receiver gone) raises
OSError and ends the run in one line. Anything else one raises is about the
records, not the output: it never stops the others or the process. Each
output clamps or leaves out and counts what it cannot write
(outputs/limits.py); should an exception still come through, the batch is
counted as unwritable for that output and the others go on.
"""
from . import outputs
from .outputs import limits
from .aggregate import Aggregator
from .enrich import Enricher
from .merge import Merger


class Sink:
    def __init__(self, specs, aggregate_interval: float = 60.0, append: bool = False, enricher: Enricher = None):
        """`enricher`: the collector fields' source (--local-nets, --geoip-db, --asn-db);
        None: event ids only, the rest null. The Sink closes it."""
        self.outs = []
        self.enricher = enricher if enricher is not None else Enricher()
        try:
            for spec in specs:
                self.outs.append(outputs.make(spec, append))
        except outputs.OutputError:
            self.close_quietly()
            raise
        self.merger = Merger()
        self.agg = Aggregator(aggregate_interval) if aggregate_interval else None

    def write(self, records) -> None:
        """Records as workers send them (lists: the collector's fields are put into them,
        in place; other sequences, and a list given twice, are copied first). Raises
        OSError naming the output that failed."""
        if set(map(type, records)) - {list} or len(set(map(id, records))) != len(records):
            records = [list(r) for r in records]
        self.enricher.apply(records)
        self.merger.add(records)
        for o in self.outs:
            _guard(o, o.write, records)
        if self.agg is not None:
            self._aggregates(self.agg.add(records))

    def _aggregates(self, aggs) -> None:
        if aggs:
            for o in self.outs:
                w = getattr(o, "write_aggregates", None)
                if w is not None:
                    _guard(o, w, aggs)

    def flush(self) -> None:
        """Hand everything written so far to the OS (the journal's commit point)."""
        for o in self.outs:
            f = getattr(o, "flush", None)
            if f is not None:
                _guard(o, f)

    def close(self) -> None:
        if self.agg is not None:
            self._aggregates(self.agg.flush())
        self.enricher.close()
        for o in self.outs:
            _guard(o, o.close)

    def close_quietly(self) -> None:
        self.enricher.close()
        for o in self.outs:
            try:
                o.close()
            except Exception:  # already failing: the first error is the one reported
                pass

    def stats(self) -> dict:
        return {"records": self.merger.records, "final_records": self.merger.final_records,
                "frames_in_records": self.merger.frames,
                "aggregates": self.agg.emitted if self.agg is not None else 0,
                "outputs": {f"{o.kind}:{o.target}": o.written for o in self.outs},
                "output_issues": {f"{o.kind}:{o.target}": dict(getattr(o, "issues", {})) for o in self.outs}}


def _guard(o, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        raise OSError(f"output {o.kind}:{o.target}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - about the records: never fatal (see above)
        if not hasattr(o, "issues"):
            o.issues = limits.counters()
        limits.unwritable(o, e, len(args[0]) if args else 0)
