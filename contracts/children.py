"""What every process of a run shares: its title, its signals, its lifeline, its statistics file."""
import gc
import json
import os
import pwd
import resource
import signal
import sys


def title(name: str) -> None:
    try:
        import setproctitle
        setproctitle.setproctitle(name)
    except Exception:  # a missing title is cosmetic, never fatal
        pass


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def tune_heap(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Keep freed large buffers in the heap. glibc gives a freed block above its mmap
    threshold (which moves, from 128 KiB) straight back to the kernel and trims the
    heap's top beyond 128 KiB, so each chunk's numpy temporaries and ZeroMQ messages
    (megabytes each) came back as fresh zeroed pages, page faults and system time
    for nothing (docs/benchmarks.md, "Heap policy"). Set once before the
    children are forked (they inherit it); each heap arena keeps at most
    `trim_threshold` free at its top. A user's own malloc settings (MALLOC_*_ or
    GLIBC_TUNABLES in the environment) win: nothing is changed then. Returns whether
    both settings took (False where the C library is not glibc or has no ctypes)."""
    if any(k in os.environ for k in _MALLOC_ENV) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    took_mmap = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1   # each independently: one may be refused
    took_trim = mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    return took_mmap and took_trim


def ignore_stop_signals() -> int:
    """Children end when the supervisor says so (end of stream), not on a terminal's
    Ctrl-C or a service manager's SIGTERM to the whole group: the supervisor turns
    those into an orderly end so every open session is still written. Returns the
    parent's pid, to notice if the supervisor itself dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return os.getppid()


SAID_WHY = 3   # a child's exit status after its one-line error: the supervisor ends the run, restarts nothing


def fail(msg: str) -> None:
    """A child that cannot go on (an output it cannot write, --user it cannot take, a
    broken install): one line on stderr, then exit status SAID_WHY."""
    print(f"pipeline: error: {msg}", file=sys.stderr, flush=True)
    os._exit(SAID_WHY)


def become_user(cfg: dict) -> None:
    """--user: a child gives up root too (it needs no privilege to do its work)."""
    if cfg.get("user"):
        try:
            drop_privileges(cfg["user"])
        except OSError as e:
            fail(str(e))


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


def private_file(path: str, mode: str = "w"):
    """Open a state file for writing that only this user can read (0600), whatever the umask
    or the mode of a file left there before: the spool and the journal hold records and
    where they went (addresses of the monitored network)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


RECONNECT_MS = 5    # how soon a socket of the run tries again to reach a peer that has not bound yet


def connect_local(sock, addr: str) -> None:
    """Connect to an endpoint another process of this run binds (ipc, one host). That
    process binds only after its fork and its imports, so the first attempt often
    finds nothing there yet, and ZeroMQ tries again after its reconnect interval:
    100 ms by default. The front-end's first batches waited that long in the pipe
    while the workers sat idle (the first batch reached a worker ~100 ms after it
    was sent, a twentieth of a bench run). Trying again every RECONNECT_MS costs
    one failed connect() a time, on one host."""
    import zmq
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    sock.connect(addr)


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
    connect_local(control, cfg["control_addr"])
    return parent, ctx, pull, control


def cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used so far, its threads included (ZeroMQ's
    I/O thread): each process's share in --stats-json `cpu`, for CPU per frame from one run."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return round(r.ru_utime + r.ru_stime, 3)


class CollectPacer:
    """Cyclic garbage collection by hand: automatic collection off, a pass every `every`
    messages (chunks, in the capture loops). The cores keep their state in long-lived
    objects that make no reference cycles (a session, its counters, its TCP state,
    its inspector): Python's automatic collector walks the growing session table
    again and again to find nothing (docs/benchmarks.md, "Garbage collection by
    hand"). Each pass looks only at what
    was made since the pass before (the survivors are frozen after it), so it costs
    what was allocated, not what is alive; every `full`-th pass unfreezes and looks
    at everything, so a cycle through old objects (a plugin's) is freed too."""

    def __init__(self, every: int = 100, full: int = 50):
        gc.freeze()                 # what exists at start (the imported modules)
        gc.disable()
        self.every = every
        self.full = full
        self.count = 0
        self.passes = 0

    def close(self) -> None:
        """Automatic collection back on (a process that goes on after its loop)."""
        gc.unfreeze()
        gc.enable()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tick(self) -> None:
        self.count += 1
        if self.count >= self.every:
            self.count = 0
            self.passes += 1
            if self.passes % self.full == 0:
                gc.unfreeze()
            gc.collect()
            gc.freeze()


def unreadable_for(user: str, paths) -> str:
    """The first of `paths` that `user` cannot open, as 'PATH (why)', or '' when it can open
    them all (or the change of user itself is refused: that is said where it happens). A
    forked child becomes the user and tries, so every folder on the way counts as it will
    for the run: a process that dropped to a user who cannot read the code fails at its
    next import (numpy imports parts of itself on first use), mid-run or at its end."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        said = b""
        try:
            drop_privileges(user)
            for path in paths:
                try:
                    os.close(os.open(path, os.O_RDONLY))
                except OSError as e:
                    said = f"{path} ({e.strerror})".encode()
                    break
        except OSError:
            pass
        finally:
            os.write(w, said)
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        said = fh.read()
    os.waitpid(pid, 0)
    return said.decode(errors="replace")


def loaded_files(also=()) -> list:
    """The files of every module loaded so far, and the origins of `also` (modules only the
    children import): what a process of the run reads, by package and folder."""
    import importlib.util
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    for name in also:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        files.add(spec.origin if spec else None)
    return sorted(f for f in files if f and os.path.isfile(f))


def drop_privileges(user: str) -> None:
    """Become `user` (its uid and primary gid, no supplementary groups, no capabilities),
    e.g. after the capture sockets are open; they stay usable. OSError in one line if the
    user is unknown or the change is refused."""
    try:
        pw = pwd.getpwnam(user)
    except (KeyError, TypeError, ValueError):
        raise OSError(f"cannot drop privileges: no such user {user!r}") from None
    try:
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as e:
        raise OSError(f"cannot drop privileges to {user}: {e.strerror or e}") from None
    if pw.pw_uid != 0:
        try:
            os.setuid(0)
        except OSError:
            return
        raise OSError(f"cannot drop privileges to {user}: root could be regained")
