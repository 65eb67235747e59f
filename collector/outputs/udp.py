"""UDP outputs (syslog, IPFIX) are fire-and-forget: a receiver that is down never ends the run.

A UDP sender learns that its receiver is gone only afterwards, if at all: the
receiver's host answers a datagram with ICMP port (or host) unreachable, and
the kernel reports it on the connected socket's next send, which is then not
sent. Such a datagram is lost. The output counts it (`datagrams_refused`,
taken off `written`; refusals that arrive together are reported, and so
counted, once), says so in one line when refusals start and in one when they
stop (a batch went out without any), with the count, and goes on; the run
ends with exit status 0. A send that fails at once (no route, a firewall)
counts the same way. TCP outputs differ: they reconnect and send again, and
fail the run when they cannot (syslog.py, ipfix.py).
"""
import errno
import socket
import sys

# errors a send reports for an EARLIER datagram (ICMP that came back since): this one
# was not sent and may be sent again
_EARLIER = (errno.ECONNREFUSED, errno.EHOSTUNREACH)


class Datagrams:
    """Sends the datagrams of one UDP output and keeps its refusal episodes."""

    def __init__(self, out):
        self.out = out              # its issues["datagrams_refused"] and written are kept here
        self.episode = 0            # datagrams refused since refusals started
        self.in_batch = 0           # refusals seen in the current write()

    def send(self, sock, data: bytes, records: int = 1, earlier: int = 1) -> bool:
        """Send one datagram of `records` records; True if the kernel took it. A
        refusal of an earlier datagram (of `earlier` records) is counted and taken
        off `written`, and this one is sent again, once."""
        for _ in (0, 1):
            try:
                sock.send(data)
                return True
            except OSError as e:
                self._refused(e)
                if e.errno not in _EARLIER:
                    return False        # this one failed at once
                self.out.written -= earlier
        return False

    def _refused(self, e: OSError) -> None:
        self.out.issues["datagrams_refused"] += 1
        self.in_batch += 1
        if not self.episode:
            self._say(f"warning: output {self.out.kind}:{self.out.target}: datagrams refused "
                      f"({e.strerror or e}); counting them in datagrams_refused and sending on")
        self.episode += 1

    def batch_done(self) -> None:
        """End of a write(): a batch that drew no refusal ends an episode."""
        if self.episode and not self.in_batch:
            self._say(f"output {self.out.kind}:{self.out.target}: the receiver takes datagrams again "
                      f"({self.episode} refused meanwhile)")
            self.episode = 0
        self.in_batch = 0

    def close(self, sock, last: int = 1) -> None:
        """The refusal the last datagram (of `last` records) drew, if any; an episode
        still going says its count."""
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err in _EARLIER:
            self._refused(OSError(err, "refused"))
            self.out.written -= last
        if self.episode:
            self._say(f"output {self.out.kind}:{self.out.target}: {self.episode} datagrams refused "
                      f"until the end")
            self.episode = 0

    @staticmethod
    def _say(line: str) -> None:
        print(f"pipeline: {line}", file=sys.stderr, flush=True)
