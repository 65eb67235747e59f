"""systemd's service notifications (sd_notify(3)) without libsystemd: one datagram to
$NOTIFY_SOCKET each.

Under `Type=notify` (deploy/'s units) systemd counts a service as started when it says
READY=1: a sensor once its capture is open and its children are up, a collector once it
listens; `systemctl start` returns then, and units ordered after it start then. STOPPING=1
says an orderly stop has begun. With WatchdogSec= systemd sets WATCHDOG_USEC and kills (then
restarts) a service whose main loop stops sending WATCHDOG=1. Outside systemd (no
NOTIFY_SOCKET) every call does nothing.
"""
import os
import socket
import time


def enabled() -> bool:
    return bool(os.environ.get("NOTIFY_SOCKET"))


def notify(state: str) -> bool:
    """Send `state` ('READY=1', ...); False where there is no socket or it cannot be reached
    (a notification is never worth failing the service for)."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in "/@":
        return False                # unset, or a vsock: address, which only VMs' managers use
    if addr[0] == "@":
        addr = "\0" + addr[1:]      # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        return False
    return True


class Watchdog:
    """WATCHDOG=1 at half of WatchdogSec=, from the main loop. ping() costs one clock read
    between pings, and nothing without a watchdog (for this process: WATCHDOG_PID)."""

    def __init__(self, environ=os.environ):
        try:
            usec = int(environ.get("WATCHDOG_USEC", "0"))
        except ValueError:
            usec = 0
        pid = environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0                # meant for another process (we were started by the service's)
        self.every = usec / 2e6
        self.next = 0.0

    def ping(self) -> None:
        if self.every:
            now = time.monotonic()
            if now >= self.next:
                self.next = now + self.every
                notify("WATCHDOG=1")
