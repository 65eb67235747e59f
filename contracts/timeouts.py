"""Per-class session timeouts and the idle rule (the Suricata `flow-timeout` concern, in one place).

The workers expire sessions by these rules, and the front-end follows tunnels'
outer sessions by the same ones to name their ids (`pipeline.frontend.core.
TunnelParents`): both stages import them from here, so the two can never drift.

Defaults (seconds), chosen like the peers': TCP 300, UDP 60, ICMP/ICMPv6 60,
other transports 60, DNS (UDP port 53) 15. A session is idle once
`now - last >= timeout` (`is_idle`). A TCP session that closed (FIN both ways,
or RST) ends after the close linger (5 s) of inactivity, so trailing ACKs stay
inside it. `--idle-timeout S` sets one idle timeout for every class. Interim
records go out every `active` seconds of a session's life (0: never).

A session that has had no answer (packets one way only; a TCP handshake never
completed: workers.table.answered) ends sooner: its idle timeout is its
class's, cut to `unanswered` (30 s; Zeek ends such attempts early too, its S0
state), so a flood of spoofed SYNs or one-way datagrams does not hold the
table for minutes. `idle_limit` is that rule. A worker whose table is nearly
full cuts it further, to `emergency` (5 s), until the table has room again
(docs/operations.md, "Under attack").
"""
from dataclasses import dataclass, replace

TCP, UDP, ICMP, OTHER, DNS = "tcp", "udp", "icmp", "other", "dns"
DEFAULT_IDLE = {TCP: 300.0, UDP: 60.0, ICMP: 60.0, OTHER: 60.0, DNS: 15.0}
UNANSWERED = 30.0          # a session without an answer, beside the classes' idle timeouts


def is_idle(now, last, timeout):
    """The idle rule: a session whose last packet came at `last` is idle at `now`. Plain
    arithmetic, so it takes numpy columns too (the workers' batch plan). The engine's
    per-packet loop and expiry sweep write this comparison inline (a call there costs a
    worker about half a percent); tests/test_tunnel_parents.py holds the engine and the
    front-end's TunnelParents, which calls it, to the same answers."""
    return now - last >= timeout


def idle_limit(timeout, unanswered, answered):
    """A session's idle timeout: its class's `timeout` once it has had an answer, else
    at most `unanswered` (the workers' expiry and the front-end's TunnelParents)."""
    return timeout if answered else min(timeout, unanswered)


@dataclass(frozen=True)
class Timeouts:
    tcp: float = DEFAULT_IDLE[TCP]
    udp: float = DEFAULT_IDLE[UDP]
    icmp: float = DEFAULT_IDLE[ICMP]
    other: float = DEFAULT_IDLE[OTHER]
    dns: float = DEFAULT_IDLE[DNS]
    close_linger: float = 5.0
    close_expiry: bool = True
    active: float = 300.0
    unanswered: float = 30.0      # the idle timeout of a session without an answer, at most
    emergency: float = 5.0        # the same while a worker's table is in emergency mode

    @classmethod
    def make(cls, idle_timeout=None, active_timeout=300.0, close_linger=5.0, close_expiry=True,
             unanswered_timeout=None, emergency_timeout=5.0):
        """`unanswered_timeout` None: 30 s with the classes' idle timeouts, the one idle
        timeout where one is given (one timeout for every session, NFStream's and
        softflowd's model: what an operator who sets it asks for); emergency mode still
        cuts it under table pressure."""
        idle = dict(DEFAULT_IDLE)
        if idle_timeout is not None:
            idle = {k: float(idle_timeout) for k in idle}
        if unanswered_timeout is None:
            unanswered_timeout = UNANSWERED if idle_timeout is None else idle_timeout
        return cls(idle[TCP], idle[UDP], idle[ICMP], idle[OTHER], idle[DNS],
                   float(close_linger), bool(close_expiry), float(active_timeout), float(unanswered_timeout),
                   float(emergency_timeout))

    def capped(self, most: float) -> "Timeouts":
        """These timeouts with every idle timeout and the close linger cut to `most`: what a
        session without an answer starts with (a worker files and plans by them)."""
        return replace(self, tcp=min(self.tcp, most), udp=min(self.udp, most), icmp=min(self.icmp, most),
                       other=min(self.other, most), dns=min(self.dns, most),
                       close_linger=min(self.close_linger, most))

    def idle_many(self, proto, sport, dport):
        """`idle_for` over numpy columns (the worker's new sessions of a batch)."""
        import numpy as np      # here: the CLI imports this module before it has set numpy's threads
        out = np.full(len(proto), self.other, np.float64)
        out[(proto == 1) | (proto == 58)] = self.icmp
        udp = proto == 17
        out[udp] = self.udp
        out[udp & ((sport == 53) | (dport == 53))] = self.dns
        out[proto == 6] = self.tcp
        return out

    def idle_for(self, proto: int, sport: int, dport: int) -> float:
        """The idle timeout of a session's class, decided from its first datagram."""
        if proto == 6:
            return self.tcp
        if proto == 17:
            return self.dns if (sport == 53 or dport == 53) else self.udp
        if proto in (1, 58):
            return self.icmp
        return self.other
