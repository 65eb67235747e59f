"""Batches applied in chunk order when several front-end processes share one stream.

Offline with `--capture-procs K`, chunk j's batch comes from front-end process j mod K
over its own pipe, so batches can arrive out of order; a worker applies them by their
number (`seq`), holding early ones here. The front-ends' turns bound how early a batch
can be (a process sends chunk j+K only after the turns of j+1 .. j+K-1), so at most
about K wait. Live, batches carry no number and are applied as they come.
"""


class InOrder:
    def __init__(self, first: int | None = 0):
        """`first`: the number of the first batch; None for a worker restarted mid-run,
        which takes the first it receives as its first (what it missed is counted lost)."""
        self.next = first
        self.waiting = {}

    def put(self, seq: int, batch) -> list:
        """Batch `seq` has come: returns the batches that can be applied now, in order."""
        if self.next is None:
            self.next = seq
        if seq < self.next:                 # a restarted worker's: behind its first, applied as it comes
            return [batch]
        self.waiting[seq] = batch
        out = []
        while self.next in self.waiting:
            out.append(self.waiting.pop(self.next))
            self.next += 1
        return out

    def rest(self) -> list:
        """At the end of every stream: what still waits (only after a gap a restart left), in order."""
        out = [self.waiting[s] for s in sorted(self.waiting)]
        self.waiting.clear()
        return out
