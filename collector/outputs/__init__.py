"""Output registry: `--output KIND:TARGET` names one of these.

Every kind has `check(target)` (raises ValueError with one line, before
anything starts), `write(records)`, `close()`, a `written` count and `issues`
(what it clamped or could not write, limits.py); see docs/outputs.md. The
line outputs (jsonl, ecs, csv) can also append to what an earlier collector
wrote, and be cut back by the collector's journal.
"""
import importlib

from .files import LineOutput

# kind -> (module, class); a module is imported only when its kind is used (start-up time)
KINDS = {"jsonl": ("jsonl", "JsonLines"), "ecs": ("ecs", "EcsLines"), "csv": ("csv", "CsvFile"),
         "ipfix": ("ipfix", "IpfixExporter"), "syslog": ("syslog", "SyslogSender"),
         "kafka": ("kafka", "KafkaProducer")}


def output_class(kind: str):
    module, name = KINDS[kind]
    return getattr(importlib.import_module(f".{module}", __name__), name)


class OutputError(Exception):
    pass


def parse(spec: str):
    """Validate an --output spec; returns (kind, target) or raises OutputError (one line)."""
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise OutputError(f"--output {spec!r}: expected KIND:TARGET, e.g. jsonl:sessions.jsonl")
    if kind not in KINDS:
        raise OutputError(f"--output {spec!r}: unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    try:
        output_class(kind).check(target)
    except ValueError as e:
        raise OutputError(f"--output {spec!r}: {e}") from None
    return kind, target


def make(spec: str, append: bool = False):
    kind, target = parse(spec)
    cls = output_class(kind)
    try:
        if append and issubclass(cls, LineOutput):
            return cls(target, append=True)
        return cls(target)
    except (OSError, ValueError) as e:
        raise OutputError(f"--output {spec!r}: {getattr(e, 'strerror', None) or e}") from None
