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
"""
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


def classify_noport(transport):
    """ICMP (1), ICMPv6 (58) and IGMP (2) sessions: named by the IP protocol alone."""
    app = NOPORT.get(transport)
    return _result(app, False, app) if app else _result(None)


def guess_by_port(transport, client_port, server_port):
    """A session seen without payload: the well-known port's protocol, marked as a guess."""
    if transport in NOPORT:
        return classify_noport(transport)
    p = registry.by_port(transport, client_port, server_port)
    return _result(p.name, True) if p else _result(None)


class Inspector:
    __slots__ = ("transport", "client_port", "server_port", "budget", "n_client", "n_server",
                 "cands", "proto", "weak", "done", "parsed", "meta", "scratch")

    def __init__(self, transport, client_port, server_port, budget=BUDGET):
        if budget < 1:
            raise ValueError(f"inspection budget must be at least 1 packet per direction, not {budget}")
        self.transport = transport
        self.client_port = client_port
        self.server_port = server_port
        self.budget = budget
        self.n_client = self.n_server = 0
        self.cands = registry.candidates(transport, client_port, server_port)
        self.proto = None      # the protocol once SURE
        self.weak = None       # first protocol that said WEAK
        self.done = False
        self.parsed = False    # the protocol's parser has all it wants
        self.meta = {}
        self.scratch = {}

    def wants(self, from_client):
        """How many bytes of the next payload in this direction to pass to feed(); 0: none."""
        if self.done:
            return 0
        if (self.n_client if from_client else self.n_server) >= self.budget:
            return 0
        if self.proto is None:
            return _HEAD
        return self.proto.snap if not self.parsed else 0

    def feed(self, payload, from_client):
        """Inspect one packet's transport payload; True once the inspector wants no more."""
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
            keep = None
            for p in self.cands:
                try:
                    r = p.match(payload, from_client, self)
                except Exception:  # a malformed payload must not stop the worker
                    r = NO
                if r is None:
                    continue
                if r == SURE:
                    self.proto = p
                    break
                if r == WEAK:
                    if self.weak is None:
                        self.weak = p
                    continue
                if keep is None:   # NO: drop it from this session's candidates
                    keep = list(self.cands)
                keep.remove(p)
            if self.proto is None:
                if keep is not None:
                    self.cands = tuple(keep)
                    if self.weak is not None and self.weak not in self.cands:
                        self.weak = None
                    if not self.cands:
                        self.done = True
                        return True
                return self._check_budget()
            self.cands = ()
            if self.proto.parse is None:
                self.done = True
                return True
        try:
            self.parsed = bool(self.proto.parse(payload, from_client, self, self.meta))
        except Exception:
            self.parsed = True
        if self.parsed:
            self.done = True
            self.scratch = None
            return True
        return self._check_budget()

    def _check_budget(self):
        if self.n_client >= self.budget and self.n_server >= self.budget \
                or self.n_client + self.n_server >= 2 * self.budget:
            self.done = True
            self.scratch = None
        return self.done

    def result(self):
        """The classification so far (callable at any time, e.g. for interim records)."""
        p = self.proto or self.weak
        if p is None:
            return guess_by_port(self.transport, self.client_port, self.server_port)
        r = _result(p.name, False, p.path, dict(self.meta))
        ct = self.meta.get("http.content_type")
        if ct:
            t = media_type(ct)
            r["content_type"] = t
            r["content_class"] = content_class(t)
            r["content_flags"] = content_flags(self.meta.get("http.transfer_encoding"),
                                               self.meta.get("http.content_encoding"),
                                               self.meta.get("http.status"),
                                               self.meta.get("http.content_range"), t)
        return r
