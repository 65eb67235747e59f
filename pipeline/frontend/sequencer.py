"""The state one chunk leaves to the next, for K front-end processes on capture files.

Offline, chunk j is decoded by front-end process j mod K (pipeline/decoders.py), in
parallel, but its sequenced part (`FrontEnd.sequence`: reassembly, tunnel parents,
segment time, the payload budget) must see the state chunk j-1 left, as one process
would. That state travels with the turn: the token. Everything else a chunk's rows
depend on is either the chunk's own (decode), the reader's (frame numbers, `now`), or
shared memory (the payload budget's 8 MB table, made before the fork: only the
token's holder touches it).

A token costs its holder a pickle and its receiver an unpickle, about 20 us a pending
datagram (fragments waiting for the rest) and 1.4 us a tunnel parent (measured,
docs/benchmarks.md). A fragment flood can leave 65,536 pending datagrams: then a turn
would cost more than the chunk's own work, so the holder keeps the state instead
(`heavy`) and the other processes hand it their chunks to do (pinning); it passes the
state on again once it is light (`light`).
"""
import mmap
import pickle

# estimated microseconds to pass the state on (dump + load), above which the holder
# keeps it, and below which it lets it go again (hysteresis: no flapping at the edge)
PIN_ABOVE_US = 5000
UNPIN_BELOW_US = 2500
US_PER_DATAGRAM = 20.0
US_PER_PARENT = 1.4


def shared_table(bits: int = 23):
    """The payload budget's count table in anonymous shared memory (zeroed, MAP_SHARED):
    made before the front-end processes are forked, so that each sees the same bytes."""
    return mmap.mmap(-1, 1 << bits)


def export(fe) -> bytes:
    """The token: what the next chunk's `sequence` depends on, of front-end `fe`."""
    return pickle.dumps((fe._seg_now, fe._advanced, fe._chunks, fe.young.reset_at, fe.parents.swept,
                         fe.parents.table, fe.frags.export(), fe.inner_frags.export()), protocol=5)


def load(fe, token: bytes) -> None:
    """Take the state of `export` over (this front-end's statistics and path ids stay its own)."""
    (seg_now, fe._advanced, fe._chunks, fe.young.reset_at, fe.parents.swept, fe.parents.table, frags,
     inner) = pickle.loads(token)
    fe._seg_now = seg_now
    fe.frags.restore(frags)
    fe.inner_frags.restore(inner)


def cost_us(fe) -> float:
    """What passing `fe`'s state on would cost, estimated."""
    return US_PER_DATAGRAM * (fe.frags.pending + fe.inner_frags.pending) + US_PER_PARENT * len(fe.parents.table)


def heavy(fe) -> bool:
    return cost_us(fe) > PIN_ABOVE_US


def light(fe) -> bool:
    return cost_us(fe) < UNPIN_BELOW_US
