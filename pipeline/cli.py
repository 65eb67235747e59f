"""The `pipeline` command line. Flag names are a public contract: add, never rename."""
import argparse
import os
import sys

# numpy's OpenBLAS starts a thread per core at import, which the pipeline never uses
# (no linear algebra): one thread, unless the user says otherwise. Before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from contracts.timeouts import Timeouts  # noqa: E402


def _positive_int(v):
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {v!r}")
    return n


def _number(v, what: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {what}: {v!r}") from None


def _seconds(v):
    x = _number(v, "number of seconds")
    if not (x >= 0) or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or more seconds: {v!r}")
    return x


def _timeout(v):
    x = _seconds(v)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {v!r}")
    return x


def _percent(v):
    x = _number(v, "percentage")
    if not 0 < x <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage above 0, at most 100: {v!r}")
    return x


def _period(v):
    x = _seconds(v)
    if 0 < x < 1:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or at least 1 second: {v!r}")
    return x


def _port(v):
    n = _positive_int(v)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {v!r}")
    return n


def _workers(v):
    if v == "auto":
        return "auto"              # resolved in _start, once --cpus is known
    return _positive_int(v)


def _capture_procs(v):
    if v == "auto":
        return "auto"              # resolved in _start with --workers (pipeline/sizing.py)
    n = _positive_int(v)
    if n > 16:
        raise argparse.ArgumentTypeError(f"at most 16 (session ids have room for 16 front-end processes): {v!r}")
    return n


def _cpus(v):
    """'2-9' or '0,2,4-6' -> [2, 3, ..., 9]."""
    out = []
    try:
        for part in v.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU list like 2-9 or 0,2,4-6: {v!r}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"not a CPU list like 2-9 or 0,2,4-6: {v!r}")
    return sorted(set(out))


SESSION_BUDGET = 2048     # bytes per open session assumed for the default table size (measured: ~0.9 KiB)


def default_max_sessions(workers: int) -> int:
    """Half the memory available now, at SESSION_BUDGET a session, split between the workers:
    a table never grows until the machine swaps."""
    import psutil
    return max(10000, psutil.virtual_memory().available // 2 // SESSION_BUDGET // workers)


class _Parser(argparse.ArgumentParser):
    """Bad flags get one line (and `--help` the full usage), never a usage dump. No
    abbreviations: `--worker 3` would be taken as `--workers 3` on the command line while
    the config file and PIPELINE_* variables refuse it, and a flag added later could change
    what an abbreviation in a unit file means."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def output_forms() -> str:
    """Every output kind of the registry with its form (collector/outputs: FORMS)."""
    from collector.outputs import forms
    return forms()


def parser() -> argparse.ArgumentParser:
    """One builder per subcommand, one per group of flags; each adds its flags in the order
    `--help` and `pipeline config --defaults` list them."""
    ap = _Parser(prog="pipeline", description="Bidirectional session records from network traffic.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _start_parser(sub)
    _collector_parser(sub)
    _status_parser(sub)
    _config_parser(sub)
    _keygen_parser(sub)
    return ap


def _start_parser(sub) -> None:
    st = sub.add_parser("start", help="read captures, write session records",
                        description="Decode captures into bidirectional session records (MMT session model).")
    _capture_flags(st)
    _output_flag(st)
    st.add_argument("--stats-json", metavar="PATH", help="write run statistics here at exit")
    _timeout_flags(st)
    st.add_argument("--sensor-id", metavar="NAME", help="sensor name in every record (default: host name)")
    st.add_argument("--plugin", action="append", metavar="MODULE:CLASS",
                    help="user plugin seeing sessions in the workers; repeatable")
    _table_flags(st)
    _decoding_flags(st)
    st.add_argument("--quiet", action="store_true", help="no summary on stderr")
    st.add_argument("--classify-packets", type=int, default=10, metavar="N",
                    help="application classification: inspect the first N payload packets of each session "
                         "and direction (default 10; 0: no classification)")
    st.add_argument("--aggregate-interval", type=_seconds, default=0.0, metavar="S",
                    help="aggregate records (type aggregate) every S seconds of traffic, 0 for none (default 0 "
                         "here, to keep the sensor's collector light; the standalone collector's default is 60)")
    _uplink_flags(st)
    _live_flags(st)
    _service_flags(st)


def _capture_flags(st) -> None:
    st.add_argument("--read", action="append", metavar="FILE", default=[],
                    help="pcap or pcapng file; repeat to read several, in order, as one stream")
    st.add_argument("--interface", action="append", metavar="IFACE", default=[],
                    help="capture live from this interface (AF_PACKET ring, needs CAP_NET_RAW); repeatable")
    st.add_argument("--workers", type=_workers, default=2, metavar="N",
                    help="worker processes, each owning one session table (default 2; 'auto': from the "
                         "cores, or --cpus, and the measured cost of each stage: docs/operations.md)")
    st.add_argument("--cpus", type=_cpus, metavar="LIST",
                    help="pin the processes to these CPUs (e.g. 2-9): capture processes first, then the "
                         "workers, then the collector, round robin")


def _output_flag(p) -> None:
    p.add_argument("--output", action="append", metavar="KIND:TARGET",
                   help=f"where records go (default jsonl:-); repeatable. Kinds: {output_forms()}. "
                        "File outputs take ?rotate=SIZE&rotate_every=INTERVAL&keep=N (docs/outputs.md)")


def _timeout_flags(st) -> None:
    st.add_argument("--idle-timeout", type=_seconds, metavar="S",
                    help="one idle timeout for every class (default: TCP 300, UDP 60, ICMP/other 60, DNS 15)")
    st.add_argument("--active-timeout", type=_period, default=300.0, metavar="S",
                    help="interim record of each open session every S seconds, 0 for none (default 300)")
    st.add_argument("--close-linger", type=_seconds, default=5.0, metavar="S",
                    help="a closed TCP session ends after S idle seconds (default 5)")
    st.add_argument("--no-close-expiry", action="store_true",
                    help="TCP FIN/RST do not end sessions (NFStream's semantics)")
    st.add_argument("--unanswered-timeout", type=_timeout, metavar="S",
                    help="a session without an answer (one way only, a TCP handshake never completed) ends "
                         "after S idle seconds, or its class's timeout if shorter (default 30; with "
                         "--idle-timeout, that timeout)")


def _table_flags(st) -> None:
    st.add_argument("--max-sessions", type=_positive_int, metavar="N",
                    help="per worker; beyond it the sessions without an answer are evicted first, then closing "
                         "ones, then the rest, the idlest first (end_reason evicted). Default: half the "
                         "available memory at 2 KiB a session, shared by the workers")
    st.add_argument("--emergency-mark", type=_percent, default=90.0, metavar="PCT",
                    help="a worker whose table is fuller than PCT%% of --max-sessions enters emergency mode: "
                         "unanswered sessions end after --emergency-timeout (default 90)")
    st.add_argument("--recovery-mark", type=_percent, default=70.0, metavar="PCT",
                    help="emergency mode ends when the table is under PCT%% of --max-sessions again (default 70)")
    st.add_argument("--emergency-timeout", type=_timeout, default=5.0, metavar="S",
                    help="the unanswered timeout in emergency mode (default 5)")


def _decoding_flags(st) -> None:
    st.add_argument("--hash-seed", type=int, default=0, metavar="N",
                    help="seed of the session-key hash (default 0)")
    st.add_argument("--vlan-key", action=argparse.BooleanOptionalAction, default=True,
                    help="802.1Q ids are part of the session key (default). --no-vlan-key: they are not, so a "
                         "tap whose two directions carry different VLAN ids gives one session per "
                         "conversation; records still list the ids seen")
    st.add_argument("--teredo-heuristic", action=argparse.BooleanOptionalAction, default=True,
                    help="recognise Teredo on any UDP port by its shape, as relays use ports of their own "
                         "(default). --no-teredo-heuristic: on port 3544 only")
    st.add_argument("--chunk-frames", type=_positive_int, default=65536, metavar="N",
                    help="frames per front-end chunk (default 65536; a file's first ones smaller)")


def _uplink_flags(st) -> None:
    """`start --collector`: records go to a remote collector."""
    st.add_argument("--collector", metavar="ADDR",
                    help="send records to a remote `pipeline collector` at tcp://HOST:PORT instead of "
                         "writing them here (--output is then the collector's business)")
    st.add_argument("--spool-dir", metavar="DIR",
                    help="with --collector: keep unacknowledged batches here beyond 64 MiB of memory")
    st.add_argument("--spool-mem-mb", type=_positive_int, default=64, metavar="MB",
                    help="with --collector: unacknowledged batches kept in memory before the spool (default 64)")
    st.add_argument("--spool-max-mb", type=_positive_int, default=1024, metavar="MB",
                    help="with --spool-dir: the spool's size limit; when full, reading waits (default 1024)")
    _curve_client_flags(st)


def _live_flags(st) -> None:
    lv = st.add_argument_group("live capture (--interface)")
    lv.add_argument("--ring-mb", type=_positive_int, default=64, metavar="MB",
                    help="ring buffer per interface and capture process (default 64)")
    lv.add_argument("--snaplen", type=_positive_int, default=65535, metavar="BYTES",
                    help="bytes kept of each frame (default 65535)")
    lv.add_argument("--no-promisc", action="store_true", help="do not put the interfaces in promiscuous mode")
    lv.add_argument("--capture-procs", type=_capture_procs, default=1, metavar="K",
                    help="front-end processes: live, sharing the interfaces (PACKET_FANOUT hash); on "
                         "--read files, decoding chunks in turn, the records unchanged (default 1; "
                         "'auto': as --workers auto; at most 16)")
    lv.add_argument("--filter", metavar="EXPR", help="BPF filter expression (tcpdump syntax), applied in the kernel")
    lv.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds (default: until a signal)")
    lv.add_argument("--user", metavar="NAME", help="drop to this user once the capture sockets are open")


def _collector_parser(sub) -> None:
    co = sub.add_parser("collector", help="receive records from sensors over the network, write them out",
                        description="Standalone collector: many sensors (`pipeline start --collector`) feed it.")
    co.add_argument("--listen", default="tcp://127.0.0.1:5555", metavar="ADDR",
                    help="tcp://HOST:PORT or ipc://PATH to listen on (default tcp://127.0.0.1:5555)")
    _output_flag(co)
    co.add_argument("--stats-json", metavar="PATH", help="write statistics here at exit")
    co.add_argument("--state-dir", metavar="DIR",
                    help="remember written batches here, so a restarted collector writes each record once")
    co.add_argument("--aggregate-interval", type=_seconds, default=60.0, metavar="S",
                    help="aggregate records every S seconds of traffic, 0 for none (default 60)")
    co.add_argument("--curve-server-cert", metavar="FILE.key_secret",
                    help="this collector's CurveZMQ certificate (from `pipeline keygen`)")
    co.add_argument("--curve-clients", metavar="DIR",
                    help="folder of the public certificates (*.key) of the sensors allowed in")
    co.add_argument("--quiet", action="store_true", help="no summary on stderr")
    _service_flags(co)


def _service_flags(p) -> None:
    """What `start` and `collector` share as long-running services: enrichment, metrics,
    the status socket, the configuration file."""
    _enrichment_flags(p)
    p.add_argument("--metrics-port", type=_port, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics while running")
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="address of the metrics server (default 127.0.0.1)")
    p.add_argument("--status-socket", metavar="PATH",
                   help="UNIX socket that `pipeline status` reads (default for live capture and the "
                        "collector: pipeline-sensor.sock or pipeline-collector.sock in $RUNTIME_DIRECTORY "
                        "(systemd's RuntimeDirectory=), else /run/pipeline where writable, else "
                        "$XDG_RUNTIME_DIR, else /tmp/pipeline-UID)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file of defaults for these flags (default: $PIPELINE_CONFIG); "
                        "flags > PIPELINE_* variables > file")


def _status_parser(sub) -> None:
    ss = sub.add_parser("status", help="live figures of a running instance",
                        description="Asks a running `pipeline start` (or collector) over its status socket "
                                    "(not the metrics port: that is for Prometheus).")
    ss.add_argument("--socket", metavar="PATH",
                    help="its --status-socket (default: the first pipeline-sensor.sock, or "
                         "pipeline-collector.sock, in $RUNTIME_DIRECTORY, /run/pipeline, $XDG_RUNTIME_DIR, "
                         "/tmp/pipeline-UID)")
    ss.add_argument("--json", action="store_true", help="print the raw JSON snapshot")
    ss.add_argument("--collector", action="store_true", help="ask the local standalone collector instead")


def _config_parser(sub) -> None:
    cf = sub.add_parser("config", help="print a commented default configuration file",
                        description="Prints every flag of `start` ([sensor]) and `collector` as a TOML key.")
    cf.add_argument("--defaults", action="store_true", help="print the default file (the only action for now)")


def _keygen_parser(sub) -> None:
    kg = sub.add_parser("keygen", help="make a CurveZMQ certificate pair",
                        description="Writes DIR/NAME.key (public) and DIR/NAME.key_secret (private, 0600).")
    kg.add_argument("dest", metavar="DIR/NAME")
    kg.add_argument("--force", action="store_true",
                    help="replace an existing pair (peers that trust the old public key are locked out)")


def _local_nets(v):
    from collector.enrich import EnrichError, parse_local_nets
    try:
        return parse_local_nets(v)
    except EnrichError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--local-nets: ")) from None


def _enrichment_flags(p) -> None:
    """The collector's enrichment (collector/enrich.py): on `start` (its own collector) and
    `collector` alike."""
    g = p.add_argument_group("enrichment (done by the collector that writes the records)")
    g.add_argument("--local-nets", type=_local_nets, action="append", metavar="CIDR,...",
                   help="the monitored site's networks (CIDRs, or Elastic's names: private, loopback, "
                        "link_local_unicast, ...), comma-separated or repeated: records get local_orig, "
                        "local_resp and direction (ECS network.direction: inbound, outbound, internal, external)")
    g.add_argument("--geoip-db", metavar="PATH",
                   help="MaxMind DB (GeoLite2/GeoIP2 City or Country .mmdb): client_/server_ country, city, "
                        "geo (ECS source/destination.geo.*); needs the maxminddb package")
    g.add_argument("--asn-db", metavar="PATH",
                   help="MaxMind DB of autonomous systems (GeoLite2 ASN .mmdb): client_/server_ asn, as_org "
                        "(ECS source/destination.as.*); needs the maxminddb package")


def _curve_client_flags(p) -> None:
    p.add_argument("--curve-client-cert", metavar="FILE.key_secret",
                   help="with --collector: this sensor's CurveZMQ certificate (from `pipeline keygen`)")
    p.add_argument("--curve-server-cert", metavar="FILE.key",
                   help="with --collector: the collector's public certificate")


def main(argv=None) -> int:
    from . import config
    ap = parser()
    try:
        args = config.load(ap, sys.argv[1:] if argv is None else argv, os.environ, config.SECTIONS)
    except config.ConfigError as e:
        print(f"pipeline: error: {e}", file=sys.stderr)
        return 2
    if args.command is None:
        ap.print_help(sys.stderr)
        return 2
    if args.command == "start":
        return _start(ap, args)
    if args.command == "collector":
        from collector.server import serve
        return serve(args)
    if args.command == "keygen":
        return _keygen(args)
    if args.command == "status":
        return _status(args)
    if args.command == "config":
        sys.stdout.write(config.defaults_for(ap))
        return 0
    return 2


def _status(args) -> int:
    import json
    from contracts.monitor import find_socket, query_status, status_table
    role = "collector" if args.collector else "sensor"
    path, looked = (args.socket, None) if args.socket else find_socket(role)
    if path is None:
        print(f"pipeline: error: no running {role} here: no pipeline-{role}.sock in {', '.join(looked)} "
              "(give --socket PATH: its --status-socket)", file=sys.stderr)
        return 1
    try:
        snap = query_status(path)
    except (OSError, ValueError) as e:
        print(f"pipeline: error: no running instance answers on {path}: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(snap, indent=1) + "\n" if args.json else status_table(snap))
    return 0


def _keygen(args) -> int:
    from contracts.link import LinkError, keygen
    try:
        pub, sec = keygen(args.dest, args.force)
    except (LinkError, OSError) as e:
        print(f"pipeline: error: {e}", file=sys.stderr)
        return 2
    print(f"{pub}\n{sec}")
    return 0


class _Refused(Exception):
    """A flag, or a mix of flags, that `start` refuses before any process starts: its one
    line, exit status 2."""


def _start(ap, args) -> int:
    from collector.outputs import OutputError
    from workers.plugins import PluginError
    try:
        _check_sources(args)
        _size(args)
        _check_table(args)
        _check_capture(args)
        _check_outputs(args)
        _check_uplink(args)
        _check_enrichment(args)
        _check_stats_json(args)
    except (_Refused, OutputError, PluginError) as e:
        print(f"pipeline: error: {e}", file=sys.stderr)
        return 2
    timeouts = Timeouts.make(args.idle_timeout, args.active_timeout, args.close_linger, not args.no_close_expiry,
                             args.unanswered_timeout, args.emergency_timeout)
    from .supervisor import start
    return start(args, timeouts)


def _check_sources(args) -> None:
    if args.interface and args.read:
        raise _Refused("give --read FILE or --interface IFACE, not both")
    if not args.read and not args.interface:
        raise _Refused("nothing to read: give --read FILE or --interface IFACE")
    if args.cpus:
        import psutil
        have = set(psutil.Process().cpu_affinity())
        if not set(args.cpus) <= have:
            raise _Refused(f"--cpus: no such CPU here: {sorted(set(args.cpus) - have)}")


def _size(args) -> None:
    """--workers auto, --capture-procs auto: resolved together, once --cpus is known."""
    if "auto" in (args.workers, args.capture_procs):
        from .sizing import choose, cores
        args.capture_procs, args.workers = choose(
            cores(args.cpus), live=bool(args.interface),
            K=None if args.capture_procs == "auto" else args.capture_procs,
            N=None if args.workers == "auto" else args.workers)


def _check_table(args) -> None:
    if not 0 <= args.classify_packets <= 255:
        raise _Refused(f"--classify-packets {args.classify_packets}: give 0 to 255")
    if args.max_sessions is None:
        args.max_sessions = default_max_sessions(args.workers)
    if args.recovery_mark >= args.emergency_mark:
        raise _Refused(f"--recovery-mark {args.recovery_mark:g} must be under --emergency-mark "
                       f"{args.emergency_mark:g}")


def _check_capture(args) -> None:
    """--filter compiled and --user known here, before a capture socket opens."""
    args.bpf = None
    if args.filter:
        from .frontend.bpf import compile_filter
        try:
            args.bpf = compile_filter(args.filter, snaplen=args.snaplen)
        except (ValueError, OSError) as e:
            raise _Refused(f"--filter {args.filter!r}: {e}") from None
    if args.user:
        import pwd
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            raise _Refused(f"--user {args.user!r}: no such user") from None


def _check_outputs(args) -> None:
    from collector.outputs import parse, probe
    from workers.plugins import PluginError, resolve
    for spec in args.output or []:
        parse(spec)
    for spec in args.output or []:
        if not args.collector:      # with --collector the outputs are the collector's
            probe(spec)
    for spec in args.plugin or []:
        cls = resolve(spec)
        try:
            cls()   # the workers will make one each: fail here, once, in one line
        except Exception as e:  # the user's class: any failure is theirs to read
            raise PluginError(f"--plugin {spec!r}: {cls.__name__}() failed: {e}") from None


def _check_uplink(args) -> None:
    if args.collector:
        from contracts.link import LinkError, check_address
        try:
            check_address(args.collector, "--collector")
            if bool(args.curve_client_cert) != bool(args.curve_server_cert):
                raise LinkError("CURVE needs both --curve-client-cert and --curve-server-cert")
        except LinkError as e:
            raise _Refused(str(e)) from None
    elif args.curve_client_cert or args.curve_server_cert or args.spool_dir:
        raise _Refused("--curve-client-cert, --curve-server-cert and --spool-dir go with --collector")


def _check_enrichment(args) -> None:
    from collector.enrich import EnrichError, Enricher, options
    args.enrich = options(args)
    if args.collector and (args.local_nets or args.geoip_db or args.asn_db):
        raise _Refused("--local-nets, --geoip-db and --asn-db are the business of the collector that writes "
                       "the records: give them to `pipeline collector`, not with --collector")
    if not args.collector:
        try:
            Enricher(**args.enrich).close()      # the databases open: said here, once, in one line
        except EnrichError as e:
            raise _Refused(str(e)) from None


def _check_stats_json(args) -> None:
    if args.stats_json:
        folder = os.path.dirname(os.path.abspath(args.stats_json))
        if os.path.isdir(args.stats_json):
            raise _Refused(f"--stats-json {args.stats_json!r}: is a directory")
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise _Refused(f"--stats-json {args.stats_json!r}: directory {folder} missing or not writable")


def run() -> None:
    """The console entry point: `main`, then the process ends without the interpreter's
    teardown. A run ends holding large buffers (the mapped captures, the front-end's
    chunks): freeing them object by object took about 0.1 s of every run, where the
    OS takes them back at once. Buffered output is flushed first; the children have
    been joined and every output file closed by then."""
    rc = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):       # a closed or broken stdout: the normal exit reports it
        sys.exit(rc)
    os._exit(rc or 0)


if __name__ == "__main__":
    run()
