"""Output registry: `--output KIND:TARGET` names one of these.

Every kind has `check(target)` (raises ValueError with one line, before
anything starts), `write(records)`, `close()`, a `written` count and `issues`
(what it clamped or could not write, limits.py); see docs/outputs.md. A kind
with a receiver to reach has `probe(target)` (OSError with one line): `pipeline
start` calls it before reading any input. The line outputs (jsonl, ecs, csv)
can also append to what an earlier collector wrote, and be cut back by the
collector's journal. FORMS says each kind's form in --help and `pipeline
config --defaults`; a kind missing there is shown as KIND:TARGET.
"""
import importlib

from .files import LineOutput

# kind -> (module, class); a module is imported only when its kind is used (start-up time)
KINDS = {"jsonl": ("jsonl", "JsonLines"), "ecs": ("ecs", "EcsLines"), "csv": ("csv", "CsvFile"),
         "ipfix": ("ipfix", "IpfixExporter"), "syslog": ("syslog", "SyslogSender"),
         "kafka": ("kafka", "KafkaProducer"), "zeek": ("zeek", "ZeekLogs")}


# kind -> its form and what it writes, one line each (--help, `pipeline config --defaults`)
FORMS = {"jsonl": "jsonl:PATH|- (JSON lines, the native records)",
         "ecs": "ecs:PATH|- (Elastic Common Schema lines)",
         "csv": "csv:PATH|- (a header row, one session per row)",
         "ipfix": "ipfix:udp|tcp://HOST[:PORT] (RFC 7011 biflows)",
         "syslog": "syslog:udp|tcp://HOST:PORT[?format=json|cef] (RFC 5424)",
         "kafka": "kafka://BROKER:PORT[,BROKER:PORT...]/TOPIC (a message per record)",
         "zeek": "zeek:DIR[?format=json] (Zeek's conn.log, open_conn.log, dns.log, ssl.log, http.log)"}


def forms() -> str:
    """Every kind of the registry with its form, for help texts."""
    return "; ".join(FORMS.get(kind, f"{kind}:TARGET") for kind in KINDS)


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


def probe(spec: str) -> None:
    """parse, then whether the output's receiver is there (TCP syslog and IPFIX, Kafka's
    brokers; UDP cannot tell): OutputError (one line) if not."""
    kind, target = parse(spec)
    check = getattr(output_class(kind), "probe", None)
    if check is not None:
        try:
            check(target)
        except (OSError, ValueError) as e:
            raise OutputError(f"--output {spec!r}: {getattr(e, 'strerror', None) or e}") from None


def make(spec: str, append: bool = False):
    kind, target = parse(spec)
    cls = output_class(kind)
    try:
        if append and issubclass(cls, LineOutput):
            return cls(target, append=True)
        return cls(target)
    except (OSError, ValueError) as e:
        raise OutputError(f"--output {spec!r}: {getattr(e, 'strerror', None) or e}") from None
