"""LXC system containers (Debian's lxc tools) on this machine or an SSH host.

Layout on the host, in its system datastore `ds` (see access.system_datastore):

    <ds>/.images/<image_id>/rootfs      the image's root filesystem, extracted once
    <ds>/<vm_id>/                       the VM directory, from prepare to cleanup:
        upper/ work/                    the container's overlay (writes land here)
        context/                        context files, bind-mounted read-only at /mnt/context
        console.log  lxc.log  network   console, LXC's errors, veths to delete at cleanup
    <ds>/.hosts/<host name>/            this host entry's lxcpath (`lxc-* -P`):
        <deploy_id>/config  netns       the container's config and its network namespace

A deploy copies nothing: the rootfs is an overlay whose lower layer is the cached image.

Network namespaces: LXC's command socket is an abstract unix socket, so it belongs to the
network namespace its monitor was started in. A container whose bridge lives in a named
namespace is started in that namespace and every later `lxc-*` call enters it too (the
name is kept in `<deploy_id>/netns`). `ip netns exec` cannot be used to start it: it
remounts /sys without the cgroup mounts LXC needs, so the start script mounts the
namespace's sysfs itself and moves the cgroup tree onto it.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratus.drivers.access import AccessPool, HostAccess, system_datastore
from stratus.drivers.base import (
    DeploySpec,
    DiskSpec,
    Driver,
    HostInfo,
    InstanceInfo,
    InstanceState,
    ProbeResult,
)
from stratus.drivers.hostprobe import read_figures
from stratus.drivers.lxcconf import (
    LXC_STATES,
    ContainerPaths,
    HostFacts,
    as_int,
    bridge_nics,
    check_path,
    container_name,
    context_tar,
    lxc_failure,
    render_config,
    root_disk,
    vm_id_of,
)
from stratus.drivers.netdev import (
    bridge_list_script,
    delete_link,
    ensure_bridge,
    gateway_cidr,
    parse_bridge_list,
    veth_name,
)
from stratus.drivers.transfer import remove_vm_dir, stage_image
from stratus.model.errors import DriverError, DriverTimeout, Unsupported

__all__ = ["LxcDriver"]

_TOOL_TIMEOUT = 30.0
_STAGE_TIMEOUT = 600.0
_NO_CRIU = "containers here have no CRIU checkpointing, so their memory state cannot be saved"

# Runs "$@" (an lxc-* command) in the namespace the container was started in; prints
# _ABSENT instead when the container has no config.
_ABSENT = "stratus: no such container"
_IN_NETNS = f"""[ -f {{ct}}/config ] || {{ echo '{_ABSENT}'; exit 0; }}
ns=$(cat {{ct}}/netns 2>/dev/null || true)
if [ -n "$ns" ]; then exec nsenter --net="/run/netns/$ns" -- "$@"; fi
exec "$@"
"""

# Starts the container, in its namespace when it has one (see the module docstring).
_START = """set -e
: > {log}
ns=$(cat {ct}/netns 2>/dev/null || true)
if [ -z "$ns" ]; then exec "$@"; fi
exec unshare --mount --propagation private -- nsenter --net="/run/netns/$ns" -- sh -c '
set -e
d=$(mktemp -d {run}/.sysfs.XXXXXX)
mount -t sysfs sysfs "$d"
if mountpoint -q /sys/fs/cgroup; then mount --move /sys/fs/cgroup "$d/fs/cgroup"; fi
umount -l /sys
mount --move "$d" /sys
rmdir "$d"
exec "$@"' sh "$@"
"""

_FACTS = """echo "version $(lxc-start --version 2>/dev/null || echo missing)"
echo "cgroupfs $(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo none)"
for f in /usr/share/lxc/config/common.conf /usr/local/share/lxc/config/common.conf; do
  [ -f "$f" ] && echo "common $f" && break
done
true
"""

# Lists this host entry's containers, one "ct NAME STATE PID CPU_NS MEM_BYTES CGROUP" line
# each. The cgroup comes from the init's /proc/PID/cgroup, not from the container's name
# (LXC adds a suffix when two lxcpaths hold containers of the same name); the guest can
# name its cgroups, so awk reads them as data and nothing is evaluated.
_USAGE = r"""$2 == "memory" { m = $3 }
$2 ~ /(^|,)cpuacct(,|$)/ { a = $2 $3 }
$1 == "0" { u = $3 }
END {
  if (m != "") {
    cg = "/sys/fs/cgroup/memory" m; getline mem < (cg "/memory.usage_in_bytes")
    getline cpu < ("/sys/fs/cgroup/" a "/cpuacct.usage")
  } else {
    cg = "/sys/fs/cgroup" u; getline mem < (cg "/memory.current")
    while ((getline line < (cg "/cpu.stat")) > 0)
      if (split(line, f, " ") == 2 && f[1] == "usage_usec") cpu = f[2] * 1000
  }
  printf "%.0f %.0f %s\n", cpu, mem, cg
}"""
_PROBE = r"""echo "bridges $( ({bridges}) | tr '\n' ' ')"
for c in {run}/*/config; do
  [ -f "$c" ] || continue
  d=${{c%/config}}; n=${{d##*/}}; ns=$(cat "$d/netns" 2>/dev/null || true)
  enter=; [ -z "$ns" ] || enter="nsenter --net=/run/netns/$ns --"
  st=ERROR; pid=0; key=; usage="0 0 -"
  for w in $($enter lxc-info -P {run} -n "$n" -s -p -H 2>/dev/null); do
    case "$key" in State:) st=$w ;; PID:) pid=$w ;; esac; key=$w
  done
  if [ "$pid" != 0 ]; then usage=$(awk -F: {usage} "/proc/$pid/cgroup" 2>/dev/null); fi
  echo "ct $n $st $pid ${{usage:-0 0 -}}"
done
"""


@dataclass(frozen=True)
class _Place:
    """Where one container and its VM lie on a host."""

    ds: str
    run_dir: str  # the host entry's lxcpath
    vm_dir: str
    name: str

    @property
    def ct_dir(self) -> str:
        return f"{self.run_dir}/{self.name}"


class LxcDriver(Driver):
    """System containers through the lxc-* tools; one object serves every host."""

    name = "lxc"
    unsupported = {
        "save": _NO_CRIU + "; use poweroff (the root filesystem persists) or suspend",
        "live_migrate": _NO_CRIU + ", so a running container cannot move",
    }

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self._pool = AccessPool()
        self._facts: dict[str, HostFacts] = {}
        self._cpu_samples: dict[tuple[str, str], tuple[float, int]] = {}

    async def close(self) -> None:
        await self._pool.close()

    # -- places and tools ----------------------------------------------------------------
    def _place(self, host: HostInfo, vm_id: int, name: str) -> _Place:
        ds = system_datastore(host, self.data_dir).rstrip("/")
        return _Place(ds, check_path(f"{ds}/.hosts/{host.name}"), f"{ds}/{vm_id}", name)

    def _place_of(self, host: HostInfo, deploy_id: str) -> _Place:
        return self._place(host, vm_id_of(deploy_id), deploy_id)

    async def _lxc(
        self, access: HostAccess, place: _Place, tool: str, *args: str, **run: Any
    ) -> tuple[int, str]:
        """Run an lxc-* tool on the container, in its network namespace; (exit, output).
        `run` takes HostAccess.run's timeout and check (default: 30 s, checked)."""
        script = _IN_NETNS.replace("{ct}", shlex.quote(place.ct_dir))
        argv = ["sh", "-c", script, "sh", tool, "-P", place.run_dir, "-n", place.name, *args]
        result = await access.run(argv, **({"timeout": _TOOL_TIMEOUT} | run))
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        return result.returncode, output

    async def _host_facts(self, access: HostAccess, host: HostInfo) -> HostFacts:
        facts = self._facts.get(host.name)
        if facts is None:
            values = dict(
                line.split(" ", 1)
                for line in (await access.sh(_FACTS)).text.splitlines()
                if " " in line
            )
            if values.get("version", "missing") == "missing":
                raise DriverError(
                    f"LXC is not installed on {access.where}; install the lxc package there"
                )
            facts = HostFacts(
                version=values["version"].strip(),
                cgroup2=values.get("cgroupfs", "").strip() == "cgroup2fs",
                common_conf=values.get("common", "").strip() or None,
            )
            self._facts[host.name] = facts
        return facts

    async def _state(self, access: HostAccess, place: _Place) -> InstanceState | None:
        """The container's state; None when it has no config on the host."""
        code, out = await self._lxc(access, place, "lxc-info", "-sH", check=False)
        if out == _ABSENT:
            return None
        if code != 0:
            raise DriverError(
                f"lxc-info of container {place.name} failed on {access.where}: {out[-300:]}"
            )
        return LXC_STATES.get(out.splitlines()[-1].strip() if out else "", InstanceState.ERROR)

    async def _live_state(self, access: HostAccess, place: _Place) -> InstanceState:
        state = await self._state(access, place)
        if state is None:
            raise DriverError(
                f"container {place.name} does not exist on {access.where}; "
                "it was destroyed or never deployed"
            )
        return state

    async def _containers_of(self, access: HostAccess, host: HostInfo, vm_id: int) -> list[str]:
        """The containers of one VM in this host entry's run directory (any request)."""
        run = shlex.quote(self._place(host, vm_id, "").run_dir)
        listed = await access.sh(f"cd {run} 2>/dev/null && ls -d stratus-{vm_id}-*", check=False)
        return [name for name in listed.text.split() if vm_id_of(name) == vm_id]

    async def _start(self, access: HostAccess, place: _Place) -> None:
        q = shlex.quote
        log = f"{place.vm_dir}/lxc.log"
        script = _START.format(ct=q(place.ct_dir), run=q(place.run_dir), log=q(log))
        lxc_start = ["lxc-start", "-P", place.run_dir, "-n", place.name, "-o", log, "-l", "ERROR"]
        result = await access.run(
            ["sh", "-c", script, "sh", *lxc_start], timeout=_TOOL_TIMEOUT, check=False
        )
        if result.returncode != 0:
            # LXC 5.0 leaves the (empty) cgroups of an aborted start; rmdir spares busy ones.
            groups = " ".join(
                f"/sys/fs/cgroup{level}/lxc.{kind}.{place.name}"
                for level in ("", "/*")
                for kind in ("monitor", "payload")
            )
            tail = await access.sh(
                f"for g in {groups}; do rmdir $g 2>/dev/null; done; tail -n 20 {q(log)}",
                check=False,
            )
            text = tail.text or result.stderr.decode(errors="replace")
            raise lxc_failure("start", place.name, access.where, text)

    # -- staging -------------------------------------------------------------------------
    async def _stage_rootfs(self, access: HostAccess, ds: str, disk: DiskSpec) -> str:
        """Extract (or copy) the image into the host's cache once; return its rootfs."""
        q = shlex.quote
        cache = f"{ds}/.images/{disk.image_id}"
        rootfs = f"{cache}/rootfs"
        source = await stage_image(access, ds, disk)  # pushed once to a remote host
        fill = (
            f'tar --numeric-owner -xpf {q(source)} -C "$tmp"'
            if disk.format == "tar"
            else f'cp -a {q(source)}/. "$tmp"/'
        )
        # One extraction per image: concurrent deploys wait on a lock file, and the rootfs
        # is extracted beside the cache then renamed, so nobody sees half of it.
        script = (
            f"set -e\n[ -d {q(rootfs)} ] && exit 0\n"
            f"test -e {q(source)} || {{ echo 'image file {source} is missing' >&2; exit 1; }}\n"
            f"mkdir -p {q(cache)}\nexec 9> {q(cache)}/.lock\n"
            f"flock -w {int(_STAGE_TIMEOUT)} 9\n[ -d {q(rootfs)} ] && exit 0\n"
            f"tmp=$(mktemp -d {q(rootfs)}.tmp.XXXXXX)\n"
            f'{fill} || {{ rm -rf "$tmp"; exit 1; }}\n'
            f'chmod 755 "$tmp"\nmv -T "$tmp" {q(rootfs)}\n'
        )
        result = await access.sh(script, timeout=_STAGE_TIMEOUT, check=False)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()[-400:]
            raise DriverError(
                f"could not unpack image {disk.image} ({disk.format}) on {access.where}: "
                f"{detail}; check that the image is a root filesystem {disk.format}"
            )
        return rootfs

    # -- Driver: life-cycle ----------------------------------------------------------------
    async def prepare(self, host: HostInfo, spec: DeploySpec) -> None:
        """Stage the image, the VM directory (overlay dirs) and the context files."""
        bridge_nics(spec)
        disk = root_disk(spec)
        access = await self._pool.get(host)
        place = self._place(host, spec.vm_id, container_name(spec.vm_id, spec.request_id))
        await self._stage_rootfs(access, place.ds, disk)
        vm, ctx = shlex.quote(place.vm_dir), shlex.quote(f"{place.vm_dir}/context")
        script = (
            f"set -e\nmkdir -p {vm}/upper {vm}/work\nrm -rf {ctx}\nmkdir -m 700 {ctx}\n"
            f"tar -xf - -C {ctx}"
        )
        tar = context_tar(spec.context or {})
        await access.run(["sh", "-c", script], input=tar, timeout=_TOOL_TIMEOUT)

    async def deploy(self, host: HostInfo, spec: DeploySpec) -> InstanceInfo:
        """Write the container's config and start it; a retried request finds it running."""
        if spec.checkpoint is not None:
            raise DriverError(f"the lxc driver cannot restore checkpoint {spec.checkpoint}")
        nics, netns = bridge_nics(spec)
        disk = root_disk(spec)
        access = await self._pool.get(host)
        facts = await self._host_facts(access, host)
        place = self._place(host, spec.vm_id, container_name(spec.vm_id, spec.request_id))
        state = await self._state(access, place)
        if state in (InstanceState.RUNNING, InstanceState.PAUSED):
            return InstanceInfo(deploy_id=place.name, state=state)
        # The VM's earlier container, left when its guest powered itself off.
        for name in await self._containers_of(access, host, spec.vm_id):
            old = self._place_of(host, name)
            if name != place.name and await self._state(access, old) is InstanceState.OFF:
                await self.destroy(host, name)
        for bridge, ns, cidr in sorted(
            {(n.bridge or "", n.netns, gateway_cidr(n.gateway, n.mask)) for n in nics},
            key=str,
        ):
            await ensure_bridge(access, bridge, ns, cidr)
        paths = ContainerPaths(
            rootfs=f"{place.ds}/.images/{disk.image_id}/rootfs",
            vm_dir=place.vm_dir,
            veths=tuple(veth_name(spec.vm_id, nic.index) for nic in nics),
        )
        config = render_config(spec, paths, facts)
        network = "".join(f"{netns or ''} {veth}\n" for veth in paths.veths)
        q = shlex.quote
        missing = "run prepare (PROLOG) first: the VM directory or image is missing"
        await access.sh(
            f"set -e\nfor d in {q(paths.rootfs)} {q(place.vm_dir)}/upper; do\n"
            f'  [ -d "$d" ] || {{ echo "$d: {missing}" >&2; exit 1; }}\ndone\n'
            f"mkdir -p {q(place.ct_dir)}\nprintf %s {q(config)} > {q(place.ct_dir)}/config\n"
            f"printf %s {q(netns or '')} > {q(place.ct_dir)}/netns\n"
            f"printf %s {q(network)} > {q(place.vm_dir)}/network\n",
            timeout=_TOOL_TIMEOUT,
        )
        await self._start(access, place)
        return InstanceInfo(deploy_id=place.name, state=InstanceState.RUNNING)

    async def shutdown(self, host: HostInfo, deploy_id: str, timeout: float) -> None:
        """Send the halt signal (SIGUSR2: busybox init powers off) and wait for the stop."""
        access = await self._pool.get(host)
        place = self._place_of(host, deploy_id)
        if await self._state(access, place) in (None, InstanceState.OFF):
            return
        wait = max(1, round(timeout))
        stop = ("lxc-stop", "--nokill", "-t", str(wait))
        await self._lxc(access, place, *stop, timeout=wait + _TOOL_TIMEOUT, check=False)
        if await self._state(access, place) not in (None, InstanceState.OFF):
            raise DriverTimeout(
                f"container {deploy_id} was still running {wait} s after the halt signal; "
                "its init ignored SIGUSR2 (destroy powers it off hard)"
            )

    async def destroy(self, host: HostInfo, deploy_id: str) -> None:
        """Kill the container and remove its config; the VM directory stays (poweroff)."""
        access = await self._pool.get(host)
        place = self._place_of(host, deploy_id)
        state = await self._state(access, place)
        if state is None:
            return
        if state is not InstanceState.OFF:
            code, out = await self._lxc(access, place, "lxc-stop", "-k", check=False)
            if code not in (0, 2) or await self._state(access, place) is not InstanceState.OFF:
                raise DriverError(
                    f"could not kill container {deploy_id} on {access.where}: {out[-300:]}"
                )
        await access.run(["rm", "-rf", "--", place.ct_dir], timeout=_TOOL_TIMEOUT)

    async def reboot(self, host: HostInfo, deploy_id: str, hard: bool) -> None:
        """Soft: the reboot signal (SIGTERM: busybox init reboots), LXC starts it again.
        Hard: kill and start again."""
        access = await self._pool.get(host)
        place = self._place_of(host, deploy_id)
        if await self._live_state(access, place) is not InstanceState.RUNNING:
            raise DriverError(f"container {deploy_id} is not running; resume or start it first")
        if hard:
            await self._lxc(access, place, "lxc-stop", "-k", check=False)
            await self._start(access, place)
            return
        code, out = await self._lxc(
            access, place, "lxc-stop", "-r", "-t", "60", timeout=60 + _TOOL_TIMEOUT, check=False
        )
        if code != 0:
            raise DriverError(
                f"container {deploy_id} did not reboot on {access.where}: {out[-300:]}"
            )

    async def suspend(self, host: HostInfo, deploy_id: str) -> None:
        """Freeze every process of the container (cgroup freezer); memory stays in place."""
        access = await self._pool.get(host)
        place = self._place_of(host, deploy_id)
        state = await self._live_state(access, place)
        if state is InstanceState.PAUSED:
            return
        if state is not InstanceState.RUNNING:
            raise DriverError(f"container {deploy_id} is {state.value}, not running")
        code, out = await self._lxc(access, place, "lxc-freeze", check=False)
        if code != 0:
            raise lxc_failure("freeze", deploy_id, access.where, out)

    async def resume(self, host: HostInfo, deploy_id: str) -> InstanceInfo:
        access = await self._pool.get(host)
        place = self._place_of(host, deploy_id)
        if await self._live_state(access, place) is InstanceState.PAUSED:
            code, out = await self._lxc(access, place, "lxc-unfreeze", check=False)
            if code != 0:
                raise lxc_failure("thaw", deploy_id, access.where, out)
        state = await self._live_state(access, place)
        if state is not InstanceState.RUNNING:
            raise DriverError(f"container {deploy_id} is {state.value} after resume")
        return InstanceInfo(deploy_id=deploy_id, state=state)

    async def save(self, host: HostInfo, deploy_id: str) -> str:
        raise Unsupported(f"the lxc driver cannot save: {self.unsupported['save']}")

    async def live_migrate(
        self, source: HostInfo, deploy_id: str, target: HostInfo
    ) -> InstanceInfo:
        raise Unsupported(f"the lxc driver cannot live-migrate: {self.unsupported['live_migrate']}")

    async def cleanup(
        self,
        host: HostInfo,
        vm_id: int,
        request_id: str,
        deploy_id: str | None,
        *,
        keep_disks: bool = False,
    ) -> None:
        """Kill the container(s), delete leftover veths and the VM directory; idempotent."""
        access = await self._pool.get(host)
        for name in await self._containers_of(access, host, vm_id):
            await self.destroy(host, name)
        place = self._place(host, vm_id, container_name(vm_id, request_id))
        listed = await access.sh(
            f"cat {shlex.quote(place.vm_dir)}/network 2>/dev/null", check=False
        )
        for line in listed.text.splitlines():
            netns, _, veth = line.strip().rpartition(" ")
            if veth:
                await delete_link(access, veth, netns or None)
        if not keep_disks:
            await remove_vm_dir(access, place.vm_dir)

    async def console_log(self, host: HostInfo, deploy_id: str, max_bytes: int) -> bytes:
        access = await self._pool.get(host)
        log = shlex.quote(f"{self._place_of(host, deploy_id).vm_dir}/console.log")
        result = await access.sh(f"tail -c {int(max_bytes)} {log} 2>/dev/null", check=False)
        return result.stdout

    # -- Driver: probe -------------------------------------------------------------------
    async def probe(self, host: HostInfo) -> ProbeResult:
        """Host figures, LXC version, bridges, and this host entry's containers."""
        access = await self._pool.get(host)
        ds = check_path(system_datastore(host, self.data_dir).rstrip("/"))
        figures = await read_figures(access, ds)
        facts = await self._host_facts(access, host)
        run_dir = shlex.quote(f"{ds}/.hosts/{host.name}")
        netns = host.options.get("netns") or None
        script = _PROBE.format(
            run=run_dir, bridges=bridge_list_script(netns), usage=shlex.quote(_USAGE)
        )
        text = (await access.sh(script, timeout=_TOOL_TIMEOUT, check=False)).text
        bridges: list[str] = []
        instances: dict[str, InstanceInfo] = {}
        now = time.monotonic()
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "bridges":
                bridges = parse_bridge_list(rest.replace(" ", "\n"))
            elif kind == "ct" and len(fields := rest.split(maxsplit=5)) == 6:
                name, state_word, pid, cpu_ns, mem, cgroup = fields
                state = LXC_STATES.get(state_word, InstanceState.ERROR)
                used = math.ceil(as_int(mem) / 2**20) if state is not InstanceState.OFF else 0
                instances[name] = InstanceInfo(
                    deploy_id=name,
                    state=state,
                    cpu_usage=self._cpu_rate(host.name, name, now, as_int(cpu_ns)),
                    memory_usage=used,
                    extra={"lxc_state": state_word, "pid": as_int(pid), "cgroup": cgroup},
                )
        for key in [k for k in self._cpu_samples if k[0] == host.name and k[1] not in instances]:
            del self._cpu_samples[key]
        attributes = figures.attributes() | {
            "HYPERVISOR": "lxc",
            "LXC_VERSION": facts.version,
            "BRIDGES": " ".join(bridges),
        }
        return ProbeResult(
            cpu=float(figures.cpus),
            memory=figures.memory_mb,
            free_memory=figures.free_memory_mb,
            load=figures.load1,
            attributes=attributes,
            instances=instances,
        )

    def _cpu_rate(self, host: str, name: str, now: float, usage_ns: int) -> float:
        """Physical CPUs in use since the previous probe (0 on the first one)."""
        previous = self._cpu_samples.get((host, name))
        self._cpu_samples[(host, name)] = (now, usage_ns)
        if previous is None or now <= previous[0] or usage_ns < previous[1]:
            return 0.0
        return round((usage_ns - previous[1]) / 1e9 / (now - previous[0]), 3)
