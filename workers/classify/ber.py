"""The few ASN.1 BER reads that SNMP, Kerberos and LDAP detection need."""


def tlv(p, i):
    """(tag, value start, value end) of the element at i, or None if it does not fit."""
    if i + 2 > len(p):
        return None
    tag, ln = p[i], p[i + 1]
    i += 2
    if ln & 0x80:
        n = ln & 0x7f
        if n == 0 or n > 4 or i + n > len(p):
            return None
        ln = int.from_bytes(p[i:i + n], "big")
        i += n
    return tag, i, i + ln


def small_int(p, i):
    """(value, next index) of an INTEGER of at most 4 bytes at i, or None."""
    t = tlv(p, i)
    if t is None or t[0] != 0x02 or not 1 <= t[2] - t[1] <= 4 or t[2] > len(p):
        return None
    return int.from_bytes(p[t[1]:t[2]], "big", signed=True), t[2]
