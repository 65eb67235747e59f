"""The protocol registry: each protocol module declares itself here once.

Why a registry: the inspector knows nothing about any protocol. It asks the
registered matchers, in order, whether a payload is theirs, so adding a
protocol is one new module and one import line in `protocols`, never an edit
to the inspector.
"""
import numpy as np

from .families import family_of

TCP, UDP = 6, 17

# What a matcher answers about one payload.
NO = 0      # certainly not this protocol: stop asking it for this session
WEAK = 1    # consistent with it, not proof: keep looking, use it if nothing better comes
SURE = 2    # identified: stop matching, start collecting metadata (if the protocol parses any)

DEFAULT_SNAP = 512
MIN_DISPATCH = 8    # payloads at least this long are dispatched on their first byte (see `first`)


def _first_test(first):
    """A protocol's `first` declaration as a test(byte, from_client, transport), or None (any byte)."""
    if first is None or callable(first):
        return first
    allowed = frozenset(first.encode("latin-1") if isinstance(first, str) else first)
    return lambda b, from_client, transport: b in allowed


class Protocol:
    """One application protocol as the inspector sees it.

    match(payload, from_client, state) -> NO | WEAK | SURE | None (no opinion on
    this packet). parse(payload, from_client, state, meta) -> True when it has
    all the metadata it wants; it is called on the packet that made the match
    SURE and on the following ones. `state` is the Inspector: it has
    `transport`, `client_port`, `server_port`, `n_client` and `n_server` (the
    payloads fed so far in each direction, this one included) and `scratch` (a
    dict the protocol may use, keyed by its own names). `snap` is how many bytes of each
    later packet the parser wants (0 when it parses nothing).

    Two promises about `match` let the inspector skip calls that could only
    answer NO (they cost it nothing to keep, as NO has no side effects):
    `port_bound`: it answers NO whenever neither port of the session is one of
    `ports`; `first` (the bytes a payload may start with, or a test(byte,
    from_client, transport)): it answers NO to any payload of MIN_DISPATCH
    bytes or more whose first byte is not one of them.

    A third promise lets the worker skip the inspector altogether for a first
    payload that every candidate refuses: `refuse(heads)` (a `Heads`, in
    workers/classify/__init__.py) says, for many payloads at once (numpy),
    where match certainly answers NO to them as a session's first payload. It
    may say False where match would say NO; never True where it would not.
    """
    __slots__ = ("name", "family", "transports", "ports", "match", "parse", "path", "snap", "port_bound",
                 "first", "refuse", "bit")

    def __init__(self, name, transports, ports, match, parse=None, path=None, snap=DEFAULT_SNAP,
                 port_bound=False, first=None, refuse=None):
        self.name = name
        self.family = family_of(name)
        self.transports = frozenset(transports)
        self.ports = frozenset(ports)
        self.match = match
        self.parse = parse
        self.path = path or name
        self.snap = snap if parse is not None else 0
        self.port_bound = port_bound
        self.first = _first_test(first)
        self.refuse = refuse
        self.bit = 0            # with a refuse: its bit in the refusals' answers (1 << its index in REFUSERS)

    def __repr__(self):
        return f"Protocol({self.name!r})"


REGISTRY: list = []
REFUSERS: list = []     # the protocols with a `refuse`, in registration order
_BY_NAME: dict = {}


def register(name, transports, ports=(), match=None, parse=None, path=None, snap=DEFAULT_SNAP,
             port_bound=False, first=None, refuse=None):
    """Declare a protocol. Registration order is matching order: declare the
    narrower protocol (mDNS, NetBIOS name service) before the broader one (DNS).
    `port_bound`, `first` and `refuse`: see Protocol (promises about `match`)."""
    if name in _BY_NAME:
        raise ValueError(f"protocol {name!r} registered twice")
    if match is None:
        raise ValueError(f"protocol {name!r} has no match function")
    if port_bound and not ports:
        raise ValueError(f"protocol {name!r} is bound to its ports but has none")
    p = Protocol(name, transports, ports, match, parse, path, snap, port_bound, first, refuse)
    REGISTRY.append(p)
    if refuse is not None:
        p.bit = 1 << len(REFUSERS)
        REFUSERS.append(p)
    _BY_NAME[name] = p
    _clear()
    return p


def get(name):
    return _BY_NAME.get(name)


# Everything derived from REGISTRY, rebuilt after a registration.
_PORTS: dict = {}       # (transport, port) -> protocols using that well-known port, in registration order
_KNOWN: dict = {}       # transport -> frozenset of its well-known ports
_CLASSES: dict = {}     # (transport, server port, client port if well-known else None) -> PortClass
_TABLES: dict = {}      # (transport, candidates) -> (the candidates, their first-byte tables), shared
MAX_CLASSES = 4096


def _clear():
    _PORTS.clear()
    _KNOWN.clear()
    _CLASSES.clear()
    _TABLES.clear()
    idx = {}
    for p in REGISTRY:
        for t in p.transports:
            for port in p.ports:
                idx.setdefault((t, port), []).append(p)
    _PORTS.update((k, tuple(v)) for k, v in idx.items())
    known = {}
    for t, port in idx:
        known.setdefault(t, set()).add(port)
    _KNOWN.update((t, frozenset(v)) for t, v in known.items())


class PortClass:
    """What the inspector needs for all sessions of one (transport, server port,
    well-known client port) class, computed once: the candidate protocols in
    matching order, the well-known port's protocol (for a guess), and `first`,
    per direction (index 1: from the client) a 256-slot table, filled as
    needed, of the candidates that a payload starting with that byte may be;
    `needs`, alike, what `refusable` answers (slot 256: a payload too short to
    dispatch)."""
    __slots__ = ("transport", "cands", "by_port", "first", "needs")

    def __init__(self, transport, cands, by_port):
        self.transport = transport
        self.by_port = by_port
        shared = _TABLES.get((transport, cands))
        if shared is None:
            shared = _TABLES[(transport, cands)] = (cands, ([None] * 256, [None] * 256),
                                                     ([None] * 257, [None] * 257))
        self.cands, self.first, self.needs = shared     # one tuple object per distinct candidate list

    def dispatch(self, b, from_client):
        """The candidates a payload (of MIN_DISPATCH bytes or more) starting with b may be."""
        got = tuple(p for p in self.cands if p.first is None or p.first(b, from_client, self.transport))
        if len(got) == len(self.cands):
            got = self.cands        # nothing ruled out: the same tuple, so dispatching goes on
        self.first[1 if from_client else 0][b] = got
        return got

    def refusable(self, b, from_client) -> int:
        """The refusal bits that a first payload starting with b (None: shorter than
        MIN_DISPATCH) needs for every candidate it would be shown to refuse it; -1 when
        one of those candidates has no `refuse`; 0 when it would be shown to none."""
        slot = 256 if b is None else b
        table = self.needs[1 if from_client else 0]
        got = table[slot]
        if got is None:
            if b is None:
                tried = self.cands
            else:
                tried = self.first[1 if from_client else 0][b]
                if tried is None:
                    tried = self.dispatch(b, from_client)
            got = 0
            for p in tried:
                if p.refuse is None:
                    got = -1
                    break
                got |= p.bit
            table[slot] = got
        return got


def class_keys(transport, client_port, server_port):
    """`port_class`'s cache key for many TCP/UDP sessions at once (numpy columns), as one
    int64 each: sessions with equal keys have the same PortClass. The client port counts
    only where it is one of the transport's well-known ports."""
    cp = np.asarray(client_port, np.int64)
    known = np.zeros(len(cp), bool)
    for t, ports in _KNOWN.items():
        if ports:
            known |= (transport == t) & np.isin(cp, list(ports))
    ck = np.where(known, cp + 1, 0)
    return ((np.asarray(transport, np.int64) << 16 | np.asarray(server_port, np.int64)) << 17) | ck


def port_class(transport, client_port, server_port):
    """The PortClass of a session (cached: an ephemeral client port makes no new entry)."""
    known = _KNOWN.get(transport)
    key = (transport, server_port, client_port if known is not None and client_port in known else None)
    got = _CLASSES.get(key)
    if got is None:
        cands = tuple(p for p in candidates(transport, client_port, server_port)
                      if not p.port_bound or client_port in p.ports or server_port in p.ports)
        got = PortClass(transport, cands, by_port(transport, client_port, server_port))
        if len(_CLASSES) >= MAX_CLASSES:
            _CLASSES.clear()
        _CLASSES[key] = got
    return got


def candidates(transport, client_port, server_port):
    """Protocols to try for a session: those whose well-known port it uses
    first (server port, then client port), then every other one for the
    transport, each in registration order."""
    first = list(_PORTS.get((transport, server_port), ()))
    first += [p for p in _PORTS.get((transport, client_port), ()) if p not in first]
    return tuple(first + [p for p in REGISTRY if transport in p.transports and p not in first])


def by_port(transport, client_port, server_port):
    """The protocol a well-known port suggests (server port first), else None."""
    for port in (server_port, client_port):
        got = _PORTS.get((transport, port))
        if got:
            return got[0]
    return None
