"""The context CD-ROM: a small ISO 9660 image holding a VM's context files.

The guest mounts it and reads context.sh, init.sh, the cloud-init NoCloud meta-data and
user-data, and the template's FILES. Names such as `meta-data` are not valid ISO 9660
names, so the image carries Rock Ridge 1.09 (what Linux reads) and Joliet (what Windows
reads) next to mangled 8.3 names; the volume label is `cidata` so cloud-init's NoCloud
data source recognises it too. Built in memory with pycdlib: no external tool needed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from stratus.model.errors import InvalidInput

__all__ = ["MAX_FILES", "build_context_iso", "read_context_iso"]

#: more files than this is a template mistake, not a context
MAX_FILES = 100
#: Joliet keeps at most 64 UCS-2 characters per name
MAX_NAME_LENGTH = 64
#: characters Joliet refuses, and control characters
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\:;*?\"<>|]")
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def build_context_iso(files: Mapping[str, bytes], label: str = "cidata") -> bytes:
    """An ISO 9660 image (Rock Ridge + Joliet) holding `files` at its root.

    InvalidInput for a name that is not a plain file name (slashes, "..", control
    characters, longer than 64 characters), for more than MAX_FILES files, or a bad label.
    """
    if not _LABEL.match(label):
        raise InvalidInput(
            f"bad context CD-ROM label {label!r}",
            hint="use 1 to 32 letters, digits, '_', '.' or '-' (cloud-init expects 'cidata')",
        )
    if len(files) > MAX_FILES:
        raise InvalidInput(
            f"the context has {len(files)} files; at most {MAX_FILES} fit on the context CD-ROM",
            hint="pack files into an archive and unpack it from START_SCRIPT",
        )
    for name in files:
        _check_name(name)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    try:
        used: set[str] = set()
        for name in sorted(files):
            data = bytes(files[name])
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                iso_path=f"/{_iso9660_name(name, used)};1",
                rr_name=name,
                joliet_path=f"/{name}",
                file_mode=0o100444,
            )
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def read_context_iso(data: bytes) -> dict[str, bytes]:
    """The files at the root of a context CD-ROM, by their Rock Ridge (or Joliet) names.

    InvalidInput when `data` is not an ISO 9660 image.
    """
    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(io.BytesIO(data))
    except PyCdlibException as exc:
        raise InvalidInput(
            f"not an ISO 9660 image: {exc}", hint="pass the bytes of a context CD-ROM"
        ) from exc
    try:
        files: dict[str, bytes] = {}
        for child in iso.list_children(iso_path="/"):
            if child is None or child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            iso_name = child.file_identifier().decode()
            name = _long_name(child, iso_name)
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, iso_path=f"/{iso_name}")
            files[name] = out.getvalue()
        return files
    finally:
        iso.close()


def _check_name(name: str) -> None:
    """Refuse anything but a plain file name: the guest copies these names into paths."""
    problem = None
    if not name or name in (".", ".."):
        problem = "is empty or a directory reference"
    elif ".." in name:
        problem = "contains '..'"
    elif _FORBIDDEN.search(name):
        problem = 'contains a slash, a control character or one of \\ : ; * ? " < > |'
    elif len(name) > MAX_NAME_LENGTH:
        problem = f"is longer than {MAX_NAME_LENGTH} characters"
    if problem:
        raise InvalidInput(
            f"bad context file name {name!r}: it {problem}",
            hint="context files are plain names at the CD-ROM's root, e.g. 'id_rsa.pub'",
        )


def _iso9660_name(name: str, used: set[str]) -> str:
    """A unique ISO 9660 level-3 name (A-Z, 0-9, _) for readers without Rock Ridge."""
    stem, _, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    stem = re.sub(r"[^A-Z0-9_]", "_", stem.upper())[:24] or "_"
    ext = re.sub(r"[^A-Z0-9_]", "_", ext.upper())[:3]
    candidate = f"{stem}.{ext}"
    counter = 1
    while candidate in used:
        candidate = f"{stem[:20]}_{counter}.{ext}"
        counter += 1
    used.add(candidate)
    return candidate


def _long_name(child: object, iso_name: str) -> str:
    """The Rock Ridge name of a record, else its 8.3 name without the version."""
    rock_ridge = getattr(child, "rock_ridge", None)
    if rock_ridge is not None and rock_ridge.name():
        return str(rock_ridge.name().decode())
    return iso_name.split(";", 1)[0].rstrip(".").lower()
