"""Build the Stratus test appliance: a tiny busybox Linux for QEMU VMs and LXC containers.

    out_dir/appliance.qcow2   ext4 root filesystem (label stratus-root), for VMs
    out_dir/vmlinuz           Debian's cloud kernel, booted directly (-kernel)
    out_dir/initrd.img        busybox initramfs that loads virtio/isofs/button modules
    out_dir/rootfs.tar.gz     the same root filesystem, for LXC containers
    out_dir/manifest.json     written last: kernel version, command line, sha256 of each

The guest reads its context (context.sh) from a CD-ROM or /mnt/context, configures its
NICs, starts an HTTP server answering GET / with JSON, and powers off on the ACPI button.
A build is cached: when manifest.json records the same inputs (package versions and the
hash of the recipe: files/ and the build modules) nothing is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stratus.appliance import debian, initramfs, rootfs
from stratus.appliance.tools import run
from stratus.model.errors import DriverError, DriverTimeout

__all__ = [
    "CMDLINE",
    "Appliance",
    "build_appliance",
    "default_appliance_dir",
    "load_appliance",
    "summary",
]

#: bump when the output's layout changes in a way the recipe hash would not see
FORMAT = 1
MANIFEST = "manifest.json"
CMDLINE = "console=ttyS0 root=/dev/vda rw"
OUTPUTS = ("appliance.qcow2", "vmlinuz", "initrd.img", "rootfs.tar.gz")
FILES = Path(__file__).resolve().parent / "files"
#: the modules whose code shapes the output, hashed with files/ into the cache key
_RECIPE_MODULES = ("build.py", "initramfs.py", "rootfs.py")
_LOCK_WAIT = 900.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Appliance:
    """A built appliance: where its files are and how to boot it."""

    directory: Path
    kernel_version: str  # uname -r of vmlinuz, e.g. 6.1.0-56-cloud-amd64
    cmdline: str  # the kernel command line for direct boot
    sha256: dict[str, str] = field(default_factory=dict)  # output file name -> sha256

    @property
    def disk(self) -> Path:
        return self.directory / "appliance.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.tar.gz"

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST


def default_appliance_dir() -> Path:
    """$STRATUS_APPLIANCE_DIR, else <checkout>/.tools/appliance when run from a source
    checkout, else ~/.cache/stratus/appliance."""
    configured = os.environ.get("STRATUS_APPLIANCE_DIR")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "stratus").is_dir():
        return checkout / ".tools" / "appliance"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "stratus" / "appliance"


def load_appliance(out_dir: Path) -> Appliance | None:
    """The appliance described by out_dir/manifest.json, or None when it is missing,
    unreadable, or one of its files is gone or has the wrong size."""
    manifest = _read_manifest(out_dir)
    if manifest is None:
        return None
    try:
        files = manifest["files"]
        for name in OUTPUTS:
            if (out_dir / name).stat().st_size != files[name]["size"]:
                return None
        return Appliance(
            directory=out_dir,
            kernel_version=str(manifest["kernel_version"]),
            cmdline=str(manifest["cmdline"]),
            sha256={name: str(files[name]["sha256"]) for name in OUTPUTS},
        )
    except (KeyError, TypeError, OSError):
        return None


def build_appliance(
    out_dir: Path, *, force: bool = False, progress: Progress | None = None
) -> Appliance:
    """Build the appliance into out_dir, or return the cached one when its inputs match.

    Safe when several processes call it at once: they take turns on a lock file and the
    later ones find the first one's build. DriverError when a tool or download fails.
    """
    say = progress or (lambda _line: None)
    out_dir = out_dir.resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DriverError(
            f"cannot create the appliance directory {out_dir}: {exc.strerror or exc}",
            hint="choose another directory with --out or STRATUS_APPLIANCE_DIR",
        ) from exc
    with _build_lock(out_dir, say):
        recipe = recipe_hash()
        try:
            packages = debian.resolve_packages(say)
        except DriverError:
            existing = load_appliance(out_dir)
            manifest = _read_manifest(out_dir) or {}
            if not force and existing and manifest.get("inputs", {}).get("recipe") == recipe:
                say("apt cannot resolve the packages; keeping the appliance already built")
                return existing
            raise
        inputs = _inputs(packages, recipe)
        if not force:
            existing = load_appliance(out_dir)
            manifest = _read_manifest(out_dir) or {}
            if existing is not None and manifest.get("inputs") == inputs:
                say(f"appliance up to date in {out_dir}")
                return existing
        return _build(out_dir, packages, inputs, say)


def summary(appliance: Appliance) -> list[str]:
    """Lines that say where the appliance's files are and how to boot it."""
    return [
        f"disk     {appliance.disk}",
        f"kernel   {appliance.kernel} ({appliance.kernel_version})",
        f"initrd   {appliance.initrd}",
        f"rootfs   {appliance.rootfs}",
        f"cmdline  {appliance.cmdline}",
        f"manifest {appliance.manifest}",
    ]


def recipe_hash() -> str:
    """sha256 over the files/ tree and the modules that shape the output."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    sources = sorted(p for p in FILES.rglob("*") if p.is_file())
    sources += [here / name for name in _RECIPE_MODULES]
    for path in sources:
        digest.update(str(path.relative_to(here)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _inputs(packages: debian.Packages, recipe: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kernel_package": packages.kernel_package,
        "kernel_package_version": packages.kernel_package_version,
        "busybox_version": packages.busybox_version,
        "recipe": recipe,
    }


def _build(
    out_dir: Path, packages: debian.Packages, inputs: dict[str, Any], say: Progress
) -> Appliance:
    started = time.monotonic()
    (out_dir / MANIFEST).unlink(missing_ok=True)  # readers wait for the new one
    for stale in out_dir.glob(".build-*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp_name:
        tmp = Path(tmp_name)
        say(
            f"downloading {packages.kernel_package} {packages.kernel_package_version} "
            f"and busybox-static {packages.busybox_version}"
        )
        debs = debian.download(packages, tmp)
        say("unpacking the packages")
        kernel_root, busybox_root = tmp / "kernel", tmp / "busybox"
        debian.extract(debs["kernel"], kernel_root)
        debian.extract(debs["busybox"], busybox_root)
        busybox = busybox_root / "bin" / "busybox"
        vmlinuz = kernel_root / "boot" / f"vmlinuz-{packages.kernel_version}"
        if not busybox.is_file() or not vmlinuz.is_file():
            raise DriverError(f"the packages hold no {busybox.name} or {vmlinuz.name}")
        staged = tmp / "out"
        staged.mkdir()
        shutil.copyfile(vmlinuz, staged / "vmlinuz")
        modules = _write_initrd(kernel_root, packages.kernel_version, busybox, staged, say)
        _write_rootfs(busybox, tmp / "root", staged, say)
        sha256 = {name: _sha256(staged / name) for name in OUTPUTS}
        sizes = {name: (staged / name).stat().st_size for name in OUTPUTS}
        for name in OUTPUTS:
            os.replace(staged / name, out_dir / name)
    seconds = round(time.monotonic() - started, 1)
    manifest = {
        "format": FORMAT,
        "inputs": inputs,
        "kernel_version": packages.kernel_version,
        "cmdline": CMDLINE,
        "disk_label": rootfs.DISK_LABEL,
        "disk_size_mb": rootfs.DISK_SIZE_MB,
        "modules": modules,
        "files": {name: {"sha256": sha256[name], "size": sizes[name]} for name in OUTPUTS},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": seconds,
    }
    _write_manifest(out_dir, manifest)
    say(f"appliance built in {seconds:g} s in {out_dir}")
    return Appliance(out_dir, packages.kernel_version, CMDLINE, sha256)


def _write_initrd(
    kernel_root: Path, kernel_version: str, busybox: Path, staged: Path, say: Progress
) -> list[str]:
    """initrd.img into staged/; returns the names of the modules it loads, in order."""
    say("computing kernel module dependencies")
    chain = initramfs.module_chain(kernel_root, kernel_version, initramfs.INITRD_MODULES)
    say(f"writing the initramfs ({len(chain)} modules)")
    applets = run([busybox, "--list"], timeout=30).split()
    data = initramfs.build_initrd(
        busybox=busybox,
        applets=applets,
        modules=chain,
        init_script=(FILES / "initrd-init").read_bytes(),
    )
    (staged / "initrd.img").write_bytes(data)
    return [path.name for path in chain]


def _write_rootfs(busybox: Path, root: Path, staged: Path, say: Progress) -> None:
    say("assembling the root filesystem")
    applet_paths = run([busybox, "--list-full"], timeout=30).split()
    rootfs.populate_rootfs(root, busybox=busybox, applet_paths=applet_paths, files=FILES / "rootfs")
    say("writing appliance.qcow2 (ext4)")
    rootfs.make_disk(root, staged / "disk.raw", staged / "appliance.qcow2")
    say("writing rootfs.tar.gz")
    rootfs.make_tarball(root, staged / "rootfs.tar.gz")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = out_dir / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST)


@contextlib.contextmanager
def _build_lock(out_dir: Path, say: Progress) -> Iterator[None]:
    """An exclusive flock on out_dir/.build.lock, waited for at most _LOCK_WAIT seconds."""
    deadline = time.monotonic() + _LOCK_WAIT
    with (out_dir / ".build.lock").open("a") as lock:
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DriverTimeout(
                        f"another appliance build held {out_dir} for {_LOCK_WAIT:g} s",
                        hint="stop the other build, or remove its process",
                    ) from None
                if not told:
                    say("waiting for another build of the appliance to finish")
                    told = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
