"""The inspector's shortcuts change no answer.

The inspector skips a protocol's matcher where its registration promises a NO:
`port_bound` (NO unless a session port is one of its ports) and `first` (NO to
a payload of MIN_DISPATCH bytes or more whose first byte it does not list).
Here every promise is checked against the matcher itself, and the inspector
is compared with a plain reference that asks every candidate, in order, on
every packet (the semantics docs/classification.md describes).
"""
import random
import struct

import pytest

from workers.classify import BUDGET, MAX_PAYLOAD, Inspector, guess_by_port
from workers.classify.registry import MIN_DISPATCH, NO, REGISTRY, SURE, TCP, UDP, WEAK, by_port, candidates

# Payload starts of the protocols (and a few near misses), so that the bytes after
# a rejected first byte look like something a matcher could take.
STARTS = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"\x16\x03\x03\x00\x5a\x02\x00\x00\x56\x03\x03",
    b"\x17\x03\x03\x00\x20", b"\x80\x2e\x01\x00\x02\x00\x15", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n",
    b"M-SEARCH * HTTP/1.1\r\n", b"NOTIFY * HTTP/1.1\r\n", b"220 mail ESMTP ready\r\n", b"220 FTP ready\r\n",
    b"EHLO client\r\n", b"* OK IMAP4 ready\r\n", b"a1 CAPABILITY\r\n", b"+OK POP3 ready\r\n", b"USER bob\r\n",
    b"<34>Oct 11 22:14:15 host su: x", b"57 <34>1 2003-10-11T22:14:15Z h a - - - x",
    b"\x13BitTorrent protocol" + bytes(48), b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:y1:qe",
    b"\x00\x00\x04\x17\x27\x10\x19\x80\x00\x00\x00\x00\x01\x02\x03\x04",
    b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), b"\x00\x14\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),
    b"\x30\x26\x02\x01\x01\x04\x06public\xa0\x19", b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00",
    b"\x6a\x81\x80\x30\x81\x7d\xa1\x03\x02\x01\x05", b"\x00\x00\x00\x80\x6a\x7e\x30\x7c\xa1\x03\x02\x01\x05",
    b"\xc3\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x00\x44\xd0", b"\x0d\x01\x02\x03\x04\x05\x06\x07\x08Q046",
    b"\xcb\x51\x30\x34\x36\x50", b"\x80\x00\x00\x01\x00\x00\x00\x10\x12\x34\x56\x78" + bytes(20),
    b"\x81\xc8\x00\x06" + bytes(24), b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",
    b"\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",
    b"\x01\x01\x06\x00" + bytes(232) + b"\x63\x82\x53\x63\x35\x01\x01\xff", b"\x01\x12\x34\x56\x00\x01",
    b"\x23" + bytes(47), b"\x1b" + bytes(47), b"\x16" + bytes(47),
    b"\x81\x00\x00\x44\x20" + b"A" * 68, b"\x00\x00\x00\x54\xffSMB\x72", b"\x11\x02\x00\x01\x0a\x00\x00\x01",
    b"\x80\x01\x00\x00" + b"\x20" + b"C" * 40,
]
PORTS = [53, 67, 68, 80, 88, 110, 123, 137, 138, 139, 143, 161, 162, 389, 443, 445, 465, 514, 546, 547, 601,
         993, 995, 1900, 3478, 5060, 5353, 5355, 6881, 8080, 19302, 40000, 51413, 61000]


class State:
    """What a matcher may use of the inspector."""
    def __init__(self, transport, client_port, server_port):
        self.transport, self.client_port, self.server_port = transport, client_port, server_port
        self.scratch = {}
        self.n_client = self.n_server = 0       # as before the first payload


def answer(p, payload, from_client, state):
    try:
        return p.match(payload, from_client, state)
    except Exception:  # the inspector counts a matcher's exception as NO
        return NO


def bodies(rnd, first):
    """Payloads of MIN_DISPATCH bytes or more that start with byte `first`."""
    out = [bytes([first]) + s[1:] for s in STARTS]
    out = [b + bytes(MIN_DISPATCH - len(b)) if len(b) < MIN_DISPATCH else b for b in out]
    for n in (MIN_DISPATCH, 12, 20, 48, 300, MAX_PAYLOAD):
        out.append(bytes([first]) + rnd.randbytes(n - 1))
    n = rnd.choice((30, 100, 1000))    # a length prefix that fits (RFC 4571, DNS and Kerberos over TCP)
    out.append(bytes([first]) + struct.pack("!H", n - 2)[1:] + rnd.randbytes(n - 2))
    return out


@pytest.mark.parametrize("proto", [p for p in REGISTRY if p.first is not None], ids=lambda p: p.name)
def test_first_byte_promise_holds(proto):
    rnd = random.Random(proto.name)
    for transport in proto.transports:
        for b in range(256):
            for from_client in (True, False):
                if proto.first(b, from_client, transport):
                    continue
                for payload in bodies(rnd, b):
                    for cport, sport in ((40000, rnd.choice(PORTS)), (rnd.choice(PORTS), 40001),
                                         *((40002, port) for port in proto.ports)):
                        got = answer(proto, payload, from_client, State(transport, cport, sport))
                        assert got == NO, (proto.name, transport, b, from_client, payload[:16], cport, sport, got)


def test_the_promises_leave_something_to_ask():
    """Sanity of the declarations: each one lets its protocol's own payloads through."""
    rnd = random.Random(7)
    for proto in REGISTRY:
        if proto.first is None:
            continue
        taken = 0
        for s in STARTS:
            s = s + bytes(max(0, MIN_DISPATCH - len(s)))
            for transport in proto.transports:
                for from_client in (True, False):
                    port = min(proto.ports) if proto.ports else 40000
                    if answer(proto, s, from_client, State(transport, 40000, port)) != NO:
                        taken += 1
                        assert proto.first(s[0], from_client, transport), (proto.name, s[:8])
        assert taken or proto.name in ("dhcpv6", "netbios"), f"{proto.name}: no sample payload matched"
        assert any(proto.first(b, rnd.random() < 0.5, t) for b in range(256) for t in proto.transports)


@pytest.mark.parametrize("proto", [p for p in REGISTRY if p.port_bound], ids=lambda p: p.name)
def test_port_promise_holds(proto):
    rnd = random.Random(proto.name)
    others = [p for p in PORTS if p not in proto.ports]
    for transport in proto.transports:
        for s in STARTS:
            for payload in (s, s + rnd.randbytes(40), s[:3]):
                for from_client in (True, False):
                    for _ in range(4):
                        state = State(transport, rnd.choice(others), rnd.choice(others))
                        assert answer(proto, payload, from_client, state) == NO, (proto.name, payload[:16])


class Reference:
    """The inspector without shortcuts: every remaining candidate on every packet."""
    def __init__(self, transport, client_port, server_port, budget):
        self.transport, self.client_port, self.server_port, self.budget = transport, client_port, server_port, budget
        self.n = {True: 0, False: 0}
        self.cands = list(candidates(transport, client_port, server_port))
        self.proto = self.weak = None
        self.done = self.parsed = False
        self.meta, self.scratch = {}, {}

    n_client = property(lambda self: self.n[True])      # what a matcher may read of the Inspector
    n_server = property(lambda self: self.n[False])

    def _spent(self):
        n = self.n
        if n[True] >= self.budget and n[False] >= self.budget or n[True] + n[False] >= 2 * self.budget:
            self.done = True
        return self.done

    def feed(self, payload, from_client):
        if self.done or not payload:
            return self.done
        if self.n[from_client] >= self.budget:
            return self._spent()
        self.n[from_client] += 1
        payload = payload[:MAX_PAYLOAD]
        if self.proto is None:
            dropped = False
            for p in list(self.cands):
                r = answer(p, payload, from_client, self)
                if r == SURE:
                    self.proto = p
                    break
                if r == WEAK and self.weak is None:
                    self.weak = p
                if r == NO:
                    self.cands.remove(p)
                    dropped = True
            if self.proto is None:
                if dropped:
                    if self.weak not in self.cands:
                        self.weak = None
                    if not self.cands:
                        self.done = True
                        return True
                return self._spent()
            if self.proto.parse is None:
                self.done = True
                return True
        try:
            self.parsed = bool(self.proto.parse(payload, from_client, self, self.meta))
        except Exception:
            self.parsed = True
        if self.parsed:
            self.done = True
            return True
        return self._spent()

    def named(self):
        p = self.proto or self.weak
        if p is None:
            q = by_port(self.transport, self.client_port, self.server_port)
            return (q.name if q else None), q is not None, {}
        return p.name, False, self.meta


def packet(rnd):
    kind = rnd.random()
    if kind < 0.45:
        s = rnd.choice(STARTS)
        return s + rnd.randbytes(rnd.choice((0, 0, 4, 40))) if rnd.random() < 0.3 else s
    if kind < 0.6:                                   # a protocol's start, cut short
        return rnd.choice(STARTS)[:rnd.randint(1, MIN_DISPATCH)]
    if kind < 0.75:                                  # one protocol's bytes after another's first byte
        return rnd.choice(STARTS)[:1] + rnd.choice(STARTS)[1:]
    return rnd.randbytes(rnd.choice((1, 5, 7, 8, 9, 12, 20, 48, 200, 1600)))


@pytest.mark.parametrize("seed", range(6))
def test_same_answers_as_asking_every_candidate(seed):
    rnd = random.Random(seed)
    for _ in range(400):
        transport = rnd.choice((TCP, UDP))
        cport, sport = rnd.choice(PORTS + [50000 + seed]), rnd.choice(PORTS)
        budget = rnd.choice((1, 2, BUDGET))
        insp, ref = Inspector(transport, cport, sport, budget), Reference(transport, cport, sport, budget)
        for _ in range(rnd.randint(1, 2 * budget + 2)):
            fc = rnd.random() < 0.6
            p = packet(rnd)
            n = insp.wants(fc)
            done = insp.feed(p[:n], fc) if n else insp.done
            want_done = ref.feed(p[:n], fc) if n else ref.done
            assert done == want_done
            r = insp.result()
            app, guess, meta = ref.named()
            assert (r["app"], r["guess"], r["meta"]) == (app, guess, meta), (transport, cport, sport)


def test_results_naming_no_payload_protocol_are_equal_to_fresh_ones():
    assert guess_by_port(TCP, 50103, 443) == guess_by_port(TCP, 50104, 443)
    insp = Inspector(TCP, 50103, 443)
    insp.feed(b"\x3f" * 40, True)
    assert insp.done and insp.result() == guess_by_port(TCP, 50103, 443)
    assert insp.result() == {"app": "tls", "family": "web", "guess": True, "path_suffix": None,
                             "content_class": None, "content_type": None, "content_flags": None, "meta": {}}


def test_class_keys_are_port_class_keys():
    """registry.class_keys (the worker's refusals, over numpy columns) groups sessions as
    port_class does: equal keys, the same PortClass; different keys, different ones."""
    import numpy as np
    from workers.classify import registry
    rnd = random.Random(3)
    pool = sorted({p for q in REGISTRY for p in q.ports}) + [40000, 40001, 50123, 1, 65535]
    t = np.array([rnd.choice((TCP, UDP)) for _ in range(600)])
    cp = np.array([rnd.choice(pool) for _ in range(600)])
    sp = np.array([rnd.choice(pool) for _ in range(600)])
    keys = registry.class_keys(t, cp, sp).tolist()
    classes = [registry.port_class(int(a), int(b), int(c)) for a, b, c in zip(t, cp, sp)]
    by_key = {}
    for k, pc in zip(keys, classes):
        assert by_key.setdefault(k, pc) is pc
    assert len(set(map(id, by_key.values()))) == len(by_key)
