"""Image files for the image tests (real qcow2, ISO, tar...), and a loopback HTTP file server."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pycdlib
import pytest

MB = 1024 * 1024


def make_qcow2(path: Path, size: str = "64M", *extra: str) -> Path:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), size],
        check=True,
        timeout=30,
    )
    return path


def make_mbr_disk(path: Path, size: int = MB) -> Path:
    """A raw disk whose first sector ends with the MBR signature 0x55AA."""
    data = bytearray(size)
    data[446] = 0x80  # one bootable partition entry, for the look of it
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))
    return path


def make_iso(path: Path) -> Path:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident="CONTEXT")
    content = b"hello from the iso\n"
    iso.add_fp(io.BytesIO(content), len(content), "/HELLO.TXT;1", joliet_path="/hello.txt")
    iso.write(str(path))
    iso.close()
    return path


def make_bzimage(path: Path) -> Path:
    data = bytearray(8192)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    path.write_bytes(bytes(data))
    return path


def cpio_bytes() -> bytes:
    """A newc cpio archive holding one file and the trailer."""

    def entry(name: bytes, body: bytes, mode: int) -> bytes:
        fields = [1, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name) + 1, 0]
        header = b"070701" + b"".join(b"%08X" % value for value in fields) + name + b"\0"
        header += b"\0" * (-len(header) % 4)
        return header + body + b"\0" * (-len(body) % 4)

    archive = entry(b"init", b"#!/bin/sh\n", 0o100755) + entry(b"TRAILER!!!", b"", 0)
    return archive + b"\0" * (-len(archive) % 512)


def make_rootfs_tar(path: Path, mode: str = "w:gz", top: str = "etc") -> Path:
    """A tiny root filesystem archive: ./<top>/hostname and ./bin -> usr/bin."""
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        folder = tarfile.TarInfo(f"./{top}")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        body = b"container\n"
        member = tarfile.TarInfo(f"./{top}/hostname")
        member.size = len(body)
        archive.addfile(member, io.BytesIO(body))
    return path


def make_rootfs_dir(path: Path) -> Path:
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "hostname").write_text("container\n")
    (path / "usr" / "bin").mkdir(parents=True)
    (path / "usr" / "bin" / "true").write_bytes(b"\x7fELF" + bytes(100))
    (path / "bin").symlink_to("usr/bin")
    return path


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data)


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    chunk: int = 64 * 1024
    delay: float = 0.0  # seconds between two chunks: a slow server


class FileServer:
    """An HTTP server on 127.0.0.1 serving `routes` (path -> Route), in a thread."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path, Route(status=404, body=b"not found\n"))
                self.send_response(route.status)
                for key, value in route.headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    for start in range(0, len(route.body), route.chunk):
                        self.wfile.write(route.body[start : start + route.chunk])
                        self.wfile.flush()
                        if route.delay:
                            time.sleep(route.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (cancelled, or over its size limit)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, path: str, body: bytes, **options: object) -> str:
        """Serve `body` at `path`; its full URL."""
        self.routes[path] = Route(body=body, **options)  # type: ignore[arg-type]
        return self.url + path

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A loopback HTTP server for image downloads, stopped after the test."""
    server = FileServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
