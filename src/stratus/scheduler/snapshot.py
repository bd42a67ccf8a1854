"""The scheduler's view of the hosts: one column per attribute, free capacity updated live."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from stratus.model.expr_compile import (
    BoolArray,
    Columns,
    FloatArray,
    MappingColumns,
    TextArray,
    numbers_as_text,
)
from stratus.model.records import Host, HostState

__all__ = ["DYNAMIC_COLUMNS", "HostSnapshot", "IntArray", "Rows"]

IntArray = npt.NDArray[np.intp]
Rows = IntArray | slice  # row indices, or slice(None) for every host

#: Columns that placements change within one plan() call; every other column is static.
DYNAMIC_COLUMNS: frozenset[str] = frozenset(
    {"USED_CPU", "USED_MEM", "FREE_CPU", "FREE_MEM", "RUNNING_VMS"}
)


def _attributes(host: Host) -> dict[str, object]:
    """A host's static attributes: monitoring, then labels, then the built-in columns win.

    PUBLIC_CLOUD is "NO" unless a label or the probe says otherwise, so that
    `PUBLIC_CLOUD != "YES"` holds on local hosts (a missing attribute compares false).
    """
    attrs: dict[str, object] = {"PUBLIC_CLOUD": "NO"}
    attrs.update((key.upper(), value) for key, value in host.monitoring.items())
    attrs.update((key.upper(), value) for key, value in host.labels.items())
    attrs.update(
        ID=host.id,
        NAME=host.name,
        STATE=host.state.value,
        DRIVER=host.driver,
        TOTAL_CPU=host.cpu,
        TOTAL_MEM=host.memory,
    )
    return attrs


class HostSnapshot:
    """Host attributes as `Columns` over N hosts sorted by id, built once per scheduling cycle;
    `place()` moves capacity from FREE_* to USED_* so later placements in the cycle see it."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        ordered = sorted(hosts, key=lambda host: host.id)
        self.ids: IntArray = np.array([host.id for host in ordered], dtype=np.intp)
        self.names: list[str] = [host.name for host in ordered]
        self.states: list[HostState] = [host.state for host in ordered]
        self.monitored: BoolArray = np.array(
            [state is HostState.MONITORED for state in self.states], dtype=bool
        )
        self._static = MappingColumns([_attributes(host) for host in ordered])
        total_cpu = np.array([host.cpu for host in ordered], dtype=np.float64)
        total_mem = np.array([host.memory for host in ordered], dtype=np.float64)
        self.used_cpu: FloatArray = np.array([h.usage.cpu for h in ordered], dtype=np.float64)
        self.used_mem: FloatArray = np.array([h.usage.memory for h in ordered], dtype=np.float64)
        self.free_cpu: FloatArray = total_cpu - self.used_cpu
        self.free_mem: FloatArray = total_mem - self.used_mem
        self.running_vms: FloatArray = np.array([h.usage.vms for h in ordered], dtype=np.float64)
        self._live = {
            "USED_CPU": self.used_cpu,
            "USED_MEM": self.used_mem,
            "FREE_CPU": self.free_cpu,
            "FREE_MEM": self.free_mem,
            "RUNNING_VMS": self.running_vms,
        }

    @classmethod
    def from_hosts(cls, hosts: Sequence[Host]) -> HostSnapshot:
        """The snapshot of these hosts, with their current usage."""
        return cls(hosts)

    @property
    def size(self) -> int:
        return len(self.names)

    def numeric(self, name: str) -> FloatArray:
        live = self._live.get(name)
        return live if live is not None else self._static.numeric(name)

    def text(self, name: str) -> TextArray:
        live = self._live.get(name)
        return numbers_as_text(live) if live is not None else self._static.text(name)

    def rows(self, rows: Rows) -> Columns:
        """The same columns restricted to some rows (for re-evaluating the hosts that changed)."""
        return self if isinstance(rows, slice) else _RowsView(self, rows)

    def place(self, row: int, cpu: float, memory: int) -> None:
        """Allocates one VM's capacity on the host at `row`."""
        self.used_cpu[row] += cpu
        self.free_cpu[row] -= cpu
        self.used_mem[row] += memory
        self.free_mem[row] -= memory
        self.running_vms[row] += 1


class _RowsView:
    """Columns of a snapshot restricted to some of its rows."""

    def __init__(self, snapshot: HostSnapshot, rows: IntArray) -> None:
        self._snapshot = snapshot
        self._rows = rows

    @property
    def size(self) -> int:
        return len(self._rows)

    def numeric(self, name: str) -> FloatArray:
        return self._snapshot.numeric(name)[self._rows]

    def text(self, name: str) -> TextArray:
        if name in DYNAMIC_COLUMNS:
            return numbers_as_text(self.numeric(name))
        return self._snapshot.text(name)[self._rows]
