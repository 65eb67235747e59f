"""Kerberos v5 (RFC 4120): an application-tagged message whose first field is
pvno 5; over TCP behind a 4-byte record length."""
import numpy as np

from . import ber
from .registry import NO, SURE, TCP, UDP, register

MSG_TYPES = {0x6a: "as-req", 0x6b: "as-rep", 0x6c: "tgs-req", 0x6d: "tgs-rep", 0x6e: "ap-req",
             0x6f: "ap-rep", 0x74: "krb-safe", 0x75: "krb-priv", 0x76: "krb-cred", 0x7e: "krb-error"}

_TYPE = np.zeros(256, bool)
_TYPE[list(MSG_TYPES)] = True


def _message(p, tcp):
    if tcp:
        if len(p) < 8:
            return None
        p = p[4:]
    if len(p) < 10 or p[0] not in MSG_TYPES:
        return None
    outer = ber.tlv(p, 0)
    if outer is None:
        return None
    seq = ber.tlv(p, outer[1])
    if seq is None or seq[0] != 0x30:
        return None
    first = ber.tlv(p, seq[1])          # [0] pvno (requests, krb-error) or [0] pvno in replies too
    if first is None or first[0] not in (0xa0, 0xa1):
        return None
    v = ber.small_int(p, first[1])
    if v is None or v[0] != 5:
        return None
    return p[0]


def match(p, from_client, state):
    t = _message(p, state.transport == TCP)
    if t is None:
        return NO
    state.scratch["krb"] = t
    return SURE


def refuse(x):
    """_message's first checks over many payloads: too short, or no message type where it goes."""
    tag = np.where(x.tcp, x.h[:, 4], x.h[:, 0])
    return (x.n < np.where(x.tcp, 14, 10)) | ~_TYPE[tag]


def parse(p, from_client, state, meta):
    t = state.scratch.pop("krb", None) or _message(p, state.transport == TCP)
    if t:
        meta.setdefault("kerberos.msg_type", MSG_TYPES[t])
    return True


# UDP: the message's application tag first; TCP: a record length (any byte)
register("kerberos", (UDP, TCP), (88,), match, parse,
         first=lambda b, from_client, transport: transport == TCP or b in MSG_TYPES, refuse=refuse)
