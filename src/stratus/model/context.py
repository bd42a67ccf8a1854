"""What goes on a VM's context CD-ROM: the context.sh variables and the cloud-init NoCloud files.

The template's CONTEXT section becomes `context.sh` (KEY='value' lines any POSIX sh can source,
as the guest's init.sh does) and the NoCloud `meta-data`, `user-data` and `network-config`, so
stock cloud images configure themselves from the same CD-ROM. Values may refer to the VM, its
NICs and networks and its owner (`$NAME`, `$NIC[IP, NETWORK="lan"]`, `$USER[SSH_KEY]`...); a
small scanner resolves them, nothing is ever evaluated. Pure: the engine adds init.sh and the
template's FILES and builds the ISO.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from stratus.model.errors import ExpressionError, InvalidInput

__all__ = [
    "START_SCRIPT_PATH",
    "ContextFiles",
    "ContextNic",
    "ContextVm",
    "build_context",
    "sh_quote",
]

#: Where cloud-init writes START_SCRIPT in the guest before running it.
START_SCRIPT_PATH = "/var/lib/stratus/start-script"

_SHELL_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Names that would change the shell sourcing context.sh (or are read-only in bash).
_SHELL_SPECIAL = frozenset(
    {
        "BASH_ENV", "CDPATH", "ENV", "EUID", "HOME", "IFS", "LD_LIBRARY_PATH", "LD_PRELOAD",
        "OLDPWD", "OPTARG", "OPTIND", "PATH", "PPID", "PS1", "PS2", "PS4", "PWD", "SHELL",
        "SHELLOPTS", "UID",
    }
)  # fmt: skip
_WRITTEN_BY_STRATUS = frozenset({"VMID", "NAME", "STRATUS_URL"})
_NIC_ATTRIBUTES = ("MAC", "IP", "IP6", "MASK", "GATEWAY", "DNS", "NETWORK", "NETWORK_ADDRESS")
_VARIABLES_HELP = (
    'use $NAME, $VMID, $NIC[ATTR], $NIC[ATTR, NETWORK="name"], $NETWORK[ATTR, NETWORK="name"], '
    "$USER[ATTR], or $$ for a literal '$'"
)
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACKET = re.compile(
    r"\[[ \t]*(?P<attr>[A-Za-z_][A-Za-z0-9_]*)[ \t]*"
    r"(?:,[ \t]*(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*"
    r"(?:\"(?P<quoted>[^\"\n]*)\"|(?P<word>[^\s\],\"]+))[ \t]*)?\]"
)
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class ContextVm:
    """The VM whose CD-ROM this is."""

    id: int
    name: str


@dataclass(frozen=True)
class ContextNic:
    """One NIC with its lease, as the guest should configure it (ETH<index>)."""

    index: int  # ETH<index>
    network: str  # virtual network name
    mac: str
    ip: str | None = None  # IPv4 lease; None on Ethernet-only ranges
    ip6: str | None = None  # "addr" (a /64 is assumed) or "addr/prefix"
    mask: str | None = None  # dotted (255.255.255.0) or a prefix length (24)
    gateway: str | None = None
    dns: str | None = None  # one or more servers, separated by spaces or commas
    network_address: str | None = None


@dataclass(frozen=True)
class ContextFiles:
    """The generated part of the CD-ROM: variables in context.sh order and the cloud-init data."""

    variables: dict[str, str]  # name -> value, in the order written
    meta_data: dict[str, object]
    user_data: dict[str, object]
    network_config: dict[str, object] | None  # None unless NETWORK = YES

    def context_sh(self) -> str:
        """The variables as KEY='value' lines that any POSIX shell can source."""
        lines = [f"# Stratus context of VM {self.variables['VMID']}: source it with . ./context.sh"]
        lines += [f"{name}={sh_quote(value)}" for name, value in self.variables.items()]
        return "\n".join(lines) + "\n"

    def files(self) -> dict[str, bytes]:
        """File name -> content: context.sh, meta-data, user-data and maybe network-config."""
        files = {
            "context.sh": self.context_sh().encode(),
            "meta-data": _yaml(self.meta_data).encode(),
            "user-data": ("#cloud-config\n" + _yaml(self.user_data)).encode(),
        }
        if self.network_config is not None:
            files["network-config"] = _yaml(self.network_config).encode()
        return files


def sh_quote(value: str) -> str:
    """`value` single-quoted for sh, each embedded quote written '\\''; no character is special."""
    return "'" + value.replace("'", "'\\''") + "'"


def build_context(
    context: Mapping[str, str],
    vm: ContextVm,
    nics: Sequence[ContextNic],
    networks: Mapping[str, Mapping[str, str]],
    user: Mapping[str, str],
    *,
    token: str | None,
    stratus_url: str | None,
) -> ContextFiles:
    """Resolve a CONTEXT section into the files of the VM's context CD-ROM.

    Order: VMID, NAME, then the CONTEXT keys as written (NETWORK = YES becomes the ETH<n>_*
    variables of each NIC in its place), TOKEN and STRATUS_URL last.
    """
    _check_nic_indexes(nics)
    resolver = _Resolver(vm, nics, networks, user)
    values = {_checked_key(key): resolver.substitute(key, raw) for key, raw in context.items()}
    variables = {"VMID": str(vm.id), "NAME": vm.name}
    network = _yes_no(values, "NETWORK")
    with_token = _yes_no(values, "TOKEN")
    for key, value in values.items():
        if key == "NETWORK" and network:
            for name, nic_value in _nic_variables(nics):
                _add(variables, name, nic_value)
        elif key not in ("NETWORK", "TOKEN"):
            _add(variables, key, value)
    if with_token:
        variables["TOKEN"] = _required(token, "a VM token", "the engine issues one per VM")
        variables["STRATUS_URL"] = _required(
            stratus_url, "the Stratus URL", "set the front-end's public URL in the configuration"
        )
    for name, value in variables.items():
        _check_text(name, value)
    hostname = _hostname(variables, vm)
    return ContextFiles(
        variables=variables,
        meta_data={"instance-id": f"stratus-{vm.id}", "local-hostname": hostname},
        user_data=_user_data(variables, hostname),
        network_config=_network_config(nics) if network else None,
    )


# --- keys and values ---------------------------------------------------------------------------


def _checked_key(key: str) -> str:
    if _SHELL_NAME.fullmatch(key) is None:
        raise InvalidInput(
            f"CONTEXT key {key!r} is not a valid shell variable name",
            hint="use upper-case letters, digits and '_', not starting with a digit",
        )
    if key in _SHELL_SPECIAL:
        raise InvalidInput(
            f"CONTEXT key {key} would change the shell that reads context.sh",
            hint=f"rename it, e.g. CONTEXT_{key}",
        )
    if key in _WRITTEN_BY_STRATUS:
        raise InvalidInput(
            f"CONTEXT key {key} is written by Stratus itself",
            hint="remove it, or give your value another name",
        )
    return key


def _add(variables: dict[str, str], name: str, value: str) -> None:
    """Add one variable; the only name that can come twice is a key that NETWORK = YES writes."""
    if name in variables:
        raise InvalidInput(
            f"CONTEXT key {name} clashes with the variable of the same name NETWORK = YES writes",
            hint=f"remove {name} from CONTEXT, or give it another name",
        )
    variables[name] = value


def _check_text(name: str, value: str) -> None:
    if "\0" in value:
        raise InvalidInput(
            f"CONTEXT {name} contains a NUL byte, which a shell variable cannot hold",
            hint="put binary data in a FILES entry or encode it in base64",
        )
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"CONTEXT {name} is not valid text: {exc.reason} at position {exc.start + 1}",
            hint="write it as UTF-8 text",
        ) from exc


def _yes_no(values: Mapping[str, str], key: str) -> bool:
    value = values.get(key)
    if value is None or value.strip().upper() == "NO":
        return False
    if value.strip().upper() == "YES":
        return True
    raise InvalidInput(f"CONTEXT {key} = {value!r} is not valid", hint=f"write {key} = YES or NO")


def _required(value: str | None, what: str, hint: str) -> str:
    if value is None:
        raise InvalidInput(f"CONTEXT TOKEN = YES needs {what}, and there is none", hint=hint)
    return value


def _check_nic_indexes(nics: Sequence[ContextNic]) -> None:
    seen: set[int] = set()
    for nic in nics:
        if nic.index < 0 or nic.index in seen:
            raise InvalidInput(f"NIC index {nic.index} is negative or given twice")
        seen.add(nic.index)


def _nic_variables(nics: Sequence[ContextNic]) -> list[tuple[str, str]]:
    """ETH<n>_MAC, _IP, _MASK, _GATEWAY, _DNS (and _IP6 when set) per NIC; '' when unset."""
    found: list[tuple[str, str]] = []
    for nic in nics:
        prefix = f"ETH{nic.index}_"
        for attr in ("MAC", "IP", "MASK", "GATEWAY", "DNS"):
            found.append((prefix + attr, _nic_attribute(nic, attr) or ""))
        if nic.ip6:
            found.append((prefix + "IP6", nic.ip6))
    return found


def _nic_attribute(nic: ContextNic, attr: str) -> str | None:
    value: str | int | None = getattr(nic, attr.lower())
    return None if value is None else str(value)


# --- substitution ------------------------------------------------------------------------------


class _Resolver:
    """Replaces `$...` references in CONTEXT values; the text it inserts is never scanned again."""

    def __init__(
        self,
        vm: ContextVm,
        nics: Sequence[ContextNic],
        networks: Mapping[str, Mapping[str, str]],
        user: Mapping[str, str],
    ) -> None:
        self.vm = vm
        self.nics = nics
        self.networks = networks
        self.user = user

    def substitute(self, key: str, value: str) -> str:
        """`value` with every reference replaced; errors name the key and the reference."""
        out: list[str] = []
        pos = 0
        while (start := value.find("$", pos)) >= 0:
            out.append(value[pos:start])
            if value.startswith("$$", start):
                out.append("$")
                pos = start + 2
                continue
            name = _VARIABLE.match(value, start + 1)
            if name is None:
                raise _reference_error(
                    key, value, start, f"a '$' that starts no variable: {_VARIABLES_HELP}"
                )
            pos = name.end()
            bracket = _BRACKET.match(value, pos) if value.startswith("[", pos) else None
            if value.startswith("[", pos) and bracket is None:
                raise _reference_error(
                    key, value, start,
                    f"malformed reference ${name.group()}[...]: "
                    'write $VAR[ATTR] or $VAR[ATTR, NETWORK="name"]',
                )  # fmt: skip
            if bracket is not None:
                pos = bracket.end()
            try:
                out.append(self._lookup(name.group(), bracket))
            except LookupError as exc:
                message = f"{value[start:pos]} {exc.args[0]}"
                raise _reference_error(key, value, start, message) from None
        out.append(value[pos:])
        return "".join(out)

    def _lookup(self, variable: str, bracket: re.Match[str] | None) -> str:
        """The value a reference stands for; LookupError says what is wrong with it."""
        if variable in ("NAME", "VMID"):
            if bracket is not None:
                raise LookupError("takes no [attribute]")
            return self.vm.name if variable == "NAME" else str(self.vm.id)
        if variable not in ("NIC", "NETWORK", "USER"):
            raise LookupError(f"is not a known variable ({_VARIABLES_HELP})")
        if bracket is None:
            example = f"${variable}[{_EXAMPLE[variable]}]"
            raise LookupError(f"needs an attribute, e.g. {example}")
        attr = bracket["attr"].upper()
        network = _network_filter(variable, bracket)
        if variable == "USER":
            return _attribute(self.user, attr, "the VM's owner")
        if variable == "NIC":
            if attr not in _NIC_ATTRIBUTES:
                raise LookupError(
                    f"names no NIC attribute {attr} (use {', '.join(_NIC_ATTRIBUTES)})"
                )
            return _nic_attribute(self._nic(network), attr) or ""
        name = network if network is not None else self._nic(None).network
        attributes = self.networks.get(name)
        if attributes is None:
            known = "its networks: " + (", ".join(sorted(self.networks)) or "none")
            raise LookupError(f"refers to network {name!r}, which the VM does not have ({known})")
        return _attribute(attributes, attr, f"network {name!r}")

    def _nic(self, network: str | None) -> ContextNic:
        for nic in self.nics:
            if network is None or nic.network == network:
                return nic
        if network is None:
            raise LookupError("refers to the first NIC, and the VM has none")
        known = "its networks: " + (
            ", ".join(dict.fromkeys(n.network for n in self.nics)) or "none"
        )
        raise LookupError(f"refers to a NIC on network {network!r}, and the VM has none ({known})")


_EXAMPLE = {"NIC": "IP", "NETWORK": 'GATEWAY, NETWORK="name"', "USER": "SSH_KEY"}


def _network_filter(variable: str, bracket: re.Match[str]) -> str | None:
    """The NETWORK="name" of a reference, None when it has none."""
    key = bracket["key"]
    if key is None:
        return None
    if variable == "USER" or key.upper() != "NETWORK":
        allowed = "" if variable == "USER" else ' (only NETWORK="name" is allowed)'
        raise LookupError(f"takes no filter {key}{allowed}")
    quoted: str | None = bracket["quoted"]
    return quoted if quoted is not None else str(bracket["word"])


def _attribute(attributes: Mapping[str, str], attr: str, owner: str) -> str:
    for name, value in attributes.items():
        if name.upper() == attr:
            return value
    known = ", ".join(sorted(attributes)) or "none"
    raise LookupError(f"refers to {attr}, which {owner} does not have (it has: {known})")


def _reference_error(key: str, value: str, start: int, message: str) -> ExpressionError:
    """An error pointing at the reference within its line, so long scripts stay readable."""
    line_start = value.rfind("\n", 0, start) + 1
    line_end = value.find("\n", start)
    line = value[line_start : line_end if line_end >= 0 else len(value)]
    where = f"CONTEXT {key}"
    if "\n" in value:
        where += f" (line {value.count(chr(10), 0, start) + 1})"
    return ExpressionError(f"{where}: {message}", expression=line, position=start - line_start)


# --- cloud-init NoCloud ------------------------------------------------------------------------


def _hostname(variables: Mapping[str, str], vm: ContextVm) -> str:
    """SET_HOSTNAME, which must be a valid host name, or one made from the VM's name."""
    wanted = variables.get("SET_HOSTNAME")
    if wanted is None:
        label = re.sub(r"[^A-Za-z0-9-]+", "-", vm.name).strip("-")[:63].strip("-")
        return label or f"vm-{vm.id}"
    labels = wanted.split(".")
    if len(wanted) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidInput(
            f"CONTEXT SET_HOSTNAME = {wanted!r} is not a valid host name",
            hint="use letters, digits and '-' in dot-separated labels of at most 63 characters",
        )
    return wanted


def _user_data(variables: Mapping[str, str], hostname: str) -> dict[str, object]:
    """#cloud-config: hostname, SSH keys (one a line) and the start script."""
    data: dict[str, object] = {"hostname": hostname}
    keys = [line.strip() for line in variables.get("SSH_PUBLIC_KEY", "").splitlines()]
    if any(keys):
        data["ssh_authorized_keys"] = [key for key in keys if key]
    start = _start_script(variables)
    if start is not None:
        data["write_files"] = [start[0]]
        data["runcmd"] = [start[1]]
    return data


def _start_script(variables: Mapping[str, str]) -> tuple[dict[str, object], list[str]] | None:
    """The write_files entry and runcmd command of START_SCRIPT(_BASE64); None when empty."""
    script = variables.get("START_SCRIPT")
    encoded = variables.get("START_SCRIPT_BASE64")
    if script is not None and encoded is not None:
        raise InvalidInput(
            "CONTEXT gives both START_SCRIPT and START_SCRIPT_BASE64", hint="keep one of them"
        )
    entry: dict[str, object] = {"path": START_SCRIPT_PATH, "permissions": "0700"}
    if encoded is not None:
        decoded = _decoded_script(encoded)
        entry.update(encoding="b64", content=base64.b64encode(decoded).decode())
    elif script is not None:
        decoded = script.encode()
        entry["content"] = script
    else:
        return None
    if not decoded.strip():
        return None
    # A script without '#!' cannot be executed directly: sh runs it, as init.sh would.
    command = [START_SCRIPT_PATH] if decoded.startswith(b"#!") else ["/bin/sh", START_SCRIPT_PATH]
    return entry, command


def _decoded_script(encoded: str) -> bytes:
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except binascii.Error as exc:
        raise InvalidInput(
            f"CONTEXT START_SCRIPT_BASE64 is not valid base64 ({exc})",
            hint="encode the script with: base64 -w0 script.sh",
        ) from exc


def _network_config(nics: Sequence[ContextNic]) -> dict[str, object]:
    """Network config version 2: each NIC matched by MAC, static when it has an IPv4 lease."""
    ethernets: dict[str, object] = {}
    for nic in nics:
        entry: dict[str, object] = {"match": {"macaddress": nic.mac.lower()}}
        addresses = []
        if nic.ip:
            addresses.append(_ipv4_interface(nic))
        else:
            entry["dhcp4"] = True  # Ethernet-only range: Stratus has no address to give
        if nic.ip6:
            addresses.append(nic.ip6 if "/" in nic.ip6 else f"{nic.ip6}/64")
        if addresses:
            entry["addresses"] = addresses
        if nic.ip and nic.gateway:
            # One default route per NIC; the metric prefers the lowest-numbered interface.
            route = {"to": "0.0.0.0/0", "via": nic.gateway, "metric": 100 + nic.index}
            entry["routes"] = [route]
        servers = [server for server in re.split(r"[\s,]+", nic.dns or "") if server]
        if servers:
            entry["nameservers"] = {"addresses": servers}
        ethernets[f"eth{nic.index}"] = entry
    return {"version": 2, "ethernets": ethernets}


def _ipv4_interface(nic: ContextNic) -> str:
    if not nic.mask:
        raise InvalidInput(
            f"NIC {nic.index} on network {nic.network!r} has the IP {nic.ip} but no mask",
            hint="give the network a NETWORK_MASK",
        )
    try:
        return str(ipaddress.IPv4Interface(f"{nic.ip}/{nic.mask}"))
    except ValueError as exc:
        raise InvalidInput(
            f"NIC {nic.index} on network {nic.network!r}: {nic.ip}/{nic.mask} is not a valid "
            f"IPv4 address and mask ({exc})",
            hint="check the network's address range and NETWORK_MASK",
        ) from exc


def _yaml(data: Mapping[str, object]) -> str:
    return str(yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True))
