"""Host access: one contract, run on this machine (LocalAccess) and over a real sshd (SshAccess).

The SSH host is this machine too (sshd on 127.0.0.1), so a test can check on the local
filesystem and process table what a command did "remotely".
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stratus.drivers.access import AccessPool, HostAccess, LocalAccess
from stratus.drivers.base import HostInfo
from stratus.drivers.ssh import SshAccess, ssh_params
from stratus.model.errors import DriverError, DriverTimeout, HostUnreachable, InvalidInput
from tests.sshd import SshServer, ssh_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    """One sshd for the module's contract tests (tests that stop SSH start their own)."""
    with ssh_server() as server:
        yield server


def ssh_host(options: dict[str, str], **more: str) -> HostInfo:
    return HostInfo(id=1, name="h1", options={**options, **more}, labels={})


@pytest.fixture(params=["local", "ssh"])
async def access(request: pytest.FixtureRequest) -> AsyncIterator[HostAccess]:
    """The same contract on both kinds of access."""
    if request.param == "local":
        yield LocalAccess()
        return
    server: SshServer = request.getfixturevalue("sshd")
    remote = SshAccess(ssh_params(ssh_host(server.options)))
    try:
        yield remote
    finally:
        await remote.close()


@pytest.fixture(params=["local", "ssh-rsync", "ssh-sftp"])
async def copier(request: pytest.FixtureRequest) -> AsyncIterator[HostAccess]:
    """push/pull: locally, over SSH with rsync, and over SSH with the SFTP fallback."""
    if request.param == "local":
        yield LocalAccess()
        return
    server: SshServer = request.getfixturevalue("sshd")
    remote = SshAccess(ssh_params(ssh_host(server.options)), rsync=request.param == "ssh-rsync")
    try:
        yield remote
    finally:
        await remote.close()


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


# -- commands ------------------------------------------------------------------------------


async def test_run_returns_stdout_stderr_and_exit_code(access: HostAccess) -> None:
    result = await access.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    quoted = await access.run(["printf", "%s|", "two words", "$HOME", "a'b"])
    assert quoted.text == "two words|$HOME|a'b|"  # argv reaches the host unchanged


async def test_run_feeds_input_to_the_command(access: HostAccess) -> None:
    data = os.urandom(1 << 20)
    result = await access.run(["sha256sum"], input=data)
    assert result.text.split()[0] == hashlib.sha256(data).hexdigest()
    empty = await access.run(["cat"], input=b"", timeout=5)
    assert empty.stdout == b""


async def test_command_without_input_sees_end_of_file(access: HostAccess) -> None:
    result = await access.run(["cat"], timeout=5)
    assert result.stdout == b""


async def test_failed_command_raises_driver_error_naming_command_host_and_stderr(
    access: HostAccess,
) -> None:
    with pytest.raises(DriverError) as failure:
        await access.run(["ls", "/no/such/dir"])
    message = str(failure.value)
    assert message.startswith(f"ls failed on {access.where} (exit 2)")
    assert "No such file or directory" in message


async def test_missing_program_is_reported_as_not_installed(access: HostAccess) -> None:
    with pytest.raises(DriverError, match="stratus-no-such-program is not installed"):
        await access.run(["stratus-no-such-program", "--help"], check=False)
    # inside a script it is the script that fails, not sh that is missing
    with pytest.raises(DriverError, match=r"sh failed on .* \(exit 127\).*not found"):
        await access.sh("stratus-no-such-program")


async def test_timeout_kills_the_command_and_its_children(
    access: HostAccess, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait"
    started = time.monotonic()
    with pytest.raises(DriverTimeout, match=f"sh did not finish within 1 s on {access.where}"):
        await access.run(["sh", "-c", script], timeout=1)
    assert time.monotonic() - started < 3
    child, leader = (int(line) for line in pids.read_text().split())
    assert wait_gone(child) and wait_gone(leader)


async def test_sh_runs_a_script(access: HostAccess) -> None:
    result = await access.sh("x=4; echo $((x * 2)) && false || echo recovered")
    assert result.text == "8\nrecovered\n"


# -- unix sockets --------------------------------------------------------------------------


async def test_open_unix_talks_to_a_socket_server_on_the_host(
    access: HostAccess, tmp_path: Path
) -> None:
    path = str(tmp_path / "echo.sock")

    async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(shout, path)
    try:
        reader, writer = await access.open_unix(path, timeout=5)
        assert await asyncio.wait_for(reader.readline(), 5) == b"hello\n"
        writer.write(b'{"execute": "qmp_capabilities"}\n')
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b'{"EXECUTE": "QMP_CAPABILITIES"}\n'
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_open_unix_without_a_listener_raises_driver_error(
    access: HostAccess, tmp_path: Path
) -> None:
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(DriverError, match=f"cannot connect to {path}"):
        await access.open_unix(path, timeout=5)


# -- files ---------------------------------------------------------------------------------


async def test_write_file_replaces_atomically_with_mode_and_read_file_tails(
    access: HostAccess, tmp_path: Path
) -> None:
    path = tmp_path / "new" / "dir" / "vm.conf"
    await access.write_file(str(path), b"old", mode=0o644)
    await access.write_file(str(path), b"line1\nline2\nline3\n", mode=0o600)
    assert path.read_bytes() == b"line1\nline2\nline3\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["vm.conf"]  # no temporary file left behind
    assert await access.read_file(str(path)) == b"line1\nline2\nline3\n"
    assert await access.read_file(str(path), max_bytes=6) == b"line3\n"
    with pytest.raises(DriverError, match="No such file"):
        await access.read_file(str(tmp_path / "missing"))


def make_sparse(path: Path, size: int = 8 << 20) -> str:
    """A file of `size` bytes with 8 KiB of data: a hole in the middle and at the end."""
    with open(path, "wb") as f:
        f.write(os.urandom(4096))
        f.seek(size // 2)
        f.write(os.urandom(4096))
        f.truncate(size)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


async def test_push_and_pull_keep_a_sparse_file_sparse(copier: HostAccess, tmp_path: Path) -> None:
    source = tmp_path / "disk.raw"
    digest = make_sparse(source)
    remote = tmp_path / "remote ds" / "vm 7" / "disk.0"  # parent created; spaces survive
    await copier.push(str(source), str(remote))
    back = tmp_path / "back" / "disk.raw"
    await copier.pull(str(remote), str(back))
    for copy in (remote, back):
        assert copy.stat().st_size == 8 << 20
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == digest
        assert allocated(copy) < 1 << 20, f"{copy} lost its holes"


async def test_push_and_pull_copy_a_directory_into_place(
    copier: HostAccess, tmp_path: Path
) -> None:
    source = tmp_path / "rootfs"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "hostname").write_text("vm-7\n")
    (source / "secret").write_bytes(b"s")
    (source / "secret").chmod(0o600)
    remote = tmp_path / "ds" / "7" / "rootfs"
    await copier.push(str(source), str(remote))
    await copier.push(str(source), str(remote))  # again: merged in place, never nested
    assert sorted(p.name for p in remote.iterdir()) == ["etc", "secret"]
    assert (remote / "etc" / "hostname").read_text() == "vm-7\n"
    assert (remote / "secret").stat().st_mode & 0o777 == 0o600
    back = tmp_path / "back"
    await copier.pull(str(remote), str(back))
    assert (back / "etc" / "hostname").read_text() == "vm-7\n"
    assert sorted(p.name for p in back.iterdir()) == ["etc", "secret"]


async def test_copying_a_missing_file_raises_driver_error(
    copier: HostAccess, tmp_path: Path
) -> None:
    with pytest.raises(DriverError):
        await copier.push(str(tmp_path / "missing"), str(tmp_path / "there"))
    with pytest.raises(DriverError):
        await copier.pull(str(tmp_path / "missing"), str(tmp_path / "here"))


# -- SSH only ------------------------------------------------------------------------------


async def test_pool_gives_one_ssh_access_per_host_and_local_otherwise(sshd: SshServer) -> None:
    pool = AccessPool()
    try:
        first = await pool.get(ssh_host(sshd.options))
        again = await pool.get(HostInfo(id=2, name="alias", options=dict(sshd.options), labels={}))
        local = await pool.get(HostInfo(id=3, name="here", options={}, labels={}))
        assert isinstance(first, SshAccess) and again is first
        assert isinstance(local, LocalAccess)
        assert first.where == f"ssh {sshd.user}@127.0.0.1:{sshd.port}"
        assert (await first.run(["echo", "hi"])).text == "hi\n"
    finally:
        await pool.close()


async def test_commands_beyond_sshd_max_sessions_wait_their_turn(sshd: SshServer) -> None:
    remote = SshAccess(ssh_params(ssh_host(sshd.options)))
    try:
        results = await asyncio.gather(
            *(remote.run(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(25))
        )
        assert [r.text for r in results] == [f"{i}\n" for i in range(25)]
    finally:
        await remote.close()


def test_ssh_params_read_the_options_and_name_a_bad_one(sshd: SshServer) -> None:
    params = ssh_params(ssh_host(sshd.options))
    assert (params.host, params.port, params.user) == ("127.0.0.1", sshd.port, sshd.user)
    assert params.key_file == str(sshd.key) and not params.insecure
    assert ssh_params(ssh_host({"ssh_host": "10.0.0.5"})).key == (
        "10.0.0.5", 22, "root", None, None, False
    )  # fmt: skip
    with pytest.raises(InvalidInput, match="ssh_port"):
        ssh_params(ssh_host(sshd.options, ssh_port="70000"))
    with pytest.raises(InvalidInput, match="ssh_port"):
        ssh_params(ssh_host(sshd.options, ssh_port="ssh"))
    with pytest.raises(InvalidInput, match="ssh_key: no such file /no/key"):
        ssh_params(ssh_host(sshd.options, ssh_key="/no/key"))
    with pytest.raises(InvalidInput, match="ssh_insecure"):
        ssh_params(ssh_host(sshd.options, ssh_insecure="maybe"))


async def test_unknown_host_key_is_refused_unless_insecure(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = SshAccess(ssh_params(ssh_host(sshd.options, ssh_known_hosts=str(empty))))
    with pytest.raises(HostUnreachable, match="host key not trusted") as refused:
        await strict.run(["true"])
    assert "ssh_insecure=yes" in str(refused.value)
    loose = SshAccess(ssh_params(ssh_host(sshd.options, ssh_known_hosts="", ssh_insecure="yes")))
    try:
        assert (await loose.run(["echo", "ok"])).text == "ok\n"
        await loose.push(str(empty), str(tmp_path / "copied"))  # rsync's ssh is lenient too
        assert (tmp_path / "copied").exists()
        warnings = [r for r in caplog.records if "ssh_insecure" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await loose.close()


async def test_wrong_key_is_host_unreachable_saying_authentication_failed(
    sshd: SshServer, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    await LocalAccess().run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)])
    remote = SshAccess(ssh_params(ssh_host(sshd.options, ssh_key=str(other))))
    with pytest.raises(HostUnreachable, match="authentication failed for user") as failure:
        await remote.run(["true"])
    assert "PRIVATE KEY" not in str(failure.value)


async def test_ssh_down_is_host_unreachable_fast_and_the_access_recovers() -> None:
    with ssh_server() as server:
        remote = SshAccess(ssh_params(ssh_host(server.options)))
        try:
            assert (await remote.run(["echo", "up"])).text == "up\n"
            server.stop()
            started = time.monotonic()
            with pytest.raises(HostUnreachable) as down:
                await remote.run(["echo", "down"])
            assert time.monotonic() - started < 10
            assert str(down.value) == (
                f"cannot reach 127.0.0.1:{server.port} over SSH: "
                "connection refused — is sshd running?"
            )
            server.start()
            assert (await remote.run(["echo", "back"])).text == "back\n"
            server.stop()
            server.start()  # the kept connection died with sshd: reopened transparently
            assert (await remote.run(["echo", "again"])).text == "again\n"
        finally:
            await remote.close()


async def test_silent_host_times_out_once_for_all_waiting_callers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts TCP, never says a word of SSH
        port = silent.getsockname()[1]
        remote = SshAccess(
            ssh_params(ssh_host({"ssh_host": "127.0.0.1", "ssh_port": str(port)})),
            connect_timeout=1,
        )
        started = time.monotonic()
        failures = await asyncio.gather(
            *(remote.run(["true"]) for _ in range(5)), return_exceptions=True
        )
        assert time.monotonic() - started < 3
        assert all(isinstance(f, HostUnreachable) for f in failures)
        assert "no answer within 1 s" in str(failures[0])
        await remote.close()
