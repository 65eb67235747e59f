"""Rows in grouped order, a round at a time: the numpy steps the batch path's rules share.

A batch's rows sorted by session key with a stable sort are "in grouped order":
each session's rows together, in frame order inside the group (`groups.Groups`).
Rules applied segment by segment (TCP's control segments, the classifier's
payload rows) run over such rows in rounds: a session's k-th row in round k, so
each round is one numpy step over many sessions and no session sees its rows
out of order.
"""
import numpy as np


def ranks(gs):
    """For rows in grouped order (`gs`: each row's group, non-decreasing): each row's rank
    inside its group, where each group starts, and its size."""
    n = len(gs)
    heads = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    sizes = np.diff(np.r_[heads, n])
    return np.arange(n) - np.repeat(heads, sizes), heads, sizes


def rounds(rank, limit: int) -> list:
    """The row indexes of rank 0, then of rank 1, ... up to `limit` ranks, each in row
    order: a group's k-th row is in round k."""
    by_rank = np.argsort(rank, kind="stable")
    k = min(int(rank.max()) + 1, limit) if len(rank) else 0
    bounds = np.searchsorted(rank[by_rank], np.arange(k + 1)).tolist()
    return [by_rank[lo:hi] for lo, hi in zip(bounds, bounds[1:])]


def running_max(tss, gs):
    """Packet time's running maximum inside each group, for rows in grouped order (`gs`:
    each row's group, non-decreasing): by ranks, group g's offset by g * n, so the
    running maximum never crosses groups. Packet time that never steps back inside a
    group (the common case: captures are in time order) is its own running maximum."""
    n = len(tss)
    if n < 2 or bool(((tss[1:] >= tss[:-1]) | (gs[1:] != gs[:-1])).all()):
        return tss
    srt = np.argsort(tss, kind="stable")
    rank = np.empty(n, np.int64)
    rank[srt] = np.arange(n)
    off = gs * n
    return tss[srt][np.maximum.accumulate(rank + off) - off]
