"""TLS over TCP: recognised by its handshake record; the ClientHello gives the
SNI, ALPN, offered version and the JA4/JA3 fingerprints, the ServerHello the
negotiated version. Also TLS on the mail ports (imaps, smtps, pop3s).

ClientHellos often span several TCP segments (post-quantum key shares), so the
handshake bytes of each direction are reassembled, in arrival order, up to
MAX_HELLO bytes.
"""
import hashlib
import struct

from .registry import NO, SURE, TCP, WEAK, register

MAX_HELLO = 16384
_EXT_SNI, _EXT_GROUPS, _EXT_POINTS, _EXT_SIGALGS, _EXT_ALPN, _EXT_VERSIONS = 0, 10, 11, 13, 16, 43

VERSION_NAMES = {0x0300: "ssl3", 0x0301: "1.0", 0x0302: "1.1", 0x0303: "1.2", 0x0304: "1.3",
                 0x0002: "ssl2", 0xfeff: "dtls1.0", 0xfefd: "dtls1.2", 0xfefc: "dtls1.3"}
_JA4_VERSION = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                0xfeff: "d1", 0xfefd: "d2", 0xfefc: "d3"}


GREASE = frozenset(0x0a0a + 0x1010 * i for i in range(16))  # RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa


def is_grease(v):
    return v in GREASE


def _u16s(b):
    return struct.unpack("!%dH" % (len(b) // 2), b[: len(b) // 2 * 2])


class Hello:
    """What fingerprints need from a ClientHello (GREASE kept; callers drop it)."""
    __slots__ = ("version", "ciphers", "extensions", "sni", "alpn", "versions", "groups", "points", "sigalgs")

    def __init__(self, body):
        """body: the ClientHello handshake body (after type and 24-bit length)."""
        import dpkt.ssl          # here, not at the top: see workers/classify/__init__.py
        ch = dpkt.ssl.TLSClientHello(body)
        self.version = ch.version
        self.ciphers = [c.code for c in ch.ciphersuites]
        self.extensions = []
        self.sni = self.alpn = None
        self.versions = self.groups = self.sigalgs = ()
        self.points = b""
        for etype, data in getattr(ch, "extensions", ()):
            self.extensions.append(etype)
            try:
                if etype == _EXT_SNI and len(data) > 5 and data[2] == 0:
                    n = struct.unpack("!H", data[3:5])[0]
                    self.sni = data[5:5 + n].decode("ascii", "replace").lower()
                elif etype == _EXT_ALPN and len(data) > 3:
                    names, i, end = [], 2, 2 + struct.unpack("!H", data[:2])[0]
                    while i < end and i < len(data):
                        n = data[i]
                        names.append(data[i + 1:i + 1 + n])
                        i += 1 + n
                    self.alpn = names
                elif etype == _EXT_VERSIONS and data:
                    self.versions = _u16s(data[1:1 + data[0]])
                elif etype == _EXT_GROUPS and len(data) >= 2:
                    self.groups = _u16s(data[2:2 + struct.unpack("!H", data[:2])[0]])
                elif etype == _EXT_POINTS and data:
                    self.points = data[1:1 + data[0]]
                elif etype == _EXT_SIGALGS and len(data) >= 2:
                    self.sigalgs = _u16s(data[2:2 + struct.unpack("!H", data[:2])[0]])
            except (IndexError, struct.error):
                pass

    def max_version(self):
        vs = [v for v in self.versions if v not in GREASE]
        return max(vs) if vs else self.version

    def ja4(self, kind="t"):
        """FoxIO JA4 (kind: t = TLS over TCP, q = QUIC, d = DTLS)."""
        ciphers = [c for c in self.ciphers if c not in GREASE]
        exts = [e for e in self.extensions if e not in GREASE]
        alpn = "00"
        if self.alpn and self.alpn[0]:
            a = self.alpn[0]
            if chr(a[0]).isalnum() and chr(a[-1]).isalnum() and a[0] < 128 and a[-1] < 128:
                alpn = chr(a[0]) + chr(a[-1])
            else:
                h = a.hex()
                alpn = h[0] + h[-1]
        head = "%s%s%s%02d%02d%s" % (kind, _JA4_VERSION.get(self.max_version(), "00"),
                                     "d" if _EXT_SNI in exts else "i",
                                     min(len(ciphers), 99), min(len(exts), 99), alpn)
        b = ",".join("%04x" % c for c in sorted(ciphers))
        b = hashlib.sha256(b.encode()).hexdigest()[:12] if ciphers else "000000000000"
        ce = sorted(e for e in exts if e not in (_EXT_SNI, _EXT_ALPN))
        if ce:
            c = ",".join("%04x" % e for e in ce)
            sig = [s for s in self.sigalgs if s not in GREASE]
            if sig:
                c += "_" + ",".join("%04x" % s for s in sig)
            c = hashlib.sha256(c.encode()).hexdigest()[:12]
        else:
            c = "000000000000"
        return f"{head}_{b}_{c}"

    def ja3_string(self):
        """Salesforce JA3: version,ciphers,extensions,groups,point formats (GREASE dropped)."""
        def j(vals):
            return "-".join([str(v) for v in vals if v not in GREASE])
        return "%d,%s,%s,%s,%s" % (self.version, j(self.ciphers), j(self.extensions), j(self.groups),
                                   "-".join(str(p) for p in self.points))

    def ja3(self):
        return hashlib.md5(self.ja3_string().encode()).hexdigest()

    def describe(self, meta, prefix, kind):
        if self.sni:
            meta[prefix + ".sni"] = self.sni
        if self.alpn:
            meta[prefix + ".alpn"] = [a.decode("ascii", "replace") for a in self.alpn]
        known = [v for v in self.versions if v in VERSION_NAMES] or [self.version]
        meta[prefix + ".version"] = VERSION_NAMES.get(max(known), "0x%04x" % max(known))
        meta[prefix + ".ja4"] = self.ja4(kind)
        meta[prefix + ".ja3"] = self.ja3()


def server_hello_version(body):
    """Negotiated version from a ServerHello body (supported_versions wins)."""
    import dpkt.ssl
    sh = dpkt.ssl.TLSServerHello(body)
    for etype, data in getattr(sh, "extensions", ()):
        if etype == _EXT_VERSIONS and len(data) >= 2:
            return struct.unpack("!H", data[:2])[0], sh
    return sh.version, sh


def _record_start(p, hs_type):
    # content type 22 (handshake), version 3.x, then a handshake header of hs_type
    return len(p) >= 6 and p[0] == 22 and p[1] == 3 and p[2] <= 4 and p[5] == hs_type


def match(p, from_client, state):
    if len(p) < 6:
        return WEAK if len(p) == 5 and 20 <= p[0] <= 23 and p[1] == 3 and p[2] <= 4 else None
    if from_client:
        if _record_start(p, 1):
            return SURE
        if p[0] == 0x80 and len(p) > 3 and p[2] == 1 and p[3] in (0, 2, 3):  # SSLv2-format hello
            return SURE
    elif _record_start(p, 2):
        return SURE
    if p[0] in (20, 21, 22, 23) and p[1] == 3 and p[2] <= 4:
        return WEAK  # a TLS record met mid-stream
    return NO


def _take_records(buf):
    """Split a reassembled TLS byte stream: (handshake bytes, bytes of an unfinished record)."""
    hs, i, n = bytearray(), 0, len(buf)
    while i + 5 <= n:
        ln = (buf[i + 3] << 8) | buf[i + 4]
        if i + 5 + ln > n:
            break
        if buf[i] == 22:
            hs += buf[i + 5:i + 5 + ln]
        i += 5 + ln
    return hs, i


def _handshake(state, p, key):
    """Feed one direction's bytes; return the first handshake message body once complete."""
    sc = state.scratch
    buf = sc.get(key)
    buf = p if buf is None else buf + p
    if len(buf) > MAX_HELLO:
        sc[key] = b""
        return False
    sc[key] = buf
    hs, _ = _take_records(buf)
    if len(hs) >= 4:
        ln = int.from_bytes(hs[1:4], "big")
        if len(hs) >= 4 + ln:
            return bytes(hs[4:4 + ln])
    return None


def parse(p, from_client, state, meta, kind="t", prefix="tls"):
    import dpkt              # its Error, below
    sc = state.scratch
    if from_client and not sc.get("tls.c.done"):
        body = _handshake(state, p, "tls.c")
        if body is False:
            sc["tls.c.done"] = True
        elif body is not None:
            sc["tls.c.done"] = True
            sc.pop("tls.c", None)
            try:
                Hello(body).describe(meta, prefix, kind)
            except (dpkt.Error, struct.error, IndexError, ValueError):
                pass
    elif not from_client and not sc.get("tls.s.done"):
        body = _handshake(state, p, "tls.s")
        if body is False:
            sc["tls.s.done"] = True
        elif body is not None:
            sc["tls.s.done"] = True
            sc.pop("tls.s", None)
            try:
                v, sh = server_hello_version(body)
                meta[prefix + ".version"] = VERSION_NAMES.get(v, "0x%04x" % v)
                for etype, data in getattr(sh, "extensions", ()):
                    if etype == _EXT_ALPN and len(data) > 3:
                        meta[prefix + ".alpn_selected"] = data[3:3 + data[2]].decode("ascii", "replace")
            except (dpkt.Error, struct.error, IndexError, ValueError):
                pass
    return bool(sc.get("tls.c.done") and sc.get("tls.s.done"))


FIRST = (20, 21, 22, 23, 0x80)  # a record's content type, or an SSLv2 hello

register("tls", (TCP,), (443, 8443, 853, 5061, 636, 989, 990, 992, 994, 3269, 8883, 5223, 4433),
         match, parse, snap=1500, first=FIRST)


def _over_tls(ports):
    def m(p, from_client, state):
        if state.server_port in ports or state.client_port in ports:
            return match(p, from_client, state)     # not TLS: NO (the port still names it, as a guess)
        return NO
    return m


# TLS from the first byte on the mail protocols' TLS ports (not STARTTLS).
register("imaps", (TCP,), (993,), _over_tls({993}), parse, path="tls.imap", snap=1500,
         port_bound=True, first=FIRST)
register("smtps", (TCP,), (465,), _over_tls({465}), parse, path="tls.smtp", snap=1500,
         port_bound=True, first=FIRST)
register("pop3s", (TCP,), (995,), _over_tls({995}), parse, path="tls.pop3", snap=1500,
         port_bound=True, first=FIRST)
