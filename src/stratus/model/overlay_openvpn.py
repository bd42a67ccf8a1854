"""OpenVPN overlays: a small PKI (a CA per network, a certificate per hub and per peer) and
the hub's and peers' configurations. Pure, like model/overlay.py.

TLS mode with certificates, not static keys: OpenVPN 2.6 deprecates `--secret` and
static-key mode has one peer per process. The hub runs in server mode (`topology subnet`);
each peer's address (its lease) is pushed from a client-config-dir file named after its
certificate's common name, and `ccd-exclusive` refuses any client without such a file, so
removing a peer's file locks its certificate out. Keys are ECDSA P-256, certificates
SHA-256, TLS 1.2 or newer with ECDHE (`dh none`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stratus.model.overlay import Endpoint, GuestTunnel

__all__ = [
    "CLIENT_CONFIG_PATH",
    "Certificate",
    "issue_certificate",
    "new_ca",
    "openvpn_tunnel",
    "peer_ccd",
    "render_client_config",
    "render_server_config",
    "split_pem",
]

VALID_FOR = timedelta(days=3650)
CLIENT_CONFIG_PATH = "/etc/openvpn/client/stratus.conf"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.DOTALL)


@dataclass(frozen=True)
class Certificate:
    """A certificate and its private key, both PEM."""

    cert: str
    key: str = field(repr=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(network: str, now: datetime | None = None) -> Certificate:
    """A CA for one network's overlay: it signs the hub's and the peers' certificates."""
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"Stratus overlay CA {network}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Certificate(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), _key_pem(key))


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def issue_certificate(
    ca: Certificate, common_name: str, *, server: bool, now: datetime | None = None
) -> Certificate:
    """A hub (server) or peer (client) certificate signed by the network's CA."""
    now = now or datetime.now(UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.encode())
    ca_key = serialization.load_pem_private_key(ca.key.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Certificate(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), _key_pem(key))


def split_pem(text: str) -> list[str]:
    """The certificates of a PEM bundle, in order."""
    return [match.group().rstrip("\n") + "\n" for match in _PEM.finditer(text)]


def _inline(tag: str, pem: str) -> list[str]:
    return [f"<{tag}>", pem.strip(), f"</{tag}>"]


def render_server_config(
    *,
    dev: str,
    listen_port: int,
    hub_ip: str,
    subnet: ipaddress.IPv4Network,
    ca_cert: str,
    server: Certificate,
    run_dir: str,
) -> str:
    """The hub's configuration: server mode on a TUN device that Stratus addresses and
    routes itself (the hub's address lives on the bridge, not on the tunnel)."""
    lines = [
        "# Stratus overlay hub (OpenVPN): written by Stratus, changes are overwritten",
        "mode server",
        "tls-server",
        "proto udp",
        "multihome",  # answer from the address a peer dialled, on a host with several
        f"port {listen_port}",
        f"dev {dev}",
        "dev-type tun",
        "topology subnet",
        f"ifconfig {hub_ip} {subnet.netmask}",
        "ifconfig-noexec",
        "route-noexec",
        'push "topology subnet"',
        f"client-config-dir {run_dir}/ccd",
        "ccd-exclusive",
        "verify-client-cert require",
        "remote-cert-tls client",
        "dh none",
        "keepalive 10 60",
        "persist-key",
        "persist-tun",
        f"status {run_dir}/status 1",
        "status-version 2",
        f"log {run_dir}/log",
        f"writepid {run_dir}/pid",
        "verb 3",
        "daemon",
        *_inline("ca", ca_cert),
        *_inline("cert", server.cert),
        *_inline("key", server.key),
    ]
    return "\n".join(lines) + "\n"


def peer_ccd(address: str, subnet: ipaddress.IPv4Network, routes: Sequence[str] = ()) -> str:
    """A peer's client-config-dir file: its address, and a site's subnet (`iroute`)."""
    lines = [f"ifconfig-push {address} {subnet.netmask}"]
    for route in routes:
        network = ipaddress.IPv4Network(route)
        lines.append(f"iroute {network.network_address} {network.netmask}")
    return "\n".join(lines) + "\n"


def render_client_config(
    *, endpoint: Endpoint | str, ca_cert: str, client: Certificate, comment: str = ""
) -> str:
    """A peer's configuration (`openvpn --config FILE`); the hub pushes its address."""
    host, _, port = str(endpoint).rpartition(":")
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [
        "client",
        "dev tun",
        "proto udp",
        f"remote {host.strip('[]')} {port}",
        "nobind",
        "remote-cert-tls server",
        "persist-key",
        "persist-tun",
        "verb 3",
        *_inline("ca", ca_cert),
        *_inline("cert", client.cert),
        *_inline("key", client.key),
    ]
    return "\n".join(lines) + "\n"


def openvpn_tunnel(content: str, index: int = 0) -> GuestTunnel:
    """How a VM gets an OpenVPN peer configuration: OPENVPN_CONFIG_BASE64 and a file that
    cloud-init writes and starts openvpn on."""
    name = "stratus" if index == 0 else f"stratus{index}"
    variable = "OPENVPN_CONFIG_BASE64" if index == 0 else f"OPENVPN{index}_CONFIG_BASE64"
    path = f"/etc/openvpn/client/{name}.conf"
    return GuestTunnel(variable, path, content, ("openvpn", "--config", path, "--daemon"))
