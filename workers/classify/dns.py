"""DNS (and the helpers mDNS and LLMNR share): a header check on the first
bytes, then dpkt.dns for the query name, type, response code and answers."""
import socket
import struct

import numpy as np

from .registry import NO, SURE, TCP, UDP, register

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
          52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF", 252: "AXFR", 255: "ANY", 257: "CAA"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}
MAX_ANSWERS = 16
_DNS_R = 1                  # the QR bit: a response (dpkt.dns.DNS_R)
_NAME_FIELD = {5: "cname", 2: "nsname", 12: "ptrname", 15: "mxname"}


def header_ok(p, tcp=False):
    """Cheap check of a DNS header: opcode, counts. Returns the message (TCP length
    prefix removed) or None."""
    if tcp:
        if len(p) < 14 or int.from_bytes(p[:2], "big") < 12:
            return None
        p = p[2:]
    if len(p) < 12:
        return None
    opcode = (p[2] >> 3) & 0x0f
    if opcode not in (0, 1, 2, 4, 5):
        return None
    qd, an, ns, ar = struct.unpack("!HHHH", p[4:12])
    if qd > 64 or an > 200 or ns > 200 or ar > 200 or qd + an + ns + ar == 0:
        return None
    if not p[2] & 0x80 and (qd == 0 and opcode == 0):
        return None
    return p


def header_refused(x, tcp):
    """header_ok over many payloads (a classify.Heads) at once: True where it says
    None. `tcp`: as header_ok's argument, for all or (bool array) for each payload."""
    n = x.n
    tcp = np.broadcast_to(tcp, n.shape)
    # the message: after TCP's 2-byte length
    m = np.where(tcp[:, None], x.h[:, 2:14], x.h[:, 0:12]).astype(np.int64)
    ok = np.where(tcp, (n >= 14) & (x.be16(0) >= 12), n >= 12)
    flags = m[:, 2]
    opcode = (flags >> 3) & 0x0f
    ok &= (opcode <= 2) | (opcode == 4) | (opcode == 5)
    qd, an, ns, ar = (m[:, i] << 8 | m[:, i + 1] for i in (4, 6, 8, 10))
    ok &= (qd <= 64) & (an <= 200) & (ns <= 200) & (ar <= 200) & (qd + an + ns + ar > 0)
    ok &= ~(((flags & 0x80) == 0) & (qd == 0) & (opcode == 0))
    return ~ok


def refuse(x):
    """match says NO where the header check fails."""
    return header_refused(x, x.tcp)


def decode(msg):
    import dpkt.dns          # here, not at the top: see workers/classify/__init__.py
    try:
        return dpkt.dns.DNS(bytes(msg))
    except (dpkt.Error, struct.error, IndexError, ValueError, UnicodeDecodeError):
        return None


def _keys(prefix):
    """The metadata's names for `prefix` (dns, mdns, llmnr), made once: a session waiting
    for its answer keeps its query's, and a new string each would be 58 bytes."""
    keys = _KEYS.get(prefix)
    if keys is None:
        keys = _KEYS[prefix] = tuple(prefix + k for k in (".query", ".qtype", ".rcode", ".answers"))
    return keys


_KEYS = {}


def describe(d, meta, prefix="dns"):
    query, qtype, rcode, answers = _keys(prefix)
    if d.qd:
        q = d.qd[0]
        meta.setdefault(query, q.name.lower())
        meta.setdefault(qtype, QTYPES.get(q.type, str(q.type)))
    if d.qr == _DNS_R:
        meta[rcode] = RCODES.get(d.rcode, str(d.rcode))
        ans = []
        for rr in d.an[:MAX_ANSWERS]:
            if rr.type == 1 and len(rr.rdata) == 4:
                ans.append(socket.inet_ntop(socket.AF_INET, rr.rdata))
            elif rr.type == 28 and len(rr.rdata) == 16:
                ans.append(socket.inet_ntop(socket.AF_INET6, rr.rdata))
            else:
                name = getattr(rr, _NAME_FIELD.get(rr.type, "-"), None)
                if name:
                    ans.append(name)
        if ans:
            meta[answers] = ans
        return True
    return False


def _plausible_name(d):
    if not d.qd:
        return bool(d.an)
    name = d.qd[0].name
    return 0 < len(name) < 254 and all(33 <= ord(c) < 127 for c in name) and d.qd[0].cls in (1, 255, 0x8001)


def match(p, from_client, state):
    tcp = state.transport == TCP
    msg = header_ok(p, tcp)
    if msg is None:
        return NO
    d = decode(msg)
    if d is None:
        return NO
    if 53 in (state.server_port, state.client_port):
        state.scratch["dns.msg"] = d
        return SURE
    # elsewhere: only a clean, single-question query or its answer
    if len(d.qd) == 1 and len(d.an) <= 32 and _plausible_name(d) and d.qd[0].type in QTYPES:
        state.scratch["dns.msg"] = d
        return SURE
    return NO


def parse(p, from_client, state, meta, prefix="dns"):
    d = state.scratch.pop("dns.msg", None)
    if d is None:
        msg = header_ok(p, state.transport == TCP)
        d = decode(msg) if msg is not None else None
        if d is None:
            return False
    return describe(d, meta, prefix)


register("dns", (UDP, TCP), (53,), match, parse, snap=1500, refuse=refuse)
