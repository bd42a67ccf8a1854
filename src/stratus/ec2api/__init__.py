"""The EC2 Query API (floor 5): boto3 and the aws CLI against Stratus, mounted at /ec2.

Requests are signed with Signature Version 4 under per-user access keys; answers are
EC2's XML. `app.create_ec2_app` builds the ASGI app; `config.Ec2ApiConfig` configures it.
"""

from __future__ import annotations

from stratus.ec2api.config import Ec2ApiConfig

__all__ = ["Ec2ApiConfig"]
