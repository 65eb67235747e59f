"""Every protocol name the slow path writes into a proto_path, in one place.

A proto_path is the dotted list of these names from the link layer up to the
transport of one IP layer ("eth.vlan.ipv4.udp.vxlan"): records, statistics and
the fast path (which writes the same strings for the frames it decodes) all
read them from here.
"""

# -- link layers and other headers below IP -----------------------------------
ETH = "eth"            # Ethernet II / 802.3
VLAN = "vlan"          # 802.1Q, 802.1ad, QinQ 0x9100: one per tag
MPLS = "mpls"          # one per label
PPPOE = "pppoe"        # PPPoE session stage
PPP = "ppp"
LLC = "llc"            # 802.2 LLC (and SNAP) under an 802.3 / 802.11 frame
SLL = "sll"            # Linux cooked capture v1
SLL2 = "sll2"          # Linux cooked capture v2
NULL = "null"          # BSD loopback (DLT_NULL, DLT_LOOP)
RAW = "raw"            # raw IP, no link header
CHDLC = "chdlc"        # Cisco HDLC
WLAN = "wlan"          # 802.11 data frame
RADIOTAP = "radiotap"
PBB = "pbb"            # 802.1ah provider backbone bridging I-TAG (the customer's "eth" follows)
VNTAG = "vntag"        # Cisco VN-Tag
ETAG = "etag"          # 802.1BR E-Tag

IPV4 = "ipv4"
IPV6 = "ipv6"

# -- transports (IP protocol numbers); a protocol with no name adds nothing ----
TRANSPORTS = {
    1: "icmp",
    2: "igmp",
    6: "tcp",
    17: "udp",
    33: "dccp",
    46: "rsvp",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "icmpv6",
    59: "ipv6-nonxt",
    88: "eigrp",
    89: "ospf",
    97: "etherip",
    103: "pim",
    112: "vrrp",
    115: "l2tp",
    132: "sctp",
    136: "udplite",
}

# -- tunnels: the value of Layer.tunnel. The carrying layer's path ends with the
#    tunnel's header names ("udp.vxlan", "gre.erspan"); GRE, EtherIP, IP-in-IP
#    and MPLS-in-IP add nothing of their own (the transport name, or nothing,
#    already says it) ----------------------------------------------------------
GTP = "gtp"
GRE = "gre"
ERSPAN = "erspan"
IPIP = "ipip"
VXLAN = "vxlan"
GENEVE = "geneve"
TEREDO = "teredo"
AYIYA = "ayiya"
CAPWAP = "capwap"
TZSP = "tzsp"
ETHERIP = "etherip"
MPLS_TUNNEL = "mpls"   # MPLS-in-IP (137) and MPLS-in-UDP (6635): the inner path names each label

# -- non-IP payloads, for NON_IP errors (anything else: "ethertype 0x....") ----
NON_IP_ETHERTYPES = {
    0x0806: "arp",
    0x8035: "rarp",
    0x2000: "cdp",
    0x8863: "pppoe discovery",
    0x888E: "eapol",
    0x88CC: "lldp",
    0x8809: "slow protocols",
    0x88F7: "ptp",
    0x8808: "ethernet flow control",
    0x88E5: "macsec",
    0x8137: "ipx",
    0x809B: "appletalk",
    0x9000: "loopback",
}


def transport(proto: int) -> str:
    """The transport's path name, or "" when it has none."""
    return TRANSPORTS.get(proto, "")


def ethertype(et: int) -> str:
    """A short description of a non-IP ethertype, for NON_IP errors."""
    return NON_IP_ETHERTYPES.get(et) or f"ethertype 0x{et:04x}"
