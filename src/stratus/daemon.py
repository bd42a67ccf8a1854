"""Wiring: config -> store -> engine -> API server, in one process (`stratus serve`)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

import uvicorn

from stratus.api.app import create_app
from stratus.ec2api import Ec2ApiConfig
from stratus.engine.config import EngineConfig
from stratus.engine.core import Engine
from stratus.model.errors import InvalidInput
from stratus.store import Store, open_store

__all__ = ["ensure_admin_token", "parse_listen", "run", "token_hash"]

log = logging.getLogger("stratus")
TOKEN_FILE = "admin.token"
ENDPOINT_FILE = "endpoint"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_admin_token(store: Store, data_dir: Path) -> str:
    """Create the admin token at first start (file mode 0600); keep it afterwards."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
    else:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    if not store.token_exists(token_hash(token)):
        store.add_token(f"admin-{token_hash(token)[:8]}", token_hash(token))
    return token


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InvalidInput(f"--listen {listen!r} is not HOST:PORT", hint="e.g. 127.0.0.1:8421")
    return host.strip("[]") or "127.0.0.1", int(port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY (else Nagle adds ~40 ms per response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="choose another --listen port, or stop the daemon already using it",
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _setup_logging(data_dir: Path) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.FileHandler(data_dir / "stratus.log"), logging.StreamHandler()):
        handler.setFormatter(fmt)
        root.addHandler(handler)


@contextmanager
def _exit_cleanly_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into SystemExit(0), so the daemon's cleanup runs.

    uvicorn shuts down gracefully on these signals, then raises them again; with the
    default handlers the process would die there, before `daemon.run` removes its
    endpoint file and closes the store.
    """

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(
    data_dir: Path,
    listen: str,
    db_url: str | None,
    config: EngineConfig,
    ec2: Ec2ApiConfig | None = None,
) -> None:
    """Run the daemon until SIGINT/SIGTERM; the engine stops with the server.

    `ec2` configures the EC2 Query API served at <endpoint>/ec2.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _setup_logging(data_dir)
    host, port = parse_listen(listen)
    with _exit_cleanly_on_signals(), ExitStack() as cleanup:  # a signal at any point cleans up
        sock = _bind(host, port)
        cleanup.callback(sock.close)
        store = open_store(db_url or f"sqlite:///{data_dir / 'stratus.db'}")
        cleanup.callback(store.close)
        ensure_admin_token(store, data_dir)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        endpoint = f"http://{shown}:{bound_port}"
        # guests report READY at api_port; partner zones fetch images under public_url
        config = dataclasses.replace(
            config, api_port=bound_port, public_url=config.public_url or endpoint
        )
        engine = Engine(store, config=config, data_dir=data_dir)
        cleanup.callback((data_dir / ENDPOINT_FILE).unlink, missing_ok=True)
        (data_dir / ENDPOINT_FILE).write_text(endpoint + "\n")
        log.info("stratus serving on %s (data dir %s, store %s)", endpoint, data_dir, store.dialect)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(engine, ec2=ec2),
                # Not uvloop: its subprocesses inherit stray descriptors, so a command that
                # leaves a daemon behind (qemu -daemonize, lxc-start) seems never to end.
                loop="asyncio",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=10,
            )
        )
        server.run(sockets=[sock])
