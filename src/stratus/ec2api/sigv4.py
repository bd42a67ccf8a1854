"""AWS Signature Version 4, server side: rebuild the canonical request and check the signature.

Follows the AWS SigV4 specification as botocore signs (the Authorization header form):
canonical request -> string to sign -> HMAC-SHA256 chain from the secret. The signature
is compared in constant time; the request's date must be within `max_skew` of ours.
Every refusal is an Ec2Error with EC2's code (AuthFailure, RequestExpired...). The secret
and the signatures never appear in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

from stratus.ec2api.protocol import Ec2Error

__all__ = [
    "ALGORITHM",
    "Credential",
    "SignedRequest",
    "canonical_request",
    "parse_authorization",
    "signature",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "ec2"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<headers>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


def _auth_failure(message: str) -> Ec2Error:
    return Ec2Error("AuthFailure", message, 401)


@dataclass(frozen=True)
class Credential:
    """The Credential part of the Authorization header: key id and scope."""

    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class SignedRequest:
    """An HTTP request as the signature covers it."""

    method: str
    raw_path: str  # as sent, percent-encoded
    query_string: str  # raw, without "?"
    headers: Sequence[tuple[str, str]]  # (lower-case name, value), repeated names kept
    body: bytes


def parse_authorization(header: str | None) -> tuple[Credential, list[str], str]:
    """(credential, signed header names, hex signature) of an Authorization header."""
    if not header:
        raise _auth_failure(
            "the request is not signed: sign it with AWS Signature Version 4 "
            "(boto3 and the aws CLI do, given an access key)"
        )
    match = _AUTH.fullmatch(header.strip())
    if match is None:
        raise _auth_failure(
            "the Authorization header is not an AWS4-HMAC-SHA256 signature "
            "(Credential=..., SignedHeaders=..., Signature=...)"
        )
    parts = match.group("credential").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise _auth_failure(
            "the signature's Credential is not KEY/YYYYMMDD/REGION/ec2/aws4_request"
        )
    names = match.group("headers").split(";")
    return Credential(*parts[:4]), names, match.group("signature")


def _canonical_path(raw_path: str) -> str:
    """The path with dot segments and empty segments removed, URI-encoded (as botocore)."""
    segments: list[str] = []
    for part in raw_path.split("/"):
        if part == "..":
            if segments:
                segments.pop()
        elif part and part != ".":
            segments.append(part)
    path = "/" + "/".join(segments)
    if raw_path.endswith("/") and segments:
        path += "/"
    return quote(path, safe="/~")


def _canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(request: SignedRequest, signed_headers: Sequence[str]) -> str:
    """The canonical request of the SigV4 specification for the named headers."""
    values: dict[str, list[str]] = {}
    for name, value in request.headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    lines = []
    for name in signed_headers:
        if name not in values:
            raise _auth_failure(f"the signed header {name!r} is not in the request")
        lines.append(f"{name}:{','.join(values[name])}")
    return "\n".join(
        [
            request.method.upper(),
            _canonical_path(request.raw_path),
            _canonical_query(request.query_string),
            "\n".join(lines) + "\n",
            ";".join(signed_headers),
            hashlib.sha256(request.body).hexdigest(),
        ]
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signature(secret: str, credential: Credential, amz_date: str, canonical: str) -> str:
    """The hex signature of a canonical request under `secret` (the HMAC chain)."""
    to_sign = "\n".join(
        [ALGORITHM, amz_date, credential.scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret).encode(), credential.date)
    for part in (credential.region, credential.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _header(request: SignedRequest, name: str) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


def verify(
    request: SignedRequest,
    *,
    region: str,
    max_skew: float,
    secret_of: Callable[[str], str | None],
    now: datetime | None = None,
) -> str:
    """Check the request's signature; the access key id that signed it, or an Ec2Error.

    `secret_of(key id)` gives the key's secret, None when there is no such key.
    """
    credential, signed_headers, given = parse_authorization(_header(request, "authorization"))
    if signed_headers != sorted(set(signed_headers)) or "host" not in signed_headers:
        raise _auth_failure("SignedHeaders must be sorted, lower-case and include host")
    if credential.service != SERVICE:
        raise _auth_failure(f"the signature is for service {credential.service!r}, not ec2")
    if credential.region != region:
        raise _auth_failure(
            f"the signature is scoped to region {credential.region!r}; this endpoint is "
            f"region {region!r} (set the client's region to {region})"
        )
    amz_date = _header(request, "x-amz-date")
    if amz_date is None or "x-amz-date" not in signed_headers:
        raise _auth_failure("the request needs a signed X-Amz-Date header")
    try:
        when = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise _auth_failure(f"X-Amz-Date {amz_date!r} is not YYYYMMDDTHHMMSSZ") from None
    if amz_date[:8] != credential.date:
        raise _auth_failure("the signature's Credential date is not the X-Amz-Date's day")
    skew = abs(((now or datetime.now(UTC)) - when).total_seconds())
    if skew > max_skew:
        raise Ec2Error(
            "RequestExpired",
            f"the request's X-Amz-Date {amz_date} is {skew:.0f} s away from the server's "
            f"clock (at most {max_skew:.0f} s allowed): check the client's clock",
        )
    secret = secret_of(credential.access_key_id)
    if secret is None:
        raise _auth_failure("AWS was not able to validate the provided access credentials")
    expected = signature(secret, credential, amz_date, canonical_request(request, signed_headers))
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise _auth_failure(
            "AWS was not able to validate the provided access credentials: the request "
            "signature does not match (check the secret access key and that the request "
            "was not changed on the way)"
        )
    return credential.access_key_id
