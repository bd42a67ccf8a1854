"""The VM life-cycle: states, the transition table, and what each operation does.

Pure data and functions: the engine writes a state only through `check_transition`,
and turns a user's operation into (next state, action) only through `plan_operation`.
A VM in a transient state carries the *action* it is working on (terminate, stop...),
which tells the engine what to do next and where success leads (`success_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stratus.model.errors import Conflict, IllegalOperation, InvalidInput

__all__ = [
    "ACTIVE_STATES",
    "TRANSIENT_STATES",
    "TRANSITIONS",
    "Action",
    "Operation",
    "OperationPlan",
    "RecoverMode",
    "VmState",
    "allowed_operations",
    "check_transition",
    "plan_operation",
    "success_state",
]


class VmState(StrEnum):
    PENDING = "PENDING"  # waiting for the scheduler
    HOLD = "HOLD"  # kept out of scheduling until released
    PROLOG = "PROLOG"  # preparing images and context on the host
    BOOT = "BOOT"  # the hypervisor is starting (or restoring) the instance
    RUNNING = "RUNNING"
    MIGRATING = "MIGRATING"  # moving to another host (cold or live)
    SAVING = "SAVING"  # saving memory state (suspend, stop)
    SUSPENDED = "SUSPENDED"  # paused, state saved on the host, capacity kept
    STOPPED = "STOPPED"  # state and disks saved off the host, capacity freed
    POWEROFF = "POWEROFF"  # powered off, disks kept on the host, capacity kept
    UNDEPLOYED = "UNDEPLOYED"  # powered off, disks moved off the host, capacity freed
    SHUTTING_DOWN = "SHUTTING_DOWN"  # graceful (then hard) shutdown in progress
    EPILOG = "EPILOG"  # cleaning up or saving back disks on the host
    UNKNOWN = "UNKNOWN"  # the host stopped answering; the VM may still run
    FAILED = "FAILED"  # an action failed; `failed_state` and `reason` say where and why
    DONE = "DONE"  # terminated; kept for history and accounting


class Action(StrEnum):
    """What the engine is doing for a VM in a transient state."""

    DEPLOY = "deploy"
    RESUME = "resume"
    REBOOT = "reboot"
    REBOOT_HARD = "reboot-hard"
    TERMINATE = "terminate"
    TERMINATE_HARD = "terminate-hard"
    POWEROFF = "poweroff"
    POWEROFF_HARD = "poweroff-hard"
    UNDEPLOY = "undeploy"
    UNDEPLOY_HARD = "undeploy-hard"
    SUSPEND = "suspend"
    STOP = "stop"
    MIGRATE = "migrate"
    LIVE_MIGRATE = "live-migrate"
    DELETE = "delete"  # recover --delete: best-effort cleanup, then DONE
    RECREATE = "recreate"  # recover --recreate: best-effort cleanup, then PENDING again


class Operation(StrEnum):
    """What a user can ask for (API and CLI)."""

    HOLD = "hold"
    RELEASE = "release"
    DEPLOY = "deploy"
    TERMINATE = "terminate"
    POWEROFF = "poweroff"
    REBOOT = "reboot"
    SUSPEND = "suspend"
    RESUME = "resume"
    STOP = "stop"
    UNDEPLOY = "undeploy"
    MIGRATE = "migrate"
    RESCHED = "resched"
    RECOVER = "recover"


S = VmState

#: States in which the engine has driver work to do for the VM's action.
TRANSIENT_STATES = frozenset({S.PROLOG, S.BOOT, S.MIGRATING, S.SAVING, S.SHUTTING_DOWN, S.EPILOG})
#: States of a VM that has (or may have) an instance on a host.
ACTIVE_STATES = TRANSIENT_STATES | {S.RUNNING, S.UNKNOWN}

# state -> allowed next states, one comment per edge.
TRANSITIONS: dict[VmState, dict[VmState, str]] = {
    S.PENDING: {
        S.HOLD: "hold: kept out of scheduling",
        S.PROLOG: "placed on a host by the scheduler or deployed by hand",
        S.DONE: "terminated before it ever ran",
        S.FAILED: "pending timeout: no host fitted in time",
    },
    S.HOLD: {
        S.PENDING: "release: back to the scheduler",
        S.PROLOG: "deployed by hand to a named host",
        S.DONE: "terminated before it ever ran",
    },
    S.PROLOG: {
        S.BOOT: "images and context are ready on the host",
        S.FAILED: "the transfer failed",
        S.EPILOG: "recover --delete/--recreate: clean up what was copied",
    },
    S.BOOT: {
        S.RUNNING: "the hypervisor started or restored the instance",
        S.FAILED: "the hypervisor could not start it",
        S.PENDING: "a cloud refused it for lack of capacity or quota: failover re-queues it"
        " for the next-best placement (that host cools down)",
        S.EPILOG: "recover --delete/--recreate: clean up the half-made instance",
    },
    S.RUNNING: {
        S.RUNNING: "reboot, resched or the guest reported READY: same state, an event",
        S.SHUTTING_DOWN: "terminate, poweroff or undeploy requested",
        S.SAVING: "suspend or stop requested",
        S.MIGRATING: "migrate (cold or live) to another host",
        S.UNKNOWN: "its host stopped answering",
        S.POWEROFF: "the monitor saw the instance powered off from inside",
        S.FAILED: "the monitor saw the instance vanish, or reboot failed",
    },
    S.MIGRATING: {
        S.RUNNING: "migrated; or the migration failed and it still runs on the source",
        S.FAILED: "the migration failed and the instance is lost",
        S.EPILOG: "recover --delete/--recreate",
    },
    S.SAVING: {
        S.SUSPENDED: "suspend: memory state saved on the host",
        S.EPILOG: "stop: state saved, now moving it off the host",
        S.FAILED: "saving failed",
    },
    S.SUSPENDED: {
        S.BOOT: "resume: restore the saved state",
        S.EPILOG: "stop or terminate: clean up the host",
    },
    S.STOPPED: {
        S.PENDING: "resume: back to the scheduler, will restore its state",
        S.PROLOG: "deployed by hand to a named host",
        S.EPILOG: "terminate: delete the saved state and disks",
    },
    S.POWEROFF: {
        S.BOOT: "resume: power on again",
        S.EPILOG: "terminate or undeploy",
    },
    S.UNDEPLOYED: {
        S.PENDING: "resume: back to the scheduler",
        S.PROLOG: "deployed by hand to a named host",
        S.EPILOG: "terminate: delete the saved disks",
    },
    S.SHUTTING_DOWN: {
        S.EPILOG: "terminate or undeploy: the instance is gone",
        S.POWEROFF: "poweroff: the instance is off, disks kept",
        S.FAILED: "the instance could not be shut down",
    },
    S.EPILOG: {
        S.DONE: "terminate or recover --delete: all cleaned up",
        S.STOPPED: "stop: state and disks saved off the host",
        S.UNDEPLOYED: "undeploy: disks saved off the host",
        S.PENDING: "recover --recreate: submitted again from its template",
        S.FAILED: "cleanup failed",
    },
    S.UNKNOWN: {
        S.RUNNING: "its host answers again and the instance runs",
        S.POWEROFF: "its host answers again and the instance is off",
        S.FAILED: "its host answers again without the instance, or recover --failure",
        S.SHUTTING_DOWN: "terminate requested",
        S.EPILOG: "recover --delete/--recreate",
    },
    S.FAILED: {
        S.PROLOG: "recover --retry of the transfer",
        S.BOOT: "recover --retry of the boot",
        S.MIGRATING: "recover --retry of the migration",
        S.SAVING: "recover --retry of the save",
        S.SHUTTING_DOWN: "recover --retry of the shutdown",
        S.EPILOG: "terminate, recover --retry of the cleanup, recover --delete/--recreate",
        S.RUNNING: "recover --success: the instance does run",
        S.SUSPENDED: "recover --success of a suspend",
        S.POWEROFF: "recover --success of a poweroff",
        S.STOPPED: "recover --success of a stop",
        S.UNDEPLOYED: "recover --success of an undeploy",
        S.PENDING: "recover --retry after a pending timeout",
        S.DONE: "recover --success of a terminate",
    },
    S.DONE: {},
}


def check_transition(current: VmState, target: VmState) -> None:
    """Raise Conflict unless the table allows current -> target."""
    if target not in TRANSITIONS[current]:
        raise Conflict(f"illegal VM state change {current} -> {target}")


# Where success of (state, action) leads.
_SUCCESS: dict[tuple[VmState, Action | None], VmState] = {
    (S.SAVING, Action.SUSPEND): S.SUSPENDED,
    (S.SAVING, Action.STOP): S.EPILOG,
    (S.SHUTTING_DOWN, Action.POWEROFF): S.POWEROFF,
    (S.SHUTTING_DOWN, Action.POWEROFF_HARD): S.POWEROFF,
    (S.EPILOG, Action.STOP): S.STOPPED,
    (S.EPILOG, Action.UNDEPLOY): S.UNDEPLOYED,
    (S.EPILOG, Action.UNDEPLOY_HARD): S.UNDEPLOYED,
    (S.EPILOG, Action.RECREATE): S.PENDING,
}
_SUCCESS_BY_STATE: dict[VmState, VmState] = {
    S.PROLOG: S.BOOT,
    S.BOOT: S.RUNNING,
    S.MIGRATING: S.RUNNING,
    S.RUNNING: S.RUNNING,
    S.SHUTTING_DOWN: S.EPILOG,
    S.EPILOG: S.DONE,
    S.UNKNOWN: S.RUNNING,
}


def success_state(state: VmState, action: Action | None) -> VmState:
    """The state a VM reaches when `action` succeeds in `state`."""
    if (state, action) in _SUCCESS:
        return _SUCCESS[(state, action)]
    if state in _SUCCESS_BY_STATE:
        return _SUCCESS_BY_STATE[state]
    raise Conflict(f"no action is in progress in state {state}")


class RecoverMode(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"
    DELETE = "delete"
    RECREATE = "recreate"


@dataclass(frozen=True)
class OperationPlan:
    """What an accepted operation does to the VM record."""

    state: VmState  # the next state
    action: Action | None  # the engine's work in that state (None: nothing to do)
    reason: str
    needs_host: bool = False  # deploy and migrate name a target host
    clear_host: bool = False  # the VM leaves its host (terminate before running...)
    resched: bool | None = None  # set or clear the resched flag


_HARD = {
    Action.TERMINATE: Action.TERMINATE_HARD,
    Action.POWEROFF: Action.POWEROFF_HARD,
    Action.UNDEPLOY: Action.UNDEPLOY_HARD,
    Action.REBOOT: Action.REBOOT_HARD,
}

# operation -> {current state -> (next state, action, what it means)}
_OPERATIONS: dict[Operation, dict[VmState, tuple[VmState, Action | None, str]]] = {
    Operation.HOLD: {S.PENDING: (S.HOLD, None, "held by user")},
    Operation.RELEASE: {S.HOLD: (S.PENDING, None, "released by user")},
    Operation.DEPLOY: {
        s: (S.PROLOG, Action.DEPLOY, "deployed by hand")
        for s in (S.PENDING, S.HOLD, S.STOPPED, S.UNDEPLOYED)
    },
    Operation.TERMINATE: {
        S.PENDING: (S.DONE, None, "terminated before it ran"),
        S.HOLD: (S.DONE, None, "terminated before it ran"),
        S.RUNNING: (S.SHUTTING_DOWN, Action.TERMINATE, "terminate requested"),
        S.UNKNOWN: (S.SHUTTING_DOWN, Action.TERMINATE, "terminate requested"),
        S.SUSPENDED: (S.EPILOG, Action.TERMINATE, "terminate requested"),
        S.POWEROFF: (S.EPILOG, Action.TERMINATE, "terminate requested"),
        S.STOPPED: (S.EPILOG, Action.TERMINATE, "terminate requested"),
        S.UNDEPLOYED: (S.EPILOG, Action.TERMINATE, "terminate requested"),
        S.FAILED: (S.EPILOG, Action.TERMINATE, "terminate requested"),
    },
    Operation.POWEROFF: {S.RUNNING: (S.SHUTTING_DOWN, Action.POWEROFF, "poweroff requested")},
    Operation.REBOOT: {S.RUNNING: (S.RUNNING, Action.REBOOT, "reboot requested")},
    Operation.SUSPEND: {S.RUNNING: (S.SAVING, Action.SUSPEND, "suspend requested")},
    Operation.RESUME: {
        S.SUSPENDED: (S.BOOT, Action.RESUME, "resume requested"),
        S.POWEROFF: (S.BOOT, Action.RESUME, "resume requested"),
        S.STOPPED: (S.PENDING, None, "resume requested: waiting for a host"),
        S.UNDEPLOYED: (S.PENDING, None, "resume requested: waiting for a host"),
    },
    Operation.STOP: {
        S.RUNNING: (S.SAVING, Action.STOP, "stop requested"),
        S.SUSPENDED: (S.EPILOG, Action.STOP, "stop requested"),
    },
    Operation.UNDEPLOY: {
        S.RUNNING: (S.SHUTTING_DOWN, Action.UNDEPLOY, "undeploy requested"),
        S.POWEROFF: (S.EPILOG, Action.UNDEPLOY, "undeploy requested"),
    },
    Operation.MIGRATE: {S.RUNNING: (S.MIGRATING, Action.MIGRATE, "migrate requested")},
    Operation.RESCHED: {S.RUNNING: (S.RUNNING, None, "resched requested")},
    Operation.RECOVER: {
        s: (s, None, "recover requested") for s in (*TRANSIENT_STATES, S.UNKNOWN, S.FAILED)
    },
}


def allowed_operations(state: VmState) -> list[str]:
    """The operations a VM in `state` accepts, in a stable order."""
    return [op.value for op, table in _OPERATIONS.items() if state in table]


def plan_operation(
    operation: Operation,
    state: VmState,
    action: Action | None = None,
    failed_state: VmState | None = None,
    *,
    hard: bool = False,
    live: bool = False,
    recover: RecoverMode | None = None,
) -> OperationPlan:
    """Check an operation against the current state and say what it changes.

    Raises IllegalOperation (HTTP 409) naming the state and the operations it allows.
    `action`/`failed_state` are the VM's current ones (recover needs them).
    """
    table = _OPERATIONS[operation]
    if state not in table:
        raise IllegalOperation(operation.value, state.value, allowed_operations(state))
    if state is S.RUNNING and action is not None and operation is not Operation.RESCHED:
        raise IllegalOperation(
            f"{operation.value} (a {action.value} is still in progress)", state.value, ["recover"]
        )
    target, new_action, reason = table[state]
    if operation is Operation.RECOVER:
        if recover is None:  # checked after the state, so an illegal recover is still a 409
            raise InvalidInput(
                "recover needs a mode",
                hint="use --success, --failure, --retry, --delete or --recreate",
            )
        return _plan_recover(state, action, failed_state, recover)
    if hard and new_action in _HARD:
        new_action = _HARD[new_action]
        reason += " (hard)"
    if live and new_action is Action.MIGRATE:
        new_action = Action.LIVE_MIGRATE
        reason = "live " + reason
    return OperationPlan(
        state=target,
        action=new_action,
        reason=reason,
        needs_host=operation in (Operation.DEPLOY, Operation.MIGRATE),
        clear_host=target in (S.DONE, S.PENDING),
        resched=True if operation is Operation.RESCHED else None,
    )


def _plan_recover(
    state: VmState, action: Action | None, failed_state: VmState | None, mode: RecoverMode
) -> OperationPlan:
    if mode in (RecoverMode.DELETE, RecoverMode.RECREATE):
        new_action = Action.DELETE if mode is RecoverMode.DELETE else Action.RECREATE
        return OperationPlan(S.EPILOG, new_action, f"recover --{mode.value}")
    if state is S.FAILED:
        where = failed_state or S.BOOT
        if mode is RecoverMode.RETRY:
            return OperationPlan(where, action, f"recover --retry of {where}")
        if mode is RecoverMode.SUCCESS:
            target = success_state(where, action)
            return OperationPlan(
                target, None, f"recover --success of {where}", clear_host=target in _HOSTLESS
            )
        raise IllegalOperation("recover --failure", state.value, _recover_modes(state))
    if state is S.UNKNOWN:
        if mode is RecoverMode.SUCCESS:
            return OperationPlan(S.RUNNING, None, "recover --success: the instance runs")
        if mode is RecoverMode.FAILURE:
            return OperationPlan(S.FAILED, None, "recover --failure: the instance is lost")
        raise IllegalOperation("recover --retry", state.value, _recover_modes(state))
    # A transient state: the action may be stuck.
    if mode is RecoverMode.SUCCESS:
        target = success_state(state, action)
        return OperationPlan(
            target, None, f"recover --success of {state}", clear_host=target in _HOSTLESS
        )
    if mode is RecoverMode.FAILURE:
        return OperationPlan(S.FAILED, action, f"recover --failure of {state}")
    return OperationPlan(state, action, f"recover --retry of {state}")


_HOSTLESS = frozenset({S.DONE, S.PENDING, S.STOPPED, S.UNDEPLOYED})


def _recover_modes(state: VmState) -> list[str]:
    modes = {
        S.FAILED: [
            "recover --success",
            "recover --retry",
            "recover --delete",
            "recover --recreate",
        ],
        S.UNKNOWN: [
            "recover --success",
            "recover --failure",
            "recover --delete",
            "recover --recreate",
            "terminate",
        ],
    }
    return modes.get(state, ["recover"])
