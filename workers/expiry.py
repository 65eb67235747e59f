"""The expiry list: one-second buckets of sessions, by the time they are next due.

A packet costs nothing here: it only moves the session's `last` time forward.
A session sits in the bucket of the second it would next be due (idle deadline
or next interim report) as computed when it was filed; when that bucket comes
due, a session not really due yet is filed again further on (at most once per
timeout period of its life). Filing is O(1) (plus a heap push when a bucket is
first used), expiry is O(sessions due): no scan of the table.
"""
import heapq

import numpy as np


class Wheel:
    __slots__ = ("buckets", "heap")

    def __init__(self):
        self.buckets = {}
        self.heap = []

    def file(self, s, when: float) -> None:
        slot = int(when) if when < 9e15 else int(9e15)
        if slot == s.slot:
            return
        s.slot = slot
        b = self.buckets.get(slot)
        if b is None:
            b = self.buckets[slot] = []
            heapq.heappush(self.heap, slot)
        b.append(s)
        s._wheel = self

    def file_new(self, sessions: list, whens) -> None:
        """`file` for sessions never filed yet (a batch's new sessions), at once: the
        same buckets, each in the same order."""
        w = np.asarray(whens, np.float64)
        slots = np.trunc(np.where(w < 9e15, w, 9e15)).astype(np.int64)   # as `file`: NaN and beyond in the last
        for s, slot in zip(sessions, slots.tolist()):
            s.slot = slot
            s._wheel = self
        order = np.argsort(slots, kind="stable")
        srt = slots[order]
        cut = np.flatnonzero(srt[1:] != srt[:-1]) + 1
        buckets, heap = self.buckets, self.heap
        for part, slot in zip(np.split(order, cut), srt[np.r_[0, cut]].tolist() if len(srt) else ()):
            b = buckets.get(slot)
            if b is None:
                b = buckets[slot] = []
                heapq.heappush(heap, slot)
            b.extend([sessions[i] for i in part.tolist()])

    def due(self, now: float) -> list:
        """Sessions filed in buckets up to `now` (removed from the wheel; the caller
        files again those that are not really due)."""
        out = []
        heap, buckets = self.heap, self.buckets
        while heap and heap[0] <= now:
            slot = heapq.heappop(heap)
            for s in buckets.pop(slot, ()):
                if s.slot == slot and not s.ended:
                    s.slot = None
                    out.append(s)
        return out

    def oldest(self):
        """The live session filed earliest (the one to evict when the table is full)."""
        heap, buckets = self.heap, self.buckets
        while heap:
            b = buckets.get(heap[0])
            while b:
                s = b[0]
                if s.slot == heap[0] and not s.ended:
                    return s
                b.pop(0)
            buckets.pop(heapq.heappop(heap), None)
        return None

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
        return sum(len(b) for b in self.buckets.values())
