"""Engine settings: loop intervals, deadlines and scheduler policy, with sane defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from stratus.scheduler import SchedulerConfig

__all__ = ["EngineConfig", "Timeouts"]


@dataclass(frozen=True)
class Timeouts:
    """Deadlines (seconds) of driver calls; every outside call has one."""

    probe: float = 20.0
    deploy: float = 300.0
    shutdown: float = 60.0  # graceful shutdown; then a hard destroy
    operation: float = 120.0  # everything else (suspend, save, destroy, reboot...)
    migrate: float = 600.0


@dataclass(frozen=True)
class EngineConfig:
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    schedule_interval: float = 1.0  # seconds between scheduling cycles (also woken on submit)
    monitor_interval: float = 10.0  # seconds between probes of one host
    dispatch_concurrency: int = 1000  # driver operations in flight at once
    pending_timeout: float = 0.0  # fail a VM that waited this long for a host; 0 = never
    batch_window: float = 0.005  # group-commit window for state changes
    #: the API's TCP port, for the STRATUS_URL a guest reports READY to (through its
    #: network's gateway); None when the API is not served (tests of the engine alone)
    api_port: int | None = None
    #: the API's URL as guests on bridge networks reach it (they report READY there);
    #: guests on user networks use their gateway, which QEMU forwards to loopback
    guest_url: str | None = None
    #: seconds a host stays out of placements after a cloud refused a deploy on it for
    #: capacity or quota (InsufficientInstanceCapacity...): the VM fails over meanwhile
    failover_cooldown: float = 300.0
    #: this daemon's API URL as partner zones reach it: they download the images of VMs
    #: that burst to them from signed links under it; None = no image follows a VM
    public_url: str | None = None
    #: the availability zone the metadata service reports for VMs whose METADATA names none
    availability_zone: str = "stratus-1a"
