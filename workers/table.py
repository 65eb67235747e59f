"""The worker's session table: its open sessions by key, their expiry wheel, its capacity.

Suricata's flow-hash concern: finding a session and admitting a new one. A
worker looks sessions up by the 64-bit key hash (a dict), files each in the
expiry wheel (`expiry.Wheel`) at the second it is next due, and, with a
capacity (`--max-sessions`, 0: none), makes room before it opens one more:
the victim is the live session filed earliest in the wheel (end_reason
"evicted"). A batch that could fill the table goes packet by packet whole
(`may_fill`), so evictions follow packet order whatever path a batch would
take. What to evict when full, and how to behave under a flood, is decided
here and only here.
"""
from .expiry import Wheel


class SessionTable(dict):
    """key -> Session, with the wheel the sessions are filed in and the capacity rule."""
    __slots__ = ("wheel", "capacity")

    def __init__(self, capacity: int = 0):
        super().__init__()
        self.wheel = Wheel()
        self.capacity = capacity        # open sessions at most (0: no limit)

    def may_fill(self, rows: int) -> bool:
        """Whether `rows` more rows could take the table past its capacity."""
        return bool(self.capacity) and len(self) + rows > self.capacity

    def victim(self):
        """The session to end before one more opens (None: there is room)."""
        if self.capacity and len(self) >= self.capacity:
            return self.wheel.oldest()
        return None
