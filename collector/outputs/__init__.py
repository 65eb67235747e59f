"""Output registry: `--output KIND:TARGET` names one of these."""
import os

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
    if kind == "jsonl" and target != "-":
        folder = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(folder):
            raise OutputError(f"--output {spec!r}: no such directory {folder}")
        if os.path.isdir(target):
            raise OutputError(f"--output {spec!r}: {target} is a directory")
        if not os.access(folder, os.W_OK) or (os.path.exists(target) and not os.access(target, os.W_OK)):
            raise OutputError(f"--output {spec!r}: not writable")
    return kind, target


def make(spec: str):
    kind, target = parse(spec)
    try:
        return KINDS[kind](target)
    except OSError as e:
        raise OutputError(f"--output {spec!r}: {e.strerror or e}") from None
