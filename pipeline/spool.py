"""Batches on their way to a remote collector: memory first, then a bounded on-disk spool.

Every batch stays here until the collector acknowledges it, so a collector that
is down or restarting costs no record. Above `mem_bytes` the oldest batches
move to `--spool-dir` (one file each, written to a temporary name then
renamed, so a crash leaves whole files only); above `disk_bytes` the spool
reports itself full and the sensor stops taking records from its workers
(offline: they wait; live: the capture ring drops and the kernel counts it).
Batches left in the spool by an earlier run are sent first when a sensor starts.
"""
import os
import time

import msgpack

from contracts.children import private_file

SUFFIX = ".batch"


class Spool:
    def __init__(self, folder=None, mem_bytes=64 << 20, disk_bytes=1 << 30):
        self.folder = folder
        self.mem_bytes = mem_bytes
        self.disk_bytes = disk_bytes
        self.pending = {}          # (run, seq) -> [header bytes, body bytes or None, sent_at, size]
        self.in_memory = 0
        self.on_disk = 0
        self.spooled = 0           # batches ever written to disk
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)    # records: for this sensor's eyes only
            self._recover()

    def _path(self, key) -> str:
        return os.path.join(self.folder, f"{key[0]}-{key[1]:012d}{SUFFIX}")

    def _recover(self) -> None:
        for name in sorted(os.listdir(self.folder)):
            path = os.path.join(self.folder, name)
            if name.endswith(".tmp"):
                os.unlink(path)     # a write cut short: its batch was never taken from a worker's message
                continue
            if not name.endswith(SUFFIX):
                continue
            try:
                with open(path, "rb") as fh:
                    hdr, body = msgpack.unpackb(fh.read())
                h = msgpack.unpackb(hdr)
                key = (h["run"], h["seq"])
            except Exception:  # a damaged spool file is set aside, never silently deleted
                os.rename(path, path + ".bad")
                continue
            size = os.path.getsize(path)
            self.pending[key] = [hdr, None, 0.0, size]
            self.on_disk += size

    def add(self, key, hdr: bytes, body: bytes) -> None:
        size = len(body) + len(hdr)
        self.pending[key] = [hdr, body, 0.0, size]
        self.in_memory += size
        if self.folder and self.in_memory > self.mem_bytes:
            self._spill(self.mem_bytes // 2)

    def spill_all(self) -> None:
        """Every batch to disk (with a folder): the sensor is at its end and waits for the
        collector, so a stop now (its children killed) costs nothing the next run cannot send."""
        if self.folder:
            self._spill(0)

    def _spill(self, down_to: int) -> None:
        for key, e in self.pending.items():
            if self.in_memory <= down_to:
                break
            if e[1] is None:
                continue
            path = self._path(key)
            with private_file(path + ".tmp", "wb") as fh:
                fh.write(msgpack.packb([e[0], e[1]]))
            os.rename(path + ".tmp", path)
            self.in_memory -= e[3]
            self.on_disk += e[3]
            self.spooled += 1
            e[1] = None

    def full(self) -> bool:
        if self.folder:
            return self.on_disk >= self.disk_bytes
        return self.in_memory >= self.mem_bytes

    def body(self, key) -> bytes:
        e = self.pending[key]
        if e[1] is not None:
            return e[1]
        with open(self._path(key), "rb") as fh:
            return msgpack.unpackb(fh.read())[1]

    def due(self, now: float, resend_after: float, limit: int):
        """Keys never sent or unacknowledged for `resend_after` seconds, oldest first."""
        out = []
        for key, e in self.pending.items():
            if now - e[2] >= resend_after:
                out.append(key)
                if len(out) >= limit:
                    break
        return out

    def sent(self, key, now: float = None) -> None:
        self.pending[key][2] = time.monotonic() if now is None else now

    def acked(self, key) -> bool:
        e = self.pending.pop(key, None)
        if e is None:
            return False
        if e[1] is None:
            try:
                os.unlink(self._path(key))
            except FileNotFoundError:
                pass
            self.on_disk -= e[3]
        else:
            self.in_memory -= e[3]
        return True

    def __len__(self) -> int:
        return len(self.pending)
