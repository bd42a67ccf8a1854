"""What the EC2 API needs to know about its zone: names, default network, address pool."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from stratus.model.catalogue import Catalogue, Offering, shipped_catalogue
from stratus.model.errors import InvalidInput

__all__ = ["DEFAULT_POOL", "DEFAULT_REGION", "Ec2ApiConfig"]

DEFAULT_REGION = "stratus-1"
DEFAULT_POOL = "203.0.113.0/24"  # TEST-NET-3 (RFC 5737): documentation addresses
_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_CATALOGUE_FALLBACK = "us-east-1"  # sizes when the catalogue does not list our region


@dataclass(frozen=True)
class Ec2ApiConfig:
    """The EC2 API's settings (`stratus serve --ec2-*`); checked when made."""

    region: str = DEFAULT_REGION
    zone: str = ""  # "" = <region>a
    network: str | None = None  # the virtual network RunInstances attaches a NIC to
    address_pool: str = DEFAULT_POOL  # CIDR AllocateAddress takes elastic addresses from
    #: directories RegisterImage may import local files from (none: URLs only)
    import_dirs: tuple[Path, ...] = ()
    max_skew: float = 300.0  # seconds a request's X-Amz-Date may differ from our clock
    terminated_visible: float = 3600.0  # seconds a terminated instance is still described
    catalogue: Catalogue = field(default_factory=shipped_catalogue, repr=False)

    def __post_init__(self) -> None:
        if _REGION.fullmatch(self.region) is None:
            raise InvalidInput(
                f"EC2 region {self.region!r} is not valid",
                hint="use lower-case letters, digits and '-', e.g. stratus-1 or eu-west-1",
            )
        if not self.zone:
            object.__setattr__(self, "zone", f"{self.region}a")
        elif _REGION.fullmatch(self.zone) is None or not self.zone.startswith(self.region):
            raise InvalidInput(
                f"EC2 availability zone {self.zone!r} is not a zone of {self.region}",
                hint=f"e.g. {self.region}a",
            )
        pool = self.pool  # checks it
        if pool.num_addresses < 4:
            raise InvalidInput(f"the EC2 address pool {self.address_pool} is too small")
        object.__setattr__(self, "import_dirs", tuple(Path(d) for d in self.import_dirs))
        for directory in self.import_dirs:
            if not directory.is_absolute():
                raise InvalidInput(f"--ec2-import-dir {directory} must be an absolute path")

    @property
    def pool(self) -> ipaddress.IPv4Network:
        try:
            network = ipaddress.ip_network(self.address_pool, strict=True)
        except ValueError as exc:
            raise InvalidInput(
                f"EC2 address pool {self.address_pool!r} is not a network: {exc}",
                hint="give a CIDR such as 203.0.113.0/24",
            ) from exc
        if not isinstance(network, ipaddress.IPv4Network):
            raise InvalidInput("the EC2 address pool must be IPv4", hint="e.g. 203.0.113.0/24")
        return network

    @cached_property
    def instance_types(self) -> dict[str, Offering]:
        """Instance type -> its on-demand offering (vCPU, memory) in our region."""
        region = self.region
        if not self.catalogue.has_region("ec2", region):
            region = _CATALOGUE_FALLBACK
        offerings = self.catalogue.offerings("ec2", region)
        return {o.name: o for o in sorted(offerings, key=lambda o: o.name) if not o.spot}
