"""Exactly-once writing across collector restarts: which batches are in the outputs.

Before a batch is written the journal notes (sensor, run, seq) and where each
file output ends; after every output has it, a commit line follows. A
collector killed in between (SIGKILL, OOM) finds the last batch uncommitted
when it starts again: it cuts its file outputs back to where they ended
before that batch (so no half line and no half batch survives) and treats
the batch as never written; the sensor, never having had the acknowledgement,
sends it again. Committed batches are remembered per (sensor, run) as a
contiguous watermark plus the few above it, so the journal stays small.

Journal lines are written with one write(2) each and not fsynced: this guards
against the collector process dying, not against power loss (then a batch may
be written twice, never lost: the sensor still holds it). Network outputs
(syslog, IPFIX, Kafka) cannot be cut back: for them it is at-least-once.
Without --state-dir the journal lives in memory only (duplicates are still
dropped while the collector runs).
"""
import fcntl
import json
import os

from contracts.children import private_file

COMPACT_EVERY = 10000    # commits between rewrites of the journal to one line per run


class Journal:
    def __init__(self, folder):
        self.runs = {}            # (sensor, run) -> [watermark, set of seqs above it]
        self.pending = None       # the batch begun and not committed: (key, seq, positions)
        self.fd = None
        self.lock = None
        self.unclean = False      # the journal of a collector that did not end in order (killed)
        if folder is None:
            return
        os.makedirs(folder, mode=0o700, exist_ok=True)       # state only this collector reads
        # two collectors on one journal would cut back each other's batches: one at a time
        # (the kernel drops the lock of a killed collector)
        self.lock = os.open(os.path.join(folder, "lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock)
            self.lock = None
            raise OSError(f"--state-dir {folder}: in use by another running collector") from None
        os.fchmod(self.lock, 0o600)     # one an older collector made 0644
        self.path = os.path.join(folder, "journal")
        if os.path.exists(self.path):
            self._replay()
        self.commits = 0

    def _replay(self) -> None:
        self.unclean = True
        with open(self.path, "rb") as fh:
            for line in fh:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue            # a line cut by the kill: its batch was not committed
                self.unclean = "closed" not in e
                if "run" in e:
                    self.runs[(e["run"][0], e["run"][1])] = [e["upto"], set(e["above"])]
                elif "begin" in e:
                    s, r, q = e["begin"]
                    self.pending = ((s, r), q, e["pos"])
                elif "commit" in e and self.pending:
                    self._mark(*self.pending[:2])
                    self.pending = None

    def _rewrite(self) -> None:
        tmp = self.path + ".tmp"
        with private_file(tmp) as fh:
            for (s, r), (upto, above) in self.runs.items():
                fh.write(json.dumps({"run": [s, r], "upto": upto, "above": sorted(above)}) + "\n")
            if self.pending:
                (s, r), q, pos = self.pending
                fh.write(json.dumps({"begin": [s, r, q], "pos": pos}) + "\n")
        os.rename(tmp, self.path)
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def truncate_outputs(self, outs) -> list:
        """Undo the uncommitted batch in the file outputs; returns what was cut."""
        cut = []
        if self.pending:
            pos = self.pending[2]
            for o in outs:
                where = pos.get(f"{o.kind}:{o.target}")
                tell = getattr(o, "tell", None)
                if where and tell is not None:
                    path, size = where
                    now = tell()
                    if now and now[0] == path and now[1] > size:
                        o.truncate(size)
                        cut.append((path, now[1] - size))
            self.pending = None
        if self.folder_set():
            self._rewrite()
        return cut

    def folder_set(self) -> bool:
        return hasattr(self, "path")

    def _mark(self, key, seq) -> None:
        st = self.runs.get(key)
        if st is None:
            st = self.runs[key] = [0, set()]
        st[1].add(seq)
        while st[0] + 1 in st[1]:
            st[0] += 1
            st[1].discard(st[0])

    def seen(self, sensor, run, seq) -> bool:
        st = self.runs.get((sensor, run))
        return st is not None and (seq <= st[0] or seq in st[1])

    def begin(self, sensor, run, seq, outs) -> None:
        self.pending = ((sensor, run), seq, None)
        if self.fd is not None:
            pos = {}
            for o in outs:
                tell = getattr(o, "tell", None)
                where = tell() if tell is not None else None
                if where:
                    pos[f"{o.kind}:{o.target}"] = list(where)
            self._write({"begin": [sensor, run, seq], "pos": pos})

    def commit(self) -> None:
        key, seq, _ = self.pending
        self._mark(key, seq)
        self.pending = None
        if self.fd is not None:
            self._write({"commit": seq})
            self.commits += 1
            if self.commits % COMPACT_EVERY == 0:
                self._rewrite()

    def _write(self, e) -> None:
        os.write(self.fd, (json.dumps(e) + "\n").encode())

    def close(self, clean: bool = False) -> None:
        """`clean`: every output is closed in order (a restart then has nothing to repair)."""
        if self.fd is not None:
            if clean:
                self._write({"closed": True})
            os.close(self.fd)
            self.fd = None
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None
