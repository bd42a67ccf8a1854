"""Errors of public-cloud drivers, with the cloud's own error code for the scheduler.

    DriverError
    ├── CloudError          the cloud refused or failed a call; `code` is its error code
    ├── HostUnreachable
    │   └── CloudUnreachable   the endpoint does not answer
    └── DriverTimeout
        └── CloudTimeout       a call or a wait took longer than its deadline

Each carries `details() == {"cloud_error": code, "failover": bool}`: `failover` says the
offering (provider, region, type) failed rather than the request, so the scheduler may
cool it down and try the next-best placement. Messages never contain credentials:
`scrub` removes them from any text taken from the cloud.
"""

from __future__ import annotations

from collections.abc import Iterable

from stratus.model.errors import DriverError, DriverTimeout, HostUnreachable

__all__ = [
    "FAILOVER_CODES",
    "OFFERING_CODES",
    "CloudError",
    "CloudTimeout",
    "CloudUnreachable",
    "scrub",
]

#: cloud error codes meaning "this offering cannot take the VM now": try another placement
FAILOVER_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "Unsupported",
        "UnsupportedOperation",
        "InvalidInstanceType",
        "RequestLimitExceeded",
        "Throttling",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "EndpointConnectionError",
        "Timeout",
    }
)
#: the failover codes that concern one instance type (the others, quotas, throttling and
#: outages, concern the whole account or endpoint): only that offering cools down
OFFERING_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "MaxSpotInstanceCountExceeded",
        "Unsupported",
        "InvalidInstanceType",
    }
)


class _CloudCode:
    """The cloud error code shared by the three error kinds."""

    code: str
    failover: bool

    def cloud_details(self) -> dict[str, object]:
        return {"cloud_error": self.code, "failover": self.failover}


class CloudError(_CloudCode, DriverError):
    """The cloud answered with an error; `code` is its code (e.g. InstanceLimitExceeded)."""

    def __init__(
        self, message: str, *, code: str, failover: bool | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.failover = code in FAILOVER_CODES if failover is None else failover

    def details(self) -> dict[str, object]:
        return self.cloud_details()


class CloudUnreachable(_CloudCode, HostUnreachable):
    """The cloud's endpoint does not answer (connection refused, DNS, TLS...)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = "EndpointConnectionError"
        self.failover = True

    def details(self) -> dict[str, object]:
        return self.cloud_details()


class CloudTimeout(_CloudCode, DriverTimeout):
    """A cloud call, or a wait for an instance state, passed its deadline."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = "Timeout"
        self.failover = True

    def details(self) -> dict[str, object]:
        return self.cloud_details()


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every (non-trivial) secret value replaced by ***."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
