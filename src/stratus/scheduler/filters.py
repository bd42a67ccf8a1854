"""Host filters, Nova style: each removes the hosts a VM cannot use, for one reason.

The same filters serve the fast path (which hosts pass, for a few rows at a time) and the
explanation of a VM that fits nowhere (how many hosts each filter removed, in order).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stratus.model.expr_compile import BoolArray, Requirement
from stratus.scheduler.pricing import Budget, ShapePrices
from stratus.scheduler.snapshot import HostSnapshot, IntArray, Rows

__all__ = [
    "FILTERS",
    "BudgetFilter",
    "CoolDownFilter",
    "CpuFilter",
    "Demand",
    "DispatchLimitFilter",
    "ExclusionFilter",
    "HostFilter",
    "MemoryFilter",
    "OfferingFilter",
    "PlanState",
    "RequirementsFilter",
    "StateFilter",
    "explain",
]

_CPU_SLACK = 1e-9  # free CPU is a sum of fractions: tolerate float rounding


@dataclass(frozen=True, eq=False)
class Demand:
    """What VMs of one shape ask of a host."""

    cpu: float
    memory: int
    requirements: str = ""  # SCHED_REQUIREMENTS as written, "" when none
    static_pass: BoolArray | None = None  # hosts passing its conjuncts on static columns
    dynamic_pass: Requirement | None = None  # its conjuncts on live columns
    excluded: frozenset[int] = frozenset()  # host ids
    prices: ShapePrices | None = None  # cost and offering per host; None when not priced


@dataclass
class PlanState:
    """What the filters read during one plan() call: the snapshot and placements per host."""

    hosts: HostSnapshot
    dispatched: IntArray  # placements per host row in this call
    max_per_host: int = 0  # 0 = unlimited
    budget: Budget | None = None  # spend limits of public hosts; None when there are none


class HostFilter(ABC):
    """Removes hosts for one reason; `passes` works on any subset of rows."""

    def applies(self, demand: Demand, state: PlanState) -> bool:
        """False when it can remove nothing for this demand (it is then skipped)."""
        return True

    def changes(self, demand: Demand) -> bool:
        """Whether placements within one plan() call can change its answer."""
        return False

    @abstractmethod
    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        """For each row, whether the host there stays a candidate."""

    @abstractmethod
    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        """The reason part for the hosts it removed, e.g. `8 lack memory`."""


class StateFilter(HostFilter):
    """Only MONITORED hosts take VMs."""

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        return state.hosts.monitored[rows]

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        counts = Counter(state.hosts.states[row].value for row in rows.tolist())
        detail = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        return f"{len(rows)} not monitored ({detail})"


class CpuFilter(HostFilter):
    def changes(self, demand: Demand) -> bool:
        return True

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        return state.hosts.free_cpu[rows] >= demand.cpu - _CPU_SLACK

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        return f"{len(rows)} lack CPU"


class MemoryFilter(HostFilter):
    def changes(self, demand: Demand) -> bool:
        return True

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        return state.hosts.free_mem[rows] >= demand.memory

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        return f"{len(rows)} lack memory"


class RequirementsFilter(HostFilter):
    """SCHED_REQUIREMENTS: static conjuncts come precomputed, live ones are re-evaluated."""

    def applies(self, demand: Demand, state: PlanState) -> bool:
        return demand.static_pass is not None or demand.dynamic_pass is not None

    def changes(self, demand: Demand) -> bool:
        return demand.dynamic_pass is not None

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        parts: list[BoolArray] = []
        if demand.static_pass is not None:
            parts.append(demand.static_pass[rows])
        if demand.dynamic_pass is not None:
            parts.append(demand.dynamic_pass(state.hosts.rows(rows)))
        return parts[0] if len(parts) == 1 else parts[0] & parts[1]

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        return f"{len(rows)} fail SCHED_REQUIREMENTS '{demand.requirements.strip()}'"


class ExclusionFilter(HostFilter):
    """Hosts the VM must leave or avoid (its current host when rescheduled)."""

    def applies(self, demand: Demand, state: PlanState) -> bool:
        return bool(demand.excluded)

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        return ~np.isin(state.hosts.ids[rows], list(demand.excluded))

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        return f"{len(rows)} excluded"


class OfferingFilter(HostFilter):
    """Public hosts in the catalogue whose instance types are all too small for the VM."""

    def applies(self, demand: Demand, state: PlanState) -> bool:
        return demand.prices is not None and bool(demand.prices.no_fit.any())

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        assert demand.prices is not None  # applies() checked it
        return ~demand.prices.no_fit[rows]

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        return f"{len(rows)} have no instance type that fits"


class CoolDownFilter(HostFilter):
    """Hosts, or every fitting offering on them, in a cool-down after a cloud error or at
    their instance-type quotas."""

    def applies(self, demand: Demand, state: PlanState) -> bool:
        return demand.prices is not None and bool(demand.prices.cooling_reasons)

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        assert demand.prices is not None  # applies() checked it
        return ~demand.prices.cooling[rows]

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        assert demand.prices is not None
        reasons = demand.prices.cooling_reasons
        counts = Counter(reasons.get(row, "") for row in rows.tolist())
        return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


class DispatchLimitFilter(HostFilter):
    """SchedulerConfig.max_per_host: placements per host in one plan() call."""

    def applies(self, demand: Demand, state: PlanState) -> bool:
        return state.max_per_host > 0

    def changes(self, demand: Demand) -> bool:
        return True

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        return state.dispatched[rows] < state.max_per_host

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        return f"{len(rows)} reached the dispatch limit of {state.max_per_host} per host"


class BudgetFilter(HostFilter):
    """Public hosts where one more VM would push a provider's (or the overall) spend over
    its budget. Spend only grows within a plan() call, so a removed host stays removed."""

    def applies(self, demand: Demand, state: PlanState) -> bool:
        return demand.prices is not None and state.budget is not None and state.budget.active

    def changes(self, demand: Demand) -> bool:
        return True

    def passes(self, state: PlanState, demand: Demand, rows: Rows) -> BoolArray:
        assert demand.prices is not None and state.budget is not None  # applies() checked
        return ~state.budget.fails(demand.prices, rows)

    def removed(self, rows: IntArray, state: PlanState, demand: Demand) -> str:
        assert demand.prices is not None and state.budget is not None
        return f"{len(rows)} over budget: {state.budget.explain(demand.prices, rows)}"


#: The filters in the order they are applied and reported.
FILTERS: tuple[HostFilter, ...] = (
    StateFilter(),
    CpuFilter(),
    MemoryFilter(),
    RequirementsFilter(),
    ExclusionFilter(),
    OfferingFilter(),
    CoolDownFilter(),
    DispatchLimitFilter(),
    BudgetFilter(),
)


def explain(state: PlanState, demand: Demand, filters: Sequence[HostFilter] = FILTERS) -> str:
    """How many hosts remain and what removed the others, e.g. `0/12 hosts: 8 lack memory`."""
    total = state.hosts.size
    if total == 0:
        return "0/0 hosts: the pool has no hosts"
    remaining: IntArray = np.arange(total, dtype=np.intp)
    parts: list[str] = []
    for host_filter in filters:
        if not host_filter.applies(demand, state):
            continue
        ok = host_filter.passes(state, demand, remaining)
        if not ok.all():
            parts.append(host_filter.removed(remaining[~ok], state, demand))
            remaining = remaining[ok]
    head = f"{len(remaining)}/{total} hosts"
    return f"{head}: {', '.join(parts)}" if parts else head
