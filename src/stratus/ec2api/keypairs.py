"""CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair.

CreateKeyPair makes the key here (RSA 2048 or ed25519, with `cryptography`) and returns
the private key once; only the public key is kept. Fingerprints follow EC2: for RSA keys
made here the SHA-1 of the PKCS#8 private key, for imported RSA keys the MD5 of the
public key (DER), for ed25519 the base64 SHA-256 of the OpenSSH public key blob.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.filters import parse_filters, tag_items
from stratus.ec2api.protocol import Ec2Error, Params, invalid, missing
from stratus.ec2api.tags import tag_specifications
from stratus.model.ec2ids import key_pair_id, number_of
from stratus.model.errors import Conflict, InvalidInput
from stratus.store import ec2 as store_ec2
from stratus.store import ec2_objects
from stratus.store.ec2_objects import KeyPair

__all__ = ["create_key_pair", "delete_key_pair", "describe_key_pairs", "import_key_pair"]

_NAME = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII, as EC2
_PUBLIC = serialization.PublicFormat


def _name(params: Params) -> str:
    name = params.required("KeyName", max_len=255)
    if _NAME.fullmatch(name) is None:
        raise invalid("KeyName", name, "Use printable ASCII characters.")
    return name


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def _openssh(public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.OpenSSH, _PUBLIC.OpenSSH).decode()


def _ed25519_fingerprint(openssh: str) -> str:
    blob = base64.b64decode(openssh.split()[1])
    return base64.b64encode(hashlib.sha256(blob).digest()).decode()


def _generate(key_type: str) -> tuple[str, str, str]:
    """(private key text, public key OpenSSH, fingerprint) of a new key."""
    if key_type == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        material = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = _openssh(private.public_key())
        return material, public, _ed25519_fingerprint(public)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    material = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    pkcs8 = rsa_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return material, _openssh(rsa_key.public_key()), _colons(hashlib.sha1(pkcs8).digest())


def _imported(material: str) -> tuple[str, str, str]:
    """(key type, public key OpenSSH, fingerprint) of PublicKeyMaterial."""
    try:
        text = base64.b64decode(material, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("PublicKeyMaterial", "...", "It is not base64.") from None
    try:
        if text.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = serialization.load_ssh_public_key(text.strip())
    except (ValueError, UnsupportedAlgorithm):
        raise Ec2Error(
            "InvalidKey.Format",
            "Key is not in valid OpenSSH public key format (ssh-rsa or ssh-ed25519)",
        ) from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        public = _openssh(key)
        return "ed25519", public, _ed25519_fingerprint(public)
    if isinstance(key, rsa.RSAPublicKey):
        if not 1024 <= key.key_size <= 4096:
            raise Ec2Error("InvalidKey.Format", "RSA keys must be 1024 to 4096 bits")
        der = key.public_bytes(serialization.Encoding.DER, _PUBLIC.SubjectPublicKeyInfo)
        return "rsa", _openssh(key), _colons(hashlib.md5(der, usedforsecurity=False).digest())
    raise Ec2Error("InvalidKey.Format", "Only RSA and ed25519 keys are supported")


async def _store(
    ctx: Ec2Context, params: Params, name: str, key_type: str, public: str, fingerprint: str
) -> KeyPair:
    tags = tag_specifications(params, {"key-pair"})
    ctx.commit()

    def insert(conn: Any) -> KeyPair:
        pair = ec2_objects.insert_keypair(
            conn,
            ctx.now(),
            ctx.user_id,
            name=name,
            key_type=key_type,
            fingerprint=fingerprint,
            public_key=public,
        )
        store_ec2.set_tags(conn, ctx.user_id, [key_pair_id(pair.id)], tags)
        return pair

    try:
        return await ctx.write(insert)
    except Conflict:
        raise Ec2Error(
            "InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists."
        ) from None


async def create_key_pair(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    name = _name(params)
    key_type = params.text("KeyType", default="rsa", max_len=16) or "rsa"
    if key_type not in ("rsa", "ed25519"):
        raise invalid("KeyType", key_type, "Expected rsa or ed25519.")
    key_format = params.text("KeyFormat", default="pem", max_len=16)
    if key_format != "pem":
        raise invalid("KeyFormat", key_format, "Only pem is supported.")
    material, public, fingerprint = await ctx.run(_generate, key_type)
    pair = await _store(ctx, params, name, key_type, public, fingerprint)
    return {
        "keyName": pair.name,
        "keyFingerprint": pair.fingerprint,
        "keyMaterial": material,
        "keyPairId": key_pair_id(pair.id),
    }


async def import_key_pair(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    name = _name(params)
    material = params.text("PublicKeyMaterial", max_len=16 * 1024)
    if not material:
        raise missing("PublicKeyMaterial")
    key_type, public, fingerprint = _imported(material)
    pair = await _store(ctx, params, name, key_type, public, fingerprint)
    return {
        "keyName": pair.name,
        "keyFingerprint": pair.fingerprint,
        "keyPairId": key_pair_id(pair.id),
    }


def _pair_ids(params: Params) -> list[int]:
    ids = []
    for value in params.texts("KeyPairId", max_len=64):
        try:
            ids.append(number_of("key", value))
        except InvalidInput:
            raise Ec2Error(
                "InvalidKeyPair.NotFound", f"The key pair '{value}' does not exist"
            ) from None
    return ids


async def describe_key_pairs(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    names = params.texts("KeyName", max_len=255)
    ids = _pair_ids(params)
    filters = parse_filters(
        params, {"key-name", "key-pair-id", "fingerprint", "key-type", "tag-key", "tag:"}
    )
    with_public = params.flag("IncludePublicKey")
    ctx.commit()
    pairs = await ctx.read(
        ec2_objects.select_keypairs, ctx.user_id, names=names or None, ids=ids or None
    )
    for name in names:
        if name not in {p.name for p in pairs}:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    for number in ids:
        if number not in {p.id for p in pairs}:
            raise Ec2Error(
                "InvalidKeyPair.NotFound", f"The key pair '{key_pair_id(number)}' does not exist"
            )
    tags = await ctx.read(store_ec2.tags_of, [key_pair_id(p.id) for p in pairs])
    items = []
    for pair in pairs:
        pair_tags = tags.get(key_pair_id(pair.id), {})
        facts = {
            "key-name": [pair.name],
            "key-pair-id": [key_pair_id(pair.id)],
            "fingerprint": [pair.fingerprint],
            "key-type": [pair.key_type],
            "tag-key": list(pair_tags),
        } | {f"tag:{k}": [v] for k, v in pair_tags.items()}
        if filters.matches(facts):
            items.append(
                {
                    "keyPairId": key_pair_id(pair.id),
                    "keyName": pair.name,
                    "keyFingerprint": pair.fingerprint,
                    "keyType": pair.key_type,
                    "publicKey": pair.public_key if with_public else None,
                    "createTime": pair.created,
                    "tagSet": tag_items(pair_tags),
                }
            )
    return {"keySet": items}


async def delete_key_pair(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    """Deleting a key pair that does not exist succeeds, as on EC2."""
    name = params.text("KeyName", max_len=255)
    ids: list[int] = []
    raw_id = params.text("KeyPairId", max_len=64)
    if raw_id:
        try:
            ids = [number_of("key", raw_id)]
        except InvalidInput:
            raise Ec2Error(
                "InvalidKeyPair.NotFound", f"The key pair '{raw_id}' does not exist"
            ) from None
    if not name and not ids:
        raise missing("KeyName")
    ctx.commit()
    pairs = await ctx.read(
        ec2_objects.select_keypairs,
        ctx.user_id,
        names=[name] if name else None,
        ids=ids or None,
    )
    for pair in pairs:
        await ctx.write(ec2_objects.delete_keypair, ctx.user_id, pair.id)
        await ctx.write(store_ec2.delete_tags, ctx.user_id, [key_pair_id(pair.id)], None)
    return {"return": True, "keyPairId": key_pair_id(pairs[0].id) if pairs else None}
