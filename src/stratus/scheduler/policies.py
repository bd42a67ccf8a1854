"""Placement policies: each is a rank expression in the one expression language.

The cost policies add a tier before the rank: `local-first` ranks every local host above
every public cloud, `cheapest` ranks hosts by the price of a VM on them (the cheapest
fitting offering on a cloud, the PRICE label elsewhere); within a tier the packing rank
(or the VM's SCHED_RANK) decides. A VM's SCHED_RANK replaces the rank, never the tier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from stratus.model.catalogue import Catalogue
from stratus.model.errors import InvalidInput
from stratus.model.expr import Expr, expr_attributes
from stratus.model.expr_compile import BoolArray, FloatArray, Rank, compile_rank
from stratus.scheduler.snapshot import DYNAMIC_COLUMNS, HostSnapshot, IntArray, Rows

__all__ = [
    "COST_POLICIES",
    "LOWEST_RANK",
    "POLICIES",
    "Ranking",
    "SchedulerConfig",
    "Tiers",
    "ranking_for",
    "tier_for",
]

#: Where a rank of -inf (or NaN) is raised to, so a host that fits beats one that does not.
LOWEST_RANK = float(-np.finfo(np.float64).max)

#: Policy name -> its rank expression (the highest rank wins, ties go to the lowest host id).
POLICIES: Mapping[str, str] = MappingProxyType(
    {
        "packing": "RUNNING_VMS",  # fill the busiest hosts first, keep others empty
        "striping": "-RUNNING_VMS",  # spread: the host with the fewest VMs first
        "load": "FREE_CPU",  # the host with the most free CPU first
        "fixed": "PRIORITY",  # the operator's PRIORITY label, highest first
        "local-first": "RUNNING_VMS",  # packing, local hosts before public clouds
        "cheapest": "RUNNING_VMS",  # packing among the hosts where the VM costs least
    }
)

#: The policies that rank by a tier first (see tier_for), and what the tier is.
COST_POLICIES: Mapping[str, str] = MappingProxyType(
    {
        "local-first": "public clouds only when no local host fits",
        "cheapest": "lowest cost per hour first",
    }
)


@dataclass(frozen=True, eq=False)
class Tiers:
    """A static key ranked before the rank (highest first), with the rows of each value, so
    the best host is the best-ranked row of the top value's rows (ascending, ties: lowest)."""

    values: FloatArray
    rows: Mapping[float, IntArray]

    @classmethod
    def of(cls, values: FloatArray) -> Tiers:
        distinct, which = np.unique(values, return_inverse=True)
        ordered = np.argsort(which, kind="stable")
        bounds = np.cumsum(np.bincount(which, minlength=len(distinct)))[:-1]
        groups = np.split(ordered.astype(np.intp), bounds)
        return cls(values, {float(v): rows for v, rows in zip(distinct, groups, strict=True)})


def tier_for(policy: str, public: BoolArray, cost: FloatArray | None) -> Tiers | None:
    """Per host, the key ranked before the rank; None for the rank policies."""
    if policy == "local-first":
        return Tiers.of(np.where(public, -1.0, 0.0))
    if policy == "cheapest" and cost is not None:
        return Tiers.of(-cost)
    return None


@dataclass(frozen=True)
class SchedulerConfig:
    """How plan() chooses among the hosts that fit, and how much it does per call."""

    policy: str = "packing"  # a key of POLICIES; a VM's SCHED_RANK overrides it
    max_dispatch: int = 0  # max placements per plan() call, 0 = unlimited
    max_per_host: int = 0  # max placements per host per plan() call, 0 = unlimited
    #: instance types and prices of the public clouds; None = clouds priced by PRICE labels
    catalogue: Catalogue | None = None
    #: max spend per hour of public hosts: provider (PROVIDER label) -> USD, "*" = overall
    budgets: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            ranks = sorted(set(POLICIES) - set(COST_POLICIES))
            raise InvalidInput(
                f"unknown scheduling policy {self.policy!r}",
                hint=f"choose one of: {', '.join(ranks)}; or by cost: "
                f"{', '.join(sorted(COST_POLICIES))}",
            )
        for name in ("max_dispatch", "max_per_host"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be 0 (unlimited) or more")
        for provider, limit in self.budgets.items():
            if not provider or isinstance(limit, bool) or not isinstance(limit, int | float):
                raise InvalidInput(f"budget {provider!r}: expected a provider and USD per hour")
            if math.isnan(limit) or limit < 0:
                raise InvalidInput(
                    f"budget {provider!r}: {limit!r} is not a spend per hour",
                    hint='give USD per hour >= 0, e.g. budgets={"ec2": 0.5, "*": 2.0}',
                )


@dataclass(frozen=True, eq=False)
class Ranking:
    """How VMs of one shape order the hosts; a rank on static columns is computed once."""

    label: str  # for the placement reason: "packing policy", "SCHED_RANK 'FREE_CPU'"
    static: FloatArray | None  # every host's rank, when it reads no live column
    live: Rank | None  # otherwise, evaluated on the rows that changed

    def values(self, hosts: HostSnapshot, rows: Rows) -> FloatArray:
        """The ranks of the hosts at `rows`, never below LOWEST_RANK."""
        if self.static is not None:
            return self.static[rows]
        assert self.live is not None  # one of the two is always set by ranking_for()
        return np.maximum(self.live(hosts.rows(rows)), LOWEST_RANK)


def ranking_for(label: str, expr: Expr, hosts: HostSnapshot) -> Ranking:
    """Compiles a rank expression, precomputing it when placements cannot change it."""
    rank = compile_rank(expr)
    if expr_attributes(expr) & DYNAMIC_COLUMNS:
        return Ranking(label, None, rank)
    return Ranking(label, np.maximum(rank(hosts), LOWEST_RANK), None)
