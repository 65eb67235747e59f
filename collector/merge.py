"""Merging a session's reports: the last cumulative counters per (sensor, session_id).

Interim records carry cumulative counters, so merging is "keep the latest";
a final record closes the session's entry. Counts what went through.
"""
from pipeline.record import INDEX

_SENSOR, _SID, _FINAL = INDEX["sensor"], INDEX["session_id"], INDEX["final"]
_PARENT, _CAP = INDEX["parent_session_id"], INDEX["cap_packet_count"]


class Merger:
    def __init__(self):
        self.sessions = {}     # (sensor, session_id) -> latest interim record
        self.records = 0
        self.final_records = 0
        self.finished = 0
        self.frames = 0        # captured frames in final top-level records (= frames_ip when nothing is lost)

    def add(self, records) -> None:
        self.records += len(records)
        for r in records:
            k = (r[_SENSOR], r[_SID])
            if r[_FINAL]:
                self.final_records += 1
                self.finished += 1
                if r[_PARENT] is None:
                    self.frames += r[_CAP]
                self.sessions.pop(k, None)
            else:
                self.sessions[k] = r
