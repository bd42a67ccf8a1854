"""Network templates and address arithmetic: parsing, defaults, MAC <-> IP, IPv6, validation."""

from __future__ import annotations

import json

import pytest

from stratus.model.errors import Conflict, InvalidInput, TemplateError
from stratus.model.vnet import (
    VnetSpec,
    address_at,
    ip6_for_mac,
    ip_for_mac,
    locate,
    mac_for_ip,
    parse_mac,
)
from stratus.model.vnet_template import parse_vnet

BRIDGE = """\
NAME = "private"
BRIDGE = "br0"
NETWORK_ADDRESS = "192.168.150.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.150.1"
DNS = "192.168.150.1"
AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "50" ]
"""


def _bridge(*lines: str, base: str = BRIDGE) -> str:
    return base + "".join(line + "\n" for line in lines)


def _error(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_vnet(text)
    return caught.value


# --- MAC <-> IP --------------------------------------------------------------------------------


def test_an_ipv4_leases_mac_is_the_prefix_then_the_ip_and_back() -> None:
    assert mac_for_ip("02:00", "192.168.150.100") == "02:00:c0:a8:96:64"
    assert ip_for_mac("02:00:c0:a8:96:64") == "192.168.150.100"
    assert mac_for_ip("0a:bc", "10.0.0.1") == "0a:bc:0a:00:00:01"
    assert ip_for_mac("0A-BC-0A-00-00-01") == "10.0.0.1"


def test_macs_are_read_in_any_case_and_separator_and_written_lower_with_colons() -> None:
    assert parse_mac("02-00-C0-A8-96-64") == "02:00:c0:a8:96:64"
    assert parse_mac("0200c0a89664") == "02:00:c0:a8:96:64"
    assert parse_mac("02:00:c0-a8:96:64") is None  # mixed separators
    assert parse_mac("192.168.1.1") is None


def test_the_ipv6_address_is_the_prefix_and_the_eui64_of_the_mac() -> None:
    # 02:00:c0:a8:96:64 -> flip the universal/local bit, insert ff:fe: 0000:c0ff:fea8:9664
    assert ip6_for_mac("2001:db8:1::/64", "02:00:c0:a8:96:64") == "2001:db8:1::c0ff:fea8:9664"
    assert ip6_for_mac("fd00::/64", "00:16:3e:00:00:01") == "fd00::216:3eff:fe00:1"


# --- parsing -----------------------------------------------------------------------------------


def test_a_bridge_network_in_the_classic_syntax() -> None:
    spec = parse_vnet(BRIDGE)
    assert (spec.name, spec.driver, spec.bridge, spec.netns) == ("private", "bridge", "br0", None)
    assert (spec.network_address, spec.network_mask) == ("192.168.150.0", "255.255.255.0")
    assert (spec.gateway, spec.dns, spec.mac_prefix) == ("192.168.150.1", "192.168.150.1", "02:00")
    assert spec.guest_ports == ()
    [ar] = spec.ranges
    assert (ar.type, ar.ip, ar.size, ar.mac) == ("IP4", "192.168.150.100", 50, "02:00:c0:a8:96:64")
    assert (ar.last_ip, ar.last_mac) == ("192.168.150.149", "02:00:c0:a8:96:95")
    assert spec.size == 50


def test_yaml_and_json_templates_give_the_same_spec() -> None:
    yaml_text = """\
NAME: private
BRIDGE: br0
NETWORK_ADDRESS: 192.168.150.0
NETWORK_MASK: /24
GATEWAY: 192.168.150.1
DNS: 192.168.150.1
AR:
  - {TYPE: IP4, IP: 192.168.150.100, SIZE: 50}
"""
    json_text = json.dumps(
        {
            "NAME": "private",
            "BRIDGE": "br0",
            "NETWORK_ADDRESS": "192.168.150.0/24",
            "GATEWAY": "192.168.150.1",
            "DNS": "192.168.150.1",
            "AR": {"TYPE": "IP4", "IP": "192.168.150.100", "SIZE": 50},
        }
    )
    assert parse_vnet(yaml_text) == parse_vnet(json_text) == parse_vnet(BRIDGE)


def test_a_user_network_gets_qemus_gateway_dns_and_the_default_guest_ports() -> None:
    spec = parse_vnet(
        'NAME = "nat"\nNETWORK_ADDRESS = "10.0.2.0/24"\nAR = [ IP = "10.0.2.15", SIZE = "10" ]\n'
    )
    assert (spec.driver, spec.bridge) == ("user", None)
    assert (spec.gateway, spec.dns, spec.guest_ports) == ("10.0.2.2", "10.0.2.3", (22, 80))
    assert spec.ranges[0].type == "IP4"  # implied by IP


def test_vn_mad_defaults_to_bridge_when_bridge_is_set() -> None:
    assert parse_vnet(BRIDGE).driver == "bridge"
    spec = parse_vnet(_bridge("NETNS = lab1"))
    assert (spec.driver, spec.netns) == ("bridge", "lab1")


def test_guest_ports_and_dns_lists_are_normalised() -> None:
    spec = parse_vnet(
        'NAME = n\nNETWORK_ADDRESS = 10.0.2.0\nNETWORK_MASK = 24\nGUEST_PORTS = "22, 8080 22"\n'
        'DNS = "1.1.1.1,2606:4700::1111"\nAR = [ IP = 10.0.2.15, SIZE = 4 ]\n'
    )
    assert spec.guest_ports == (22, 8080)
    assert spec.dns == "1.1.1.1 2606:4700::1111"


def test_unknown_attributes_are_kept_out_with_a_warning() -> None:
    spec = parse_vnet(_bridge('COLOR = "blue"', 'DESCRIPTION = "lab"'))
    assert spec.warnings == ("unknown attribute COLOR ignored",)
    assert spec.description == "lab"


def test_a_spec_survives_its_stored_json_form() -> None:
    spec = parse_vnet(
        _bridge(
            'AR = [ TYPE = "IP4_6", IP = "192.168.150.200", SIZE = "8", '
            'GLOBAL_PREFIX = "2001:db8:1::", ULA_PREFIX = "fd00:1::/64" ]'
        )
    )
    stored = json.loads(json.dumps(spec.to_json()))
    assert VnetSpec.from_json(stored) == spec


# --- address ranges ----------------------------------------------------------------------------


def test_address_at_and_locate_are_inverse_for_ip_mac_and_ipv6() -> None:
    spec = parse_vnet(
        _bridge(
            'AR = [ TYPE = "IP4_6", IP = "192.168.150.200", SIZE = "8", '
            'GLOBAL_PREFIX = "2001:db8:1::" ]'
        )
    )
    mac, ip, ip6 = address_at(spec, 1, 3)
    assert (mac, ip, ip6) == ("02:00:c0:a8:96:cb", "192.168.150.203", "2001:db8:1::c0ff:fea8:96cb")
    assert locate(spec, ip) == locate(spec, mac) == locate(spec, ip6) == (1, 3)
    assert locate(spec, "192.168.150.100") == (0, 0)
    assert locate(spec, "02-00-C0-A8-96-95") == (0, 49)


def test_an_ipv4_ranges_macs_decode_to_its_ips() -> None:
    spec = parse_vnet(BRIDGE)
    for offset in (0, 17, 49):
        mac, ip, ip6 = address_at(spec, 0, offset)
        assert ip_for_mac(mac) == ip
        assert ip6 is None


def test_an_ethernet_range_gives_macs_only() -> None:
    spec = parse_vnet(_bridge('AR = [ TYPE = "ETHER", MAC = "02:00:00:00:01:00", SIZE = "16" ]'))
    assert address_at(spec, 1, 15) == ("02:00:00:00:01:0f", None, None)
    assert locate(spec, "02:00:00:00:01:0f") == (1, 15)


def test_an_ipv6_range_uses_the_ula_prefix_without_a_global_one() -> None:
    spec = parse_vnet(
        _bridge('AR = [ TYPE = IP6, MAC = "02:00:00:00:02:00", SIZE = 4, ULA_PREFIX = "fd00::" ]')
    )
    assert address_at(spec, 1, 1) == ("02:00:00:00:02:01", None, "fd00::ff:fe00:201")
    assert locate(spec, "fd00::ff:fe00:201") == (1, 1)


def test_an_address_outside_every_range_is_a_conflict_naming_it() -> None:
    spec = parse_vnet(BRIDGE)
    with pytest.raises(Conflict, match=r"192\.168\.150\.150 is not in any address range"):
        locate(spec, "192.168.150.150")
    with pytest.raises(InvalidInput, match="not an IPv4, IPv6 or MAC"):
        locate(spec, "not-an-address")


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('AR = [ TYPE = IP4, IP = "10.0.0.1", SIZE = "0" ]', "SIZE '0' must be a whole number"),
        ('AR = [ TYPE = IP4, IP = "10.0.0.1", SIZE = "65537" ]', "from 1 to 65536"),
        ('AR = [ TYPE = IP4, IP = "10.0.0.1" ]', "SIZE is missing"),
        ('AR = [ TYPE = IP5, IP = "10.0.0.1", SIZE = 1 ]', "TYPE 'IP5' is not a range type"),
        ('AR = [ TYPE = IP4, IP = "10.0.0.300", SIZE = 1 ]', "not an IPv4 address"),
        ('AR = [ TYPE = IP4, SIZE = "4" ]', "needs IP"),
        ('AR = [ TYPE = ETHER, SIZE = "4" ]', "needs MAC"),
        ('AR = [ TYPE = IP6, MAC = "02:00:00:00:00:01", SIZE = 4 ]', "needs GLOBAL_PREFIX or"),
        ('AR = [ TYPE = IP4, IP = 10.0.0.1, SIZE = 4, ULA_PREFIX = "fd00::" ]', "use TYPE = IP4_6"),
        ('AR = [ TYPE = IP6, MAC = 02:00:00:00:00:01, SIZE = 4, ULA_PREFIX = "2001:db8::" ]',
         "not inside fc00::/7"),
        ('AR = [ TYPE = IP6, MAC = 02:00:00:00:00:01, SIZE = 4, GLOBAL_PREFIX = "2001:db8::/48" ]',
         "give a /64"),
        ('AR = [ TYPE = ETHER, MAC = "01:00:00:00:00:01", SIZE = 4 ]', "not a unicast MAC"),
        ('AR = [ TYPE = ETHER, MAC = "02:ff:ff:ff:ff:fe", SIZE = 4 ]',
         "run past 02:ff:ff:ff:ff:ff"),
        ('AR = [ TYPE = IP4, IP = "10.0.0.1", SIZE = 4, COLOUR = red ]', "unknown key COLOUR"),
    ],
)  # fmt: skip
def test_a_bad_address_range_is_refused_naming_the_range_and_key(extra: str, message: str) -> None:
    text = f"NAME = n\nBRIDGE = br0\n{extra}\n"
    error = _error(text)
    assert "AR 0:" in str(error) and message in str(error)
    assert isinstance(error, TemplateError) and error.line == 3


def test_a_range_running_past_the_last_ipv4_address_is_refused() -> None:
    error = _error(
        'NAME = n\nBRIDGE = br0\nAR = [ TYPE = IP4, IP = "255.255.255.250", SIZE = 10 ]\n'
    )
    assert "run past 255.255.255.255" in str(error)


def test_overlapping_ranges_are_refused_naming_both_and_the_line_of_the_later() -> None:
    error = _error(_bridge('AR = [ TYPE = IP4, IP = "192.168.150.120", SIZE = "10" ]'))
    assert "AR 1 overlaps AR 0 (both hold IP 192.168.150.120)" in str(error)
    assert isinstance(error, TemplateError) and error.line == 8


def test_ranges_sharing_a_mac_overlap_even_without_ips() -> None:
    error = _error(_bridge('AR = [ TYPE = ETHER, MAC = "02:00:c0:a8:96:70", SIZE = "4" ]'))
    assert "AR 1 overlaps AR 0 (both hold MAC 02:00:c0:a8:96:70)" in str(error)


def test_a_range_outside_the_network_is_refused() -> None:
    error = _error(_bridge('AR = [ TYPE = IP4, IP = "192.168.151.1", SIZE = "4" ]'))
    assert "not inside the host addresses of 192.168.150.0/24" in str(error)
    error = _error(_bridge('AR = [ TYPE = IP4, IP = "192.168.150.250", SIZE = "6" ]'))
    assert "192.168.150.250-192.168.150.255 is not inside" in str(error)  # the broadcast


def test_a_gateway_inside_a_range_is_refused() -> None:
    text = BRIDGE.replace('GATEWAY = "192.168.150.1"', 'GATEWAY = "192.168.150.110"')
    error = _error(text)
    assert "GATEWAY 192.168.150.110 is inside AR 0" in str(error)
    assert isinstance(error, TemplateError) and error.line == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('BRIDGE = br0\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n', "NAME is missing"),
        ('NAME = "42"\nBRIDGE = br0\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n', "not all digits"),
        ('NAME = "a b"\nBRIDGE = br0\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n', "NAME 'a b'"),
        ('NAME = n\nBRIDGE = "averyveryverylongbr"\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n',
         "not a Linux interface name"),
        ('NAME = n\nVN_MAD = bridge\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n', "needs BRIDGE"),
        ('NAME = n\nVN_MAD = ovs\nBRIDGE = br0\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n',
         "VN_MAD 'ovs' is not a network driver"),
        ('NAME = n\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n', "needs NETWORK_ADDRESS and NETWORK_MASK"),
        ('NAME = n\nVN_MAD = user\nBRIDGE = br0\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n',
         "BRIDGE is for bridge networks"),
        ('NAME = n\nBRIDGE = br0\nGUEST_PORTS = 22\nAR = [ IP = 10.0.0.1, SIZE = 1 ]\n',
         "GUEST_PORTS is for user networks"),
        ('NAME = n\nNETWORK_ADDRESS = 10.0.2.0/24\nGUEST_PORTS = "22 99999"\n'
         'AR = [ IP = 10.0.2.15, SIZE = 1 ]\n', "TCP ports from 1 to 65535"),
        ('NAME = n\nNETWORK_ADDRESS = 10.0.2.0/30\nAR = [ IP = 10.0.2.1, SIZE = 1 ]\n',
         "too small"),
        ('NAME = n\nNETWORK_ADDRESS = 10.0.2.0/24\nAR = [ TYPE = ETHER, MAC = 02:00:00:00:00:01, '
         'SIZE = 1 ]\n', "user networks need TYPE IP4 or IP4_6"),
        ('NAME = n\nNETWORK_ADDRESS = 10.0.2.0/24\nAR = [ IP = 10.0.2.2, SIZE = 1 ]\n',
         "GATEWAY 10.0.2.2 (the user network default) is inside AR 0"),
        ('NAME = n\nNETWORK_ADDRESS = 10.0.2.0/24\nGATEWAY = 10.0.2.1\n'
         'AR = [ IP = 10.0.2.3, SIZE = 1 ]\n', "DNS 10.0.2.3 (the user network default) is inside"),
        ('NAME = n\nBRIDGE = br0\nNETWORK_ADDRESS = 10.0.2.5\nNETWORK_MASK = 255.255.255.0\n'
         'AR = [ IP = 10.0.2.15, SIZE = 1 ]\n', "not the start of a /24 network: use 10.0.2.0"),
        ('NAME = n\nBRIDGE = br0\nNETWORK_ADDRESS = 10.0.2.0\nNETWORK_MASK = 255.0.255.0\n'
         'AR = [ IP = 10.0.2.15, SIZE = 1 ]\n', "not a network mask"),
        ('NAME = n\nBRIDGE = br0\nNETWORK_MASK = /24\nAR = [ IP = 10.0.2.15, SIZE = 1 ]\n',
         "NETWORK_MASK needs NETWORK_ADDRESS"),
        ('NAME = n\nBRIDGE = br0\nMAC_PREFIX = 03:00\nAR = [ IP = 10.0.2.15, SIZE = 1 ]\n',
         "MAC_PREFIX '03:00' is not two hex bytes of a unicast MAC"),
        ('NAME = n\nBRIDGE = br0\nDNS = "8.8.8.8 dns.google"\nAR = [ IP = 10.0.2.15, SIZE = 1 ]\n',
         "DNS 'dns.google' is not an IP address"),
        ("NAME = n\nBRIDGE = br0\n", "no address range"),
        ("NAME = n\nNAME = m\nBRIDGE = br0\nAR = [ IP = 10.0.2.15, SIZE = 1 ]\n",
         "NAME appears 2 times"),
        ("NAME = n\nBRIDGE = br0\nAR = 10.0.0.1\n", "AR must be a vector"),
    ],
)  # fmt: skip
def test_each_bad_network_attribute_is_refused_with_what_to_do(text: str, message: str) -> None:
    assert message in str(_error(text))


def test_errors_in_yaml_name_the_field_without_a_line() -> None:
    error = _error("NAME: n\nBRIDGE: br0\nAR:\n  - {TYPE: IP4, IP: 10.0.0.1, SIZE: 0}\n")
    assert not isinstance(error, TemplateError)
    assert "AR 0: SIZE '0'" in str(error)


def test_a_syntax_error_keeps_the_parsers_line_and_column() -> None:
    error = _error('NAME = "n"\nAR = [ TYPE IP4 ]\n')
    assert isinstance(error, TemplateError) and (error.line, error.column) == (2, 13)
