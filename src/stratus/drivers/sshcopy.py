"""How SshAccess copies files: rsync over the OpenSSH client, or SFTP when rsync is missing.

Both give the same result as LocalAccess's `cp -aT`: the target becomes the copy (a
directory's content is merged into it, never nested), modes and times are kept, and
sparse files stay sparse. SFTP needs help with the last point: asyncssh's sparse copy
never writes a trailing hole (the copy comes out short), and OpenSSH's sftp-server cannot
say where a remote file's holes are (a pulled copy comes out dense); the functions below
put both right.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import stat
from collections.abc import Iterable, Iterator

import asyncssh

from stratus.drivers.access import LocalAccess, which

__all__ = ["remote_sizes_argv", "repair_pulled", "rsync_argv", "sftp_get", "sftp_put"]

_DIG_HOLES_FROM = 1 << 20  # pulled files this big get their zero blocks punched out again


def rsync_argv(ssh: list[str], source: str, target: str) -> list[str]:
    """rsync through the given ssh command; a directory source must end in '/'."""
    # rsync splits -e on spaces and honours the quotes shlex.join writes
    return [
        "rsync",
        "-a",
        "--sparse",
        "--protect-args",
        "-e",
        shlex.join(ssh),
        "--",
        source,
        target,
    ]


async def sftp_put(sftp: asyncssh.SFTPClient, local_path: str, remote_path: str) -> None:
    """Copy to the host (its parent folder must exist), restoring the holes asyncssh drops."""
    if os.path.isdir(local_path):  # merge into remote_path, as rsync src/ dst does
        await sftp.makedirs(remote_path, exist_ok=True)
        sources = [os.path.join(local_path, name) for name in sorted(os.listdir(local_path))]
        if sources:
            await sftp.put(sources, remote_path, recurse=True, preserve=True)
        await sftp.setstat(remote_path, _attrs(os.stat(local_path), size=False))
    else:
        await sftp.put(local_path, remote_path, preserve=True)
    for rel, st in _files_with_holes(local_path):  # the trailing holes asyncssh left out
        target = posixpath.join(remote_path, rel) if rel else remote_path
        await sftp.setstat(target, _attrs(st, size=True))


async def sftp_get(sftp: asyncssh.SFTPClient, remote_path: str, local_path: str) -> None:
    """Copy from the host; follow with repair_pulled() to restore sizes and holes."""
    if await sftp.isdir(remote_path):  # merge into local_path
        os.makedirs(local_path, exist_ok=True)
        names = sorted(set(await sftp.listdir(remote_path)) - {".", ".."})
        sources = [posixpath.join(remote_path, name) for name in names]
        if sources:
            await sftp.get(sources, local_path, recurse=True, preserve=True)
    else:
        await sftp.get(remote_path, local_path, preserve=True)


def remote_sizes_argv(remote_path: str) -> list[str]:
    """The command (GNU find) listing every file under remote_path as 'SIZE RELPATH\\0'."""
    return ["find", remote_path, "-type", "f", "-printf", r"%s %P\0"]


async def repair_pulled(sizes: bytes, local_path: str, timeout: float) -> None:
    """Give each pulled file its remote size and its holes back (sizes: remote_sizes_argv's)."""
    fallocate = which("fallocate")
    for entry in filter(None, sizes.split(b"\0")):
        text_size, _, rel = entry.partition(b" ")
        size = int(text_size)
        local = os.path.join(local_path, os.fsdecode(rel)) if rel else local_path
        st = os.stat(local)
        if st.st_size < size:
            os.truncate(local, size)
        if fallocate and size >= _DIG_HOLES_FROM:
            await LocalAccess().run([fallocate, "--dig-holes", local], timeout=timeout)
        os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))


def _attrs(st: os.stat_result, *, size: bool) -> asyncssh.SFTPAttrs:
    """SFTP attributes that restore a file's mode and times (and size) from its stat."""
    return asyncssh.SFTPAttrs(
        size=st.st_size if size else None,
        permissions=stat.S_IMODE(st.st_mode),
        atime=int(st.st_atime),
        mtime=int(st.st_mtime),
    )


def _files_with_holes(path: str) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under path (or path itself) with fewer blocks than bytes: (relpath, stat)."""
    tops: Iterable[tuple[str, list[str], list[str]]]
    tops = os.walk(path) if os.path.isdir(path) else [("", [], [path])]
    for folder, _, names in tops:
        for name in names:
            full = os.path.join(folder, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) and st.st_blocks * 512 < st.st_size:
                yield ("" if full == path else os.path.relpath(full, path)), st
