"""The context CD-ROM's generated files: context.sh variables, substitutions, cloud-init NoCloud."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.model.context import (
    START_SCRIPT_PATH,
    ContextFiles,
    ContextNic,
    ContextVm,
    build_context,
    sh_quote,
)
from stratus.model.errors import ExpressionError, InvalidInput
from stratus.model.template import parse_template, vm_spec

VM = ContextVm(id=42, name="web-1")
LAN = ContextNic(
    index=0,
    network="lan",
    mac="02:00:0A:00:00:05",
    ip="10.0.0.5",
    mask="255.255.255.0",
    gateway="10.0.0.1",
    dns="10.0.0.2, 8.8.8.8",
    network_address="10.0.0.0",
)
PUB = ContextNic(index=1, network="pub", mac="02:00:c0:a8:01:06", ip="192.168.1.6", mask="24")
NETWORKS = {
    "lan": {"GATEWAY": "10.0.0.1", "NETWORK_MASK": "255.255.255.0", "BRIDGE": "br0"},
    "pub": {"BRIDGE": "br1"},
}
USER = {"NAME": "ana", "SSH_KEY": "ssh-ed25519 AAAAC3Nza ana@laptop"}


def build(
    context: Mapping[str, str],
    *,
    vm: ContextVm = VM,
    nics: Sequence[ContextNic] = (LAN, PUB),
    user: Mapping[str, str] = USER,
    token: str | None = None,
    stratus_url: str | None = None,
) -> ContextFiles:
    return build_context(context, vm, nics, NETWORKS, user, token=token, stratus_url=stratus_url)


def source_with_sh(files: ContextFiles) -> dict[str, str]:
    """Source context.sh with /bin/sh and read every variable back, NUL-separated."""
    names = list(files.variables)
    printf = "printf '%s\\0'" + "".join(f' "${name}"' for name in names)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "context.sh"
        path.write_bytes(files.files()["context.sh"])
        result = subprocess.run(
            ["/bin/sh", "-c", f'. "$1" && {printf}', "sh", str(path)],
            capture_output=True,
            check=True,
            timeout=10,
        )
    values = result.stdout.decode().split("\0")[:-1]
    return dict(zip(names, values, strict=True))


def user_data(files: ContextFiles) -> dict[str, object]:
    text = files.files()["user-data"].decode()
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


# --- variables ---------------------------------------------------------------------------------


def test_vmid_and_name_come_first_then_the_keys_in_template_order() -> None:
    files = build({"ZETA": "1", "ALPHA": "2", "MID": "3"})
    assert list(files.variables.items()) == [
        ("VMID", "42"),
        ("NAME", "web-1"),
        ("ZETA", "1"),
        ("ALPHA", "2"),
        ("MID", "3"),
    ]


def test_an_empty_context_still_writes_vmid_and_name() -> None:
    files = build({})
    assert files.variables == {"VMID": "42", "NAME": "web-1"}
    assert source_with_sh(files) == {"VMID": "42", "NAME": "web-1"}


def test_network_yes_writes_each_nics_variables_where_network_stood() -> None:
    v6 = ContextNic(index=2, network="lan", mac="02:00:00:00:00:07", ip6="fd00::7")
    files = build({"BEFORE": "b", "NETWORK": "YES", "AFTER": "a"}, nics=(LAN, PUB, v6))
    assert list(files.variables.items()) == [
        ("VMID", "42"),
        ("NAME", "web-1"),
        ("BEFORE", "b"),
        ("ETH0_MAC", "02:00:0A:00:00:05"),
        ("ETH0_IP", "10.0.0.5"),
        ("ETH0_MASK", "255.255.255.0"),
        ("ETH0_GATEWAY", "10.0.0.1"),
        ("ETH0_DNS", "10.0.0.2, 8.8.8.8"),
        ("ETH1_MAC", "02:00:c0:a8:01:06"),
        ("ETH1_IP", "192.168.1.6"),
        ("ETH1_MASK", "24"),
        ("ETH1_GATEWAY", ""),
        ("ETH1_DNS", ""),
        ("ETH2_MAC", "02:00:00:00:00:07"),
        ("ETH2_IP", ""),
        ("ETH2_MASK", ""),
        ("ETH2_GATEWAY", ""),
        ("ETH2_DNS", ""),
        ("ETH2_IP6", "fd00::7"),
        ("AFTER", "a"),
    ]
    assert "NETWORK" not in files.variables


@pytest.mark.parametrize("value", ["NO", "no", " No "])
def test_network_no_writes_no_nic_variables_and_no_network_config(value: str) -> None:
    files = build({"NETWORK": value})
    assert files.variables == {"VMID": "42", "NAME": "web-1"}
    assert files.network_config is None
    assert "network-config" not in files.files()


@pytest.mark.parametrize("key", ["NETWORK", "TOKEN"])
def test_yes_no_keys_refuse_other_values(key: str) -> None:
    with pytest.raises(InvalidInput, match=f"CONTEXT {key} = 'maybe' is not valid.*YES or NO"):
        build({key: "maybe"})


def test_token_yes_writes_the_token_and_url_last() -> None:
    files = build(
        {"TOKEN": "YES", "LATER": "x"}, token="s3cr3t", stratus_url="http://10.0.0.1:2633"
    )
    assert list(files.variables)[-2:] == ["TOKEN", "STRATUS_URL"]
    assert files.variables["TOKEN"] == "s3cr3t"
    assert files.variables["STRATUS_URL"] == "http://10.0.0.1:2633"
    assert files.variables["LATER"] == "x"


def test_token_no_writes_neither_token_nor_url() -> None:
    files = build({"TOKEN": "no"}, token="s3cr3t", stratus_url="http://x")
    assert "TOKEN" not in files.variables and "STRATUS_URL" not in files.variables


@pytest.mark.parametrize(
    ("token", "url", "missing"),
    [(None, "http://x", "a VM token"), ("t", None, "the Stratus URL")],
)
def test_token_yes_without_a_token_or_url_is_refused(
    token: str | None, url: str | None, missing: str
) -> None:
    with pytest.raises(InvalidInput, match=f"TOKEN = YES needs {missing}"):
        build({"TOKEN": "YES"}, token=token, stratus_url=url)


def test_ssh_key_hostname_and_start_script_are_written_as_given() -> None:
    context = {
        "SSH_PUBLIC_KEY": "ssh-rsa AAAA user@host",
        "SET_HOSTNAME": "node-7.example.org",
        "START_SCRIPT": "#!/bin/sh\necho ready > /tmp/ready\n",
    }
    files = build(context)
    for key, value in context.items():
        assert files.variables[key] == value
    assert source_with_sh(files)["START_SCRIPT"] == context["START_SCRIPT"]


def test_a_template_context_section_flows_through_unchanged() -> None:
    template = parse_template(
        "MEMORY = 64\n"
        'CONTEXT = [ ssh_public_key = "$USER[SSH_KEY]", network = yes,\n'
        '            LAN_IP = \'$NIC[IP, NETWORK="lan"]\', HOSTNAME = "$NAME" ]\n'
    )
    files = build(vm_spec(template).context)
    assert files.variables["SSH_PUBLIC_KEY"] == USER["SSH_KEY"]
    assert files.variables["LAN_IP"] == "10.0.0.5"
    assert files.variables["HOSTNAME"] == "web-1"
    assert files.variables["ETH1_IP"] == "192.168.1.6"


# --- substitutions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$NAME", "web-1"),
        ("$VMID", "42"),
        ("host-$NAME-$VMID.local", "host-web-1-42.local"),
        ("$NIC[IP]", "10.0.0.5"),
        ("$NIC[mac]", "02:00:0A:00:00:05"),
        ("$NIC[NETWORK_ADDRESS]", "10.0.0.0"),
        ('$NIC[IP, NETWORK="pub"]', "192.168.1.6"),
        ("$NIC[ IP ,NETWORK=pub ]", "192.168.1.6"),
        ('$NIC[GATEWAY, NETWORK="pub"]', ""),  # known but unset: empty, like ETH1_GATEWAY
        ('$NETWORK[GATEWAY, NETWORK="lan"]', "10.0.0.1"),
        ('$NETWORK[BRIDGE, NETWORK="pub"]', "br1"),
        ("$NETWORK[BRIDGE]", "br0"),  # the first NIC's network
        ("$USER[SSH_KEY]", USER["SSH_KEY"]),
        ("$USER[name]", "ana"),
        ("$$", "$"),
        ("$$NAME costs $$5", "$NAME costs $5"),
        ("echo $${HOME} $$$NAME", "echo ${HOME} $web-1"),
        ("no references at all", "no references at all"),
    ],
)
def test_each_substitution_form(value: str, expected: str) -> None:
    assert build({"VALUE": value}).variables["VALUE"] == expected


def test_substituted_text_is_never_scanned_again() -> None:
    files = build({"KEY": "$USER[SSH_KEY]"}, user={"SSH_KEY": "has $NAME and $$ inside"})
    assert files.variables["KEY"] == "has $NAME and $$ inside"


@pytest.mark.parametrize(
    ("value", "reference", "problem"),
    [
        ("$FOO", "$FOO", "is not a known variable"),
        ("x $home", "$home", "is not a known variable"),
        ("$NAMEX", "$NAMEX", "is not a known variable"),
        ("cost: $5", "'$'", "starts no variable"),
        ("${HOME}", "'$'", "starts no variable"),
        ("trailing $", "'$'", "starts no variable"),
        ("$NIC[IP", "$NIC[...]", "malformed reference"),
        ("$NIC[IP NETWORK=lan]", "$NIC[...]", "malformed reference"),
        ("$NIC", "$NIC", "needs an attribute"),
        ("$NAME[X]", "$NAME[X]", "takes no [attribute]"),
        ("$NIC[FOO]", "$NIC[FOO]", "names no NIC attribute FOO"),
        ('$NIC[IP, NETWORK="dmz"]', '$NIC[IP, NETWORK="dmz"]', "NIC on network 'dmz'"),
        ('$NIC[IP, NIC_ID="1"]', '$NIC[IP, NIC_ID="1"]', "takes no filter NIC_ID"),
        ('$NETWORK[GATEWAY, NETWORK="dmz"]', "$NETWORK[GATEWAY", "network 'dmz'"),
        ('$NETWORK[VLAN, NETWORK="lan"]', "$NETWORK[VLAN", "refers to VLAN"),
        ("$USER[PASSWORD]", "$USER[PASSWORD]", "refers to PASSWORD, which the VM's owner"),
        ('$USER[NAME, NETWORK="lan"]', "$USER[NAME", "takes no filter NETWORK"),
    ],
)
def test_a_bad_reference_names_the_key_and_the_reference(
    value: str, reference: str, problem: str
) -> None:
    with pytest.raises(ExpressionError) as caught:
        build({"MY_KEY": value})
    message = str(caught.value)
    assert message.startswith("CONTEXT MY_KEY: ")
    assert reference in message and problem in message
    assert value[caught.value.position] == "$"  # the error points at the reference


def test_a_reference_to_the_first_nic_of_a_vm_without_nics_is_refused() -> None:
    with pytest.raises(ExpressionError, match=r"CONTEXT IP: \$NIC\[IP\] refers to the first NIC"):
        build({"IP": "$NIC[IP]"}, nics=())


def test_an_error_in_a_long_script_shows_its_line_and_points_within_it() -> None:
    script = "#!/bin/sh\necho one\necho $HOME two\n"
    with pytest.raises(ExpressionError) as caught:
        build({"START_SCRIPT": script})
    assert str(caught.value).startswith("CONTEXT START_SCRIPT (line 3): $HOME is not a known")
    assert caught.value.expression == "echo $HOME two"
    assert caught.value.position == 5


# --- keys and values ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["lower", "SSH-KEY", "1ST", "", "A B", "É"])
def test_a_key_that_is_not_a_shell_name_is_refused(key: str) -> None:
    with pytest.raises(InvalidInput, match="is not a valid shell variable name") as caught:
        build({key: "x"})
    assert repr(key) in str(caught.value)


@pytest.mark.parametrize("key", ["IFS", "PATH", "PS4", "UID"])
def test_a_key_that_would_change_the_sourcing_shell_is_refused(key: str) -> None:
    with pytest.raises(InvalidInput, match=f"CONTEXT key {key} would change the shell"):
        build({key: "x"})


@pytest.mark.parametrize("key", ["VMID", "NAME", "STRATUS_URL"])
def test_a_key_stratus_writes_itself_is_refused(key: str) -> None:
    with pytest.raises(InvalidInput, match=f"CONTEXT key {key} is written by Stratus itself"):
        build({key: "x"})


@pytest.mark.parametrize(
    "context", [{"ETH0_IP": "1.2.3.4", "NETWORK": "YES"}, {"NETWORK": "YES", "ETH0_IP": "1.2.3.4"}]
)
def test_a_key_that_clashes_with_a_nic_variable_is_refused(context: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match=r"CONTEXT key ETH0_IP clashes .* NETWORK = YES writes"):
        build(context)


def test_a_key_named_like_a_nic_variable_is_kept_without_network_yes() -> None:
    assert build({"ETH0_IP": "1.2.3.4"}).variables["ETH0_IP"] == "1.2.3.4"


def test_a_nul_byte_is_refused_naming_the_key() -> None:
    with pytest.raises(InvalidInput, match="CONTEXT DATA contains a NUL byte"):
        build({"DATA": "a\0b"})
    with pytest.raises(InvalidInput, match="CONTEXT KEY contains a NUL byte"):
        build({"KEY": "$USER[SSH_KEY]"}, user={"SSH_KEY": "x\0"})
    with pytest.raises(InvalidInput, match="CONTEXT NAME contains a NUL byte"):
        build({}, vm=ContextVm(1, "bad\0name"))


def test_text_that_is_not_valid_unicode_is_refused() -> None:
    with pytest.raises(InvalidInput, match="CONTEXT DATA is not valid text"):
        build({"DATA": "half a pair \ud800"})


def test_sh_quote_uses_the_close_escape_reopen_idiom() -> None:
    assert sh_quote("it's") == "'it'\\''s'"
    assert sh_quote("") == "''"


def test_awkward_values_survive_sourcing_with_sh() -> None:
    awkward = {
        "QUOTES": "it's \"quoted\" ''",
        "SPACES": "  leading and trailing  ",
        "NEWLINES": "line 1\nline 2\n\n",
        "DOLLARS": "$$HOME $$(echo injected) `echo injected` $${X:-y}",
        "BACKSLASHES": "C:\\path\\ \\n \\' \\\\",
        "GLOBS": "* ? [a-z] ~ ; & | < > # !",
        "UNICODE": "grüße 🌍 \t tab \r return",
        "EMPTY": "",
    }
    files = build(awkward)
    read = source_with_sh(files)
    assert read == files.variables
    assert read["DOLLARS"] == "$HOME $(echo injected) `echo injected` ${X:-y}"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0")),
        min_size=1,
        max_size=4,
    )
)
def test_any_text_without_nul_survives_the_sh_round_trip(values: list[str]) -> None:
    context = {f"V{i}": value.replace("$", "$$") for i, value in enumerate(values)}
    read = source_with_sh(build(context))
    assert [read[f"V{i}"] for i in range(len(values))] == values


# --- start scripts -----------------------------------------------------------------------------


def test_a_start_script_goes_to_cloud_init_as_a_file_and_a_command() -> None:
    data = user_data(build({"START_SCRIPT": "#!/bin/bash\necho $$HOSTNAME\n"}))
    assert data["write_files"] == [
        {
            "path": START_SCRIPT_PATH,
            "permissions": "0700",
            "content": "#!/bin/bash\necho $HOSTNAME\n",
        }
    ]
    assert data["runcmd"] == [[START_SCRIPT_PATH]]


def test_a_start_script_without_shebang_is_run_by_sh() -> None:
    data = user_data(build({"START_SCRIPT": "touch /tmp/x"}))
    assert data["runcmd"] == [["/bin/sh", START_SCRIPT_PATH]]


def test_an_empty_start_script_runs_nothing() -> None:
    data = user_data(build({"START_SCRIPT": "  \n"}))
    assert "write_files" not in data and "runcmd" not in data


def test_a_base64_start_script_is_kept_in_context_sh_and_decoded_by_cloud_init() -> None:
    script = b"#!/bin/sh\nprintf 'caf\xc3\xa9\\n' > /tmp/out\n"
    encoded = base64.encodebytes(script).decode()  # wrapped lines, as base64(1) writes them
    files = build({"START_SCRIPT_BASE64": encoded})
    assert files.variables["START_SCRIPT_BASE64"] == encoded
    entries = user_data(files)["write_files"]
    assert isinstance(entries, list) and len(entries) == 1
    entry = entries[0]
    assert entry["encoding"] == "b64"
    assert base64.b64decode(entry["content"]) == script
    assert user_data(files)["runcmd"] == [[START_SCRIPT_PATH]]


@pytest.mark.parametrize("value", ["not base64!", "abc", "QUJD$$"])
def test_invalid_base64_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="START_SCRIPT_BASE64 is not valid base64"):
        build({"START_SCRIPT_BASE64": value})


def test_both_start_script_forms_at_once_are_refused() -> None:
    with pytest.raises(InvalidInput, match="both START_SCRIPT and START_SCRIPT_BASE64"):
        build({"START_SCRIPT": "true", "START_SCRIPT_BASE64": "dHJ1ZQ=="})


# --- cloud-init NoCloud ------------------------------------------------------------------------


def test_meta_data_names_the_instance_and_defaults_the_hostname_to_the_vm_name() -> None:
    files = build({})
    meta = yaml.safe_load(files.files()["meta-data"])
    assert meta == {"instance-id": "stratus-42", "local-hostname": "web-1"}
    assert user_data(files) == {"hostname": "web-1"}


@pytest.mark.parametrize(
    ("name", "hostname"),
    [("my web server!", "my-web-server"), ("---", "vm-42"), ("x" * 80, "x" * 63)],
)
def test_a_vm_name_that_is_no_hostname_is_made_into_one(name: str, hostname: str) -> None:
    meta = yaml.safe_load(build({}, vm=ContextVm(42, name)).files()["meta-data"])
    assert meta["local-hostname"] == hostname


def test_set_hostname_names_the_host_in_meta_data_and_user_data() -> None:
    files = build({"SET_HOSTNAME": "$NAME.example.org"})
    assert yaml.safe_load(files.files()["meta-data"])["local-hostname"] == "web-1.example.org"
    assert user_data(files)["hostname"] == "web-1.example.org"


@pytest.mark.parametrize("value", ["has space", "-dash", "a..b", "x" * 64, "under_score"])
def test_a_set_hostname_that_is_no_hostname_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"SET_HOSTNAME = .* is not a valid host name"):
        build({"SET_HOSTNAME": value})


def test_user_data_carries_each_ssh_key_line() -> None:
    keys = "ssh-ed25519 AAAA one@a\n\n  ssh-rsa BBBB two@b  \n"
    data = user_data(build({"SSH_PUBLIC_KEY": keys}))
    assert data["ssh_authorized_keys"] == ["ssh-ed25519 AAAA one@a", "ssh-rsa BBBB two@b"]


def test_user_text_cannot_inject_cloud_config_keys() -> None:
    hostile = "x\nruncmd: [[rm, -rf, /]]\n#"
    data = user_data(build({"SSH_PUBLIC_KEY": hostile}, vm=ContextVm(1, "a: b\nc")))
    assert set(data) == {"hostname", "ssh_authorized_keys"}


def test_network_config_matches_each_nic_by_mac_with_its_static_address() -> None:
    dhcp = ContextNic(index=2, network="lan", mac="02:00:00:00:00:07", ip6="fd00::7")
    files = build({"NETWORK": "YES"}, nics=(LAN, PUB, dhcp))
    config = yaml.safe_load(files.files()["network-config"])
    assert config == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "02:00:0a:00:00:05"},
                "addresses": ["10.0.0.5/24"],
                "routes": [{"to": "0.0.0.0/0", "via": "10.0.0.1", "metric": 100}],
                "nameservers": {"addresses": ["10.0.0.2", "8.8.8.8"]},
            },
            "eth1": {"match": {"macaddress": "02:00:c0:a8:01:06"}, "addresses": ["192.168.1.6/24"]},
            "eth2": {
                "match": {"macaddress": "02:00:00:00:00:07"},
                "dhcp4": True,
                "addresses": ["fd00::7/64"],
            },
        },
    }


def test_a_nic_with_an_ip_but_no_usable_mask_is_refused() -> None:
    no_mask = ContextNic(index=0, network="lan", mac="02:00:00:00:00:01", ip="10.0.0.9")
    with pytest.raises(InvalidInput, match=r"NIC 0 on network 'lan' has the IP 10\.0\.0\.9 but no"):
        build({"NETWORK": "YES"}, nics=(no_mask,))
    bad_mask = ContextNic(index=0, network="lan", mac="m", ip="10.0.0.9", mask="255.0.255.0")
    with pytest.raises(InvalidInput, match=r"10\.0\.0\.9/255\.0\.255\.0 is not a valid"):
        build({"NETWORK": "YES"}, nics=(bad_mask,))


def test_nics_with_the_same_index_are_refused() -> None:
    with pytest.raises(InvalidInput, match="NIC index 0"):
        build({}, nics=(LAN, LAN))


def test_files_hold_the_nocloud_set() -> None:
    assert set(build({}).files()) == {"context.sh", "meta-data", "user-data"}
    with_network = build({"NETWORK": "YES"}).files()
    assert set(with_network) == {"context.sh", "meta-data", "user-data", "network-config"}
    assert all(isinstance(content, bytes) for content in with_network.values())
