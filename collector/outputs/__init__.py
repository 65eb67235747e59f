"""Output registry: `--output KIND:TARGET` names one of these."""
from .jsonl import JsonLines

KINDS = {"jsonl": JsonLines}


class OutputError(Exception):
    pass


def parse(spec: str):
    """Validate an --output spec; returns (kind, target) or raises OutputError (one line)."""
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise OutputError(f"--output {spec!r}: expected KIND:TARGET, e.g. jsonl:sessions.jsonl")
    if kind not in KINDS:
        raise OutputError(f"--output {spec!r}: unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return kind, target


def make(spec: str):
    kind, target = parse(spec)
    try:
        return KINDS[kind](target)
    except OSError as e:
        raise OutputError(f"--output {spec!r}: {e.strerror or e}") from None
