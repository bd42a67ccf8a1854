"""Bringing an image's bytes into the datastore: copy a file or a tree, or download a URL.

Each transfer hashes as it goes (sha256), keeps sparse files sparse (zero blocks become
holes), reports progress through a callback, stops at a size limit, and checks a cancel
event between blocks. Blocking code, with timeouts; the engine runs it in worker threads.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from stratus.model.errors import DriverError, DriverTimeout, InvalidInput

__all__ = [
    "Fetched",
    "Progress",
    "TransferCancelled",
    "TransferLimits",
    "check_source_path",
    "check_url",
    "copy_file",
    "copy_tree",
    "download",
    "public_url",
    "sha256_file",
]

CHUNK = 1024 * 1024
_ZEROS = bytes(CHUNK)
_MAX_REDIRECTS = 5
_IDENTITY = {"Accept-Encoding": "identity"}
#: Kernel pseudo-filesystems: their "files" are not images (and /proc/kcore is the RAM).
_PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))

#: Called with (bytes done, bytes expected or None when unknown) after every block.
Progress = Callable[[int, int | None], None]


class TransferCancelled(Exception):
    """The cancel event was set: the transfer stopped, its partial output is left behind."""


@dataclass(frozen=True)
class TransferLimits:
    """Bounds of one transfer: a size limit and deadlines."""

    max_size: int  # bytes of content (apparent size: a sparse file counts whole)
    timeout: float = 6 * 3600.0  # the whole transfer
    connect_timeout: float = 10.0  # downloads: to connect, and between two reads
    read_timeout: float = 60.0


@dataclass(frozen=True)
class Fetched:
    size: int  # bytes of content (a tree: the sum of its regular files)
    checksum: str  # "sha256:<hex>" of the content (a tree: of its manifest)


def _size_text(size: int) -> str:
    for unit, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + unit
    return f"{size}B"


class _Meter:
    """Counts bytes against the limits, the deadline and the cancel event."""

    def __init__(
        self,
        label: str,
        limits: TransferLimits,
        progress: Progress,
        cancel: threading.Event,
        total: int | None,
    ) -> None:
        self.label = label
        self.limits = limits
        self.progress = progress
        self.cancel = cancel
        self.total = total
        self.done = 0
        self.deadline = time.monotonic() + limits.timeout
        self.check_size(total or 0)

    def check_size(self, size: int) -> None:
        if size > self.limits.max_size:
            raise InvalidInput(
                f"{self.label} is larger than {_size_text(self.limits.max_size)},"
                " the image size limit",
                hint="register a smaller image, or raise the daemon's image size limit",
            )

    def add(self, count: int) -> None:
        if self.cancel.is_set():
            raise TransferCancelled(self.label)
        self.done += count
        self.check_size(self.done)
        if time.monotonic() > self.deadline:
            raise DriverTimeout(
                f"copying {self.label} took longer than {self.limits.timeout:g} s",
                hint="use a closer source, or raise the import timeout",
            )
        self.progress(self.done, self.total)


def _write_blocks(blocks: Iterable[bytes], out: BinaryIO, meter: _Meter) -> Fetched:
    """Write blocks to `out`, hashing them; all-zero blocks become holes (sparse output)."""
    digest = hashlib.sha256()
    size = 0
    for block in blocks:
        digest.update(block)
        if block == (_ZEROS if len(block) == CHUNK else bytes(len(block))):
            out.seek(len(block), os.SEEK_CUR)
        else:
            out.write(block)
        size += len(block)
        meter.add(len(block))
    out.truncate(size)  # a trailing hole needs the length set explicitly
    return Fetched(size=size, checksum=f"sha256:{digest.hexdigest()}")


def _read_blocks(file: BinaryIO) -> Iterable[bytes]:
    while block := file.read(CHUNK):
        yield block


def sha256_file(path: Path, cancel: threading.Event | None = None) -> str:
    """ "sha256:<hex>" of a file, read a block at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in _read_blocks(file):
            if cancel is not None and cancel.is_set():
                raise TransferCancelled(str(path))
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def check_source_path(text: str, *, allow_directory: bool, forbidden: Sequence[Path] = ()) -> Path:
    """The absolute, resolved path of a file the daemon may import, or InvalidInput.

    Refused: relative paths, missing files, device files, FIFOs and sockets, kernel
    pseudo-files, directories (unless `allow_directory`), and paths inside, or holding,
    one of `forbidden` (the daemon's data dir: its database, token, datastores).
    """
    if not text or "\x00" in text:
        raise InvalidInput("an image path must be a non-empty path")
    raw = Path(text)
    if not raw.is_absolute():
        raise InvalidInput(
            f"image path {text!r} is relative: give an absolute path on the daemon's machine",
            hint=f"e.g. --path $(realpath {text}) when the daemon runs here",
        )
    try:
        path = raw.resolve(strict=True)
        info = path.stat()
    except FileNotFoundError:
        raise InvalidInput(
            f"image path {text} does not exist on the daemon's machine",
            hint="the daemon reads --path itself: copy the file there, or use --url",
        ) from None
    except (OSError, RuntimeError) as exc:
        raise InvalidInput(f"cannot read image path {text}: {exc}") from exc
    for root in _PSEUDO_ROOTS:
        if path == root or root in path.parents:
            raise InvalidInput(f"{text} is a kernel pseudo-file, not an image")
    for place in forbidden:
        place = place.resolve()
        if path == place or place in path.parents or path in place.parents:
            raise InvalidInput(
                f"{text} is (or holds) the daemon's data dir {place}: it cannot be an image"
            )
    if stat.S_ISDIR(info.st_mode):
        if not allow_directory:
            raise InvalidInput(
                f"{text} is a directory: only an OS image may be one (a container's root"
                " filesystem)",
                hint="give the image file, or register the directory with --type OS",
            )
    elif not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{text} is a device, FIFO or socket, not an image file")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"the daemon may not read {text}: check its permissions")
    return path


def copy_file(
    src: Path,
    dst: Path,
    *,
    limits: TransferLimits,
    progress: Progress,
    cancel: threading.Event,
) -> Fetched:
    """Copy a regular file to `dst` (created), sparse and hashed."""
    with src.open("rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):  # replaced since it was checked
            raise InvalidInput(f"{src} is no longer a regular file")
        meter = _Meter(str(src), limits, progress, cancel, info.st_size)
        with dst.open("xb") as out:
            return _write_blocks(_read_blocks(file), out, meter)


def copy_tree(
    src: Path,
    dst: Path,
    *,
    limits: TransferLimits,
    progress: Progress,
    cancel: threading.Event,
) -> Fetched:
    """Copy a directory tree (a container's root filesystem) to `dst` (created).

    Symbolic links are copied as links, never followed; FIFOs are recreated; device nodes
    and sockets are skipped, never read (a container gets its own /dev from LXC, and a
    node copied from a stranger's tree could name a disk of the front-end). Modes and, as
    root, owners are kept. The checksum covers a manifest of paths, kinds and contents.
    """
    total = _tree_size(src)
    meter = _Meter(str(src), limits, progress, cancel, total)
    manifest: list[str] = []
    as_root = os.geteuid() == 0
    dst.mkdir()
    for root, dirs, files in os.walk(src):
        dirs.sort()
        relative = Path(root).relative_to(src)
        for name in sorted(dirs) + sorted(files):
            source, target = Path(root, name), dst / relative / name
            rel = str(relative / name)
            info = os.lstat(source)
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                link = os.readlink(source)
                os.symlink(link, target)
                manifest.append(f"L {rel} {link}")
            elif stat.S_ISDIR(mode):
                target.mkdir()
                manifest.append(f"D {rel}")
            elif stat.S_ISREG(mode):
                with source.open("rb") as file, target.open("xb") as out:
                    fetched = _write_blocks(_read_blocks(file), out, meter)
                manifest.append(f"F {rel} {fetched.checksum}")
            elif stat.S_ISFIFO(mode):
                os.mkfifo(target)
                manifest.append(f"P {rel}")
            else:
                continue  # device nodes, sockets
            if as_root:
                os.lchown(target, info.st_uid, info.st_gid)
            if not stat.S_ISLNK(mode):
                os.chmod(target, stat.S_IMODE(mode))
        meter.add(0)  # cancel and deadline checks between directories too
    digest = hashlib.sha256("\n".join(manifest).encode(errors="surrogateescape"))
    return Fetched(size=meter.done, checksum=f"sha256:{digest.hexdigest()}")


def _tree_size(src: Path) -> int:
    size = 0
    for root, _dirs, files in os.walk(src):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode):
                size += info.st_size
    return size


def check_url(url: str) -> str:
    """An http(s) URL with a host, or InvalidInput."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInput(f"cannot parse image URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"image URL {public_url(url)!r} is not an http or https URL with a host",
            hint="give http://... or https://...; for a file on the daemon's machine use --path",
        )
    return url


def public_url(url: str) -> str:
    """The URL without a password, fit to store and show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and parts.username is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{netloc}"))


def download(
    url: str,
    dst: Path,
    *,
    limits: TransferLimits,
    progress: Progress,
    cancel: threading.Event,
    transport: httpx.BaseTransport | None = None,
) -> Fetched:
    """GET an http(s) URL into `dst` (created), following up to 5 http(s) redirects."""
    timeout = httpx.Timeout(limits.read_timeout, connect=limits.connect_timeout)
    shown = public_url(url)
    with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            check_url(url)
            try:
                # identity: the bytes as stored, not a transfer encoding of them
                with client.stream("GET", url, headers=_IDENTITY) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise DriverError(
                            f"GET {shown} answered {response.status_code} {response.reason_phrase}",
                            hint="check the URL",
                        )
                    length = response.headers.get("content-length")
                    total = int(length) if length and length.isdigit() else None
                    meter = _Meter(shown, limits, progress, cancel, total)
                    with dst.open("xb") as out:
                        return _write_blocks(response.iter_bytes(CHUNK), out, meter)
            except httpx.TimeoutException as exc:
                raise DriverTimeout(
                    f"GET {shown} timed out ({type(exc).__name__})",
                    hint="check that the server answers, then register it again",
                ) from exc
            except httpx.HTTPError as exc:
                raise DriverError(f"GET {shown} failed: {exc}", hint="check the URL") from exc
    raise DriverError(f"GET {shown} redirected more than {_MAX_REDIRECTS} times")
