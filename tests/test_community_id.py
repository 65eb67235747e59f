"""Community ID v1 against the spec's published test vectors.

Vectors copied from https://github.com/corelight/community-id-spec, commit
c4ec2bc40d65ddbcbdd642582bf5609797a80772:
  * baseline/baseline_deflt.json (seed 0) and baseline/baseline_seed1.json (seed 1),
    produced by pycommunityid's community-id-pcap on pcaps/combined.pcap.gz;
    their ICMP rows carry the type/code already mapped to ports;
  * the tables of baseline/README.md ("Default settings", "A custom seed=1 value"):
    TCP/UDP/SCTP 1.2.3.4:1122 <-> 5.6.7.8:3344 and the port-less RSVP rows.
ICMP by type and code (the inputs a worker has): the README's ICMP rows (spec
commit b1fe530f), pycommunityid's tests/communityid_test.py test_icmp and
test_icmp6 (commit 5748e0c4), and the messages of the spec's pcaps/icmp.pcap and
pcaps/icmp6.pcap with their ids in baseline_deflt.json.
"""
import socket

import pytest

from contracts.community_id import community_id, community_id_packed, hash_tuple, icmp_ports

# (proto, saddr, daddr, sport, dport, id with seed 0, id with seed 1) from baseline_deflt.json / baseline_seed1.json
BASELINE = [
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 135, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 136, "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 136, 135, "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="),
    (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=", "1:lVEtCZpYu84Xqaa++3lXFyuu2n4="),
    (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4, "1:hLZd0XGWojozrvxqE0dWB1iM6R0=", "1:W8MHwXpWzpoSTD+cGcaJr4u0ys8="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 129, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 128, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 134, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=", "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8="),
    (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 133, "1:pkvHqCL88/tg1k4cPigmZXUtL00=", "1:K/ee5UCqAMAQXDorP5nSa2CGLjc="),
    (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM=", "1:XjUibYHaafLQ3pxQeiMI8g25q20="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (132, "192.168.170.56", "192.168.170.8", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (46, "10.1.12.1", "10.1.12.2", None, None, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
    (46, "10.1.12.2", "10.1.12.1", None, None, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
]

V6A, V6B = "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D"
# baseline/README.md tables: (proto, saddr, daddr, sport, dport, seed 0, seed 1); each row is checked both ways
README = [
    (6, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:wCb3OG7yAFWelaUydu0D+125CLM=", "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
    (17, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=", "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
    (132, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=", "1:uitchpn5MMGAQKBJh7bIr/bAr7s="),
    (46, "1.2.3.4", "5.6.7.8", None, None, "1:ikv3kmf89luf73WPz1jOs49S768=", "1:/buhqeOmaRCopOZFy9HnoJd5XW8="),
    (46, V6A, V6B, None, None, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=", "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM="),
]


@pytest.mark.parametrize("proto,sa,da,sp,dp,id0,id1", BASELINE)
def test_baseline_vectors_hash_as_published(proto, sa, da, sp, dp, id0, id1):
    assert hash_tuple(proto, sa, da, sp, dp) == id0
    assert hash_tuple(proto, sa, da, sp, dp, seed=1) == id1


@pytest.mark.parametrize("proto,sa,da,sp,dp,id0,id1", [r for r in BASELINE if r[0] not in (1, 58)] + README)
def test_session_ids_match_the_spec_both_ways(proto, sa, da, sp, dp, id0, id1):
    assert community_id(proto, sa, da, sp, dp) == id0
    assert community_id(proto, da, sa, dp, sp) == id0
    assert community_id(proto, sa, da, sp, dp, seed=1) == id1
    assert community_id(proto, da, sa, dp, sp, seed=1) == id1


def test_icmp_sessions_have_no_id():
    """Our ICMP sessions span every type/code between two hosts: no single spec id fits."""
    assert community_id(1, "192.168.0.89", "192.168.0.1", None, None) is None
    assert community_id(58, "fe80::1", "fe80::2", None, None) is None


def test_equal_addresses_are_ordered_by_port():
    a = community_id(6, "10.0.0.1", "10.0.0.1", 1234, 80)
    assert a == community_id(6, "10.0.0.1", "10.0.0.1", 80, 1234)
    assert a != community_id(6, "10.0.0.1", "10.0.0.1", 1234, 81)


def test_seed_and_transport_change_the_id():
    base = community_id(6, "1.2.3.4", "5.6.7.8", 1122, 3344)
    assert community_id(6, "1.2.3.4", "5.6.7.8", 1122, 3344, seed=2) != base
    assert community_id(17, "1.2.3.4", "5.6.7.8", 1122, 3344) != base
    assert community_id(6, "1.2.3.4", "5.6.7.8", None, None) != base


@pytest.mark.parametrize("args", [
    (6, "1.2.3", "5.6.7.8", 1, 2),
    (6, "1.2.3.4", "zz::1", 1, 2),
    (6, "1.2.3.4", "5.6.7.8", 1, 70000),
    (300, "1.2.3.4", "5.6.7.8", 1, 2),
])
def test_bad_input_is_a_value_error(args):
    with pytest.raises(ValueError):
        community_id(*args)
    with pytest.raises(ValueError):
        community_id(6, "1.2.3.4", "5.6.7.8", 1, 2, seed=1 << 16)


# (proto, src, dst, ICMP type, code, seed 0, seed 1 or None): as sent by `src`, hashed from type and code
ICMP_VECTORS = [
    # the spec README's tables
    (1, "1.2.3.4", "5.6.7.8", 8, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
    (1, "5.6.7.8", "1.2.3.4", 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
    (1, "1.2.3.4", "5.6.7.8", 11, 0, "1:f/YiSyWqczrTgfUCZlBUnvHRcPk=", "1:1DD7cWGC/Yg91YGsQeni8du3pIA="),
    (58, V6A, V6B, 128, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
    (58, V6B, V6A, 129, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
    (58, V6A, V6B, 146, 0, "1:fYC8+pz24E+EhANP1EZhpX0Dw10=", "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s="),
    # pycommunityid test_icmp / test_icmp6
    (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "192.168.0.89", "192.168.0.1", 20, 0, "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=", "1:lCXHHxavE1Vq3oX9NH5ladQg02o="),
    (1, "192.168.0.89", "192.168.0.1", 20, 1, "1:tz/fHIDUHs19NkixVVoOZywde+I=", "1:Ie3wmFyxiEyikbsbcO03d2nh+PM="),
    (1, "192.168.0.1", "192.168.0.89", 0, 20, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
     "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
     "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "3ffe:507:0:1:260:97ff:fe07:69ea", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=",
     "1:OlOWx9psIbBFi7lOCw/4MhlKR9M="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:507:0:1:260:97ff:fe07:69ea", 3, 0, "1:/OGBt9BN1ofenrmSPWYicpij2Vc=",
     "1:Ij4ZxnC87/MXzhOjvH2vHu7LRmE="),
    # the spec's pcaps, message by message (baseline_deflt.json)
    (1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM=", None),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 0, "1:zavyT/cezQr1fmImYCwYnMXbgck=", None),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 136, 0, "1:zavyT/cezQr1fmImYCwYnMXbgck=", None),
    (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=", None),
    (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4, "1:hLZd0XGWojozrvxqE0dWB1iM6R0=",
     None),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 0, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", None),
    (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 0, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", None),
    (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 0, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=", None),
    (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 0, "1:pkvHqCL88/tg1k4cPigmZXUtL00=", None),
]


def packed(ip):
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


@pytest.mark.parametrize("proto,sa,da,itype,code,id0,id1", ICMP_VECTORS)
def test_icmp_ids_from_type_and_code(proto, sa, da, itype, code, id0, id1):
    """What the worker passes (the first message's sender as client, its type and code)
    gives the spec's id, from text or packed addresses; the ports are not used."""
    assert community_id(proto, sa, da, None, None, icmp_type=itype, icmp_code=code) == id0
    assert community_id(proto, sa, da, 1, 2, icmp_type=itype, icmp_code=code) == id0
    assert community_id_packed(proto, packed(sa), packed(da), None, None, itype, code) == id0
    if id1 is not None:
        assert community_id(proto, sa, da, None, None, seed=1, icmp_type=itype, icmp_code=code) == id1


def test_icmp_mapping_pairs_and_one_way():
    assert icmp_ports(1, 8, 5) == (8, 0, False)             # a pair: the code is not hashed
    assert icmp_ports(1, 0, 0) == (0, 8, False)
    assert icmp_ports(1, 3, 1) == (3, 1, True)              # unreachable: one-way, type and code
    assert icmp_ports(58, 128, 0) == (128, 129, False)
    assert icmp_ports(58, 8, 0) == (8, 0, True)             # ICMPv4's echo type means nothing in ICMPv6
    assert icmp_ports(1, 128, 0) == (128, 0, True)
    # one-way: the same message sent the other way is another flow
    a = community_id(1, "10.0.0.1", "10.0.0.2", None, None, icmp_type=3, icmp_code=1)
    assert a != community_id(1, "10.0.0.2", "10.0.0.1", None, None, icmp_type=3, icmp_code=1)
    # a pair: the request from either side, its reply from the other, one id
    b = community_id(1, "10.0.0.2", "10.0.0.1", None, None, icmp_type=8, icmp_code=0)
    assert b == community_id(1, "10.0.0.1", "10.0.0.2", None, None, icmp_type=0, icmp_code=0)


@pytest.mark.parametrize("itype,code", [(256, 0), (0, 256), (-1, 0)])
def test_icmp_type_or_code_out_of_range_is_a_value_error(itype, code):
    with pytest.raises(ValueError):
        community_id(1, "10.0.0.1", "10.0.0.2", None, None, icmp_type=itype, icmp_code=code)
