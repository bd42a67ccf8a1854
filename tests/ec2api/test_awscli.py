"""The aws CLI (the awscli package of the dev dependencies) with only --endpoint-url set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.ec2api.conftest import REGION, Account, Zone, wait_states


def _aws(
    zone: Zone, account: Account, *args: str, secret: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(zone.daemon.data_dir),  # no ~/.aws of the machine running the tests
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_ACCESS_KEY_ID": account.key_id,
        "AWS_SECRET_ACCESS_KEY": secret or account.secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    command = [sys.executable, "-m", "awscli", "ec2", *args, "--endpoint-url", zone.endpoint]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def _json(zone: Zone, account: Account, *args: str) -> Any:
    done = _aws(zone, account, *args, "--output", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def test_the_aws_cli_runs_tags_stops_starts_and_terminates_an_instance(
    zone: Zone, alice: Account, tmp_path: Path
) -> None:
    key = _json(zone, alice, "create-key-pair", "--key-name", "cli-key")
    assert key["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    group = _json(
        zone, alice, "create-security-group", "--group-name", "cli", "--description", "cli"
    )
    assert group["GroupId"].startswith("sg-")
    (tmp_path / "user-data.sh").write_text("#!/bin/sh\necho from-the-cli\n")
    reply = _json(
        zone,
        alice,
        "run-instances",
        "--image-id", zone.ami,
        "--count", "1",
        "--instance-type", "t2.micro",
        "--key-name", "cli-key",
        "--security-group-ids", group["GroupId"],
        "--user-data", f"file://{tmp_path / 'user-data.sh'}",
    )  # fmt: skip
    instance = reply["Instances"][0]["InstanceId"]
    assert zone.vm(instance)["template"]["METADATA"]["KEY_NAME"] == "cli-key"
    wait_states(alice.client, [instance], "running")  # polling: boto3 is quicker to start

    _json(zone, alice, "create-tags", "--resources", instance, "--tags", "Key=role,Value=cli")
    tagged = _json(
        zone, alice, "describe-instances", "--filters", "Name=tag:role,Values=cli",
        "--query", "Reservations[].Instances[].InstanceId",
    )  # fmt: skip
    assert tagged == [instance]

    stopping = _json(zone, alice, "stop-instances", "--instance-ids", instance)
    assert stopping["StoppingInstances"][0]["PreviousState"]["Name"] == "running"
    wait_states(alice.client, [instance], "stopped")
    _json(zone, alice, "start-instances", "--instance-ids", instance)
    wait_states(alice.client, [instance], "running")
    _json(zone, alice, "terminate-instances", "--instance-ids", instance)
    wait_states(alice.client, [instance], "terminated")


def test_the_aws_cli_with_a_wrong_secret_gets_auth_failure(zone: Zone, alice: Account) -> None:
    done = _aws(zone, alice, "describe-instances", secret="wrong-secret-0123456789012345678901")
    assert done.returncode != 0
    assert "AuthFailure" in done.stderr
    assert alice.secret not in done.stderr + done.stdout
