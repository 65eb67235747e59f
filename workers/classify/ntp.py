"""NTP (RFC 5905): 48-byte header with a sane version and mode, on port 123."""
from .registry import NO, SURE, UDP, register

_MODES = {1: "symmetric-active", 2: "symmetric-passive", 3: "client", 4: "server", 5: "broadcast",
          6: "control", 7: "private"}


def match(p, from_client, state):
    if 123 not in (state.server_port, state.client_port) or len(p) < 12:
        return NO
    version, mode = (p[0] >> 3) & 7, p[0] & 7
    if 1 <= version <= 4 and (mode in (1, 2, 3, 4, 5) and len(p) >= 48 or mode in (6, 7)):
        return SURE
    return NO


def parse(p, from_client, state, meta):
    meta["ntp.version"] = (p[0] >> 3) & 7
    meta["ntp.mode"] = _MODES.get(p[0] & 7, str(p[0] & 7))
    return True


register("ntp", (UDP,), (123,), match, parse, port_bound=True,
         first=lambda b, from_client, transport: 1 <= (b >> 3) & 7 <= 4 and b & 7 != 0)
