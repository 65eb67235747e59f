"""RTP (RFC 3550) by heuristics, as it has no signature: version 2, a media
payload type, and SURE only when two packets of one direction carry the same
SSRC with sequence numbers a few apart. RTCP (types 200-204) also counts."""
from .registry import NO, SURE, UDP, WEAK, register


def _pt_ok(pt):
    return pt <= 34 or 96 <= pt <= 127


def match(p, from_client, state):
    if len(p) < 12 or p[0] & 0xc0 != 0x80:
        return NO
    if 200 <= p[1] <= 204:        # RTCP SR/RR/SDES/BYE/APP
        ln = ((p[2] << 8) | p[3]) * 4 + 4
        return WEAK if ln <= len(p) else NO
    if not _pt_ok(p[1] & 0x7f):
        return NO
    key = "rtp.c" if from_client else "rtp.s"
    ssrc, seq = bytes(p[8:12]), (p[2] << 8) | p[3]
    prev = state.scratch.get(key)
    state.scratch[key] = (ssrc, seq, p[1] & 0x7f)
    if prev and prev[0] == ssrc and prev[2] == p[1] & 0x7f and 0 < (seq - prev[1]) & 0xffff <= 10:
        return SURE
    return WEAK if prev is None or prev[0] == ssrc else NO


register("rtp", (UDP,), (), match, first=range(0x80, 0xc0))  # version 2
