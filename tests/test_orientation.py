"""Which end is the client: the per-packet rule and its numpy twin (workers/orientation.py),
against expectations written from Zeek's rule (SYN: its sender; SYN-ACK: its receiver;
otherwise, TCP or UDP from a service port to a port that is not one: its receiver)."""
import itertools

import numpy as np

from workers import orientation

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
PORTS = [80, 443, 53, 67, 68, 3544, 5072, 22, 40000, 1024, 0, 65535]
FLAGS = [0, SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK, SYN | FIN, 0xFF]
PROTOS = [6, 17, 1, 58, 132, 47]


def expected(d, proto, flags, sport, dport):
    if proto == 6 and flags & SYN:
        return 1 - d if flags & ACK else d
    services = {6: orientation.SERVER_PORTS_TCP, 17: orientation.SERVER_PORTS_UDP}.get(proto)
    if services is not None and sport in services and dport not in services:
        return 1 - d
    return d


def test_per_packet_and_columns_follow_the_rule():
    cases = list(itertools.product((0, 1), PROTOS, FLAGS, PORTS, PORTS))
    want = [expected(*c) for c in cases]
    assert [orientation.client_dir(*c) for c in cases] == want
    d, proto, flags, sport, dport = (np.array(col, dt) for col, dt in
                                     zip(zip(*cases), (np.uint8, np.uint8, np.uint8, np.uint16, np.uint16)))
    assert orientation.client_dirs(d, proto, flags, sport, dport).tolist() == want
    assert 0 < sum(w != c[0] for w, c in zip(want, cases)) < len(cases)      # both outcomes occur


def test_the_port_lists_are_zeeks_services_per_transport():
    """A few of Zeek's analyzers' ports, by transport: 3544 (Teredo) is UDP's only, 22
    (SSH) TCP's only, 53 both; DHCP's two ports are both services (no swap between them)."""
    assert 3544 in orientation.SERVER_PORTS_UDP and 3544 not in orientation.SERVER_PORTS_TCP
    assert 22 in orientation.SERVER_PORTS_TCP and 22 not in orientation.SERVER_PORTS_UDP
    assert 53 in orientation.SERVER_PORTS_TCP and 53 in orientation.SERVER_PORTS_UDP
    assert orientation.client_dir(0, 17, 0, 67, 68) == 0 and orientation.client_dir(1, 17, 0, 68, 67) == 1
