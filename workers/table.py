"""The worker's session table: its open sessions, their expiry wheel, its capacity, and what
it gives up when full (Suricata's flow-hash and flow-manager emergency concerns).

A worker looks sessions up by the 64-bit key hash (a dict) and files each in
the expiry wheel (`expiry.Wheel`) at the second it is next due. The rest of
this module is how a table behaves under a flood, decided here and only here:

Classes, from what a session already holds (no work per packet; `klass`):
* UNANSWERED: no answer yet (`answered`): packets one way only, or a TCP
  handshake never completed (a SYN met by silence, by an RST, or by a SYN-ACK
  never acknowledged; scans and SYN floods), unless the session was met
  mid-stream (its first packet no SYN, both ways seen) or both ways carried
  data (a handshake whose SYN-ACK the capture missed);
* CLOSING: answered TCP that closed (FIN both ways, or RST), in its linger;
* ESTABLISHED: the rest.

Timeouts. An unanswered session's idle timeout is its class's cut to
`unanswered` (`contracts.timeouts.idle_limit`). A session's `timeout` holds a
lower bound of its idle timeout (what it opens with assumes no answer), so
that becoming answered costs nothing when it happens; `expired` decides with
the exact one, where a session looks idle by its `timeout`, and raises it.
The batch plan (`plan`) takes the lower bound as it is: a shorter timeout
only sends more sessions the per-packet way, never a wrong record.

Capacity (`--max-sessions`, 0: none). Inside a batch the table may hold more:
at most that batch's new sessions more. At the batch's end (`settle`) it is
trimmed back: victims UNANSWERED first, then CLOSING, then ESTABLISHED, each
class idlest first by (last packet time, session id). That order is exact and
depends only on the sessions, so the batch path and the per-packet path, which
reach the batch's end with the same sessions, evict the same ones. Victims
come from per-class queues (`eviction.IdleQueue`): no scan of the table.

Emergency mode. When a settled table holds more than `high` (90%) of its
capacity, the unanswered timeout drops to `emergency` (5 s; the unanswered
sessions already filed are filed again at their shorter deadline, once per
episode) until it holds less than `recovery` (70%). Episodes are counted; the
worker process says when one begins and ends.
"""
from contracts.timeouts import Timeouts
from contracts.wire import row_struct

from .eviction import IdleQueue
from .expiry import Wheel
from .session import FIRST
from .tcp import CLOSED, HS_DONE, SYN

UNANSWERED, CLOSING, ESTABLISHED = range(3)     # eviction order
CLASSES = ("unanswered", "closing", "established")
HIGH, RECOVERY = 0.9, 0.7                        # emergency mode's marks, shares of the capacity
COMPACT_MIN = 4096
_FLAGS_AT = FIRST.fields["tcpflags"][1]           # in a session's first row
_CLASS_KEY = row_struct("proto", "sport", "dport", dtype=FIRST)


def answered(s) -> bool:
    """Whether the session has had an answer (the module's classes). Counters and TCP
    state only grow, so once answered a session stays answered."""
    c = s.c
    if not (c[0] and c[6]):
        return False
    st = s.tcp
    return st is None or st.hs == HS_DONE or not s.first[_FLAGS_AT] & SYN or bool(c[4] and c[10])


def klass(s) -> int:
    """UNANSWERED, CLOSING or ESTABLISHED (the module's classes)."""
    if not answered(s):
        return UNANSWERED
    st = s.tcp
    return CLOSING if st is not None and st.close & CLOSED else ESTABLISHED


def _idleness(s):
    return s.last, s.id


class SessionTable(dict):
    """key -> Session, with the wheel the sessions are filed in, the capacity, the eviction
    queues and the emergency state."""
    __slots__ = ("wheel", "capacity", "timeouts", "high", "recovery", "unanswered", "limits", "queues",
                 "emergency", "episodes", "_compact_at")

    def __init__(self, capacity: int = 0, timeouts: Timeouts = Timeouts(), high: float = HIGH,
                 recovery: float = RECOVERY):
        super().__init__()
        self.wheel = Wheel()
        self.capacity = capacity        # open sessions at most (0: no limit)
        self.timeouts = timeouts
        self.high, self.recovery = high, recovery
        self.queues = (IdleQueue(), IdleQueue(), IdleQueue())      # by class
        self.emergency = False
        self.episodes = 0
        self._compact_at = COMPACT_MIN
        self._unanswered(timeouts.unanswered)

    def _unanswered(self, u: float) -> None:
        self.unanswered = u             # the unanswered timeout now
        self.limits = self.timeouts.capped(u)   # what a new or closing session's `timeout` starts at

    # -- filing ------------------------------------------------------------------
    def admit(self, s, start: float) -> None:
        """A new session (unanswered as it opens; `start`: its first packet's time) in the
        unanswered queue."""
        if self.capacity:
            self.queues[UNANSWERED].add(s, int(start))

    def admit_many(self, sessions: list, starts) -> None:
        """`admit` for many new sessions (`starts`: their first packet times, float64)."""
        if self.capacity:
            self.queues[UNANSWERED].add_many(sessions, starts)

    def closed(self, s) -> None:
        """The session has just closed (FIN both ways, or RST): answered, it is CLOSING now.
        An unanswered one stays where it is: it is filed where it belongs when found."""
        if self.capacity and answered(s):
            self.queues[CLOSING].add(s, int(s.last))

    # -- time ----------------------------------------------------------------------
    def expired(self, s, now: float) -> bool:
        """Whether the session, which looks idle at `now` by its `timeout` (a lower bound),
        is idle by its exact idle timeout; if not, that becomes its `timeout`."""
        t = self.timeouts
        to = s.timeout
        if to > t.unanswered:           # above every lower bound: an exact timeout, raised before
            return True
        st = s.tcp
        closing = st is not None and st.close & CLOSED and t.close_expiry
        if answered(s):
            to = t.close_linger if closing else t.idle_for(*_CLASS_KEY.unpack_from(s.first))
        elif to >= self.unanswered or closing and to >= t.close_linger:
            return True                 # at its exact timeout already: no more than either
        else:
            to = min(t.close_linger if closing else t.idle_for(*_CLASS_KEY.unpack_from(s.first)), self.unanswered)
        if now - s.last >= to:
            return True
        s.timeout = to
        return False

    # -- a batch's end ---------------------------------------------------------------
    def settle(self, evict) -> None:
        """At the end of a batch: the table trimmed to its capacity (`evict(session, class)`
        ends each victim, in eviction order), then emergency mode in or out."""
        cap = self.capacity
        if not cap:
            return
        if len(self) > cap:
            self._trim(len(self) - cap, evict)
        n = len(self)
        if not self.emergency and n > self.high * cap:
            self._enter()
        elif self.emergency and n < self.recovery * cap:
            self.emergency = False
            self._unanswered(self.timeouts.unanswered)
        if sum(q.entries for q in self.queues) > self._compact_at:
            self._compact_at = 2 * sum(q.compact() for q in self.queues) + COMPACT_MIN

    def _trim(self, excess: int, evict) -> None:
        """Evict `excess` sessions: the lowest class first, each idlest first (the module's
        docstring). A queue's oldest bucket is put in order as it is taken: entries of
        ended sessions dropped, the others filed where they now belong (a later second,
        their class's queue), the rest sorted by (last, id)."""
        queues = self.queues
        for cls in (UNANSWERED, CLOSING, ESTABLISHED):
            q = queues[cls]
            while excess > 0:
                got = q.oldest()
                if got is None:
                    break
                second, b = got
                here = []
                for s in b:
                    if s.ended:
                        continue
                    k = klass(s)
                    if k != cls:
                        queues[k].add(s, int(s.last))
                        continue
                    at = int(s.last)
                    if at != second:
                        q.add(s, at)
                    else:
                        here.append(s)
                if not here:
                    continue
                here.sort(key=_idleness)
                left = []
                for s in here:
                    if s.ended:             # a second entry of a session just evicted
                        continue
                    if excess > 0:
                        evict(s, cls)
                        excess -= 1
                    else:
                        left.append(s)
                if left:
                    q.put_back(second, left)
            if excess <= 0:
                return

    def _enter(self) -> None:
        """Emergency mode: the unanswered timeout drops to the emergency one, and the
        unanswered sessions already filed are filed again at their shorter deadline."""
        self.emergency = True
        self.episodes += 1
        u = min(self.timeouts.emergency, self.timeouts.unanswered)
        self._unanswered(u)
        file = self.wheel.file
        for s in list(self.queues[UNANSWERED].sessions()):
            if not s.ended and s.timeout > u and not answered(s):
                s.timeout = u
                file(s, min(s.last + u, s.next_report))

    @property
    def occupancy(self) -> float:
        """Open sessions as a share of the capacity (0 without one)."""
        return len(self) / self.capacity if self.capacity else 0.0
