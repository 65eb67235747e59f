"""Application -> family, as data: one place to read or change how apps group."""

FAMILY = {
    # web
    "http": "web", "tls": "web", "quic": "web",
    # name resolution
    "dns": "dns", "mdns": "dns", "llmnr": "dns", "netbios": "dns",
    # mail
    "smtp": "mail", "imap": "mail", "pop3": "mail",
    "smtps": "mail", "imaps": "mail", "pop3s": "mail",
    # remote access
    "ssh": "remote-access",
    # file transfer and peer-to-peer
    "ftp": "file-transfer", "bittorrent": "p2p",
    # voice and video calls
    "sip": "voip", "rtp": "voip", "stun": "voip",
    # services every network runs
    "dhcp": "network-service", "dhcpv6": "network-service", "ntp": "network-service",
    "ssdp": "network-service", "icmp": "network-service", "icmpv6": "network-service",
    "igmp": "network-service",
    # management and authentication
    "snmp": "network-management", "syslog": "network-management",
    "kerberos": "authentication", "ldap": "authentication",
}


def family_of(app):
    return FAMILY.get(app)
