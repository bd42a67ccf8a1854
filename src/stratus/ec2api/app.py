"""The EC2 Query API as an ASGI app: SigV4 check, Action dispatch, XML answers and errors.

Routed by `api.app.create_app` at /ec2 on the daemon's listener (endpoint
http://HOST:PORT/ec2). Actions are an explicit table; any other answers UnsupportedOperation.
Every failure leaves as AWS's XML error document with AWS's code and HTTP status.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stratus.ec2api import (
    addresses,
    images,
    instances,
    keypairs,
    launch,
    regions,
    security_groups,
    tags,
)
from stratus.ec2api.config import Ec2ApiConfig
from stratus.ec2api.context import Ec2Context, Handler, UserLocks
from stratus.ec2api.protocol import Ec2Error, Params, error_body, render
from stratus.ec2api.sigv4 import SignedRequest, verify
from stratus.ec2api.users import UserService
from stratus.engine.core import Engine
from stratus.model.errors import (
    AuthError,
    Conflict,
    DriverError,
    IllegalOperation,
    InvalidInput,
    NotFound,
    StratusError,
    Unsupported,
)

__all__ = ["ACTIONS", "EC2_PATH", "ec2_routes"]

log = logging.getLogger(__name__)

EC2_PATH = "/ec2"
MAX_BODY = 1024 * 1024  # bytes of one request's parameters
_XML = "text/xml;charset=UTF-8"

#: Action name -> handler. Anything else answers UnsupportedOperation.
ACTIONS: dict[str, Handler] = {
    "RunInstances": launch.run_instances,
    "DescribeInstances": instances.describe_instances,
    "TerminateInstances": instances.terminate_instances,
    "StopInstances": instances.stop_instances,
    "StartInstances": instances.start_instances,
    "RebootInstances": instances.reboot_instances,
    "DescribeImages": images.describe_images,
    "RegisterImage": images.register_image,
    "DeregisterImage": images.deregister_image,
    "CreateKeyPair": keypairs.create_key_pair,
    "ImportKeyPair": keypairs.import_key_pair,
    "DescribeKeyPairs": keypairs.describe_key_pairs,
    "DeleteKeyPair": keypairs.delete_key_pair,
    "CreateSecurityGroup": security_groups.create_security_group,
    "AuthorizeSecurityGroupIngress": security_groups.authorize_ingress,
    "DescribeSecurityGroups": security_groups.describe_security_groups,
    "DeleteSecurityGroup": security_groups.delete_security_group,
    "AllocateAddress": addresses.allocate_address,
    "AssociateAddress": addresses.associate_address,
    "DisassociateAddress": addresses.disassociate_address,
    "ReleaseAddress": addresses.release_address,
    "DescribeAddresses": addresses.describe_addresses,
    "DescribeRegions": regions.describe_regions,
    "DescribeAvailabilityZones": regions.describe_availability_zones,
    "DescribeInstanceTypes": regions.describe_instance_types,
    "DescribeAccountAttributes": regions.describe_account_attributes,
    "CreateTags": tags.create_tags,
    "DeleteTags": tags.delete_tags,
    "DescribeTags": tags.describe_tags,
}


def _translate(exc: StratusError) -> Ec2Error:
    """A Stratus error from the engine or store as the EC2 error closest to it."""
    text = str(exc)
    if isinstance(exc, InvalidInput | NotFound):
        return Ec2Error("InvalidParameterValue", text)
    if isinstance(exc, IllegalOperation):
        return Ec2Error("IncorrectInstanceState", text)
    if isinstance(exc, Unsupported):
        return Ec2Error("UnsupportedOperation", text)
    if isinstance(exc, Conflict):
        return Ec2Error("IncorrectState", text)
    if isinstance(exc, AuthError):
        return Ec2Error("AuthFailure", text, 401)
    if isinstance(exc, DriverError):
        return Ec2Error("Unavailable", text, 503)
    log.error("EC2 API: %s", text)
    return Ec2Error("InternalError", "the server failed; the details are in its log", 500)


class _Ec2Api:
    """The one endpoint: POST (or GET) / with Action=... and a SigV4 signature."""

    def __init__(self, engine: Engine, config: Ec2ApiConfig, users: UserService) -> None:
        self.engine = engine
        self.config = config
        self.users = users
        self.limiter = CapacityLimiter(8)
        self.locks = UserLocks()

    async def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            action, answer = await self._answer(request, request_id)
            if action.startswith("Describe"):  # big answers are written off the loop
                body = await anyio.to_thread.run_sync(render, action, request_id, answer)
            else:
                body = render(action, request_id, answer)
            return Response(body, media_type=_XML)
        except Ec2Error as exc:
            error = exc
        except StratusError as exc:
            error = _translate(exc)
        except Exception:  # the outermost catch of a request: logged, answered as AWS does
            log.exception("EC2 API request %s failed unexpectedly", request_id)
            error = Ec2Error("InternalError", "the server failed; the details are in its log", 500)
        return Response(error_body(error, request_id), status_code=error.status, media_type=_XML)

    async def _answer(self, request: Request, request_id: str) -> tuple[str, Any]:
        try:
            body = await request.body()
        except HTTPException as exc:  # the app's body limit
            raise Ec2Error("InvalidParameterValue", str(exc.detail), 413) from None
        if len(body) > MAX_BODY:
            raise Ec2Error("InvalidParameterValue", f"the request is over {MAX_BODY} bytes", 413)
        scope = request.scope
        query = scope.get("query_string", b"").decode("latin-1")
        signed = SignedRequest(
            method=request.method,
            raw_path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            query_string=query,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=body,
        )
        key_id = verify(
            signed,
            region=self.config.region,
            max_skew=self.config.max_skew,
            secret_of=self.users.secret_of,
        )
        caller = self.users.caller(key_id)
        if caller is None:  # deleted between the check and now
            raise Ec2Error("AuthFailure", "the access key was deleted", 401)
        try:
            form = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Ec2Error("InvalidParameterValue", "the request body is not UTF-8") from None
        pairs = parse_qsl(query, keep_blank_values=True)
        pairs += parse_qsl(form, keep_blank_values=True)
        params = Params.parse(pairs)
        action = params.text("Action", max_len=128)
        if not action:
            raise Ec2Error("MissingAction", "The request must contain the parameter Action")
        handler = ACTIONS.get(action)
        if handler is None:
            raise Ec2Error(
                "UnsupportedOperation",
                f"The action {action} is not supported by Stratus's EC2 API "
                f"(supported: {', '.join(sorted(ACTIONS))})",
            )
        ctx = Ec2Context(
            engine=self.engine,
            config=self.config,
            caller=caller,
            request_id=request_id,
            dry_run=params.flag("DryRun"),
            endpoint=_endpoint(request),
            limiter=self.limiter,
            locks=self.locks,
        )
        answer = await handler(ctx, params)
        ctx.commit()  # a DryRun that got this far would have succeeded
        return action, answer


def _endpoint(request: Request) -> str:
    host = request.headers.get("host", "localhost")
    return f"{request.url.scheme}://{host}{EC2_PATH}"


def ec2_routes(engine: Engine, config: Ec2ApiConfig, users: UserService) -> list[Route]:
    """The EC2 API over `engine`: its endpoint is EC2_PATH, with or without the final /
    (botocore signs and sends the path exactly as the endpoint URL gives it)."""
    api = _Ec2Api(engine, config, users)
    methods = ["GET", "POST"]
    return [
        Route(EC2_PATH, api.handle, methods=methods, include_in_schema=False),
        Route(f"{EC2_PATH}/", api.handle, methods=methods, include_in_schema=False),
    ]
