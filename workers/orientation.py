"""Which end of a new session is the client (the initiator), from its first packet.

The first packet's sender, unless the packet says otherwise: a SYN-ACK first means
the capture began mid-handshake (its receiver sent the SYN); and a first packet that
is not a SYN, TCP or UDP, sent from a well-known service port to a port that is not
one, is the server talking (a capture that began mid-conversation, a reply whose
request was lost): its receiver is the client. That is Zeek's rule (its
`likely_server_ports`, the ports its analyzers register; `^` in the history says the
client is not the first packet's sender), so conn_state and history read the same as
Zeek's. Both engine paths use it: `client_dir` per packet, `client_dirs` over numpy
columns.
"""
import numpy as np

_SYN, _ACK = 0x02, 0x10
# the service ports Zeek's default analyzers register (base/protocols/*: `ports`),
# TCP and UDP apart; both ends on such ports (DHCP 67/68, DNS 53/53): no swap
SERVER_PORTS_TCP = frozenset((
    21, 22, 25, 53, 80, 81, 88, 110, 135, 139, 143, 389, 443, 445, 502, 563, 585, 587, 614, 631, 636,
    750, 989, 990, 992, 993, 995, 1080, 1434, 1883, 2811, 3128, 3268, 3306, 3389, 5222, 5223, 5269,
    5432, 6379, 6666, 6667, 6668, 6669, 8000, 8080, 8888, 20000))
SERVER_PORTS_UDP = frozenset((
    53, 67, 68, 88, 123, 137, 161, 162, 389, 443, 514, 750, 1812, 2123, 2152, 3544, 4789, 5060, 5072,
    5353, 5355, 6081, 20000))
# by port: bit 0 a TCP service port, bit 1 a UDP one
_SERVER = np.zeros(65536, np.uint8)
_SERVER[sorted(SERVER_PORTS_TCP)] |= 1
_SERVER[sorted(SERVER_PORTS_UDP)] |= 2
_SERVER_LIST = _SERVER.tolist()
_BIT = {6: 1, 17: 2}


def client_dir(d: int, proto: int, flags: int, sport: int, dport: int) -> int:
    """The client's canonical direction for a session whose first packet went in
    direction d (0 or 1) with these TCP flags and ports."""
    if proto == 6:
        if flags & _SYN:
            return d if not flags & _ACK else 1 - d
        bit = 1
    elif proto == 17:
        bit = 2
    else:
        return d
    if _SERVER_LIST[sport] & bit and not _SERVER_LIST[dport] & bit:
        return 1 - d
    return d


def client_dirs(d, proto, flags, sport, dport):
    """`client_dir` over numpy columns (the first rows of new sessions)."""
    d = d.astype(np.int64)
    bit = np.where(proto == 6, 1, np.where(proto == 17, 2, 0)).astype(np.uint8)
    syn = (proto == 6) & ((flags & _SYN) != 0)
    swap = np.where(syn, (flags & _ACK) != 0,
                    ((_SERVER[sport] & bit) != 0) & ((_SERVER[dport] & bit) == 0))
    return np.where(swap, 1 - d, d)
