"""Placement as a pure function: (pending VMs, host snapshot, policy) -> placements + reasons."""

from __future__ import annotations

from stratus.scheduler.filters import FILTERS, Demand, HostFilter, PlanState, explain
from stratus.scheduler.plan import PendingVm, Placement, Plan, plan
from stratus.scheduler.policies import POLICIES, SchedulerConfig
from stratus.scheduler.snapshot import DYNAMIC_COLUMNS, HostSnapshot

__all__ = [
    "DYNAMIC_COLUMNS",
    "FILTERS",
    "POLICIES",
    "Demand",
    "HostFilter",
    "HostSnapshot",
    "PendingVm",
    "Placement",
    "Plan",
    "PlanState",
    "SchedulerConfig",
    "explain",
    "plan",
]
