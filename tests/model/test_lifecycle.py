"""The life-cycle table and the operation rules, checked exhaustively (pure model)."""

from __future__ import annotations

import pytest

from stratus.model.errors import Conflict, IllegalOperation
from stratus.model.lifecycle import (
    TRANSIENT_STATES,
    TRANSITIONS,
    Action,
    Operation,
    RecoverMode,
    VmState,
    allowed_operations,
    check_transition,
    plan_operation,
    success_state,
)

S = VmState
# a realistic action for each transient state
ACTION_IN = {
    S.PROLOG: Action.DEPLOY,
    S.BOOT: Action.DEPLOY,
    S.MIGRATING: Action.MIGRATE,
    S.SAVING: Action.SUSPEND,
    S.SHUTTING_DOWN: Action.TERMINATE,
    S.EPILOG: Action.TERMINATE,
}
assert set(ACTION_IN) == TRANSIENT_STATES
PAIRS = [(op, state) for op in Operation for state in VmState]


def test_every_edge_of_the_table_has_a_comment_and_done_is_final() -> None:
    for state, targets in TRANSITIONS.items():
        for target, comment in targets.items():
            assert comment.strip(), f"{state} -> {target} has no comment"
    assert TRANSITIONS[S.DONE] == {}
    assert set(TRANSITIONS) == set(VmState)


@pytest.mark.parametrize(("current", "target"), [(a, b) for a in VmState for b in VmState])
def test_check_transition_allows_exactly_the_table(current: VmState, target: VmState) -> None:
    if target in TRANSITIONS[current]:
        check_transition(current, target)
    else:
        with pytest.raises(Conflict, match=f"{current} -> {target}"):
            check_transition(current, target)


@pytest.mark.parametrize(("operation", "state"), PAIRS, ids=[f"{o}-{s}" for o, s in PAIRS])
def test_every_operation_is_accepted_or_refused_naming_the_allowed_ones(
    operation: Operation, state: VmState
) -> None:
    allowed = allowed_operations(state)
    mode = RecoverMode.SUCCESS if state is not S.FAILED else RecoverMode.RETRY
    action = ACTION_IN.get(state)
    failed_state = S.BOOT if state is S.FAILED else None
    if operation.value in allowed:
        plan = plan_operation(
            operation, state, action, failed_state, recover=mode, live=False, hard=False
        )
        # Whatever an operation starts must be a legal edge of the table.
        check_transition(state, plan.state)
    else:
        with pytest.raises(IllegalOperation) as err:
            plan_operation(operation, state, action, failed_state, recover=mode)
        assert err.value.state == state.value
        assert err.value.allowed == allowed
        assert err.value.status == 409
        assert state.value in str(err.value)


def test_hard_and_live_variants_pick_their_actions() -> None:
    assert plan_operation(Operation.TERMINATE, S.RUNNING, hard=True).action is (
        Action.TERMINATE_HARD
    )
    assert plan_operation(Operation.MIGRATE, S.RUNNING, live=True).action is Action.LIVE_MIGRATE
    assert plan_operation(Operation.MIGRATE, S.RUNNING).action is Action.MIGRATE


def test_an_operation_waits_while_a_reboot_is_in_progress() -> None:
    with pytest.raises(IllegalOperation, match="reboot is still in progress"):
        plan_operation(Operation.SUSPEND, S.RUNNING, Action.REBOOT)


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (S.PROLOG, Action.DEPLOY, S.BOOT),
        (S.BOOT, Action.DEPLOY, S.RUNNING),
        (S.SAVING, Action.SUSPEND, S.SUSPENDED),
        (S.SAVING, Action.STOP, S.EPILOG),
        (S.SHUTTING_DOWN, Action.POWEROFF, S.POWEROFF),
        (S.SHUTTING_DOWN, Action.TERMINATE, S.EPILOG),
        (S.EPILOG, Action.TERMINATE, S.DONE),
        (S.EPILOG, Action.STOP, S.STOPPED),
        (S.EPILOG, Action.UNDEPLOY, S.UNDEPLOYED),
        (S.EPILOG, Action.RECREATE, S.PENDING),
        (S.MIGRATING, Action.LIVE_MIGRATE, S.RUNNING),
    ],
)
def test_success_of_each_step_leads_where_the_table_allows(
    state: VmState, action: Action, expected: VmState
) -> None:
    assert success_state(state, action) is expected
    check_transition(state, expected)


def test_recover_modes_on_a_failed_vm() -> None:
    retry = plan_operation(
        Operation.RECOVER, S.FAILED, Action.DEPLOY, S.BOOT, recover=RecoverMode.RETRY
    )
    assert (retry.state, retry.action) == (S.BOOT, Action.DEPLOY)
    success = plan_operation(
        Operation.RECOVER, S.FAILED, Action.STOP, S.EPILOG, recover=RecoverMode.SUCCESS
    )
    assert success.state is S.STOPPED and success.clear_host
    delete = plan_operation(Operation.RECOVER, S.FAILED, None, S.BOOT, recover=RecoverMode.DELETE)
    assert (delete.state, delete.action) == (S.EPILOG, Action.DELETE)
    with pytest.raises(IllegalOperation, match="recover --failure"):
        plan_operation(Operation.RECOVER, S.FAILED, None, S.BOOT, recover=RecoverMode.FAILURE)
