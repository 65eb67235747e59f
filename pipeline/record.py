"""The session record: every field declared once, in wire order, with its meaning.

Workers send records as lists in this order (msgpack, see `pipeline.wire`);
the collector zips them back into dicts for its outputs. Every output (JSON
lines and the formats that come later) derives from this declaration, so a
field is added here or nowhere. Field names are a public contract: add, never
rename.
"""

FIELDS = (
    ("type", "always \"session\""),
    ("final", "true for the record written when the session ends, false for interim reports"),
    ("end_reason", "final: idle | closed | shutdown | evicted; interim: active"),
    ("session_id", "64-bit id, unique in the run: (number of the frame that opened it, from 1 << 8) | (capture process << 4) | tunnel depth"),
    ("parent_session_id", "the tunnel's outer session, else null"),
    ("sensor", "sensor id (--sensor-id, default the host name)"),
    ("worker", "index of the worker that owns the session"),
    ("report_number", "1 for the first record of a session, +1 for each later one"),
    ("start", "first packet time, epoch seconds (µs precision)"),
    ("end", "last packet time, epoch seconds (µs precision)"),
    ("duration", "end - start, seconds"),
    ("ip_version", "4 or 6"),
    ("transport", "IP protocol number of the session's transport"),
    ("client_ip", "initiator: the first packet's sender, corrected by SYN/SYN-ACK"),
    ("client_port", "initiator's port, null where the transport has none"),
    ("server_ip", "responder"),
    ("server_port", "responder's port, null where the transport has none"),
    ("vlan", "list of 802.1Q ids, outermost first, or null"),
    ("proto_path", "dotted protocol names from the link layer up, e.g. eth.vlan.ipv4.udp.gtp.ipv4.tcp"),
    ("packet_count", "IP datagrams, both directions (a fragmented datagram counts once)"),
    ("ul_packet_count", "datagrams client -> server"),
    ("dl_packet_count", "datagrams server -> client"),
    ("byte_count", "sum of the frames' wire (original) lengths"),
    ("ul_byte_count", "client -> server"),
    ("dl_byte_count", "server -> client"),
    ("cap_packet_count", "captured frames (each fragment once)"),
    ("ul_cap_packet_count", "client -> server"),
    ("dl_cap_packet_count", "server -> client"),
    ("cap_byte_count", "sum of captured lengths"),
    ("ul_cap_byte_count", "client -> server"),
    ("dl_cap_byte_count", "server -> client"),
    ("data_packet_count", "datagrams carrying transport payload"),
    ("ul_data_packet_count", "client -> server"),
    ("dl_data_packet_count", "server -> client"),
    ("data_byte_count", "transport payload bytes (from the IP lengths)"),
    ("ul_data_byte_count", "client -> server"),
    ("dl_data_byte_count", "server -> client"),
    ("rtt", "TCP handshake time, SYN to the ACK that completes it, seconds; else null"),
    ("retransmission_count", "TCP data segments whose sequence range was already seen in that direction"),
    ("tcp_flags", "OR of the TCP flags seen, both directions (0 for other transports)"),
    ("content_class", "content class (classification issue), else null"),
    ("content_type", "content type, else null"),
    ("content_flags", "content flags, else null"),
    ("app", "application name (lower case), else null"),
    ("family", "application family, else null"),
    ("community_id", "Community ID v1 (seed 0) of the 5-tuple, to join with Zeek/Suricata/Elastic; null for ICMP, whose id needs one type/code"),
)

NAMES = tuple(name for name, _ in FIELDS)
INDEX = {name: i for i, name in enumerate(NAMES)}
TYPE_SESSION = "session"


def as_dict(values) -> dict:
    """A wire record (list in FIELDS order, possibly followed by a dict of plugin
    fields) as an ordered dict."""
    d = dict(zip(NAMES, values))
    if len(values) > len(NAMES) and isinstance(values[len(NAMES)], dict):
        for k, v in values[len(NAMES)].items():
            d.setdefault(str(k), v)
    return d
