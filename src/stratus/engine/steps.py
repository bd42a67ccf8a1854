"""One step of a VM's life-cycle: the driver work for its (state, action), and the change
it leads to. Pure decisions are in stratus.model.lifecycle; this module adds the I/O.

Each step is safe to run again after a crash: driver calls are idempotent on the VM's
request id (deploy), or succeed when their work is already done (destroy, cleanup).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from stratus.drivers.base import DeploySpec, Driver, HostInfo, InstanceInfo
from stratus.engine.config import Timeouts
from stratus.engine.cooldowns import MAX_FAILOVERS
from stratus.engine.drivers import with_deadline
from stratus.engine.resources import VmResources
from stratus.model.errors import DriverError, DriverTimeout, StratusError
from stratus.model.lifecycle import Action, VmState, success_state
from stratus.model.records import Vm
from stratus.store import VmChange

__all__ = ["StepContext", "run_step"]

A = Action
S = VmState
_HARD = {A.TERMINATE_HARD, A.POWEROFF_HARD, A.UNDEPLOY_HARD}
_BEST_EFFORT = {A.DELETE, A.RECREATE}
#: what the scheduler wrote in a VM's info, kept when a driver reports (the failover count
#: is not: it counts refusals until the VM runs)
PLACEMENT_INFO = ("offering", "price_per_hour")


@dataclass(frozen=True)
class StepContext:
    """What a step needs: the VM's host (and migration target) with their drivers."""

    host: HostInfo | None
    driver: Driver | None
    target: HostInfo | None
    target_driver: Driver | None
    timeouts: Timeouts
    resources: VmResources = field(default_factory=VmResources)  # deploy steps' inputs


def _spec(
    vm: Vm,
    request_id: str,
    checkpoint: str | None,
    resources: VmResources,
    source: HostInfo | None = None,
) -> DeploySpec:
    return DeploySpec(
        request_id=request_id,
        vm_id=vm.id,
        name=vm.name,
        cpu=vm.cpu,
        vcpu=vm.vcpu,
        memory=vm.memory,
        template=vm.template,
        checkpoint=checkpoint,
        disks=resources.disks,
        nics=resources.nics,
        boot=resources.boot,
        context=resources.context,
        source=source,
        instance_type=str(vm.info.get("offering") or ""),
    )


def _change(vm: Vm, state: VmState, reason: str, **fields: object) -> VmChange:
    return VmChange(vm_id=vm.id, expected_version=vm.version, state=state, reason=reason, **fields)  # type: ignore[arg-type]


def _on_host(ctx: StepContext) -> tuple[HostInfo, Driver]:
    if ctx.host is None or ctx.driver is None:
        raise DriverError("the VM has no host to act on")
    return ctx.host, ctx.driver


async def run_step(vm: Vm, ctx: StepContext) -> VmChange:
    """Do the driver work of the VM's current step; return the change that records it."""
    try:
        return await _STEPS[vm.state](vm, ctx)
    except StratusError as exc:
        return _failure(vm, exc)


def _failure(vm: Vm, exc: StratusError) -> VmChange:
    action = vm.action.value if vm.action else vm.state.value.lower()
    where = f" on {vm.host_name}" if vm.host_name else ""
    reason = f"{action} failed{where}: {exc}"
    failover = _failover(vm, exc)
    if failover is not None:
        return failover
    if vm.state is S.RUNNING:  # a failed reboot leaves the instance as it was
        return _change(vm, S.RUNNING, reason, action=None)
    if vm.state is S.MIGRATING and vm.action is A.LIVE_MIGRATE:
        return _change(
            vm,
            S.RUNNING,
            reason + "; still running on the source",
            action=None,
            target_host_id=None,
        )
    return _change(vm, S.FAILED, reason, failed_state=vm.state)


def _failover(vm: Vm, exc: StratusError) -> VmChange | None:
    """A first deploy a cloud refused for capacity or quota goes back to PENDING, its host
    noted in `info["failover"]` (the engine cools it down); after MAX_FAILOVERS it fails."""
    details = exc.details()
    fresh_deploy = vm.state is S.BOOT and vm.action is A.DEPLOY and not vm.checkpoint
    # A timeout is no refusal: the instance may exist, so the VM fails where it is (recover
    # cleans up there) rather than leaving a possible instance behind.
    if not fresh_deploy or not details.get("failover") or isinstance(exc, DriverTimeout):
        return None
    count = int(vm.info.get("failovers", 0)) + 1
    if count > MAX_FAILOVERS or vm.host_id is None:
        return None
    code = str(details.get("cloud_error") or type(exc).__name__)
    reason = f"{vm.host_name or 'the host'} refused the deploy ({code}): re-queued"
    refused = {"host_id": vm.host_id, "reason": code, "offering": vm.info.get("offering")}
    info = {**vm.info, "failovers": count, "failover": refused}
    return _change(
        vm,
        S.PENDING,
        reason,
        host_id=None,
        target_host_id=None,
        action=None,
        deploy_id=None,
        info=info,
        close_history=reason,
    )


async def _prolog(vm: Vm, ctx: StepContext) -> VmChange:
    host, driver = _on_host(ctx)
    spec = _spec(vm, vm.request_id(), vm.checkpoint, ctx.resources)
    await with_deadline(driver.prepare(host, spec), ctx.timeouts.deploy, "prolog")
    return _change(vm, S.BOOT, f"prolog done on {host.name}")


async def _boot(vm: Vm, ctx: StepContext) -> VmChange:
    host, driver = _on_host(ctx)
    t = ctx.timeouts
    if vm.action is A.RESUME and vm.deploy_id:  # from SUSPENDED: the paused instance exists
        info = await with_deadline(driver.resume(host, vm.deploy_id), t.operation, "resume")
        return _running(vm, info, f"resumed on {host.name}")
    what = "restored" if vm.checkpoint else "booted"
    spec = _spec(vm, vm.request_id(), vm.checkpoint, ctx.resources)
    info = await with_deadline(driver.deploy(host, spec), t.deploy, "deploy")
    return _running(vm, info, f"{what} on {host.name}")


def _running(vm: Vm, info: InstanceInfo, reason: str, **fields: object) -> VmChange:
    report = {"address": info.address, **info.extra} if info.address else dict(info.extra)
    report.update({key: vm.info[key] for key in PLACEMENT_INFO if key in vm.info})
    return _change(
        vm,
        S.RUNNING,
        reason,
        action=None,
        deploy_id=info.deploy_id,
        checkpoint=None,
        info=report,
        **fields,
    )


async def _running_action(vm: Vm, ctx: StepContext) -> VmChange:
    host, driver = _on_host(ctx)
    if vm.action not in (A.REBOOT, A.REBOOT_HARD) or not vm.deploy_id:
        return _change(vm, S.RUNNING, "nothing to do", action=None)
    hard = vm.action is A.REBOOT_HARD
    await with_deadline(driver.reboot(host, vm.deploy_id, hard), ctx.timeouts.operation, "reboot")
    return _change(vm, S.RUNNING, f"{'hard ' if hard else ''}rebooted", action=None)


async def _saving(vm: Vm, ctx: StepContext) -> VmChange:
    host, driver = _on_host(ctx)
    deploy_id = _deploy_id(vm)
    t = ctx.timeouts.operation
    if vm.action is A.SUSPEND:
        await with_deadline(driver.suspend(host, deploy_id), t, "suspend")
        return _change(vm, S.SUSPENDED, f"suspended on {host.name}", action=None)
    checkpoint = await with_deadline(driver.save(host, deploy_id), t, "save")
    return _change(
        vm, success_state(vm.state, vm.action), "state saved", checkpoint=checkpoint, deploy_id=None
    )


async def _shutting_down(vm: Vm, ctx: StepContext) -> VmChange:
    host, driver = _on_host(ctx)
    t = ctx.timeouts
    reason = "shut down"
    if vm.deploy_id:
        if vm.action in _HARD:
            reason = "powered off hard"
        else:
            try:
                await with_deadline(
                    driver.shutdown(host, vm.deploy_id, t.shutdown), t.shutdown + 5, "shutdown"
                )
            except DriverTimeout as exc:
                reason = f"graceful shutdown timed out ({exc}); powered off hard"
        await with_deadline(driver.destroy(host, vm.deploy_id), t.operation, "destroy")
    next_state = success_state(vm.state, vm.action)
    action = None if next_state is S.POWEROFF else vm.action
    return _change(vm, next_state, reason, action=action, deploy_id=None)


# Stop and undeploy keep the VM directory (disks, saved state) in the host's system
# datastore for the next deploy; terminating the VM later cleans it up there.
_KEEPS_DISKS = {A.STOP, A.UNDEPLOY, A.UNDEPLOY_HARD}


async def _epilog(vm: Vm, ctx: StepContext) -> VmChange:
    note = ""
    if ctx.host is not None and ctx.driver is not None:
        keep = vm.action in _KEEPS_DISKS
        cleanup = ctx.driver.cleanup(
            ctx.host, vm.id, vm.request_id(), vm.deploy_id, keep_disks=keep
        )
        try:
            await with_deadline(cleanup, ctx.timeouts.operation, "cleanup")
        except StratusError as exc:
            if vm.action not in _BEST_EFFORT:
                raise
            note = f" (cleanup on {ctx.host.name} failed: {exc})"
    next_state = success_state(vm.state, vm.action)
    reason = {
        S.DONE: "terminated",
        S.STOPPED: "stopped: state saved",
        S.UNDEPLOYED: "undeployed",
        S.PENDING: "recreated: waiting for a host",
    }[next_state]
    keep_checkpoint = next_state is S.STOPPED
    return _change(
        vm,
        next_state,
        reason + note,
        action=None,
        host_id=None,
        target_host_id=None,
        deploy_id=None,
        checkpoint=vm.checkpoint if keep_checkpoint else None,
        failed_state=None,
        close_history=reason,
    )


async def _migrating(vm: Vm, ctx: StepContext) -> VmChange:
    host, driver = _on_host(ctx)
    if ctx.target is None or ctx.target_driver is None:
        raise DriverError("the migration has no target host")
    target, t = ctx.target, ctx.timeouts
    if vm.action is A.LIVE_MIGRATE:
        move = driver.live_migrate(host, _deploy_id(vm), target)
        info = await with_deadline(move, t.migrate, "live migration")
        how = "live-migrated"
    else:
        checkpoint = vm.checkpoint
        if vm.deploy_id:
            checkpoint = await with_deadline(driver.save(host, vm.deploy_id), t.operation, "save")
        spec = _spec(vm, f"{vm.request_id()}-m", checkpoint, ctx.resources, source=host)
        info = await with_deadline(ctx.target_driver.deploy(target, spec), t.deploy, "restore")
        how = "cold-migrated"
    reason = f"{how} from {host.name} to {target.name}"
    return _running(
        vm,
        info,
        reason,
        host_id=target.id,
        target_host_id=None,
        close_history=reason,
        open_history=(target.id, reason),
    )


def _deploy_id(vm: Vm) -> str:
    if not vm.deploy_id:
        raise DriverError("the VM has no instance on its host")
    return vm.deploy_id


_STEPS: dict[VmState, Callable[[Vm, StepContext], Awaitable[VmChange]]] = {
    S.PROLOG: _prolog,
    S.BOOT: _boot,
    S.RUNNING: _running_action,
    S.SAVING: _saving,
    S.SHUTTING_DOWN: _shutting_down,
    S.EPILOG: _epilog,
    S.MIGRATING: _migrating,
}
