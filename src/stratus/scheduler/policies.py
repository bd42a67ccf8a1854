"""Placement policies: each is a rank expression in the one expression language."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from stratus.model.errors import InvalidInput
from stratus.model.expr import Expr, expr_attributes
from stratus.model.expr_compile import FloatArray, Rank, compile_rank
from stratus.scheduler.snapshot import DYNAMIC_COLUMNS, HostSnapshot, Rows

__all__ = ["LOWEST_RANK", "POLICIES", "Ranking", "SchedulerConfig", "ranking_for"]

#: Where a rank of -inf (or NaN) is raised to, so a host that fits beats one that does not.
LOWEST_RANK = float(-np.finfo(np.float64).max)

#: Policy name -> its rank expression (the highest rank wins, ties go to the lowest host id).
POLICIES: Mapping[str, str] = MappingProxyType(
    {
        "packing": "RUNNING_VMS",  # fill the busiest hosts first, keep others empty
        "striping": "-RUNNING_VMS",  # spread: the host with the fewest VMs first
        "load": "FREE_CPU",  # the host with the most free CPU first
        "fixed": "PRIORITY",  # the operator's PRIORITY label, highest first
    }
)


@dataclass(frozen=True)
class SchedulerConfig:
    """How plan() chooses among the hosts that fit, and how much it does per call."""

    policy: str = "packing"  # a key of POLICIES; a VM's SCHED_RANK overrides it
    max_dispatch: int = 0  # max placements per plan() call, 0 = unlimited
    max_per_host: int = 0  # max placements per host per plan() call, 0 = unlimited

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InvalidInput(
                f"unknown scheduling policy {self.policy!r}",
                hint=f"choose one of: {', '.join(sorted(POLICIES))}",
            )
        for name in ("max_dispatch", "max_per_host"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be 0 (unlimited) or more")


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
