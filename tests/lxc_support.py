"""An LXC lab for tests and the LXC bench: the driver, a host entry, a network namespace of
its own with the bridge at 192.168.150.1/24, and appliance containers numbered 1..N.

Container i gets 192.168.150.(100+i), MAC 02:00:c0:a8:96:<hex 100+i>, host name web<i>;
guests are reached only from inside the namespace. `lxc_lab()` cleans up every VM it
deployed and deletes the namespace when the block ends, even on failure.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stratus.drivers.base import DeploySpec, DiskSpec, HostInfo, NicSpec
from stratus.drivers.lxc import LxcDriver
from stratus.drivers.lxcconf import container_name
from tests.appliance_support import ensure_appliance
from tests.netns import Netns, new_netns

__all__ = ["BRIDGE", "GATEWAY", "MASK", "Lab", "lxc_lab"]

BRIDGE = "sbr0"
GATEWAY = "192.168.150.1"
MASK = "255.255.255.0"
HTTP_UP = b"HTTP server on port 80"  # the appliance's console line once it serves


@dataclass
class Lab:
    """A driver, a host entry, a namespace with the bridge, and the VMs to clean up."""

    driver: LxcDriver
    host: HostInfo
    ns: Netns
    data_dir: Path
    rootfs: Path
    made: list[tuple[HostInfo, DeploySpec]] = field(default_factory=list)

    def spec(self, i: int, *, request: int = 1, **changes: object) -> DeploySpec:
        """Container i: the appliance rootfs, one NIC on the bridge, its own context."""
        ip, mac = f"192.168.150.{100 + i}", f"02:00:c0:a8:96:{100 + i:02x}"
        context = (
            f"VMID='{i}'\nNAME='web{i}'\nSET_HOSTNAME='web{i}'\nETH0_MAC='{mac}'\n"
            f"ETH0_IP='{ip}'\nETH0_MASK='{MASK}'\nETH0_GATEWAY='{GATEWAY}'\n"
        )
        disk = DiskSpec(
            index=0, image_id=1, image="appliance", source=str(self.rootfs), format="tar",
            type="OS", persistent=False,
        )  # fmt: skip
        nic = NicSpec(
            index=0, network="lan", driver="bridge", mac=mac, ip=ip, mask=MASK,
            gateway=GATEWAY, bridge=BRIDGE, netns=self.ns.name,
        )  # fmt: skip
        fields: dict[str, object] = {
            "request_id": f"vm-{i}-{request}", "vm_id": i, "name": f"web{i}", "cpu": 0.5,
            "vcpu": 1, "memory": 128, "template": {}, "disks": (disk,), "nics": (nic,),
            "context": {"context.sh": context.encode()},
        }  # fmt: skip
        fields.update(changes)
        return DeploySpec(**fields)  # type: ignore[arg-type]

    def track(self, spec: DeploySpec, host: HostInfo | None = None) -> None:
        """Clean this VM up when the lab closes."""
        self.made.append((host or self.host, spec))

    async def up(self, spec: DeploySpec, host: HostInfo | None = None) -> str:
        """Prepare and deploy (cleaned up when the lab closes); the deploy id."""
        host = host or self.host
        self.track(spec, host)
        await self.driver.prepare(host, spec)
        return (await self.driver.deploy(host, spec)).deploy_id

    def get(self, i: int, timeout: float = 2.0) -> dict[str, object] | None:
        """GET / of container i from inside the namespace; None when it does not answer."""
        out = self.ns.http_get(f"http://192.168.150.{100 + i}/", timeout)
        return json.loads(out) if out else None

    async def answer(self, i: int, within: float = 20.0) -> dict[str, object]:
        """Container i's answer, polling until it comes (AssertionError after `within`).

        It first waits for the appliance's console to say its HTTP server is up: a GET
        sent before the guest has its address leaves the ARP entry incomplete, and the
        kernel retries it only a second later.
        """
        deadline = time.monotonic() + within
        host, spec = next((h, s) for h, s in reversed(self.made) if s.vm_id == i)
        deploy_id = container_name(i, spec.request_id)
        while time.monotonic() < deadline:
            log = await self.driver.console_log(host, deploy_id, 64 * 1024)
            if HTTP_UP in log.rsplit(b"booting the Stratus appliance", 1)[-1]:
                break
            await asyncio.sleep(0.02)
        while time.monotonic() < deadline:
            got = await asyncio.to_thread(self.get, i, 1.0)
            if got is not None:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"container {i} did not answer within {within} s")

    def attach(self, deploy_id: str, command: str) -> str:
        """Run a shell command inside the container (lxc-attach); its output."""
        run = self.ds / ".hosts" / self.host.name
        done = self.ns.run(
            ["lxc-attach", "-P", str(run), "-n", deploy_id, "--", "/bin/sh", "-c", command]
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    @property
    def ds(self) -> Path:
        """The system datastore of the lab's host entries."""
        return self.data_dir / "datastores" / "system"

    def containers(self, host: HostInfo | None = None) -> list[str]:
        """Containers with a config in the host entry's run directory."""
        run = self.ds / ".hosts" / (host or self.host).name
        return sorted(p.parent.name for p in run.glob("*/config"))

    async def cleanup(self) -> None:
        """Clean up every VM deployed so far (the driver's cleanup is idempotent)."""
        while self.made:
            host, spec = self.made.pop()
            await self.driver.cleanup(host, spec.vm_id, spec.request_id, None)


@asynccontextmanager
async def lxc_lab(data_dir: Path) -> AsyncIterator[Lab]:
    """A lab whose data dir is `data_dir`; everything it made is gone when it ends."""
    rootfs = ensure_appliance().rootfs
    with new_netns("lxc") as ns:
        driver = LxcDriver(data_dir)
        host = HostInfo(id=1, name="h1", options={"netns": ns.name}, labels={})
        lab = Lab(driver, host, ns, data_dir, rootfs)
        try:
            yield lab
        finally:
            try:
                await lab.cleanup()
            finally:
                await driver.close()
