"""Everything TCP-specific a session tracks: handshake RTT, close, retransmissions.

Rules (the whole state machine is the two tables below):
- Handshake: a SYN from the client, a SYN-ACK from the server, then the client's
  first ACK; `rtt` = that ACK's time - the (last) SYN's time. A capture that
  starts after the SYN has no RTT.
- Close: FIN seen in both directions, or any RST, closes the session; the worker
  then ends it after the close linger (trailing ACKs stay inside), or at once
  when a new SYN reuses the tuple.
- Retransmission: a data segment whose whole sequence range [seq, seq+len) lies
  within the range already seen in its direction (serial-number arithmetic).
  Reordered segments that fill a gap count too: tracking holes is not worth
  its memory here.
"""
SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
MASK = 0xFFFFFFFF
HALF = 0x80000000

# handshake states
HS_NONE, HS_SYN, HS_SYNACK, HS_DONE = range(4)
# handshake events
EV_SYN_CLIENT, EV_SYNACK_SERVER, EV_ACK_CLIENT = range(3)

HANDSHAKE = {
    (HS_NONE, EV_SYN_CLIENT): HS_SYN,
    (HS_SYN, EV_SYN_CLIENT): HS_SYN,          # retransmitted SYN: RTT counts from the last one
    (HS_SYN, EV_SYNACK_SERVER): HS_SYNACK,
    (HS_SYNACK, EV_SYNACK_SERVER): HS_SYNACK,
    (HS_SYNACK, EV_ACK_CLIENT): HS_DONE,      # RTT measured here
}

# close: bit 0 = FIN seen from direction 0, bit 1 = from direction 1; CLOSED once both, or RST
CLOSED = 4
CLOSE = {
    (0, 0): 1, (0, 1): 2, (1, 1): 3 | CLOSED, (2, 0): 3 | CLOSED,
    (1, 0): 1, (2, 1): 2,
}


class TcpState:
    __slots__ = ("hs", "syn_ts", "rtt", "close", "lo0", "hi0", "lo1", "hi1", "retrans", "flags")

    def __init__(self):
        self.hs = HS_NONE
        self.syn_ts = 0.0
        self.rtt = None
        self.close = 0
        self.lo0 = self.hi0 = self.lo1 = self.hi1 = None
        self.retrans = 0
        self.flags = 0

    @property
    def closed(self) -> bool:
        return bool(self.close & CLOSED)


def handshake_event(flags: int, from_client: bool):
    if flags & SYN:
        if flags & ACK:
            return None if from_client else EV_SYNACK_SERVER
        return EV_SYN_CLIENT if from_client else None
    if flags & ACK and from_client:
        return EV_ACK_CLIENT
    return None


def update(st: TcpState, d: int, from_client: bool, flags: int, seq: int, payload: int, ts: float) -> bool:
    """Apply one segment (canonical direction d). Returns True when it closes the session."""
    if payload:
        data(st, d, seq, payload)
    return control(st, d, from_client, flags, ts)


def control(st: TcpState, d: int, from_client: bool, flags: int, ts: float) -> bool:
    """The flags' part of `update`: handshake and close (no sequence numbers). Returns
    True when this segment closes the session."""
    st.flags |= flags
    if st.hs != HS_DONE:
        ev = handshake_event(flags, from_client)
        if ev is not None:
            nxt = HANDSHAKE.get((st.hs, ev))
            if nxt is not None:
                if ev == EV_SYN_CLIENT:
                    st.syn_ts = ts
                elif nxt == HS_DONE:
                    st.rtt = max(0.0, ts - st.syn_ts)
                st.hs = nxt
    if flags & (FIN | RST) and not st.close & CLOSED:
        st.close = (st.close | 3 | CLOSED) if flags & RST else CLOSE[(st.close, d)]
        return bool(st.close & CLOSED)
    return False


def data(st: TcpState, d: int, seq: int, payload: int) -> None:
    """The retransmission part of `update`, for a segment carrying `payload` bytes
    (independent of the flags: the worker may apply it in bulk)."""
    end = (seq + payload) & MASK
    if d == 0:
        lo, hi = st.lo0, st.hi0
    else:
        lo, hi = st.lo1, st.hi1
    if hi is None:
        lo, hi = seq, end
    elif ((seq - lo) & MASK) < HALF and ((hi - end) & MASK) < HALF:
        st.retrans += 1
    else:
        if ((end - hi) & MASK) < HALF:
            hi = end
        if ((lo - seq) & MASK) < HALF:
            lo = seq
    if d == 0:
        st.lo0, st.hi0 = lo, hi
    else:
        st.lo1, st.hi1 = lo, hi
