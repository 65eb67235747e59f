"""What every process of a run shares: its title, its signals, its lifeline, its statistics file."""
import gc
import json
import os
import signal
import sys


def title(name: str) -> None:
    try:
        import setproctitle
        setproctitle.setproctitle(name)
    except Exception:  # a missing title is cosmetic, never fatal
        pass


def ignore_stop_signals() -> int:
    """Children end when the supervisor says so (end of stream), not on a terminal's
    Ctrl-C or a service manager's SIGTERM to the whole group: the supervisor turns
    those into an orderly end so every open session is still written. Returns the
    parent's pid, to notice if the supervisor itself dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return os.getppid()


def become_user(cfg: dict) -> None:
    """--user: a child gives up root too (it needs no privilege to do its work)."""
    if cfg.get("user"):
        from .frontend.live import drop_privileges
        try:
            drop_privileges(cfg["user"])
        except OSError as e:
            print(f"pipeline: error: {e}", file=sys.stderr, flush=True)
            os._exit(3)


def wait_message(sock, parent: int):
    """Receive a multipart message, giving up if the supervisor has gone."""
    while not sock.poll(1000):
        if os.getppid() != parent:
            raise SystemExit(1)
    return sock.recv_multipart(copy=False)


def write_stats(path: str, stats: dict) -> bool:
    """--stats-json: the run's figures, one JSON object; False (and one line said) if it
    cannot be written."""
    try:
        with open(path, "w") as fh:
            json.dump(stats, fh, indent=1)
            fh.write("\n")
    except OSError as e:
        print(f"pipeline: error: --stats-json {path}: {e.strerror or e}", file=sys.stderr, flush=True)
        return False
    return True


def collector_sockets(cfg: dict, name: str, hwm: int):
    """What the collector and the uplink (in its place) start with: their title, their
    signals, the socket the workers push records to, and the line back to the supervisor.
    Returns (parent pid, context, records socket, control socket)."""
    import zmq
    title(name)
    parent = ignore_stop_signals()
    become_user(cfg)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, hwm)
    pull.bind(cfg["collector_addr"])
    control = ctx.socket(zmq.PUSH)
    control.setsockopt(zmq.LINGER, -1)
    control.connect(cfg["control_addr"])
    return parent, ctx, pull, control


class CollectPacer:
    """Cyclic garbage collection by hand: off, then one full pass every `every` messages.
    The cores keep their state in long-lived objects that make no reference cycles
    (a session, its counters, its TCP state, its inspector): Python's automatic
    collector walks the growing session table again and again to find nothing,
    about a sixth of a worker's CPU time on the bench trace. A pass now and then
    still frees any cycle a plugin or a parser makes. What exists at start (the
    imported modules) is frozen out of every pass."""

    def __init__(self, every: int = 100):
        gc.freeze()
        gc.disable()
        self.every = every
        self.count = 0

    def tick(self) -> None:
        self.count += 1
        if self.count >= self.every:
            self.count = 0
            gc.collect()
