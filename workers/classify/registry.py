"""The protocol registry: each protocol module declares itself here once.

Why a registry: the inspector knows nothing about any protocol. It asks the
registered matchers, in order, whether a payload is theirs, so adding a
protocol is one new module and one import line in `protocols`, never an edit
to the inspector.
"""
from .families import family_of

TCP, UDP = 6, 17

# What a matcher answers about one payload.
NO = 0      # certainly not this protocol: stop asking it for this session
WEAK = 1    # consistent with it, not proof: keep looking, use it if nothing better comes
SURE = 2    # identified: stop matching, start collecting metadata (if the protocol parses any)

DEFAULT_SNAP = 512


class Protocol:
    """One application protocol as the inspector sees it.

    match(payload, from_client, state) -> NO | WEAK | SURE | None (no opinion on
    this packet). parse(payload, from_client, state, meta) -> True when it has
    all the metadata it wants; it is called on the packet that made the match
    SURE and on the following ones. `state` is the Inspector: it has
    `transport`, `client_port`, `server_port` and `scratch` (a dict the
    protocol may use, keyed by its own names). `snap` is how many bytes of each
    later packet the parser wants (0 when it parses nothing).
    """
    __slots__ = ("name", "family", "transports", "ports", "match", "parse", "path", "snap")

    def __init__(self, name, transports, ports, match, parse=None, path=None, snap=DEFAULT_SNAP):
        self.name = name
        self.family = family_of(name)
        self.transports = frozenset(transports)
        self.ports = frozenset(ports)
        self.match = match
        self.parse = parse
        self.path = path or name
        self.snap = snap if parse is not None else 0

    def __repr__(self):
        return f"Protocol({self.name!r})"


REGISTRY: list = []
_BY_NAME: dict = {}


def register(name, transports, ports=(), match=None, parse=None, path=None, snap=DEFAULT_SNAP):
    """Declare a protocol. Registration order is matching order: declare the
    narrower protocol (mDNS, NetBIOS name service) before the broader one (DNS)."""
    if name in _BY_NAME:
        raise ValueError(f"protocol {name!r} registered twice")
    if match is None:
        raise ValueError(f"protocol {name!r} has no match function")
    p = Protocol(name, transports, ports, match, parse, path, snap)
    REGISTRY.append(p)
    _BY_NAME[name] = p
    _CACHE.clear()
    return p


def get(name):
    return _BY_NAME.get(name)


_CACHE: dict = {}


def _port_index():
    """(transport, port) -> protocols using that well-known port, in registration order."""
    idx = _CACHE.get("ports")
    if idx is None:
        idx = {}
        for p in REGISTRY:
            for t in p.transports:
                for port in p.ports:
                    idx.setdefault((t, port), []).append(p)
        idx = _CACHE["ports"] = {k: tuple(v) for k, v in idx.items()}
    return idx


def candidates(transport, client_port, server_port):
    """Protocols to try for a session: those whose well-known port it uses
    first (server port, then client port), then every other one for the
    transport, each in registration order. Cached per (transport, server
    port, client port when it is a well-known one): an ephemeral client port
    does not make a new entry."""
    ports = _port_index()
    cf = ports.get((transport, client_port), ())
    key = (transport, server_port, client_port if cf else None)
    got = _CACHE.get(key)
    if got is not None:
        return got
    base = _CACHE.get(transport)
    if base is None:
        base = _CACHE[transport] = tuple(p for p in REGISTRY if transport in p.transports)
    first = list(ports.get((transport, server_port), ()))
    first += [p for p in cf if p not in first]
    got = tuple(first + [p for p in base if p not in first]) if first else base
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[key] = got
    return got


def by_port(transport, client_port, server_port):
    """The protocol a well-known port suggests (server port first), else None."""
    ports = _port_index()
    for port in (server_port, client_port):
        got = ports.get((transport, port))
        if got:
            return got[0]
    return None
