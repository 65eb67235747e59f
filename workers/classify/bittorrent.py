"""BitTorrent: the peer wire handshake ("\\x13BitTorrent protocol"), DHT
messages (bencoded KRPC) and the UDP tracker's connect request."""
from .registry import NO, SURE, TCP, UDP, register

_HANDSHAKE = b"\x13BitTorrent protocol"
_TRACKER_MAGIC = b"\x00\x00\x04\x17\x27\x10\x19\x80"


def match(p, from_client, state):
    if p.startswith(_HANDSHAKE):
        return SURE
    if state.transport == UDP:
        if p.startswith(b"BT-SEARCH * HTTP/1."):
            return SURE  # local service discovery (BEP 14)
        if p[:1] == b"d" and (b"1:y1:q" in p[:400] or b"1:y1:r" in p[:400] or b"1:y1:e" in p[:400]
                              or p.startswith((b"d1:ad2:id20:", b"d1:rd2:id20:", b"d1:e"))):
            return SURE
        if len(p) >= 16 and p[:8] == _TRACKER_MAGIC and p[8:12] == b"\x00\x00\x00\x00":
            return SURE
    return NO


def parse(p, from_client, state, meta):
    if p.startswith(_HANDSHAKE) and len(p) >= 48 and "bittorrent.info_hash" not in meta:
        meta["bittorrent.info_hash"] = bytes(p[28:48]).hex()
    return True


register("bittorrent", (TCP, UDP), (6881, 6882, 6883, 6884, 6885, 6886, 6887, 6888, 6889, 6969, 51413),
         match, parse, first=b"\x13Bd\x00")
