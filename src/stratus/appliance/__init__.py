"""The Stratus test appliance: a tiny busybox Linux that boots in seconds under QEMU (TCG)
and runs as an LXC container, reads the Stratus context and answers HTTP on port 80.

A front-end tool (like the CLI): it builds files locally and imports only stratus.model.
"""

from __future__ import annotations

from stratus.appliance.build import (
    CMDLINE,
    Appliance,
    build_appliance,
    default_appliance_dir,
    load_appliance,
)

__all__ = ["CMDLINE", "Appliance", "build_appliance", "default_appliance_dir", "load_appliance"]
