"""Kafka: each session record as one message, for pipelines that stream records
into a data lake or SIEM through Kafka.

`kafka://BROKER[,BROKER...]/TOPIC` (so the target is `//b1:9092,b2:9092/sessions`),
options `?timeout=SECONDS` (how long close() waits for acknowledgements, default
30), `?retries=N` (how often a record whose delivery failed is produced
again, default 2) and `?key=session|event` (the message key, below).

Why this shape: the key is `SENSOR/SESSION_ID` (`key=session`, the default), so
all records of one session go to one partition and a consumer sees its interim
and final reports in order; `key=event` makes it the record's `event_id`
instead, the same for a record however often it is sent (delivery is at least
once across a collector restart): a log-compacted topic, or a sink that takes
the key as the document id (Kafka Connect's Elasticsearch sink), keeps one copy.
A session's reports then spread over the partitions. Either way the value is
the record as compact JSON, the native format, `event_id` in it. The producer is
idempotent with acks=all, so librdkafka's own retries never duplicate a record
and a record counts as written only once every in-sync replica has it. The
murmur2 partitioner picks the same partition as the Java client for a key.
Nothing is dropped: a full local queue makes write() wait, a failed delivery
is produced again (bounded), and close() fails naming how many records were
never acknowledged.
"""
import re
import time
from urllib.parse import parse_qsl

from contracts.record import INDEX

from . import limits
from .jsonl import as_json   # the record as the JSON lines write it

OPTIONS = ("timeout", "retries", "key")
KEYS = ("session", "event")
PROBE_S = 5.0               # how long the brokers have to answer at start
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")


def parse_target(target: str) -> dict:
    """`//b1:9092,b2:9092/topic?opts` -> settings; ValueError (one line) if anything is wrong."""
    addr, _, query = target.partition("?")
    hosts, slash, topic = addr.removeprefix("//").rpartition("/")
    if not slash or not hosts or not topic:
        raise ValueError(f"kafka target {target!r}: expected kafka://BROKER:PORT[,BROKER:PORT...]/TOPIC")
    brokers = hosts.split(",")
    for b in brokers:
        host, colon, port = b.rpartition(":")
        if not colon or not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"kafka target {target!r}: broker {b!r} is not HOST:PORT with a port 1-65535")
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(f"kafka target {target!r}: topic {topic!r} is not a legal Kafka topic name "
                         f"(1-249 of A-Z a-z 0-9 . _ -)")
    opts = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k not in OPTIONS:
            raise ValueError(f"kafka target {target!r}: unknown option {k!r} (known: {', '.join(OPTIONS)})")
        opts[k] = v
    try:
        timeout = float(opts.get("timeout", "30"))
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < 1e6:
        raise ValueError(f"kafka target {target!r}: timeout must be a positive number of seconds")
    retries = opts.get("retries", "2")
    if not retries.isdigit():
        raise ValueError(f"kafka target {target!r}: retries must be a whole number")
    key = opts.get("key", "session")
    if key not in KEYS:
        raise ValueError(f"kafka target {target!r}: key must be one of {', '.join(KEYS)}")
    return {"brokers": brokers, "topic": topic, "timeout": timeout, "retries": int(retries), "key": key}


_SENSOR, _SID, _EVENT_ID = INDEX["sensor"], INDEX["session_id"], INDEX["event_id"]


def message_key(r) -> bytes:
    """`key=session`: SENSOR/SESSION_ID."""
    return f"{r[_SENSOR]}/{r[_SID]}".encode()


def event_key(r) -> bytes:
    """`key=event`: the record's event_id."""
    return str(r[_EVENT_ID]).encode()


class KafkaProducer:
    kind = "kafka"

    @staticmethod
    def check(target: str) -> None:
        parse_target(target)
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            raise ValueError("the kafka output needs the confluent-kafka package "
                             "(pip install confluent-kafka)") from None

    @staticmethod
    def probe(target: str) -> None:
        """A broker answers (OSError if none does within the timeout, at most PROBE_S)."""
        p = KafkaProducer(target)
        try:
            p.close()
        finally:
            p.destroy()

    def destroy(self) -> None:
        """The client destroyed now, its threads joined (`pipeline start` probes, then forks;
        the client's error callback, a bound method, would keep it alive until a
        garbage collection)."""
        self.producer = None

    def __init__(self, target: str):
        try:   # imported here: only runs that use Kafka need the package
            from confluent_kafka import KafkaError, KafkaException, Producer
        except ImportError:
            raise OSError("the kafka output needs the confluent-kafka package "
                          "(pip install confluent-kafka)") from None
        self.target = target
        self.cfg = parse_target(target)
        self.key = event_key if self.cfg["key"] == "event" else message_key
        config = {
            "bootstrap.servers": ",".join(self.cfg["brokers"]),
            "client.id": "pipeline-collector",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "partitioner": "murmur2_random",
            "message.timeout.ms": 120000,
            "error_cb": self._client_error,
            "log_level": 2,      # no log lines: errors come through error_cb into close()'s one line
        }
        self.written = 0         # acknowledged by the brokers
        self.issues = limits.counters()
        self.accepted = 0        # handed to write()
        self.failed = 0          # given up after the retries
        self.retry = []          # (key, value, tries) whose delivery failed, to produce again
        self.last_error = None
        self.fatal = None
        self.purge_codes = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
        try:
            self.producer = Producer(config)
        except KafkaException as e:
            raise OSError(f"kafka producer: {e.args[0].str() if e.args else e}") from None
        wait = min(self.cfg["timeout"], PROBE_S)
        try:        # at start, as a TCP receiver is: not after a whole input has been read
            self.producer.list_topics(timeout=wait)
        except KafkaException as e:
            why = self.last_error or (e.args[0].str() if e.args else str(e))
            self.producer.purge()
            self.destroy()
            raise OSError(f"kafka {','.join(self.cfg['brokers'])}: no broker answers within {wait:g} s "
                          f"({why})") from None

    # --- callbacks (run inside poll/flush, on this thread)
    def _client_error(self, err) -> None:
        self.last_error = err.str()
        if err.fatal():
            self.fatal = err.str()

    def _delivered(self, err, msg, tries=0) -> None:
        if err is None:
            self.written += 1
            return
        purged = err.code() in self.purge_codes    # our own purge in close(): not the cause
        if not purged:
            self.last_error = err.str()
        if err.fatal() or purged or tries >= self.cfg["retries"]:
            self.failed += 1
        else:
            self.retry.append((msg.key(), msg.value(), tries + 1))

    # --- producing
    def _produce(self, key: bytes, value: bytes, tries: int) -> None:
        cb = self._delivered if tries == 0 else (lambda err, msg, t=tries: self._delivered(err, msg, t))
        while True:
            try:
                self.producer.produce(self.cfg["topic"], value=value, key=key, on_delivery=cb)
                return
            except BufferError:          # local queue full: serve delivery reports, then try again
                self.producer.poll(0.1)
                self._check_fatal()

    def _check_fatal(self) -> None:
        if self.fatal:
            raise OSError(f"kafka producer failed: {self.fatal} "
                          f"({self.accepted - self.written} records not acknowledged)")

    def _produce_retries(self) -> None:
        while self.retry:
            batch, self.retry = self.retry, []
            for key, value, tries in batch:
                self._produce(key, value, tries)

    def write(self, records) -> None:
        if not records:
            return
        self._check_fatal()
        for r in records:
            try:
                key, value = self.key(r), as_json(r)
            except Exception as e:  # noqa: BLE001 - a value JSON cannot carry (limits.py): never fatal
                limits.unwritable(self, e)
                continue
            self.accepted += 1
            self._produce(key, value, 0)
        self.producer.poll(0)
        self._produce_retries()

    def _settle(self) -> int:
        """Serve delivery reports and produce failed records again until every record
        is acknowledged or given up, or the timeout passes; returns how many are not
        acknowledged."""
        deadline = time.monotonic() + self.cfg["timeout"]
        while not self.fatal:
            self._produce_retries()
            left = deadline - time.monotonic()
            if left <= 0 or (self.producer.flush(min(left, 1.0)) == 0 and not self.retry):
                break
        return self.accepted - self.written

    def _failure(self, missing: int) -> OSError:
        why = self.fatal or self.last_error or "no acknowledgement"
        return OSError(f"kafka {','.join(self.cfg['brokers'])}: {missing} of {self.accepted} records "
                       f"not acknowledged within {self.cfg['timeout']:g} s ({why})")

    def flush(self) -> None:
        """The standalone collector's commit point: everything written so far is
        acknowledged by the brokers, or OSError (the records stay queued)."""
        missing = self._settle()
        if missing:
            raise self._failure(missing)

    def close(self) -> None:
        missing = self._settle()
        if missing:
            self.producer.purge()        # nothing left in flight: the client shuts down promptly
            self.producer.flush(0)
            raise self._failure(missing)


OUTPUT = KafkaProducer     # for the registry in collector/outputs/__init__.py
