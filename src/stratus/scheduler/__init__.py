"""Placement as a pure function: (pending VMs, host snapshot, policy) -> placements + reasons."""

from __future__ import annotations

from stratus.scheduler.filters import FILTERS, Demand, HostFilter, PlanState, explain
from stratus.scheduler.plan import PendingVm, Placement, Plan, plan
from stratus.scheduler.policies import COST_POLICIES, POLICIES, SchedulerConfig
from stratus.scheduler.pricing import Unavailable
from stratus.scheduler.snapshot import DYNAMIC_COLUMNS, HostSnapshot

__all__ = [
    "COST_POLICIES",
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
    "Unavailable",
    "explain",
    "plan",
]
