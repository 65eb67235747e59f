"""QUIC: recognised by its long header and version; the SNI comes from the
client Initial, decrypted as RFC 9001 section 5 lets any observer do (keys
derived from the Destination Connection ID), its CRYPTO frames reassembled by
offset into the TLS ClientHello. Google QUIC (Q0xx) carries its CHLO in clear.

Needs the `cryptography` package for AES; without it QUIC is still recognised,
only the metadata is missing.
"""
import hashlib
import hmac
import struct
import sys

from .registry import NO, SURE, UDP, register
from . import tls

_AES = []    # (Cipher, algorithms, modes, AESGCM) once imported; None inside: no `cryptography`


def _aes():
    """The AES primitives, imported on the first QUIC Initial: `cryptography` takes
    ~50 ms to import, which every run's start-up would pay for traffic with no QUIC."""
    if not _AES:
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            _AES.append((Cipher, algorithms, modes, AESGCM))
        except Exception as e:    # not installed, or broken: QUIC is still recognised, without its SNI
            if not isinstance(e, ImportError):
                print(f"pipeline: warning: cryptography unusable ({e}): QUIC SNI not decrypted",
                      file=sys.stderr, flush=True)
            _AES.append(None)     # asked once per process
    return _AES[0]

V1, V2 = 0x00000001, 0x6b3343cf
# Initial salts by version family (RFC 9001 5.2, RFC 9369 3.3.1, drafts 23-28 and 29-34).
_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
MAX_CRYPTO = 16384
_PORTS = frozenset((443, 80, 8443, 4433))      # QUIC's well-known UDP ports


def _salt(version):
    if version == V1:
        return _SALT_V1
    if version == V2:
        return _SALT_V2
    if version >> 8 == 0xff0000:
        d = version & 0xff
        return _SALT_D29 if d >= 29 else _SALT_D23 if d >= 23 else None
    if version & 0x0f0f0f0f == 0x0a0a0a0a:
        return None  # version negotiation grease
    return None


def known_version(v):
    return v in (V1, V2) or v >> 8 == 0xff0000 or v >> 24 == 0x51 or v >> 24 == 0x54 or v == 0 \
        or v >> 8 == 0xfaceb0 or (v & 0x0f0f0f0f) == 0x0a0a0a0a


def _hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _expand_label(secret, label, length):
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(secret, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def client_keys(dcid, version=V1):
    """(key, iv, hp) protecting the client's Initial packets."""
    initial = _hkdf_extract(_salt(version), dcid)
    secret = _expand_label(initial, b"client in", 32)
    pre = b"quicv2 " if version == V2 else b"quic "
    return (_expand_label(secret, pre + b"key", 16), _expand_label(secret, pre + b"iv", 12),
            _expand_label(secret, pre + b"hp", 16))


def _varint(b, i):
    first = b[i]
    n = 1 << (first >> 6)
    v = first & 0x3f
    for k in range(1, n):
        v = (v << 8) | b[i + k]
    return v, i + n


def decrypt_initial(packet):
    """Decrypt the first (Initial) packet of a datagram: (version, plaintext) or None."""
    if len(packet) < 7 or packet[0] & 0xc0 != 0xc0:
        return None
    version = int.from_bytes(packet[1:5], "big")
    salt = _salt(version)
    if salt is None:
        return None
    ptype = (packet[0] >> 4) & 3
    if ptype != (1 if version == V2 else 0):
        return None
    i = 5
    dl = packet[i]
    dcid = packet[i + 1:i + 1 + dl]
    i += 1 + dl
    i += 1 + packet[i]
    tlen, i = _varint(packet, i)
    i += tlen
    length, pn_off = _varint(packet, i)
    if pn_off + length > len(packet) or length < 20:
        return None
    aes = _aes()
    if aes is None:
        return None
    Cipher, algorithms, modes, AESGCM = aes
    key, iv, hp = client_keys(dcid, version)
    sample = packet[pn_off + 4:pn_off + 20]
    mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor().update(sample)
    first = packet[0] ^ (mask[0] & 0x0f)
    pn_len = (first & 3) + 1
    pn_bytes = bytes(a ^ b for a, b in zip(packet[pn_off:pn_off + pn_len], mask[1:1 + pn_len]))
    header = bytes([first]) + packet[1:pn_off] + pn_bytes
    pn = int.from_bytes(pn_bytes, "big")
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    try:
        plain = AESGCM(key).decrypt(nonce, bytes(packet[pn_off + pn_len:pn_off + length]), header)
    except Exception:
        return None
    return version, plain


def crypto_frames(plain):
    """(offset, data) of each CRYPTO frame; stops at the first frame it cannot skip."""
    out, i, n = [], 0, len(plain)
    while i < n:
        t = plain[i]
        if t == 0x00 or t == 0x01:          # PADDING, PING
            i += 1
        elif t == 0x06:                      # CRYPTO
            off, i = _varint(plain, i + 1)
            ln, i = _varint(plain, i)
            out.append((off, plain[i:i + ln]))
            i += ln
        elif t in (0x02, 0x03):              # ACK
            _, i = _varint(plain, i + 1)
            _, i = _varint(plain, i)
            cnt, i = _varint(plain, i)
            _, i = _varint(plain, i)
            for _ in range(cnt * 2):
                _, i = _varint(plain, i)
            if t == 0x03:
                for _ in range(3):
                    _, i = _varint(plain, i)
        elif t == 0x1c:                      # CONNECTION_CLOSE
            _, i = _varint(plain, i + 1)
            _, i = _varint(plain, i)
            ln, i = _varint(plain, i)
            i += ln
        else:
            break
    return out


def _gquic_sni(p):
    """SNI from a Google QUIC CHLO in clear (Q043/Q046 and older)."""
    at = p.find(b"CHLO")
    if at < 0 or at + 8 > len(p):
        return None
    ntags = struct.unpack("<H", p[at + 4:at + 6])[0]
    table = at + 8
    values = table + 8 * ntags
    prev = 0
    for k in range(ntags):
        e = table + 8 * k
        if e + 8 > len(p):
            return None
        tag, end = p[e:e + 4], struct.unpack("<I", p[e + 4:e + 8])[0]
        if tag == b"SNI\x00":
            return p[values + prev:values + end].decode("ascii", "replace").lower()
        prev = end
    return None


def match(p, from_client, state):
    if len(p) < 7:
        return None
    b0 = p[0]
    if b0 & 0x80:
        v = int.from_bytes(p[1:5], "big")
        if v >> 24 in (0x51, 0x54) and p[4:5].isdigit():
            return SURE  # Google QUIC Q046+ long header ("Q046")
        if known_version(v) and p[5] <= 20:
            if v == 0:
                return SURE  # version negotiation
            if b0 & 0x40 or v == V2:
                return SURE
    if from_client and (b0 & 0x09) == 0x09 and len(p) > 13 and p[9:12] in (b"Q04", b"Q03", b"Q02"):
        return SURE  # gQUIC public header: flags with version bit and 8-byte CID
    if (b0 & 0xc0) == 0x40:
        # a short header packet: QUIC met mid-flow, or not QUIC. NO as a session's first
        # payload, or off QUIC's ports: a connection opens with long headers (its Initial
        # packets), so a flow first seen mid-flow shows none later and nothing would ever
        # decide: every UDP session whose payload starts with 0x40-0x7f (ASCII letters)
        # kept the inspector busy for its whole budget, for a port guess in the end.
        # Undecided after a first payload of another shape, on QUIC's ports
        if state.n_client + state.n_server <= 1:
            return NO
        return None if state.server_port in _PORTS or state.client_port in _PORTS else NO
    return NO


def parse(p, from_client, state, meta):
    sc = state.scratch
    if not from_client:
        return bool(sc.get("quic.done"))
    if sc.get("quic.done"):
        return True
    if "quic.version" not in meta and p[0] & 0x80:
        v = int.from_bytes(p[1:5], "big")
        gq = p[1:2] in (b"Q", b"T") and p[2:5].isdigit()
        meta["quic.version"] = p[1:5].decode("ascii") if gq else "0x%08x" % v
    if (p[0] & 0x09) == 0x09 and p[9:12] in (b"Q04", b"Q03", b"Q02"):
        meta["quic.version"] = p[9:13].decode("ascii", "replace")
    if b"CHLO" in p:
        sni = _gquic_sni(p)
        if sni:
            meta["quic.sni"] = sni
        sc["quic.done"] = True
        return True
    try:
        got = decrypt_initial(p)
    except (IndexError, ValueError):
        got = None
    if got is None:
        sc["quic.tries"] = sc.get("quic.tries", 0) + 1
        if sc["quic.tries"] >= 3:
            sc["quic.done"] = True
        return bool(sc.get("quic.done"))
    parts = sc.setdefault("quic.crypto", {})
    for off, data in crypto_frames(got[1]):
        if off < MAX_CRYPTO:
            parts[off] = data
    stream = bytearray()
    while len(stream) in parts or any(o < len(stream) < o + len(d) for o, d in parts.items()):
        piece = parts.get(len(stream))
        if piece is None:
            o, d = next((o, d) for o, d in parts.items() if o < len(stream) < o + len(d))
            piece = d[len(stream) - o:]
        stream += piece
        if not piece:
            break
    if len(stream) >= 4 and stream[0] == 1:
        ln = int.from_bytes(stream[1:4], "big")
        if len(stream) >= 4 + ln:
            qv = meta.get("quic.version")
            try:
                tls.Hello(bytes(stream[4:4 + ln])).describe(meta, "quic", "q")
                meta.pop("quic.ja3", None)  # JA3 is defined for TLS over TCP only
                meta["quic.tls_version"] = meta.pop("quic.version")
            except Exception:
                pass
            if qv:
                meta["quic.version"] = qv
            sc["quic.done"] = True
            sc.pop("quic.crypto", None)
    return bool(sc.get("quic.done"))


def refuse(x):
    """match's NO for (first) payloads of 7 bytes or more without the long-header bit
    and without gQUIC's flags: a short header, or anything else."""
    b0 = x.h[:, 0]
    return (x.n >= 7) & ((b0 & 0x80) == 0) & ((b0 & 0x09) != 0x09)


def _first(b, from_client, transport):
    # a long header, gQUIC's public flags, or a short header (undecided)
    return b & 0x80 or (b & 0x09) == 0x09 or (b & 0xc0) == 0x40


register("quic", (UDP,), _PORTS, match, parse, snap=1500, first=_first, refuse=refuse)
