"""Application classification of a session from its first payloads (sans-IO).

Why: the worker must name each session's application (app, family, the
protocol path's last parts, HTTP content, protocol metadata) without the cost
of inspecting every packet. An `Inspector` is made only for a session that
carries payload; it looks at no more than BUDGET payload packets per
direction and then reports `done`, so the worker stops feeding it.

Usage (one per session):
    insp = Inspector(transport, client_port, server_port)
    n = insp.wants(from_client)             # bytes of the next payload it wants, 0 = none
    if n: done = insp.feed(payload[:n], from_client)
    insp.result()                           # dict: app, family, guess, path_suffix,
                                            # content_class, content_type, content_flags, meta
Sessions without payload: `guess_by_port(...)`; ICMP/ICMPv6/IGMP: `classify_noport(transport)`.
Protocols live one per module and declare themselves to `registry`.

Cost: most sessions' first payload is no protocol's at all. The candidates
of a session are computed once per port class (registry.PortClass), without
the protocols bound to ports the session does not use, and a payload is shown
only to the protocols that may start with its first byte; the others would
only say NO. Results that name no protocol by payload are shared, not built.
And a session whose first payload every candidate refuses (`refusals`, over a
batch's first payloads at once with numpy) gets no Inspector at all: its
result is the one the Inspector would have come to, `unmatched`.

dpkt is imported by the parsers that use it (DNS, TLS, HTTP, NetBIOS, DHCP)
when they first parse, not when this package is: its package import loads all
of its ~70 modules (~60 ms a process, twice the rest of a worker's imports),
and a worker whose traffic never has those protocols identified need not pay it.
"""
from itertools import chain

import numpy as np

from . import registry
from .content import content_class, content_flags, media_type
from .registry import NO, SURE, WEAK

# Registration order is matching order (narrow, port-bound protocols first).
from . import netbios, mdns, llmnr, dhcp, dhcpv6, ntp, snmp, kerberos, ldap, syslog, ssdp  # noqa: E402,F401
from . import tls, quic, ssh, http, sip, stun, bittorrent, dns, smtp, imap, pop3, ftp, rtp  # noqa: E402,F401

BUDGET = 10          # payload packets inspected per direction
MAX_PAYLOAD = 1500   # the most bytes of one payload the inspector ever looks at
_HEAD = 1500         # bytes wanted while the protocol is still unknown

NOPORT = {1: "icmp", 58: "icmpv6", 2: "igmp"}


def _result(app, guess=False, path=None, meta=None):
    return {"app": app, "family": registry.family_of(app) if app else None, "guess": guess,
            "path_suffix": path, "content_class": None, "content_type": None,
            "content_flags": None, "meta": meta if meta is not None else {}}


# Results that name no protocol by payload are the same for many sessions: made
# once and shared (callers read results, never change them).
_NOPORT_RESULTS = {t: _result(app, False, app) for t, app in NOPORT.items()}
_NONE = _result(None)
_GUESSES: dict = {}     # well-known port's protocol -> its guess result


def classify_noport(transport):
    """ICMP (1), ICMPv6 (58) and IGMP (2) sessions: named by the IP protocol alone."""
    return _NOPORT_RESULTS.get(transport, _NONE)


def _guess(p):
    if p is None:
        return _NONE
    got = _GUESSES.get(p)
    if got is None:
        got = _GUESSES[p] = _result(p.name, True)
    return got


class Heads:
    """The first HEAD bytes of many payloads, for the protocols' `refuse` tests:
    `h` (n, HEAD) uint8, zero past each payload's end; `n` their lengths (what the
    Inspector would be fed: at most MAX_PAYLOAD); `from_client`, `tcp` (bool: the
    transport is TCP, else UDP), `client_port`, `server_port`."""
    __slots__ = ("h", "n", "from_client", "tcp", "client_port", "server_port")

    def __init__(self, h, n, from_client, tcp, client_port, server_port):
        self.h, self.n, self.from_client, self.tcp = h, n, from_client, tcp
        self.client_port, self.server_port = client_port, server_port

    def be16(self, at):
        """The big-endian 16-bit number at byte `at` of each payload (int64)."""
        return self.h[:, at].astype(np.int64) << 8 | self.h[:, at + 1]


HEAD = 24            # bytes of each payload the refuse tests may read
_HEAD_AT = np.arange(HEAD)


def refusals(buf, offsets, lengths, from_client, transport, client_port, server_port) -> np.ndarray:
    """For payloads (at `offsets` of `buf`, `lengths` bytes each): the OR of the bits
    (registry.Protocol.bit) of the protocols whose `refuse` says their match answers
    NO. 0 for payloads of other transports than TCP and UDP."""
    n = np.minimum(lengths.astype(np.int64), min(_HEAD, MAX_PAYLOAD))     # what feed would be given
    out = np.zeros(len(n), np.int64)
    if not len(n) or not registry.REFUSERS:
        return out
    raw = np.frombuffer(buf, np.uint8)
    if not len(raw):
        return out
    at = offsets.astype(np.int64)[:, None] + _HEAD_AT
    h = raw[np.minimum(at, len(raw) - 1)]
    h[_HEAD_AT >= n[:, None]] = 0                   # past the payload: nothing
    tcp = transport == registry.TCP
    x = Heads(h, n, from_client, tcp, client_port, server_port)
    ported = tcp | (transport == registry.UDP)
    for p in registry.REFUSERS:
        mask = p.refuse(x) & ported
        if registry.TCP not in p.transports:
            mask &= ~tcp
        if registry.UDP not in p.transports:
            mask &= tcp
        out[mask] |= p.bit
    return out


def unmatched(pclass):
    """What an Inspector of a session of this port class comes to when the protocols
    shown its first payload all answer NO: no protocol by payload, its port's guess."""
    if pclass.transport in NOPORT:
        return _NOPORT_RESULTS[pclass.transport]
    return _guess(pclass.by_port)


def guess_by_port(transport, client_port, server_port):
    """A session seen without payload: the well-known port's protocol, marked as a guess."""
    if transport in NOPORT:
        return _NOPORT_RESULTS[transport]
    return _guess(registry.port_class(transport, client_port, server_port).by_port)


_MIN_DISPATCH = registry.MIN_DISPATCH
_PORTS = {}             # port number -> one int object for every inspector (32 bytes each otherwise)


def _packed(d: dict):
    """A dict's items as one flat tuple (k1, v1, k2, v2, ...), None when empty: 72 bytes
    for two items where a dict takes 184."""
    return tuple(chain.from_iterable(d.items())) if d else None


def _unpacked(t) -> dict:
    return dict(zip(t[::2], t[1::2])) if t else {}


class Inspector:
    """A session's classification in progress. Kept per session until it is done, so
    small: the transport is the port class's, and between packets the protocol's
    metadata (`meta`) and working space (`scratch`) are flat tuples (`_packed`), None
    when empty; dicts again while a packet is inspected."""
    __slots__ = ("client_port", "server_port", "budget", "n_client", "n_server",
                 "cands", "proto", "weak", "done", "_meta", "_scratch", "pclass")

    def __init__(self, transport, client_port, server_port, budget=BUDGET):
        if budget < 1:
            raise ValueError(f"inspection budget must be at least 1 packet per direction, not {budget}")
        self.client_port = _PORTS.setdefault(client_port, client_port)
        self.server_port = _PORTS.setdefault(server_port, server_port)
        self.budget = budget
        self.n_client = self.n_server = 0
        pc = self.pclass = registry.port_class(transport, client_port, server_port)
        self.cands = pc.cands  # protocols still possible; while it is pc.cands, dispatched on the first byte
        self.proto = None      # the protocol once SURE
        self.weak = None       # first protocol that said WEAK
        self.done = False      # it wants no more (the protocol's parser has all it wants, or the budget is spent)
        self._meta = None      # the protocol's metadata for the record: packed, or a dict inside `feed`
        self._scratch = None   # the protocols' working space (`scratch`): the same

    @property
    def transport(self):
        return self.pclass.transport

    @property
    def scratch(self) -> dict:
        """A dict the protocols may keep state in between packets (registry.Protocol)."""
        sc = self._scratch
        if sc.__class__ is not dict:
            sc = self._scratch = _unpacked(sc)
        return sc

    @property
    def meta(self) -> dict:
        """The protocol's metadata so far (a copy between packets)."""
        m = self._meta
        return m if m.__class__ is dict else _unpacked(m)

    def wants(self, from_client):
        """How many bytes of the next payload in this direction to pass to feed(); 0: none."""
        if self.done:
            return 0
        if (self.n_client if from_client else self.n_server) >= self.budget:
            return 0
        if self.proto is None:
            return _HEAD
        return self.proto.snap          # (once its parser has all it wants, it is done)

    def feed(self, payload, from_client):
        """Inspect one packet's transport payload; True once the inspector wants no more."""
        done = self._feed(payload, from_client)
        if self._scratch.__class__ is dict:
            self._scratch = None if done else _packed(self._scratch)
        if self._meta.__class__ is dict:
            self._meta = _packed(self._meta)
        return done

    def _feed(self, payload, from_client):
        if self.done or not payload:
            return self.done
        if from_client:
            if self.n_client >= self.budget:
                return self._check_budget()
            self.n_client += 1
        else:
            if self.n_server >= self.budget:
                return self._check_budget()
            self.n_server += 1
        if len(payload) > MAX_PAYLOAD:
            payload = payload[:MAX_PAYLOAD]
        if self.proto is None:
            cands = self.cands
            pc = self.pclass
            if cands is pc.cands and len(payload) >= _MIN_DISPATCH:
                # only the protocols that a payload starting with this byte may be; the others say NO
                b = payload[0]
                tried = pc.first[1 if from_client else 0][b]
                if tried is None:
                    tried = pc.dispatch(b, from_client)
            else:
                tried = cands
            keep = None        # the candidates left, once one is dropped
            for p in tried:
                try:
                    r = p.match(payload, from_client, self)
                except Exception:  # a malformed payload must not stop the worker
                    r = NO
                if r is None:
                    if keep is not None:
                        keep.append(p)
                elif r == SURE:
                    self.proto = p
                    break
                elif r == WEAK:
                    if self.weak is None:
                        self.weak = p
                    if keep is not None:
                        keep.append(p)
                elif keep is None:  # NO: dropped from this session's candidates
                    keep = list(tried[:tried.index(p)])
            if self.proto is None:
                if keep is None:
                    if tried is cands:
                        return self._check_budget()
                    keep = tried
                self.cands = tuple(keep)
                if self.weak is not None and self.weak not in self.cands:
                    self.weak = None
                if not keep:
                    self.done = True
                    return True
                return self._check_budget()
            self.cands = ()
            if self.proto.parse is None:
                self.done = True
                return True
        meta = self._meta = self.meta
        try:
            parsed = self.proto.parse(payload, from_client, self, meta)
        except Exception:
            parsed = True
        if parsed:
            self.done = True
            return True
        return self._check_budget()

    def _check_budget(self):
        if self.n_client >= self.budget and self.n_server >= self.budget \
                or self.n_client + self.n_server >= 2 * self.budget:
            self.done = True
        return self.done

    def result(self):
        """The classification so far (callable at any time, e.g. for interim records).
        A result naming no protocol by payload is shared: read it, do not change it."""
        p = self.proto or self.weak
        if p is None:
            if self.transport in NOPORT:
                return _NOPORT_RESULTS[self.transport]
            return _guess(self.pclass.by_port)
        meta = self.meta
        r = {"app": p.name, "family": p.family, "guess": False, "path_suffix": p.path, "content_class": None,
             "content_type": None, "content_flags": None, "meta": dict(meta)}
        ct = meta.get("http.content_type")
        if ct:
            t = media_type(ct)
            r["content_type"] = t
            r["content_class"] = content_class(t)
            r["content_flags"] = content_flags(meta.get("http.transfer_encoding"),
                                               meta.get("http.content_encoding"),
                                               meta.get("http.status"),
                                               meta.get("http.content_range"), t)
        return r
