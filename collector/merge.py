"""Merging a session's reports: the last cumulative counters per (sensor, session_id).

Interim records carry cumulative counters, so merging is "keep the latest";
a final record closes the session's entry. Counts what went through.
A batch is handled a column at a time (itemgetter, compress: no Python step
per record); of several records of one session in a batch, the last decides.
"""
from collections import deque
from itertools import compress, repeat
from operator import itemgetter, not_

from contracts.record import INDEX

_SENSOR, _SID, _FINAL = INDEX["sensor"], INDEX["session_id"], INDEX["final"]
_PARENT, _CAP = INDEX["parent_session_id"], INDEX["cap_packet_count"]
_final, _key, _parent_cap = itemgetter(_FINAL), itemgetter(_SENSOR, _SID), itemgetter(_PARENT, _CAP)


class Merger:
    def __init__(self):
        self.sessions = {}     # (sensor, session_id) -> latest interim record
        self.records = 0
        self.final_records = 0
        self.finished = 0
        self.frames = 0        # captured frames in final top-level records (= frames_ip when nothing is lost)

    def add(self, records) -> None:
        self.records += len(records)
        finals = list(map(bool, map(_final, records)))
        ended = list(compress(records, finals))
        self.final_records += len(ended)
        self.finished += len(ended)
        self.frames += sum([cap for parent, cap in map(_parent_cap, ended) if parent is None])
        sessions = self.sessions
        if len(ended) == len(records):          # finals only: each closes its entry, if any
            if sessions:
                deque(map(sessions.pop, map(_key, records), repeat(None)), 0)
            return
        latest = dict(zip(map(_key, records), records))    # each session's last record in the batch decides
        open_ = [not f for f in map(_final, latest.values())]
        deque(map(sessions.pop, compress(latest, map(not_, open_)), repeat(None)), 0)
        sessions.update(zip(compress(latest, open_), compress(latest.values(), open_)))
