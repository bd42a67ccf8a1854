"""plan(): pending VMs + host snapshot + policy -> placements and reasons. Pure, no I/O.

VMs go in priority order (user priority, then id). VMs with the same (cpu, memory,
requirements, rank, exclusions) form a shape; each shape keeps the score of every host
(rank where the host passes all filters, -inf elsewhere) and re-scores only the hosts that
placements changed since it last looked, so one placement costs an argmax plus a few rows.

Cost inputs (`pricing.py`), only when the config or the call asks for them: each shape's
price per host (cheapest fitting catalogue offering on a cloud, PRICE label elsewhere),
the budgets with the current spend, and the hosts or offerings cooling down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stratus.model.errors import ExpressionError, InvalidInput
from stratus.model.expr import And, Expr, expr_attributes, format_number, parse_expression
from stratus.model.expr_compile import BoolArray, FloatArray, Requirement, compile_requirement
from stratus.scheduler.filters import FILTERS, BudgetFilter, Demand, PlanState, explain
from stratus.scheduler.policies import (
    COST_POLICIES,
    LOWEST_RANK,
    POLICIES,
    Ranking,
    SchedulerConfig,
    Tiers,
    ranking_for,
    tier_for,
)
from stratus.scheduler.pricing import Budget, HostPricing, Unavailable, money
from stratus.scheduler.snapshot import DYNAMIC_COLUMNS, HostSnapshot, IntArray, Rows

__all__ = ["PendingVm", "Placement", "Plan", "plan"]

_ALL = slice(None)


@dataclass(frozen=True)
class PendingVm:
    id: int
    cpu: float  # physical CPUs it needs
    memory: int  # MB
    requirements: str = ""  # SCHED_REQUIREMENTS text ("" = none)
    rank: str = ""  # SCHED_RANK text ("" = use the policy)
    user_priority: int = 0  # higher first; ties by id ascending (FIFO)
    exclude_hosts: frozenset[int] = frozenset()  # e.g. its current host when rescheduling
    vcpu: int = 0  # virtual CPUs a cloud instance type must have; 0 = its `cpu`


@dataclass(frozen=True)
class Placement:
    vm_id: int
    host_id: int
    reason: str  # "placed by packing policy on host-7 (rank 3) among 9/12 hosts"
    offering: str = ""  # the instance type to run on a catalogued cloud, "" elsewhere
    price_per_hour: float = 0.0  # what it costs there (PRICE label on other hosts)


@dataclass(frozen=True)
class Plan:
    placements: list[Placement] = field(default_factory=list)
    pending: dict[int, str] = field(default_factory=dict)  # vm_id -> why it stays pending


class _Expressions:
    """Parses and compiles each distinct expression text once per plan() call."""

    def __init__(
        self, hosts: HostSnapshot, config: SchedulerConfig, pricing: HostPricing | None
    ) -> None:
        self._hosts = hosts
        self._policy = config.policy
        self._pricing = pricing
        self._parsed: dict[str, Expr | ExpressionError] = {}  # text -> AST or syntax error
        self._requirements: dict[str, tuple[BoolArray | None, Requirement | None]] = {}
        self._static_masks: dict[Expr, BoolArray] = {}
        self._demands: dict[tuple[float, int, str, frozenset[int], int], Demand] = {}
        self._rankings: dict[str, Ranking] = {}

    def parse(self, attribute: str, text: str) -> Expr:
        if text not in self._parsed:
            try:
                self._parsed[text] = parse_expression(text)
            except ExpressionError as exc:
                self._parsed[text] = exc
        parsed = self._parsed[text]
        if isinstance(parsed, ExpressionError):
            raise InvalidInput(f"{attribute}: {parsed}") from parsed
        return parsed

    def prices_changed(self) -> None:
        """Forget the demands (they hold prices); requirements stay compiled."""
        self._demands.clear()

    def demand(self, vm: PendingVm) -> Demand:
        """What the VM asks of a host, its requirement compiled once per distinct text."""
        key = (vm.cpu, vm.memory, vm.requirements, vm.exclude_hosts, vm.vcpu)
        if key not in self._demands:
            static_pass, live = self._requirement(vm.requirements)
            prices = None
            if self._pricing is not None:
                prices = self._pricing.for_shape(max(vm.cpu, float(vm.vcpu)), vm.memory)
            self._demands[key] = Demand(
                vm.cpu, vm.memory, vm.requirements, static_pass, live, vm.exclude_hosts, prices
            )
        return self._demands[key]

    def _requirement(self, text: str) -> tuple[BoolArray | None, Requirement | None]:
        """(hosts passing the static conjuncts, the live conjuncts compiled) of a requirement."""
        if text not in self._requirements:
            static_pass, live = None, None
            if text.strip():
                static, dynamic = _split(self.parse("SCHED_REQUIREMENTS", text))
                static_pass = None if static is None else self._static_mask(static)
                live = None if dynamic is None else compile_requirement(dynamic)
            self._requirements[text] = (static_pass, live)
        return self._requirements[text]

    def _static_mask(self, expr: Expr) -> BoolArray:
        """Evaluated once per plan() for all hosts, shared by texts with the same conjuncts."""
        if expr not in self._static_masks:
            self._static_masks[expr] = compile_requirement(expr)(self._hosts)
        return self._static_masks[expr]

    def ranking(self, text: str) -> Ranking:
        if text not in self._rankings:
            if text.strip():
                label, expr = f"SCHED_RANK '{text.strip()}'", self.parse("SCHED_RANK", text)
            else:
                label, expr = f"{self._policy} policy", parse_expression(POLICIES[self._policy])
            self._rankings[text] = ranking_for(label, expr, self._hosts)
        return self._rankings[text]


def _split(expr: Expr) -> tuple[Expr | None, Expr | None]:
    """(conjuncts on static columns, conjuncts on live columns) of a requirement."""
    conjuncts = expr.operands if isinstance(expr, And) else (expr,)
    live = [part for part in conjuncts if expr_attributes(part) & DYNAMIC_COLUMNS]
    static = [part for part in conjuncts if part not in live]
    return _conjunction(static), _conjunction(live)


def _conjunction(parts: list[Expr]) -> Expr | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


class _Changes:
    """The host rows placements touched, in order, so each shape re-scores only those."""

    def __init__(self, hosts: int, capacity: int) -> None:
        self.count = 0
        self._rows: IntArray = np.empty(capacity, dtype=np.intp)
        self._latest: IntArray = np.full(hosts, -1, dtype=np.intp)  # each row's last change
        self._positions: IntArray = np.arange(capacity, dtype=np.intp)

    def record(self, row: int) -> None:
        self._rows[self.count] = row
        self._latest[row] = self.count
        self.count += 1

    def since(self, start: int) -> IntArray:
        """The distinct rows changed by placements start, start+1... (no sort needed)."""
        touched = self._rows[start : self.count]
        latest: IntArray = touched[self._latest[touched] == self._positions[start : self.count]]
        return latest


class _Shape:
    """The hosts VMs of one shape can take, scored, kept current as placements land."""

    def __init__(
        self,
        state: PlanState,
        demand: Demand,
        ranking: Ranking,
        seen: int,
        tier: Tiers | None = None,
        label: str = "",
    ) -> None:
        self.demand = demand
        self.ranking = ranking
        self.tier = tier  # ranked before the rank, highest first (cost policies)
        self.label = label or ranking.label
        active = [f for f in FILTERS if f.applies(demand, state)]
        self.budgeted = BudgetFilter in {type(f) for f in active}
        self.live_filters = [f for f in active if f.changes(demand)]
        self.base: BoolArray = np.ones(state.hosts.size, dtype=bool)
        for host_filter in active:
            if host_filter not in self.live_filters:
                self.base &= host_filter.passes(state, demand, _ALL)
        # Without live requirements, candidates only ever shrink: once none is left, stop.
        self.monotone = demand.dynamic_pass is None
        self.score: FloatArray = np.full(state.hosts.size, -np.inf)
        self.keyed: FloatArray = np.full(state.hosts.size, -np.inf)  # tier where it fits
        self.candidates = 0
        self.seen = seen  # placements already reflected in the scores
        self.exhausted = False
        self._reason: tuple[int, str] | None = None  # (placements seen, why it fits nowhere)
        self._rescore(state, _ALL)

    def _rescore(self, state: PlanState, rows: Rows) -> None:
        ok = self.base[rows]
        for host_filter in self.live_filters:
            ok = ok & host_filter.passes(state, self.demand, rows)
        ranks = self.ranking.values(state.hosts, rows)
        before = np.count_nonzero(self.score[rows] > -np.inf)
        self.score[rows] = np.where(ok, ranks, -np.inf)
        if self.tier is not None:
            self.keyed[rows] = np.where(ok, self.tier.values[rows], -np.inf)
        self.candidates += int(np.count_nonzero(ok)) - int(before)

    def best(self, state: PlanState, changes: _Changes) -> int | None:
        """The row of the best host for the next VM of this shape, None when none fits."""
        if self.exhausted:
            return None
        if self.seen < changes.count:
            many = changes.count - self.seen > state.hosts.size // 4
            self._rescore(state, _ALL if many else changes.since(self.seen))
            self.seen = changes.count
        if self.tier is None and not self.budgeted:  # the rank policies' fast path
            row = int(self.score.argmax())
            if self.score[row] > -np.inf:
                return row
            self.exhausted = self.monotone
            return None
        found = self._top()
        if found is not None and self.budgeted and self._over_budget(state, found):
            found = self._top()
        if found is None:
            self.exhausted = self.monotone
        return found

    def _top(self) -> int | None:
        """The best-scored row (by tier first when there is one), None when none fits."""
        if self.tier is None:
            row = int(self.score.argmax())
            return row if self.score[row] > -np.inf else None
        top = float(self.keyed.max())
        if top == -np.inf:
            return None
        row = int(self.score.argmax())  # often the best overall is in the top tier
        if self.keyed[row] == top:
            return row
        rows = self.tier.rows[top]
        return int(rows[self.score[rows].argmax()])

    def _over_budget(self, state: PlanState, row: int) -> bool:
        """Spend grew since the scores were made: when `row` broke a budget, drop every
        host that now would (they cannot come back within this call)."""
        assert state.budget is not None and self.demand.prices is not None
        if not state.budget.row_fails(self.demand.prices, row):
            return False
        over = state.budget.fails(self.demand.prices, _ALL)
        self.score[over] = -np.inf
        self.keyed[over] = -np.inf
        self.candidates = int(np.count_nonzero(self.score > -np.inf))
        return True

    def why_not(self, state: PlanState) -> str:
        """Why no host fits, as of the last look (an exhausted shape stops looking)."""
        if self._reason is None or self._reason[0] != self.seen:
            self._reason = (self.seen, explain(state, self.demand))
        return self._reason[1]

    def offering(self, row: int) -> tuple[str, float]:
        """(instance type, price per hour) of a VM of this shape on the host at `row`."""
        prices = self.demand.prices
        if prices is None:
            return "", 0.0
        return str(prices.offerings[row]), float(prices.cost[row])

    def why(self, state: PlanState, row: int) -> str:
        rank = float(self.score[row])
        shown = "-inf" if rank <= LOWEST_RANK else format_number(rank)
        where = state.hosts.names[row]
        name, price = self.offering(row)
        if name:
            where += f" as {name} at {money(price)}/h"
        elif price:
            where += f" at {money(price)}/h"
        return (
            f"placed by {self.label} on {where} (rank {shown})"
            f" among {self.candidates}/{state.hosts.size} hosts"
        )


def plan(
    vms: Sequence[PendingVm],
    hosts: HostSnapshot,
    config: SchedulerConfig,
    *,
    spend: Mapping[str, float] | None = None,
    unavailable: Iterable[Unavailable] = (),
    type_usage: Mapping[int, Mapping[str, int]] | None = None,
) -> Plan:
    """Places what fits, in priority order; `hosts` keeps the capacity the placements take.

    `spend`: what the public clouds cost now, provider -> USD per hour (for the budgets);
    `unavailable`: hosts or offerings in a cool-down, skipped with their reason;
    `type_usage`: host id -> instance type -> instances running, for per-type quotas.
    """
    cooling = tuple(unavailable)
    pricing = None
    if config.catalogue is not None or config.budgets or cooling or config.policy in COST_POLICIES:
        pricing = HostPricing(hosts, config.catalogue, cooling, type_usage)
    budget = Budget(pricing, config.budgets, spend or {}) if pricing and config.budgets else None
    state = PlanState(hosts, np.zeros(hosts.size, dtype=np.intp), config.max_per_host, budget)
    expressions = _Expressions(hosts, config, pricing)
    tiers = _TierCache(config.policy, pricing)
    shapes: dict[tuple[float, int, str, str, frozenset[int], int], _Shape | str] = {}
    changes = _Changes(hosts.size, len(vms))
    result = Plan()
    for vm in sorted(vms, key=lambda vm: (-vm.user_priority, vm.id)):
        if config.max_dispatch and changes.count >= config.max_dispatch:
            result.pending[vm.id] = (
                f"waiting: this cycle reached max_dispatch ({config.max_dispatch} placements)"
            )
            continue
        key = (vm.cpu, vm.memory, vm.requirements, vm.rank, vm.exclude_hosts, vm.vcpu)
        shape = shapes.get(key)
        if shape is None:
            try:
                demand, ranking = expressions.demand(vm), expressions.ranking(vm.rank)
            except InvalidInput as exc:  # a syntax error keeps the VM pending, with the error
                shape = str(exc)
            else:
                shape = (
                    _new_shape(state, demand, ranking, changes.count, config, tiers)
                    if hosts.size
                    else explain(state, demand)
                )
            shapes[key] = shape
        if isinstance(shape, str):
            result.pending[vm.id] = shape
            continue
        row = shape.best(state, changes)
        if row is None:
            result.pending[vm.id] = shape.why_not(state)
            continue
        if pricing is None:
            result.placements.append(Placement(vm.id, int(hosts.ids[row]), shape.why(state, row)))
        else:
            offering, price = shape.offering(row)
            result.placements.append(
                Placement(vm.id, int(hosts.ids[row]), shape.why(state, row), offering, price)
            )
            if budget is not None:
                budget.charge(row, price)
            if pricing.take(row, offering):  # a quota filled: price every shape again
                shapes.clear()
                expressions.prices_changed()
                tiers = _TierCache(config.policy, pricing)
        hosts.place(row, vm.cpu, vm.memory)
        state.dispatched[row] += 1
        changes.record(row)
    return result


class _TierCache:
    """The cost policy's tiers, built once per VM size (local-first: once per call)."""

    def __init__(self, policy: str, pricing: HostPricing | None) -> None:
        self.policy = policy if pricing is not None and policy in COST_POLICIES else ""
        self._pricing = pricing
        self._built: dict[int, Tiers | None] = {}  # keyed by the prices' identity

    def get(self, demand: Demand) -> Tiers | None:
        if not self.policy or self._pricing is None:
            return None
        prices = demand.prices
        key = 0 if self.policy == "local-first" or prices is None else id(prices)
        if key not in self._built:
            cost = prices.cost if prices is not None else None
            self._built[key] = tier_for(self.policy, self._pricing.public, cost)
        return self._built[key]


def _new_shape(
    state: PlanState,
    demand: Demand,
    ranking: Ranking,
    seen: int,
    config: SchedulerConfig,
    tiers: _TierCache,
) -> _Shape:
    """A shape, with the cost policy's tier when there is one."""
    tier = tiers.get(demand)
    if tier is None:
        return _Shape(state, demand, ranking, seen)
    policy = f"{config.policy} policy"
    label = policy if ranking.label == policy else f"{policy}, then {ranking.label}"
    return _Shape(state, demand, ranking, seen, tier, label)
