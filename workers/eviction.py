"""Eviction queues: a class's sessions by the second of their last packet, lazily up to date.

A full table must give up its idlest sessions of the lowest class first
(`table.SessionTable.trim`) without a scan of the table per batch: under a
flood every batch evicts, and the table may hold 200k sessions. So each class
has a queue of one-second buckets, filed by `int(last)` at the moment of
filing (a session is filed at its opening, at its close, and when it is found
in the wrong queue), and nothing moves when a packet comes. The entries go
stale, never wrong in the one way that matters: an entry's second is never
later than the session's `int(last)`, since `last` only grows. Taking victims
therefore looks at the oldest bucket only: its entries of ended sessions are
dropped, those whose session moved on (a later second, another class) are
filed where they now belong, and what is left are the class's sessions idle
since that second, sorted by (last, id) for an exact order. Each entry is looked
at once per filing: amortised O(1) a session.

A session may sit in two queues at once (opened unanswered, filed again at its
close); the class decides which entry counts, and the entries of ended
sessions go in `compact` (as the expiry wheel's: once the queues hold twice the
entries they kept at their last compaction, and `compact_min` more).
"""
import heapq

import numpy as np


class IdleQueue:
    """One class's sessions in one-second buckets, by `int(last)` when filed."""
    __slots__ = ("buckets", "heap", "entries")

    def __init__(self):
        self.buckets = {}
        self.heap = []
        self.entries = 0

    def add(self, s, second: int) -> None:
        b = self.buckets.get(second)
        if b is None:
            b = self.buckets[second] = []
            heapq.heappush(self.heap, second)
        b.append(s)
        self.entries += 1

    def add_many(self, sessions: list, times) -> None:
        """`add` for sessions at `times` (their last packet times, float64), at once."""
        if not len(sessions):
            return
        seconds = np.trunc(np.asarray(times, np.float64)).astype(np.int64)     # as int(): toward zero
        if bool((seconds[1:] == seconds[:-1]).all()):
            self._extend(int(seconds[0]), sessions)
        else:
            order = np.argsort(seconds, kind="stable")
            srt = seconds[order]
            cut = np.flatnonzero(srt[1:] != srt[:-1]) + 1
            for part, second in zip(np.split(order, cut), srt[np.r_[0, cut]].tolist()):
                self._extend(second, [sessions[i] for i in part.tolist()])
        self.entries += len(sessions)

    def _extend(self, second: int, sessions: list) -> None:
        b = self.buckets.get(second)
        if b is None:
            self.buckets[second] = list(sessions)
            heapq.heappush(self.heap, second)
        else:
            b.extend(sessions)

    def oldest(self):
        """(second, its bucket) of the oldest non-empty bucket, taken out of the queue; None
        when the queue is empty."""
        heap, buckets = self.heap, self.buckets
        while heap:
            second = heapq.heappop(heap)
            b = buckets.pop(second, None)
            if b:
                self.entries -= len(b)
                return second, b
        return None

    def put_back(self, second: int, sessions: list) -> None:
        """Sessions taken with `oldest` and not evicted, back in their bucket."""
        self._extend(second, sessions)
        self.entries += len(sessions)

    def sessions(self):
        """Every entry (of live and ended sessions), in no particular order."""
        for b in self.buckets.values():
            yield from b

    def compact(self) -> int:
        """Drop the entries of ended sessions, and the buckets left empty (a table that
        never fills never takes its oldest buckets: without this they would pile up, one
        a second); returns the entries kept."""
        kept = {}
        for second, b in self.buckets.items():
            live = [s for s in b if not s.ended]
            if live:
                kept[second] = live
        self.buckets = kept
        self.heap = list(kept)
        heapq.heapify(self.heap)
        self.entries = n = sum(map(len, kept.values()))
        return n
