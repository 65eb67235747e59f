"""TCP state in isolation: handshake RTT, close, retransmissions."""
from workers import tcp
from workers.tcp import ACK, FIN, RST, SYN, TcpState


def test_rtt_from_syn_to_completing_ack():
    st = TcpState()
    tcp.update(st, 0, True, SYN, 100, 0, 10.0)
    tcp.update(st, 1, False, SYN | ACK, 500, 0, 10.02)
    tcp.update(st, 0, True, ACK, 101, 0, 10.05)
    assert abs(st.rtt - 0.05) < 1e-9


def test_rtt_counts_from_last_retransmitted_syn():
    st = TcpState()
    tcp.update(st, 0, True, SYN, 100, 0, 10.0)
    tcp.update(st, 0, True, SYN, 100, 0, 11.0)
    tcp.update(st, 1, False, SYN | ACK, 500, 0, 11.01)
    tcp.update(st, 0, True, ACK, 101, 0, 11.02)
    assert abs(st.rtt - 0.02) < 1e-9


def test_no_rtt_without_syn():
    st = TcpState()
    tcp.update(st, 1, False, SYN | ACK, 500, 0, 1.0)
    tcp.update(st, 0, True, ACK, 101, 0, 1.1)
    assert st.rtt is None


def test_fin_both_ways_closes_rst_closes():
    st = TcpState()
    assert not tcp.update(st, 0, True, FIN | ACK, 1, 0, 1.0)
    assert not tcp.update(st, 0, True, FIN | ACK, 1, 0, 1.1)   # same side again: still half closed
    assert tcp.update(st, 1, False, FIN | ACK, 1, 0, 1.2)
    assert st.closed
    st2 = TcpState()
    assert tcp.update(st2, 1, False, RST, 1, 0, 1.0) and st2.closed


def test_retransmission_is_a_range_already_seen():
    st = TcpState()
    tcp.update(st, 0, True, ACK, 1000, 100, 1.0)
    tcp.update(st, 0, True, ACK, 1100, 100, 1.1)
    tcp.update(st, 0, True, ACK, 1000, 100, 1.2)   # retransmitted
    tcp.update(st, 0, True, ACK, 1050, 50, 1.3)    # inside what was seen
    tcp.update(st, 0, True, ACK, 1150, 100, 1.4)   # partly new: not a retransmission
    tcp.update(st, 1, False, ACK, 1000, 100, 1.5)  # other direction has its own space
    assert st.retrans == 2


def test_retransmission_across_sequence_wrap():
    st = TcpState()
    tcp.update(st, 0, True, ACK, 0xFFFFFF00, 0x200, 1.0)   # wraps past 2**32
    tcp.update(st, 0, True, ACK, 0x00000050, 0x50, 1.1)    # inside the wrapped range
    assert st.retrans == 1
