"""Instance-type catalogue: what each provider and region sells, its size and price per hour.

Pure data and lookups. The shipped figures live in `catalogue_data.py` (with their date and
source); a config can override or extend them with a document of the same layout:

    {"date": "...", "source": "...",
     "offerings": {"ec2": {"eu-west-1": {"m5.large": {"vcpu": 2, "memory_mb": 8192,
                                                      "price_per_hour": 0.107,
                                                      "spot_price_per_hour": 0.037}}}}}

A spot price makes a separate offering (same name, `spot=True`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from stratus.model.errors import InvalidInput

__all__ = ["Catalogue", "Offering", "parse_catalogue", "shipped_catalogue"]

_CPU_SLACK = 1e-9  # a VM's CPU share is a float: 2.0000000001 still fits 2 vCPUs
_ENTRY_KEYS = frozenset({"vcpu", "memory_mb", "price_per_hour", "spot_price_per_hour"})
_EXAMPLE = '{"vcpu": 2, "memory_mb": 8192, "price_per_hour": 0.096}'


@dataclass(frozen=True)
class Offering:
    """One instance type one provider sells in one region, on demand or spot."""

    provider: str  # the driver / PROVIDER label, e.g. "ec2"
    region: str  # e.g. "eu-west-1"
    name: str  # instance type, e.g. "m5.large"
    vcpu: int
    memory_mb: int
    price_per_hour: float  # USD per hour, indicative
    spot: bool = False  # a spot (interruptible) offering rather than on demand

    def fits(self, cpu: float, memory_mb: int) -> bool:
        """Whether a VM asking for `cpu` CPUs and `memory_mb` MB fits this type."""
        return self.vcpu >= cpu - _CPU_SLACK and self.memory_mb >= memory_mb

    @property
    def order(self) -> tuple[float, int, int, str]:
        """Cheapest first; ties go to fewer vCPUs, then less memory, then the name."""
        return (self.price_per_hour, self.vcpu, self.memory_mb, self.name)


class Catalogue:
    """Offerings by (provider, region, name, spot), with the date and source of the figures."""

    def __init__(self, offerings: Iterable[Offering], *, date: str = "", source: str = "") -> None:
        self.date = date
        self.source = source
        self._by_key: dict[tuple[str, str, str, bool], Offering] = {}
        for offering in offerings:
            key = (offering.provider, offering.region, offering.name, offering.spot)
            self._by_key[key] = offering  # a later entry replaces an earlier one
        self._by_region: dict[tuple[str, str], tuple[Offering, ...]] = {}
        grouped: dict[tuple[str, str], list[Offering]] = {}
        for offering in self._by_key.values():
            grouped.setdefault((offering.provider, offering.region), []).append(offering)
        for region, listed in grouped.items():
            self._by_region[region] = tuple(sorted(listed, key=lambda o: (o.order, o.spot)))

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Offering]:
        return iter(self._by_key.values())

    def __repr__(self) -> str:
        return f"Catalogue({len(self)} offerings, date={self.date!r})"

    def get(self, provider: str, region: str, name: str, *, spot: bool = False) -> Offering | None:
        """The offering of that name, None when the catalogue does not list it."""
        return self._by_key.get((provider, region, name, spot))

    def has_region(self, provider: str, region: str) -> bool:
        return (provider, region) in self._by_region

    def offerings(self, provider: str, region: str) -> tuple[Offering, ...]:
        """Every offering (on demand and spot) in that region, cheapest first."""
        return self._by_region.get((provider, region), ())

    def cheapest_fitting(
        self, provider: str, region: str, cpu: float, memory_mb: int, *, spot: bool = False
    ) -> Offering | None:
        """The cheapest offering that fits (ties: fewer vCPUs), None when none fits."""
        for offering in self.offerings(provider, region):
            if offering.spot == spot and offering.fits(cpu, memory_mb):
                return offering
        return None

    def updated(self, other: Catalogue) -> Catalogue:
        """This catalogue with `other`'s offerings added, replacing those with the same key."""
        return Catalogue(
            [*self, *other], date=other.date or self.date, source=other.source or self.source
        )


def shipped_catalogue() -> Catalogue:
    """The catalogue shipped with Stratus (`catalogue_data.py`): indicative EC2 prices."""
    from stratus.model.catalogue_data import SHIPPED

    return parse_catalogue(SHIPPED)


def parse_catalogue(data: Mapping[str, object]) -> Catalogue:
    """Validates a catalogue document; every error names the entry, e.g. `ec2/eu-west-1/x`."""
    unknown = sorted(set(data) - {"date", "source", "offerings"})
    if unknown:
        raise InvalidInput(
            f"catalogue: unknown key {unknown[0]!r}", hint="expected date, source and offerings"
        )
    date, source = data.get("date", ""), data.get("source", "")
    if not isinstance(date, str) or not isinstance(source, str):
        raise InvalidInput("catalogue: date and source must be text", hint='e.g. "2024-06-01"')
    providers = _mapping(data.get("offerings", {}), "catalogue offerings", "provider")
    offerings: list[Offering] = []
    for provider, regions in providers.items():
        for region, types in _mapping(regions, f"catalogue {provider}", "region").items():
            where = f"catalogue {provider}/{region}"
            for name, entry in _mapping(types, where, "instance type").items():
                offerings.extend(_offerings(provider, region, name, entry))
    return Catalogue(offerings, date=date, source=source)


def _mapping(value: object, where: str, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise InvalidInput(
            f"{where}: expected a mapping of {what} name -> entries, got {type(value).__name__}",
            hint=f'e.g. {{"ec2": {{"eu-west-1": {{"m5.large": {_EXAMPLE}}}}}}}',
        )
    return value


def _offerings(provider: str, region: str, name: str, entry: object) -> list[Offering]:
    where = f"catalogue entry {provider}/{region}/{name}"
    if not isinstance(entry, Mapping):
        raise InvalidInput(f"{where}: expected a mapping", hint=f"e.g. {_EXAMPLE}")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise InvalidInput(
            f"{where}: unknown key {unknown[0]!r}",
            hint=f"expected {', '.join(sorted(_ENTRY_KEYS))}",
        )
    vcpu = _whole(entry.get("vcpu"), where, "vcpu")
    memory_mb = _whole(entry.get("memory_mb"), where, "memory_mb")
    price = _price(entry.get("price_per_hour"), where, "price_per_hour")
    found = [Offering(provider, region, name, vcpu, memory_mb, price)]
    if entry.get("spot_price_per_hour") is not None:
        spot = _price(entry["spot_price_per_hour"], where, "spot_price_per_hour")
        found.append(Offering(provider, region, name, vcpu, memory_mb, spot, spot=True))
    return found


def _whole(value: object, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{where}: {key} must be a whole number >= 1, got {value!r}")
    return value


def _price(value: object, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{where}: {key} must be a number (USD per hour), got {value!r}")
    if value < 0:
        raise InvalidInput(f"{where}: {key} must not be negative, got {value!r}")
    return float(value)
