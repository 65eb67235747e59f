"""Zeek-style connection uids ("C" + base62), derived from (sensor, session id).

Zeek draws a random 96-bit uid per connection. Ours must instead be the same
wherever a session appears: conn.log, dns.log/ssl.log/http.log, open_conn.log
across its interim reports, the tunnel_parents of its inner sessions (which
know only the parent's session id), and after a collector restart. So the 96
bits are a keyed permutation of the 64-bit session id, keyed per sensor:

    k1, k2 = blake2b(sensor, key=KEY)          (two 64-bit words)
    word1  = mix(session_id ^ k1)              (64 bits)
    word0  = mix(session_id ^ k2) >> 32        (32 bits)

`mix` is the SplitMix64 finaliser, a bijection of 64-bit words, so two
sessions of one sensor never share word1: within a sensor's run uids cannot
collide. Session ids restart with each run of a sensor (they count frames), so
uids can repeat across runs of the same sensor; join logs within a run (or by
uid and time). The words are written as Zeek writes them (src/UID.cc): "C",
then each word in base62, least significant digit first, without padding, so
a uid is usually 18 characters, sometimes fewer (`^C[0-9A-Za-z]{1,17}$`).

`uids` does a whole column at once with numpy (the writer's hot path);
`uid` is the same for one id (tests hold the two to each other).
"""
import hashlib

import numpy as np

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
KEY = b"session-pipeline zeek uid v1"
M64 = (1 << 64) - 1
_C1, _C2 = 0xbf58476d1ce4e5b9, 0x94d049bb133111eb
_ALPHA = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)
_KEYS: dict = {}


def sensor_keys(sensor) -> tuple:
    """The two 64-bit key words of a sensor (cached: a batch comes from one or a few)."""
    if type(sensor) is not str:
        sensor = str(sensor)
    got = _KEYS.get(sensor)
    if got is None:
        if len(_KEYS) >= 4096:
            _KEYS.clear()
        d = hashlib.blake2b(sensor.encode("utf-8", "surrogatepass"), digest_size=16, key=KEY).digest()
        got = _KEYS[sensor] = (int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little"))
    return got


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * _C1) & M64
    z = ((z ^ (z >> 27)) * _C2) & M64
    return z ^ (z >> 31)


def _base62(v: int) -> str:
    out = []
    while True:
        v, d = divmod(v, 62)
        out.append(ALPHABET[d])
        if not v:
            return "".join(out)


def uid(sensor, session_id) -> str:
    k1, k2 = sensor_keys(sensor)
    try:
        sid = int(session_id) & M64
    except (TypeError, ValueError, OverflowError):
        sid = 0                     # not an id at all (never from a checked record): still a uid
    return "C" + _base62(_mix(sid ^ k2) >> 32) + _base62(_mix(sid ^ k1))


def _mix_array(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def _digits(words, width: int):
    """(n, width) characters of each word in base62, least significant first, and zero bytes
    where a shorter word has no more digits."""
    n = len(words)
    out = np.empty((n, width), dtype=np.uint8)
    v = words.copy()
    used = np.ones(n, dtype=bool)
    base = np.uint64(62)
    for k in range(width):
        if k:
            used &= v != 0
        out[:, k] = np.where(used, _ALPHA[(v % base).astype(np.intp)], 0)
        v //= base
    return out


def uids(sensors, session_ids) -> list:
    """uid(sensor, session_id) for two equal-length columns, as a list of str."""
    n = len(session_ids)
    if n == 0:
        return []
    try:
        sid = np.fromiter(session_ids, dtype=np.uint64, count=n)
    except (TypeError, ValueError, OverflowError):
        return list(map(uid, sensors, session_ids))
    distinct = set(sensors)
    if len(distinct) == 1:
        k1, k2 = (np.uint64(k) for k in sensor_keys(next(iter(distinct))))
    else:
        keys = [sensor_keys(s) for s in sensors]
        k1 = np.fromiter((k[0] for k in keys), dtype=np.uint64, count=n)
        k2 = np.fromiter((k[1] for k in keys), dtype=np.uint64, count=n)
    with np.errstate(over="ignore"):
        word1 = _mix_array(sid ^ k1)
        word0 = _mix_array(sid ^ k2) >> np.uint64(32)
    chars = np.empty((n, 19), dtype=np.uint8)
    chars[:, 0] = ord("C")
    chars[:, 1:7] = _digits(word0, 6)
    chars[:, 7:18] = _digits(word1, 11)
    chars[:, 18] = ord("\n")
    # the zero bytes stand where a word had fewer digits: dropping them closes the gaps
    return chars.tobytes().replace(b"\0", b"").decode("ascii").split("\n")[:-1]
