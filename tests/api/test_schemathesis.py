"""Property-based fuzzing of every documented route: no input makes the server fail (5xx).

Schemathesis's pytest plugin (`from_fixture`) does not run under pytest 9, so each
operation gets its own Hypothesis run through the Python API, with a bounded budget.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import TOKEN, LiveServer, add_host, submit

pytestmark = pytest.mark.slow

Operation = APIOperation[Any, Any, Any, Any]

EXAMPLES = 50  # per operation and mode: ~10 operations x 2 modes run in well under 60 s


def _fuzz(operation: Operation, mode: GenerationMode, server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {server.token}"}

    checks = [
        not_a_server_error,  # the point of this test
        status_code_conformance,  # and the OpenAPI document tells the truth
        content_type_conformance,
        response_schema_conformance,
    ]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Operation]) -> None:
        case.call_and_validate(base_url=server.url, headers=auth, checks=checks)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_makes_the_server_fail(
    live_server: LiveServer, mode: GenerationMode
) -> None:
    with live_server.client() as api:  # something to find: a host, VMs on hold
        add_host(api, "node1")
        submit(api, count=3, hold=True)
    schema = schemathesis.openapi.from_url(
        f"{live_server.api}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 10, "the OpenAPI document has invalid operations"
    failures = []
    for operation in operations:
        try:
            _fuzz(operation, mode, live_server)
        except Unsatisfiable:  # nothing to break in a request without parameters
            assert mode is GenerationMode.NEGATIVE
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
