"""The wire format between the front-end, the workers and the collector.

Front-end -> worker (one ZeroMQ PUSH/PULL pair per worker), multipart:
    [b"B", header, events, payloads]
                             one chunk's rows for this worker: header is msgpack
                             {"cuts": [[end, now], ...], "paths": {id: "eth.ipv4.tcp", ...},
                             "proc": capture process}; session ids carry `proc`;
                             events is the raw buffer of an EVENT array (zero-copy
                             on both sides). The rows are cut in segments, one per
                             second of packet time: the worker feeds rows
                             [previous end, end) then advances its clock to `now`
                             (empty segments still advance it; now = -inf,
                             `NO_ADVANCE`: no advance there, as at a chunk's end
                             inside a second: where the stream's cuts fall does
                             not depend on its chunks). payloads holds
                             the first payload bytes of the rows of young
                             sessions (EVENT ploff/pllen), for classification.
                             Offline, the header says {"input": k, "base": offset}
                             instead and payloads is empty: the workers were forked
                             with the capture files mapped, and ploff counts from
                             `base` in input k (no payload byte is copied).
    [b"E", header]           end of stream: {"now": float}; the worker expires
                             what is idle at `now`, flushes the rest as
                             "shutdown" and reports its statistics.

Worker -> collector (all workers PUSH into one PULL), multipart:
    [b"R", records]          msgpack list of records, each a list in
                             `contracts.record.FIELDS` order
    [b"D", stats]            msgpack dict: this worker is done; its statistics

Worker, collector, uplink -> supervisor (PUSH/PULL, never blocking; about once a second):
    [b"M", stats]            msgpack dict of live figures (contracts.monitor)

Collector -> supervisor:
    [b"S", stats]            msgpack dict: everything written, the collector's
                             statistics and the workers' ones.

Sensor -> remote collector (`--collector tcp://HOST:PORT`; DEALER -> ROUTER,
CurveZMQ when configured; see `contracts.link`), multipart:
    [b"R", header, records]  header msgpack {"sensor": str, "run": str, "seq": int}:
                             batch `seq` (from 1) of this sensor process's run;
                             records exactly as a worker sent them
Remote collector -> sensor:
    [b"A", header]           msgpack {"run": str, "seq": int, "ok": bool}: the
                             batch is written (or was already: duplicates are
                             acknowledged and dropped), or was refused (ok false)

One EVENT row is one IP datagram (or a reassembled fragmented datagram) at one
encapsulation depth, already keyed: the worker never parses packets again.
"""
import struct

import numpy as np

EVENT = np.dtype([
    ("key", "<u8"),       # symmetric session-key hash (addresses, ports, proto, VLANs, tunnel context)
    ("fidx", "<u8"),      # number (from 1, across all inputs) of the frame that completed this datagram
    ("ts", "<f8"),        # packet time, epoch seconds
    ("wirelen", "<u4"),   # sum of the frames' original (wire) lengths
    ("caplen", "<u4"),    # sum of the frames' captured lengths
    ("ncap", "<u2"),      # frames that carried this datagram (fragments: > 1)
    ("dir", "u1"),        # 0: the source is the canonical lower endpoint, 1: the higher
    ("ipver", "u1"),      # 4 or 6
    ("proto", "u1"),      # transport protocol number (after IPv6 extension headers)
    ("depth", "u1"),      # 0 for the outermost IP layer, +1 per tunnel
    ("tcpflags", "u1"),   # TCP flags byte (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, ...), 0 otherwise
    ("nvlan", "u1"),      # number of 802.1Q tags (vlan0 outermost)
    ("sport", "<u2"),     # source port (0 where the transport has none)
    ("dport", "<u2"),
    ("payload", "<u4"),   # transport payload bytes, from the IP lengths (not the capture)
    ("iplen", "<u4"),     # IP length: IPv4 total length, IPv6 40 + payload length (a reassembled datagram: its
                          # header and its whole payload, once)
    ("seq", "<u4"),       # TCP sequence number; ICMP and ICMPv6: ICMP_SEEN | type << 8 | code (0: header not captured)
    ("ack", "<u4"),       # TCP acknowledgement number
    ("src_hi", "<u8"),    # source address bytes 0-7 as a big-endian number (IPv4: in the top 32 bits)
    ("src_lo", "<u8"),    # bytes 8-15
    ("dst_hi", "<u8"),
    ("dst_lo", "<u8"),
    ("smac", "<u8"),      # Ethernet source address (48 bits) of the header nearest this IP layer, 0 for none
    ("dmac", "<u8"),      # its destination address
    ("vlan0", "<u2"),
    ("vlan1", "<u2"),
    ("path", "<u2"),      # proto_path id (strings travel in the batch header)
    ("ctx", "<u8"),       # tunnel context hash (0 at depth 0), part of the key
    ("parent", "<u8"),    # parent (outer) session id, 0 for none
    ("ploff", "<u4"),     # where this row's payload bytes start in the batch's payload frame
    ("pllen", "<u2"),     # how many are there: 0 unless the session is young (classification)
])

ICMP_SEEN = 1 << 16     # `seq` of an ICMP row: its type and code were captured

RAW_ROW = np.dtype((np.void, EVENT.itemsize))     # an EVENT row as its bytes: moved whole, not field by field
_STRUCT_CODES = {("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q", ("f", 8): "d"}


def row_struct(*names, raw=(), whole=False, dtype=EVENT) -> struct.Struct:
    """A struct.Struct for the named EVENT fields of one row's bytes (or of another
    structured `dtype`'s row), named in row order:
    the pad bytes between them come from EVENT's offsets, so a field moved or added above
    moves the struct with it (no hand-counted format). Fields in `raw` come as their
    bytes; `whole` pads to the end of the row (to pack a whole row)."""
    fmt, at = ["<"], 0
    for name in names:
        dt, off = dtype.fields[name][:2]
        if off < at:
            raise ValueError(f"row_struct: {name} comes before the fields named ahead of it")
        if off > at:
            fmt.append(f"{off - at}x")
        fmt.append(f"{dt.itemsize}s" if name in raw else _STRUCT_CODES[dt.kind, dt.itemsize])
        at = off + dt.itemsize
    if whole and at < dtype.itemsize:
        fmt.append(f"{dtype.itemsize - at}x")
    return struct.Struct("".join(fmt))


def take_rows(ev, idx):
    """ev[idx] for EVENT rows, taken as raw row bytes: numpy copies fancy-indexed
    structured rows field by field, some thirty times slower."""
    return np.take(ev.view(RAW_ROW), idx).view(EVENT)


MSG_BATCH = b"B"
MSG_END = b"E"
MSG_RECORDS = b"R"
MSG_DONE = b"D"
MSG_STATS = b"S"
MSG_ACK = b"A"
MSG_METRICS = b"M"
MSG_CAPTURE = b"C"     # capture process k > 0 -> supervisor: its front-end statistics, at the end
MSG_READY = b"Y"       # capture process k > 0 -> supervisor: its ring is open (pipeline.capture)
NO_ADVANCE = float("-inf")     # a cut's time where the worker makes no advance (the wire's cuts)

# Session ids: (frame number << ID_SHIFT) | (capture_proc << DEPTH_BITS) | depth.
# The id names the frame that opened the session (numbered from 1 as Wireshark
# does, so no id is 0), so it is the same whatever the number of workers, and
# the front-end can name a tunnel's parent session without asking the worker
# that owns it.
DEPTH_BITS = 4
ID_SHIFT = 8
MAX_DEPTH = (1 << DEPTH_BITS) - 1


def session_id(fidx: int, depth: int, proc: int = 0) -> int:
    return (fidx << ID_SHIFT) | (proc << DEPTH_BITS) | depth

