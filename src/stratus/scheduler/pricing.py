"""What a VM costs per hour on each host, which offering it would get, and the budgets.

A host is public when its label PUBLIC_CLOUD is "YES". A public host whose provider
(label PROVIDER, else its driver) and REGION the catalogue lists is priced by the cheapest
catalogued instance type that fits the VM, among the types its INSTANCE_TYPES label names
(`m1.small=4,m1.large=1` or `m1.small,m1.large`; all types when absent), spot offerings
when its label SPOT is "YES". Every other host (local ones, clouds the catalogue lacks)
costs its PRICE label per VM-hour, 0 when absent. Prices are computed once per VM shape
(CPU, memory) for all hosts: per group of hosts sharing provider, region, types and market,
then per host only for the few with an offering cooling down.

A public host's INSTANCE_TYPES label with counts (`m1.small=4`) is also a quota per type:
`type_usage` says how many instances of each type run there, a full type is skipped like
an offering cooling down, and `take()` counts the placements of one plan() call.

Budgets cap the spend per hour of public hosts, per provider and overall ("*"); the spend
only grows during one plan() call, so a host over budget stays over until the call ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from stratus.model.catalogue import Catalogue, Offering
from stratus.model.expr_compile import BoolArray, FloatArray, TextArray
from stratus.scheduler.snapshot import HostSnapshot, IntArray

__all__ = ["Budget", "HostPricing", "ShapePrices", "Unavailable", "money"]

_SLACK = 1e-9  # prices are sums of floats: 0.1 + 0.2 must not exceed a 0.3 budget


@dataclass(frozen=True)
class Unavailable:
    """A host, or one offering on it, the engine has put in a cool-down after an error."""

    host_id: int
    offering: str | None  # instance type name; None = the whole host
    reason: str  # what happened, e.g. "InsufficientInstanceCapacity"


@dataclass(frozen=True, eq=False)
class ShapePrices:
    """For VMs of one shape, per host row: price per hour and the offering they would get."""

    cost: FloatArray  # USD per hour; inf where no offering fits or all are cooling down
    offerings: TextArray  # instance type per row, "" for hosts priced by their PRICE label
    no_fit: BoolArray  # catalogued public hosts where no instance type fits the VM
    cooling: BoolArray  # hosts unavailable, or whose every fitting offering is
    #: row -> why, for the cooling rows: "cooling down after X" or "at the T quota (4 of 4)"
    cooling_reasons: Mapping[int, str]


def money(value: float) -> str:
    """0.5 -> `0.50`, 0.0104 -> `0.0104`: at least two decimals, at most four."""
    text = f"{value:.4f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.partition(".")[2]))


def _type_names(text: object) -> frozenset[str] | None:
    """`m1.small=4, m1.large=1` or `m1.small m1.large` -> the names; None when absent."""
    if not isinstance(text, str) or not text.strip():
        return None
    return frozenset(_type_quotas(text)) | frozenset(
        item for item in text.replace(",", " ").split() if "=" not in item
    )


def _type_quotas(text: object) -> dict[str, int]:
    """`m1.small=4, m1.large=1` -> {"m1.small": 4, "m1.large": 1}; names without a count
    have no quota (unparsable counts are ignored: the host probe reports them)."""
    quotas: dict[str, int] = {}
    if isinstance(text, str):
        for item in text.replace(",", " ").split():
            name, sep, count = item.partition("=")
            if sep and count.strip().isdigit():
                quotas[name.strip()] = int(count)
    return quotas


class HostPricing:
    """The per-host pricing inputs of one plan() call, and the prices per VM shape."""

    def __init__(
        self,
        hosts: HostSnapshot,
        catalogue: Catalogue | None,
        unavailable: Iterable[Unavailable] = (),
        type_usage: Mapping[int, Mapping[str, int]] | None = None,
    ) -> None:
        size = hosts.size
        self.public: BoolArray = np.asarray(hosts.text("PUBLIC_CLOUD") == "YES", dtype=bool)
        label_price = hosts.numeric("PRICE")
        self.label_price: FloatArray = np.where(np.isfinite(label_price), label_price, 0.0)
        providers = [
            str(label if label is not None else driver)
            for label, driver in zip(
                hosts.text("PROVIDER").tolist(), hosts.text("DRIVER").tolist(), strict=True
            )
        ]
        self.providers: list[str] = sorted(set(providers))
        codes = {name: code for code, name in enumerate(self.providers)}
        self.codes: IntArray = np.array([codes[p] for p in providers], dtype=np.intp)
        self.group_of: IntArray = np.full(size, -1, dtype=np.intp)
        self._groups: list[tuple[Offering, ...]] = []
        if catalogue is not None:
            self._group_hosts(hosts, catalogue, providers)
        row_of = {int(host_id): row for row, host_id in enumerate(hosts.ids.tolist())}
        self._host_down: dict[int, str] = {}
        self._offering_down: dict[int, dict[str, str]] = {}
        for entry in unavailable:
            row = row_of.get(entry.host_id)
            if row is None:
                continue
            why = f"cooling down after {entry.reason}" if entry.reason else "cooling down"
            if entry.offering is None:
                self._host_down[row] = why
            else:
                self._offering_down.setdefault(row, {})[entry.offering] = why
        self._shapes: dict[tuple[float, int], ShapePrices] = {}
        self._quota: dict[int, dict[str, tuple[int, int]]] = {}  # row -> type -> (left, of)
        usage = type_usage or {}
        labels = hosts.text("INSTANCE_TYPES")
        for row in np.flatnonzero(self.public & (self.group_of >= 0)).tolist():
            quotas = _type_quotas(labels[row])
            used = usage.get(int(hosts.ids[row]), {})
            for name, limit in quotas.items():
                self._quota.setdefault(row, {})[name] = (limit - used.get(name, 0), limit)
                if limit - used.get(name, 0) <= 0:
                    self._type_full(row, name, limit)

    def _type_full(self, row: int, name: str, limit: int) -> None:
        down = self._offering_down.setdefault(row, {})
        down.setdefault(name, f"at the {name} quota ({limit} of {limit} in use)")

    def take(self, row: int, offering: str) -> bool:
        """Count one placement of `offering` on `row`; True when that fills its quota (the
        prices computed so far are then stale: the caller asks `for_shape` again)."""
        left, limit = self._quota.get(row, {}).get(offering, (0, 0))
        if not limit:
            return False
        self._quota[row][offering] = (left - 1, limit)
        if left - 1 > 0:
            return False
        self._type_full(row, offering, limit)
        self._shapes.clear()
        return True

    def _group_hosts(self, hosts: HostSnapshot, catalogue: Catalogue, providers: list[str]) -> None:
        """Public hosts the catalogue covers, grouped by (provider, region, types, spot)."""
        regions, types, spot = (
            hosts.text("REGION"),
            hosts.text("INSTANCE_TYPES"),
            hosts.text("SPOT"),
        )
        keys: dict[tuple[str, str, frozenset[str] | None, bool], int] = {}
        for row in np.flatnonzero(self.public).tolist():
            provider, region = providers[row], regions[row]
            if not isinstance(region, str) or not catalogue.has_region(provider, region):
                continue
            key = (provider, region, _type_names(types[row]), spot[row] == "YES")
            if key not in keys:
                keys[key] = len(self._groups)
                allowed, market = key[2], key[3]
                self._groups.append(
                    tuple(
                        offering
                        for offering in catalogue.offerings(provider, region)
                        if offering.spot == market and (allowed is None or offering.name in allowed)
                    )
                )
            self.group_of[row] = keys[key]

    def for_shape(self, cpu: float, memory: int) -> ShapePrices:
        """Prices of a VM of this size on every host (cached per shape)."""
        key = (cpu, memory)
        if key not in self._shapes:
            self._shapes[key] = self._price(cpu, memory)
        return self._shapes[key]

    def _price(self, cpu: float, memory: int) -> ShapePrices:
        size = len(self.group_of)
        cheapest = [_first_fitting(group, cpu, memory, {}) for group in self._groups]
        group_cost = np.array([o.price_per_hour if o else np.inf for o in cheapest] + [0.0])
        group_name = np.array([o.name if o else "" for o in cheapest] + [""], dtype=object)
        catalogued = self.group_of >= 0
        # group -1 indexes the trailing placeholder, then np.where picks the PRICE label
        cost: FloatArray = np.where(catalogued, group_cost[self.group_of], self.label_price)
        offerings: TextArray = group_name[self.group_of]
        no_fit: BoolArray = catalogued & np.isinf(cost)
        cooling: BoolArray = np.zeros(size, dtype=bool)
        reasons: dict[int, str] = {}
        for row, down in self._offering_down.items():
            group = int(self.group_of[row])
            if group < 0 or no_fit[row]:
                continue
            offering = _first_fitting(self._groups[group], cpu, memory, down)
            if offering is None:  # every fitting offering is down: say why, each reason once
                cooling[row] = True
                fitting = [o.name for o in self._groups[group] if o.fits(cpu, memory)]
                why = dict.fromkeys(down[name] for name in fitting if name in down)
                reasons[row] = " and ".join(why) or "cooling down"
                cost[row], offerings[row] = np.inf, ""
            else:
                cost[row], offerings[row] = offering.price_per_hour, offering.name
        for row, reason in self._host_down.items():
            cooling[row], reasons[row] = True, reason
        return ShapePrices(cost, offerings, no_fit, cooling, reasons)


def _first_fitting(
    offerings: tuple[Offering, ...], cpu: float, memory: int, skip: Mapping[str, str]
) -> Offering | None:
    """The first (cheapest) offering that fits and is not cooling down."""
    for offering in offerings:
        if offering.name not in skip and offering.fits(cpu, memory):
            return offering
    return None


class Budget:
    """Spend per hour of public hosts, per provider and overall, against their limits."""

    def __init__(
        self, pricing: HostPricing, limits: Mapping[str, float], spend: Mapping[str, float]
    ) -> None:
        self._pricing = pricing
        providers = pricing.providers
        self.active = bool(limits)
        self.limit: FloatArray = np.array([limits.get(p, np.inf) for p in providers], dtype=float)
        self.spent: FloatArray = np.array([spend.get(p, 0.0) for p in providers], dtype=float)
        self.total_limit = float(limits.get("*", np.inf))
        self.total = float(sum(spend.values()))

    def _over(self, prices: ShapePrices, rows: IntArray | slice) -> tuple[BoolArray, BoolArray]:
        """(over its provider's limit, over the overall limit), public hosts only."""
        codes, cost, public = (
            self._pricing.codes[rows],
            prices.cost[rows],
            self._pricing.public[rows],
        )
        by_provider = public & (self.spent[codes] + cost > self.limit[codes] + _SLACK)
        overall = public & (self.total + cost > self.total_limit + _SLACK)
        return by_provider, overall

    def fails(self, prices: ShapePrices, rows: IntArray | slice) -> BoolArray:
        """Hosts where placing one more VM of this shape would break a budget."""
        by_provider, overall = self._over(prices, rows)
        return by_provider | overall

    def row_fails(self, prices: ShapePrices, row: int) -> bool:
        """`fails` for one row, in scalar arithmetic (it runs once per placement)."""
        if not self._pricing.public[row]:
            return False
        cost, code = float(prices.cost[row]), int(self._pricing.codes[row])
        if self.spent[code] + cost > self.limit[code] + _SLACK:
            return True
        return self.total + cost > self.total_limit + _SLACK

    def charge(self, row: int, price: float) -> None:
        """Adds a placement's price to the spend, when the host is public."""
        if self._pricing.public[row]:
            self.spent[self._pricing.codes[row]] += price
            self.total += price

    def explain(self, prices: ShapePrices, rows: IntArray) -> str:
        """`ec2 would spend 0.52/h, over its 0.50/h limit` for each budget that removed hosts."""
        by_provider, overall = self._over(prices, rows)
        parts: list[str] = []
        codes = self._pricing.codes[rows]
        for code in sorted(set(codes[by_provider].tolist())):
            mine = by_provider & (codes == code)
            would = self.spent[code] + float(prices.cost[rows][mine].min())
            parts.append(
                f"{self._pricing.providers[code]} would spend {money(would)}/h,"
                f" over its {money(float(self.limit[code]))}/h limit"
            )
        only_overall = overall & ~by_provider
        if only_overall.any():
            would = self.total + float(prices.cost[rows][only_overall].min())
            parts.append(
                f"all clouds would spend {money(would)}/h,"
                f" over the overall {money(self.total_limit)}/h limit"
            )
        return "; ".join(parts)
