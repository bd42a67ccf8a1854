"""The pure part of overlays: keys as `wg` makes them, the configurations, input checks, and
how a configuration reaches a VM's context."""

from __future__ import annotations

import base64
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stratus.drivers.overlay import parse_wg_show
from stratus.model.context import ContextVm, build_context
from stratus.model.errors import InvalidInput
from stratus.model.overlay import (
    HubPeer,
    check_peer_name,
    generate_keypair,
    network_subnet,
    parse_endpoint,
    parse_site_subnet,
    public_key,
    render_hub_config,
    render_peer_config,
    wireguard_tunnel,
    with_tunnels,
)

needs_wg = pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools (wg) missing")
LAN = ipaddress.IPv4Network("192.168.150.0/24")


def wg(*args: str, input: str | None = None) -> str:
    done = subprocess.run(["wg", *args], input=input, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_wg
def test_generated_keys_are_what_wg_pubkey_derives() -> None:
    for _ in range(3):
        keys = generate_keypair()
        assert len(base64.b64decode(keys.private)) == 32
        assert wg("pubkey", input=keys.private) == keys.public
    private = wg("genkey")
    assert public_key(private) == wg("pubkey", input=private)


def test_a_key_pair_never_shows_its_private_key() -> None:
    keys = generate_keypair()
    assert keys.private not in repr(keys) and keys.public in repr(keys)


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_a_private_key_that_is_not_32_bytes_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match="32 bytes in base64"):
        public_key(bad)


def test_hub_config_has_one_peer_section_per_peer_in_wg_setconf_format() -> None:
    text = render_hub_config(
        "PRIV", 51820, [HubPeer("A=", ("192.168.150.7/32",)), HubPeer("B=", ("10.2.0.0/24",))]
    )
    assert text == (
        "[Interface]\nPrivateKey = PRIV\nListenPort = 51820\n\n"
        "[Peer]\nPublicKey = A=\nAllowedIPs = 192.168.150.7/32\n\n"
        "[Peer]\nPublicKey = B=\nAllowedIPs = 10.2.0.0/24\n"
    )


@needs_wg
def test_peer_configs_are_valid_wg_quick_files(tmp_path: Path) -> None:
    hub, peer = generate_keypair(), generate_keypair()
    for address in ("192.168.150.7/24", None):
        text = render_peer_config(
            private_key=peer.private,
            address=address,
            hub_public=hub.public,
            endpoint=parse_endpoint("vpn.example.org:51820"),
            allowed_ips=[str(LAN)],
            comment="a comment\non two lines",
        )
        assert ("Address = 192.168.150.7/24" in text) is (address is not None)
        assert "PersistentKeepalive = 25" in text and "Endpoint = vpn.example.org:51820" in text
        path = tmp_path / "stratus.conf"
        path.write_text(text)
        stripped = subprocess.run(
            ["wg-quick", "strip", str(path)], capture_output=True, text=True, timeout=10
        )
        assert stripped.returncode == 0, stripped.stderr
        assert "Address" not in stripped.stdout and f"PublicKey = {hub.public}" in stripped.stdout


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("203.0.113.7:51820", "203.0.113.7:51820"),
        ("VPN.Example.org.:1194", "vpn.example.org:1194"),
        ("[2001:db8::1]:51820", "[2001:db8::1]:51820"),
        (" 10.0.0.1:1 ", "10.0.0.1:1"),
    ],
)
def test_endpoints_are_parsed_and_written_back(text: str, shown: str) -> None:
    assert str(parse_endpoint(text)) == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vpn.example.org", "is not HOST:PORT"),
        ("2001:db8::1:51820", "is not HOST:PORT"),
        ("10.0.0.1:0", "port 0 is not 1-65535"),
        ("10.0.0.1:70000", "port 70000 is not 1-65535"),
        ("300.1.2.3:51820", "is not an IPv4 address"),
        ("0.0.0.0:51820", "cannot be dialled"),
        ("[::]:51820", "cannot be dialled"),
        ("bad_name.example:51820", "is not a host name"),
        ("-x.example:51820", "is not a host name"),
    ],
)
def test_bad_endpoints_are_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as refused:
        parse_endpoint(text)
    assert (
        refused.value.hint is None
        or "HOST:PORT" in refused.value.hint
        or "public" in (refused.value.hint)
    )


def test_a_site_subnet_must_be_a_subnet_of_its_own() -> None:
    assert str(parse_site_subnet("10.2.0.0/24", LAN)) == "10.2.0.0/24"
    with pytest.raises(InvalidInput, match="not an IPv4 subnet") as loose:
        parse_site_subnet("10.2.0.5/24", LAN)
    assert loose.value.hint == "a subnet starts at its network address: write 10.2.0.0/24"
    with pytest.raises(InvalidInput, match="overlaps the network's own subnet"):
        parse_site_subnet("192.168.0.0/16", LAN)
    with pytest.raises(InvalidInput, match=r"overlaps 10\.2\.0\.0/24, which another site"):
        parse_site_subnet("10.2.0.128/25", LAN, [ipaddress.IPv4Network("10.2.0.0/24")])
    with pytest.raises(InvalidInput, match="wider than /8"):
        parse_site_subnet("0.0.0.0/0", LAN)
    with pytest.raises(InvalidInput, match="not an IPv4 subnet"):
        parse_site_subnet("lan", LAN)


def test_a_network_without_address_and_mask_has_no_subnet_to_route() -> None:
    assert str(network_subnet("lan", "192.168.150.0", "255.255.255.0")) == "192.168.150.0/24"
    with pytest.raises(InvalidInput, match="network lan has no NETWORK_ADDRESS") as refused:
        network_subnet("lan", None, None)
    assert refused.value.hint is not None and "NETWORK_MASK" in refused.value.hint


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "a/b"])
def test_peer_names_that_could_not_name_a_file_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="peer name"):
        check_peer_name(name)


def test_a_vm_gets_its_tunnel_in_context_sh_and_cloud_init_before_its_start_script() -> None:
    context = build_context(
        {"START_SCRIPT": "#!/bin/sh\necho hi"},
        ContextVm(7, "far"),
        [],
        {},
        {},
        token=None,
        stratus_url=None,
    )
    files = with_tunnels(context, [wireguard_tunnel("[Interface]\n", 0)]).files()
    encoded = base64.b64encode(b"[Interface]\n").decode()
    assert f"WG_CONFIG_BASE64='{encoded}'" in files["context.sh"].decode()
    user_data = yaml.safe_load(files["user-data"])
    first = user_data["write_files"][0]
    assert first == {
        "path": "/etc/wireguard/stratus.conf",
        "permissions": "0600",
        "encoding": "b64",
        "content": encoded,
    }
    assert user_data["runcmd"][0] == ["wg-quick", "up", "stratus"]
    assert len(user_data["runcmd"]) == 2  # the start script still runs, after the tunnel
    second = wireguard_tunnel("x", 1)
    assert (second.variable, second.path) == ("WG1_CONFIG_BASE64", "/etc/wireguard/stratus1.conf")


def test_a_context_key_of_the_tunnel_is_refused() -> None:
    context = build_context(
        {"WG_CONFIG_BASE64": "mine"}, ContextVm(7, "far"), [], {}, {}, token=None, stratus_url=None
    )
    with pytest.raises(InvalidInput, match="WG_CONFIG_BASE64 is written by Stratus"):
        with_tunnels(context, [wireguard_tunnel("x", 0)])


def test_wg_show_fields_become_the_hub_status() -> None:
    mark = "--stratus--\n"
    text = (
        "51820\n" + mark + "K1=\t1700000000\nK2=\t0\n" + mark
        + "K1=\t1200\t3400\nK2=\t0\t0\n" + mark + "K1=\t10.0.0.2:4000\nK2=\t(none)\n" + mark
    )  # fmt: skip
    status = parse_wg_show(text)
    assert status.up and status.listen_port == 51820
    one, two = status.peers["K1="], status.peers["K2="]
    assert one.endpoint == "10.0.0.2:4000" and (one.rx_bytes, one.tx_bytes) == (1200, 3400)
    assert one.latest_handshake is not None and one.latest_handshake.timestamp() == 1700000000
    assert two.endpoint is None and two.latest_handshake is None
    assert not parse_wg_show("garbage").up
