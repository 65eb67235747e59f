"""The expiry list: one-second buckets of sessions, by the time they are next due.

A packet costs nothing here: it only moves the session's `last` time forward.
A session sits in the bucket of the second it would next be due (idle deadline
or next interim report) as computed when it was filed; when that bucket comes
due, a session not really due yet is filed again further on (at most once per
timeout period of its life). Filing is O(1) (plus a heap push when a bucket is
first used), expiry is O(sessions due): no scan of the table.

Filing again leaves the session's old entry behind (skipped when its bucket
comes due, unless the session is filed in that second again: then the old
entry counts, in its place), and so does a session that ends before its
bucket: a TCP session filed at its idle deadline (300 s) and ended 5 s after
its close stayed referenced, with its counters, TCP state and first row, for
the rest of those 300 s. On the bench trace that was three dead sessions per
open one, and on a sensor opening 10,000 sessions a second it would be
millions. So once the wheel holds twice the entries it kept at its last
compaction (and `compact_min` more), it drops the entries of ended sessions
in one pass (`compact`): amortised O(1) a filing. An ended session is never
filed again, so what due() and neighbour() return does not change;
a live session's old entries stay, since they may count again.
"""
import heapq

import numpy as np


class Wheel:
    __slots__ = ("buckets", "heap", "entries", "limit", "compact_min", "_slot")

    def __init__(self, compact_min: int = 4096):
        self.buckets = {}
        self.heap = []
        self.entries = 0            # entries in the buckets, of live and of ended sessions
        self.compact_min = compact_min
        self.limit = compact_min    # compact when entries pass it
        self._slot = None           # the last slot filed in: sessions filed in the same second share it

    def file(self, s, when: float) -> None:
        slot = int(when) if when < 9e15 else int(9e15)
        if slot == s.slot:
            return
        if slot == self._slot:
            slot = self._slot       # one int object per second, not one per session (32 bytes each)
        else:
            self._slot = slot
        s.slot = slot
        b = self.buckets.get(slot)
        if b is None:
            b = self.buckets[slot] = []
            heapq.heappush(self.heap, slot)
        b.append(s)
        s._wheel = self
        self.entries += 1
        if self.entries > self.limit:
            self.compact()

    def compact(self) -> None:
        """Drop the entries of ended sessions (each bucket keeps the others in order; an
        emptied bucket stays, empty, until its time comes); the next compaction comes
        when the entries have doubled again."""
        n = 0
        for b in self.buckets.values():
            b[:] = [s for s in b if not s.ended]
            n += len(b)
        self.entries = n
        self.limit = 2 * n + self.compact_min

    def file_new(self, sessions: list, whens) -> None:
        """`file` for sessions never filed yet (a batch's new sessions), at once: the
        same buckets, each in the same order."""
        w = np.asarray(whens, np.float64)
        slots = np.trunc(np.where(w < 9e15, w, 9e15)).astype(np.int64)   # as `file`: NaN and beyond in the last
        order = np.argsort(slots, kind="stable")
        srt = slots[order]
        cut = np.flatnonzero(srt[1:] != srt[:-1]) + 1
        buckets, heap = self.buckets, self.heap
        for part, slot in zip(np.split(order, cut), srt[np.r_[0, cut]].tolist() if len(srt) else ()):
            b = buckets.get(slot)
            if b is None:
                b = buckets[slot] = []
                heapq.heappush(heap, slot)
            members = [sessions[i] for i in part.tolist()]
            for s in members:
                s.slot = slot               # the bucket's own int object, shared
                s._wheel = self
            b.extend(members)
        self.entries += len(sessions)
        if self.entries > self.limit:
            self.compact()

    def due(self, now: float) -> list:
        """Sessions filed in buckets up to `now` (removed from the wheel; the caller
        files again those that are not really due)."""
        out = []
        heap, buckets = self.heap, self.buckets
        taken = 0
        while heap and heap[0] <= now:
            slot = heapq.heappop(heap)
            b = buckets.pop(slot, ())
            taken += len(b)
            for s in b:
                if s.slot == slot:          # an ended session's slot (ENDED) equals none
                    s.slot = None
                    out.append(s)
        self.entries -= taken
        return out

    def neighbour(self, s, step: int):
        b = self.buckets.get(s.slot)
        if not b:
            return None
        live = [x for x in b if x.slot == s.slot and not x.ended]
        try:
            i = live.index(s) + step
        except ValueError:
            return None
        return live[i] if 0 <= i < len(live) else None

    def __len__(self):
        """Entries held, of live and of ended sessions (counted as they come and go)."""
        return self.entries
