"""Application classification from packets the tests build themselves.

Expectations come from elsewhere than the classifier: published vectors
(RFC 9001 Appendix A for QUIC, FoxIO's JA4 example), dpkt's own builders for
DNS/DHCP/RTP, and JA3 strings assembled here from the lists the test put in
the ClientHello.
"""
import hashlib
import os
import random
import struct

import dpkt
import pytest

from workers.classify import BUDGET, Inspector, classify_noport, guess_by_port
from workers.classify import quic as quicmod

TCP, UDP = 6, 17


def run(transport, cport, sport, packets, budget=BUDGET):
    """packets: (from_client, payload) in order; returns (inspector, result)."""
    insp = Inspector(transport, cport, sport, budget)
    for from_client, p in packets:
        n = insp.wants(from_client)
        if n:
            insp.feed(p[:n], from_client)
    return insp, insp.result()


# --- TLS ---------------------------------------------------------------------------

def ext(t, data):
    return struct.pack("!HH", t, len(data)) + data


def u16list(vals, width=2):
    body = b"".join(struct.pack("!H", v) for v in vals)
    return struct.pack("!H" if width == 2 else "!B", len(body)) + body


def client_hello(ciphers, ext_order, sigalgs, sni="www.example.org", alpn=(b"h2", b"http/1.1"),
                 groups=(0x001d, 0x0017, 0x0018), points=b"\x00", versions=(0x0304, 0x0303)):
    """A TLS record holding a ClientHello with extensions in ext_order."""
    bodies = {
        0x0000: u16list([]) if sni is None else
        struct.pack("!HBH", len(sni) + 3, 0, len(sni)) + sni.encode(),
        0x0010: struct.pack("!H", sum(1 + len(a) for a in alpn)) + b"".join(bytes([len(a)]) + a for a in alpn),
        0x000d: u16list(sigalgs),
        0x000a: u16list(groups),
        0x000b: bytes([len(points)]) + points,
        0x002b: bytes([2 * len(versions)]) + b"".join(struct.pack("!H", v) for v in versions),
        0x0033: struct.pack("!HHH", 36, 0x001d, 32) + b"\x11" * 32,
        0x002d: b"\x01\x01",
    }
    exts = b"".join(ext(t, bodies.get(t, b"")) for t in ext_order)
    body = (b"\x03\x03" + b"\x42" * 32 + b"\x20" + b"\x07" * 32 + u16list(ciphers) + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def server_hello(version=0x0304, alpn=b"h2"):
    exts = ext(0x002b, struct.pack("!H", version)) + ext(0x0010, struct.pack("!HB", len(alpn) + 1, len(alpn)) + alpn)
    body = b"\x03\x03" + b"\x24" * 32 + b"\x00" + b"\x13\x01" + b"\x00" + struct.pack("!H", len(exts)) + exts
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs


# FoxIO's worked example (technical_details/JA4.md), with GREASE sprinkled in to be ignored.
FOX_CIPHERS = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
               0x009c, 0x009d, 0x002f, 0x0035]
FOX_EXTS = [0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
            0x002b, 0xff01, 0x000b, 0x000a, 0x0015]
FOX_SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def ja3_of(version, ciphers, exts, groups, points):
    s = "%d,%s,%s,%s,%s" % (version, "-".join(map(str, ciphers)), "-".join(map(str, exts)),
                            "-".join(map(str, groups)), "-".join(map(str, points)))
    return hashlib.md5(s.encode()).hexdigest()


def test_tls_clienthello_sni_alpn_and_foxio_ja4_example():
    hello = client_hello([0x0a0a] + FOX_CIPHERS, [0x1a1a] + FOX_EXTS + [0x2a2a], FOX_SIGALGS,
                         versions=(0x3a3a, 0x0304, 0x0303))
    insp, r = run(TCP, 50000, 443, [(True, hello), (False, server_hello())])
    assert (r["app"], r["family"], r["guess"], r["path_suffix"]) == ("tls", "web", False, "tls")
    m = r["meta"]
    assert m["tls.sni"] == "www.example.org"
    assert m["tls.alpn"] == ["h2", "http/1.1"]
    assert m["tls.alpn_selected"] == "h2"
    assert m["tls.version"] == "1.3"
    assert m["tls.ja4"] == "t13d1516h2_8daaf6152771_e5627efa2ab1"   # published in JA4.md
    assert m["tls.ja3"] == ja3_of(771, FOX_CIPHERS, FOX_EXTS, [29, 23, 24], [0])
    assert insp.done and insp.wants(True) == 0


def test_tls_ja4_and_ja3_of_a_published_chrome_hello():
    # browserleaks-style report of one Chrome hello: ja4_ro lists, ja3_text, and both hashes.
    ciphers = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
               0x009c, 0x009d, 0x002f, 0x0035]
    exts = [45, 51, 16, 65037, 23, 17613, 0, 11, 10, 43, 65281, 35, 18, 5, 13, 27]
    hello = client_hello(ciphers, exts, FOX_SIGALGS, groups=(4588, 29, 23, 24), alpn=(b"h2", b"http/1.1"))
    _, r = run(TCP, 50001, 443, [(True, hello)])
    assert r["meta"]["tls.ja4"] == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    assert r["meta"]["tls.ja3"] == "98487aa16281980e7d1120d399efb6a4"


def test_tls_on_8443_and_a_hello_split_over_segments():
    hello = client_hello(FOX_CIPHERS, FOX_EXTS, FOX_SIGALGS, sni="split.example")
    hello = hello + b"\x00" * 0  # whole record, then cut into three segments
    parts = [hello[:7], hello[7:100], hello[100:]]
    _, r = run(TCP, 50002, 8443, [(True, p) for p in parts])
    assert (r["app"], r["guess"]) == ("tls", False)
    assert r["meta"]["tls.sni"] == "split.example"


def test_tls_no_sni_no_alpn_ja4_markers():
    hello = client_hello([0x002f], [0x000a, 0x000b], [], sni=None, alpn=())
    _, r = run(TCP, 50003, 443, [(True, hello)])
    ja4 = r["meta"]["tls.ja4"]
    assert ja4.startswith("t12i010200_")   # no supported_versions: the hello's 0x0303
    assert ja4.endswith("_" + hashlib.sha256(b"000a,000b").hexdigest()[:12])


def test_imaps_is_tls_on_port_993():
    _, r = run(TCP, 50004, 993, [(True, client_hello(FOX_CIPHERS, FOX_EXTS, FOX_SIGALGS))])
    assert (r["app"], r["family"], r["path_suffix"]) == ("imaps", "mail", "tls.imap")


# --- QUIC: RFC 9001 Appendix A.2 ---------------------------------------------------

RFC9001_CLIENT_INITIAL = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934")


def test_quic_initial_keys_match_rfc9001_a1():
    pytest.importorskip("cryptography")
    key, iv, hp = quicmod.client_keys(bytes.fromhex("8394c8f03e515708"))
    assert (key.hex(), iv.hex(), hp.hex()) == ("1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
                                               "9f50449e04a0e810283a1e9933adedd2")


def test_quic_rfc9001_client_initial_gives_sni():
    pytest.importorskip("cryptography")
    assert len(RFC9001_CLIENT_INITIAL) == 1200
    insp = Inspector(UDP, 51000, 443)
    assert insp.wants(True) >= 1200   # the whole first datagram is needed
    insp.feed(RFC9001_CLIENT_INITIAL, True)
    r = insp.result()
    assert (r["app"], r["path_suffix"], r["guess"], r["family"]) == ("quic", "quic", False, "web")
    assert r["meta"]["quic.sni"] == "example.com"
    assert r["meta"]["quic.version"] == "0x00000001"
    assert r["meta"]["quic.ja4"].startswith("q13d")


def test_quic_payload_on_another_port_and_a_damaged_initial():
    pytest.importorskip("cryptography")
    bad = bytearray(RFC9001_CLIENT_INITIAL)
    bad[600] ^= 0xff                       # AEAD tag no longer verifies: no SNI, still QUIC
    _, r = run(UDP, 51001, 4000, [(True, bytes(bad))])
    assert r["app"] == "quic" and "quic.sni" not in r["meta"]


# --- DNS family ----------------------------------------------------------------------

def dns_pair(name="www.example.com", qtype=dpkt.dns.DNS_A, ip=b"\x5d\xb8\xd8\x22", rcode=0, ident=0x1234):
    q = dpkt.dns.DNS(id=ident, op=dpkt.dns.DNS_RD)
    q.qd = [dpkt.dns.DNS.Q(name=name, type=qtype)]
    a = dpkt.dns.DNS(id=ident, op=dpkt.dns.DNS_RD | dpkt.dns.DNS_RA, rcode=rcode)
    a.qr = dpkt.dns.DNS_R
    a.qd = q.qd
    a.an = [] if rcode else [dpkt.dns.DNS.RR(name=name, type=qtype, ttl=60, rdata=ip)]
    return bytes(q), bytes(a)


def test_dns_query_and_answer():
    q, a = dns_pair()
    insp, r = run(UDP, 40000, 53, [(True, q), (False, a)])
    assert (r["app"], r["family"], r["path_suffix"]) == ("dns", "dns", "dns")
    m = r["meta"]
    assert (m["dns.query"], m["dns.qtype"], m["dns.rcode"], m["dns.answers"]) == \
        ("www.example.com", "A", "NOERROR", ["93.184.216.34"])
    assert insp.done


def test_dns_over_tcp_and_nxdomain():
    q, a = dns_pair("nope.example", dpkt.dns.DNS_AAAA, rcode=3)
    _, r = run(TCP, 40001, 53, [(True, struct.pack("!H", len(q)) + q), (False, struct.pack("!H", len(a)) + a)])
    assert r["app"] == "dns" and r["meta"]["dns.rcode"] == "NXDOMAIN" and r["meta"]["dns.qtype"] == "AAAA"


def test_dns_on_an_odd_port_by_payload():
    q, _ = dns_pair("odd.example.net")
    _, r = run(UDP, 40002, 5300, [(True, q)])
    assert (r["app"], r["guess"]) == ("dns", False)


def test_mdns_and_llmnr():
    q, _ = dns_pair("printer.local", dpkt.dns.DNS_PTR)
    _, r = run(UDP, 5353, 5353, [(True, q)])
    assert (r["app"], r["meta"]["mdns.query"]) == ("mdns", "printer.local")
    q, _ = dns_pair("desktop-1")
    _, r = run(UDP, 60000, 5355, [(True, q)])
    assert (r["app"], r["meta"]["llmnr.query"]) == ("llmnr", "desktop-1")


def test_netbios_name_query():
    name = dpkt.netbios.encode_name("WORKGROUP").encode()
    p = struct.pack("!HHHHHH", 0x8001, 0x0110, 1, 0, 0, 0) + bytes([len(name)]) + name + b"\x00" + \
        struct.pack("!HH", 0x20, 1)
    _, r = run(UDP, 137, 137, [(True, p)])
    assert r["app"] == "netbios" and r["meta"]["netbios.name"] == "WORKGROUP"


# --- web -------------------------------------------------------------------------------

def test_http_on_8080_with_content_fields():
    req = b"GET /img/logo.png?x=1 HTTP/1.1\r\nHost: Static.Example.COM\r\nUser-Agent: curl/8.0\r\n\r\n"
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    insp, r = run(TCP, 50100, 8080, [(True, req), (False, resp)])
    assert (r["app"], r["guess"], r["path_suffix"], r["family"]) == ("http", False, "http", "web")
    m = r["meta"]
    assert (m["http.method"], m["http.uri"], m["http.host"], m["http.user_agent"], m["http.status"]) == \
        ("GET", "/img/logo.png?x=1", "static.example.com", "curl/8.0", 200)
    assert (r["content_class"], r["content_type"], r["content_flags"]) == ("image", "image/png", "chunked,gzip")
    assert insp.done


def test_http_content_type_parameters_and_class():
    resp = b"HTTP/1.0 206 Partial Content\r\nContent-Type: Video/MP4; codecs=avc1\r\n\r\n"
    _, r = run(TCP, 50101, 80, [(True, b"GET /v HTTP/1.0\r\n\r\n"), (False, resp)])
    assert (r["content_class"], r["content_type"], r["content_flags"]) == ("video", "video/mp4", "partial")


def test_port_only_guess_is_marked():
    _, r = run(TCP, 50102, 80, [(True, os.urandom(64)), (False, os.urandom(64))])
    assert (r["app"], r["guess"], r["path_suffix"]) == ("http", True, None)
    assert guess_by_port(TCP, 50103, 443)["app"] == "tls" and guess_by_port(TCP, 50103, 443)["guess"]
    assert guess_by_port(UDP, 50103, 443)["app"] == "quic"
    assert guess_by_port(TCP, 50103, 50104)["app"] is None


# --- remote access, mail, file transfer -------------------------------------------------

def test_ssh_banners_on_2222():
    insp, r = run(TCP, 50200, 2222, [(False, b"SSH-2.0-OpenSSH_9.6\r\n"), (True, b"SSH-2.0-PuTTY_0.80\r\n")])
    assert (r["app"], r["guess"], r["family"]) == ("ssh", False, "remote-access")
    assert (r["meta"]["ssh.server"], r["meta"]["ssh.client"]) == ("SSH-2.0-OpenSSH_9.6", "SSH-2.0-PuTTY_0.80")
    assert insp.done


def test_smtp_imap_pop3_ftp_by_payload_off_their_ports():
    _, r = run(TCP, 50300, 2525, [(False, b"220 mail.example.org ESMTP Postfix\r\n"), (True, b"EHLO me\r\n")])
    assert (r["app"], r["meta"]["smtp.helo"]) == ("smtp", "me")
    _, r = run(TCP, 50301, 10143, [(False, b"* OK [CAPABILITY IMAP4rev1] ready\r\n")])
    assert r["app"] == "imap" and r["meta"]["imap.banner"].startswith("* OK")
    _, r = run(TCP, 50302, 10110, [(False, b"+OK POP3 server ready\r\n")])
    assert r["app"] == "pop3"
    _, r = run(TCP, 50303, 10021, [(False, b"220 ProFTPD Server ready\r\n")])
    assert (r["app"], r["family"]) == ("ftp", "file-transfer")
    # the same bare greeting, settled by the client's next command
    _, r = run(TCP, 50304, 10025, [(False, b"220 welcome\r\n"), (True, b"HELO x\r\n")])
    assert r["app"] == "smtp"


# --- UDP services --------------------------------------------------------------------

def test_dhcp():
    d = dpkt.dhcp.DHCP(chaddr=b"\x00\x11\x22\x33\x44\x55", opts=[
        (dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPDISCOVER])), (dpkt.dhcp.DHCP_OPT_HOSTNAME, b"laptop")])
    _, r = run(UDP, 68, 67, [(True, bytes(d))])
    assert (r["app"], r["meta"]["dhcp.type"], r["meta"]["dhcp.hostname"]) == ("dhcp", "discover", "laptop")


def test_ntp():
    _, r = run(UDP, 50400, 123, [(True, bytes([0x23]) + b"\x00" * 47)])
    assert (r["app"], r["meta"]["ntp.version"], r["meta"]["ntp.mode"]) == ("ntp", 4, "client")


def test_ssdp():
    p = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: ssdp:all\r\nMAN: \"ssdp:discover\"\r\n\r\n"
    _, r = run(UDP, 50500, 1900, [(True, p)])
    assert (r["app"], r["meta"]["ssdp.method"], r["meta"]["ssdp.target"]) == ("ssdp", "M-SEARCH", "ssdp:all")


def test_stun_binding_request_anywhere():
    p = struct.pack("!HHI", 0x0001, 8, 0x2112A442) + os.urandom(12) + struct.pack("!HH", 0x8022, 4) + b"test"
    _, r = run(UDP, 50600, 40000, [(True, p)])
    assert (r["app"], r["family"], r["guess"]) == ("stun", "voip", False)


def test_sip():
    inv = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nUser-Agent: softphone 1\r\n\r\n"
    _, r = run(UDP, 5060, 5060, [(True, inv), (False, b"SIP/2.0 180 Ringing\r\n\r\n")])
    assert (r["app"], r["meta"]["sip.method"], r["meta"]["sip.status"], r["meta"]["sip.user_agent"]) == \
        ("sip", "INVITE", 180, "softphone 1")


def test_rtp_needs_a_sequence():
    pkts = [bytes(dpkt.rtp.RTP(pt=0, seq=100 + i, ts=160 * i, ssrc=0xdeadbeef, data=b"\xff" * 160))
            for i in range(3)]
    insp, r = run(UDP, 30000, 30002, [(True, pkts[0])])
    assert r["app"] == "rtp" and not insp.done   # one packet: only a hint
    insp.feed(pkts[1], True)
    assert insp.done and insp.result()["app"] == "rtp"


def test_snmp_community():
    community = b"public"
    pdu = bytes.fromhex("a01902046b6f6d5a020100020100300b300906052b060102010500")
    body = b"\x02\x01\x01" + b"\x04" + bytes([len(community)]) + community + pdu
    _, r = run(UDP, 50700, 161, [(True, b"\x30" + bytes([len(body)]) + body)])
    assert (r["app"], r["meta"]["snmp.version"], r["meta"]["snmp.community"]) == ("snmp", "2c", "public")


def test_kerberos_as_req_udp_and_tcp():
    inner = b"\xa1\x03\x02\x01\x05" + b"\xa2\x03\x02\x01\x0a"
    msg = b"\x6a" + bytes([len(inner) + 2]) + b"\x30" + bytes([len(inner)]) + inner
    _, r = run(UDP, 50800, 88, [(True, msg)])
    assert (r["app"], r["meta"]["kerberos.msg_type"], r["family"]) == ("kerberos", "as-req", "authentication")
    _, r = run(TCP, 50801, 88, [(True, struct.pack("!I", len(msg)) + msg)])
    assert r["app"] == "kerberos"


def test_ldap_bind():
    p = bytes.fromhex("300c020101600702010304008000")
    _, r = run(TCP, 50900, 389, [(True, p)])
    assert (r["app"], r["meta"]["ldap.op"]) == ("ldap", "bind")


def test_bittorrent_handshake_and_dht():
    hs = b"\x13BitTorrent protocol" + b"\x00" * 8 + b"\xab" * 20 + b"-XX0001-" + b"1" * 12
    _, r = run(TCP, 51000, 51413, [(True, hs)])
    assert (r["app"], r["meta"]["bittorrent.info_hash"], r["family"]) == ("bittorrent", "ab" * 20, "p2p")
    _, r = run(UDP, 51001, 40000, [(True, b"d1:ad2:id20:" + b"a" * 20 + b"e1:q4:ping1:t2:aa1:y1:qe")])
    assert r["app"] == "bittorrent"


def test_syslog():
    _, r = run(UDP, 51100, 514, [(True, b"<34>Oct 11 22:14:15 host su: 'su root' failed")])
    assert (r["app"], r["meta"]["syslog.facility"], r["meta"]["syslog.severity"]) == ("syslog", 4, "crit")


def test_noport_protocols():
    for proto, app in ((1, "icmp"), (58, "icmpv6"), (2, "igmp")):
        r = classify_noport(proto)
        assert (r["app"], r["guess"], r["path_suffix"], r["family"]) == (app, False, app, "network-service")
    assert classify_noport(47)["app"] is None


# --- the inspector's contract ---------------------------------------------------------

def test_budget_stops_inspection():
    def rtp(seq):    # RTP's shape (version 2, PCMA, one SSRC), too far apart in sequence to prove it: WEAK
        return bytes([0x80, 8]) + struct.pack("!HI", seq, 0) + b"SSRC" + bytes(100)
    insp = Inspector(UDP, 40000, 443, budget=3)
    for i in range(3):
        assert insp.wants(True) > 0
        insp.feed(rtp(1000 * i), True)
    assert insp.wants(True) == 0 and insp.wants(False) > 0      # this direction's budget is spent
    for i in range(3):
        insp.feed(rtp(500 + 1000 * i), False)
    assert insp.done and insp.wants(False) == 0
    assert (insp.result()["app"], insp.result()["guess"]) == ("rtp", False)    # the WEAK answer, nothing better


def test_a_short_header_rules_quic_out_as_a_first_payload():
    """A payload shaped like QUIC's short header (first byte 0x40-0x7f: any ASCII letter)
    proves nothing, and a QUIC connection opens with long headers: as a session's first
    payload it rules QUIC out, on QUIC's ports too, so such a session is not inspected for
    its whole budget (its result is the port's guess either way). After a first payload
    too short to say anything, QUIC's ports still wait for a long header."""
    text = b"query " + bytes(range(65, 91)) * 3
    on, off = Inspector(UDP, 40000, 443), Inspector(UDP, 40000, 40001)
    assert on.feed(text, True) is True and off.feed(text, True) is True
    assert (on.result()["app"], on.result()["guess"]) == ("quic", True) and off.result()["app"] is None
    on, off = Inspector(UDP, 40000, 443), Inspector(UDP, 40000, 40001)
    for insp in (on, off):
        assert not insp.feed(b"\x45\x00\x01", True)          # too short for any protocol to say NO
    assert not on.feed(text, False) and on.wants(True) > 0    # QUIC's port: a long header may come
    assert off.feed(text, False) is True


def test_done_early_when_every_protocol_is_ruled_out():
    insp = Inspector(UDP, 40000, 40001)
    assert insp.feed(b"\x3f" + bytes(100), True) is True   # no protocol's shape at all
    with pytest.raises(ValueError):
        Inspector(UDP, 1, 2, budget=0)


def test_result_has_every_key_and_empty_payloads_do_not_count():
    insp = Inspector(TCP, 1234, 80)
    assert insp.feed(b"", True) is False and insp.n_client == 0
    assert set(insp.result()) == {"app", "family", "guess", "path_suffix", "content_class", "content_type",
                                  "content_flags", "meta"}


@pytest.mark.parametrize("port", [53, 80, 443, 137, 161, 88, 389, 5060, 5353, 1900, 22, 25, 3478, 514, 67])
def test_garbage_never_raises(port):
    rnd = random.Random(port)
    for transport in (TCP, UDP):
        insp = Inspector(transport, 40000, port)
        for i in range(25):
            n = rnd.choice((1, 5, 12, 20, 48, 300, 1400))
            p = rnd.randbytes(n)
            if i % 3 == 0:  # plausible first bytes, then garbage
                p = rnd.choice((b"\x16\x03\x01", b"GET ", b"SSH-2.0-", b"\x30\x82", b"\xc0\x00\x00\x00\x01",
                                b"\x80\x00", b"<1", b"d1:", b"\x6a\x81")) + p
            insp.feed(p, bool(i % 2))
        insp.result()


def test_quic_without_cryptography_is_still_quic(monkeypatch):
    """The AES primitives are imported on the first Initial; without them (not installed,
    or broken) the session is still QUIC, only without the SNI, and the import is tried once."""
    monkeypatch.setattr(quicmod, "_AES", [None])
    assert quicmod.decrypt_initial(RFC9001_CLIENT_INITIAL) is None
    _, r = run(UDP, 51002, 443, [(True, RFC9001_CLIENT_INITIAL)])
    assert r["app"] == "quic" and "quic.sni" not in r["meta"]


def test_cryptography_is_not_imported_at_start_up():
    """`cryptography` costs ~50 ms to import: a run imports it only when a QUIC Initial needs it."""
    import subprocess
    import sys
    code = "import sys, pipeline.cli, pipeline.supervisor; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dpkt_is_imported_by_the_first_parse_not_by_the_worker():
    """dpkt's package import loads all its modules (~60 ms a process): a worker imports it
    when a parser first needs it (here: a DNS answer's metadata), not at start-up."""
    import subprocess
    import sys
    code = ("import sys, workers.process, workers.engine, collector.process; print('dpkt' in sys.modules); "
            "from workers.classify import Inspector; "
            f"i = Inspector(17, 5353, 53); i.feed({dns_pair()[0]!r}, True); "
            "print('dpkt' in sys.modules, i.result()['app'], i.result()['meta'].get('dns.query'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "dns", "www.example.com"]
