# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""moto made to behave as AWS does where `golden-ami audit` depends on it, so that API call
counts mean something. For the audit benchmark and tests/test_audit.py; a checkout tool, not
part of the installable package.

paging_like_aws(): moto 5.2.5 returns every container instance in one ListContainerInstances
page (AWS: at most maxResults, 100 by default and at most) and an empty list for a missing
cluster (AWS: ClusterNotFoundException); it accepts any number of container instances in
DescribeContainerInstances (AWS: 100) and of InstanceIds in DescribeInstances (1000).

capacity_providers_paged_like_aws(): moto 5.2.5 returns every capacity provider in one
DescribeCapacityProviders page; AWS returns at most maxResults (1-10, 10 without it) and
takes at most 100 names.

imds_defaults_stubbed(): moto 5.2.5 has no GetInstanceMetadataDefaults; botocore's Stubber
answers it.

run_command_stubbed(): moto 5.2.5 has no DescribeInstanceInformation nor ListCommandInvocations,
and its SendCommand runs nothing; botocore's Stubber answers all three from a fleet of hosts
whose checks pass, fail, never answer, or that SSM does not manage.

failing(): one operation answered with an AWS error over HTTP (a denial, a throttle), ahead of
moto and of the Stubbers above, so that botocore parses and retries it as it would AWS's own;
retrying_at_once() makes those retries few and without backoff, for the tests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from io import BytesIO
from unittest import mock

from botocore import xform_name
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.retries.standard import ExponentialBackoff
from botocore.stub import Stubber

from golden_ami import aws
from golden_ami.aws import Aws

# The operations failing() answers: the Stubbers here leave them to it.
_FAILING: set[str] = set()


@contextlib.contextmanager
def paging_like_aws() -> Iterator[None]:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidParameterValueError
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ecs.exceptions import InvalidParameterException
    from moto.ecs.responses import EC2ContainerServiceResponse

    def list_container_instances(self):
        cluster = self._get_param("cluster", "default")
        self.ecs_backend._get_cluster(cluster)  # ClusterNotFoundException
        arns = self.ecs_backend.list_container_instances(cluster, status=self._get_param("status"))
        size = int(self._get_param("maxResults") or 100)
        if not 1 <= size <= 100:
            raise InvalidParameterException("maxResults must be between 1 and 100")
        start = int(self._get_param("nextToken") or 0)
        result = {"containerInstanceArns": arns[start : start + size]}
        if start + size < len(arns):
            result["nextToken"] = str(start + size)
        return ActionResult(result)

    describe_container_instances = EC2ContainerServiceResponse.describe_container_instances

    def describe_at_most_100(self):
        if len(self._get_param("containerInstances") or []) > 100:
            raise InvalidParameterException("containerInstances can have at most 100 items")
        return describe_container_instances(self)

    describe_instances = InstanceResponse.describe_instances

    def describe_at_most_1000(self):
        if len(self._get_param("InstanceIds", [])) > 1000:
            raise InvalidParameterValueError("InstanceIds (more than 1000)")
        return describe_instances(self)

    with (
        mock.patch.object(EC2ContainerServiceResponse, "list_container_instances", list_container_instances),
        mock.patch.object(EC2ContainerServiceResponse, "describe_container_instances", describe_at_most_100),
        mock.patch.object(InstanceResponse, "describe_instances", describe_at_most_1000),
    ):
        yield


@contextlib.contextmanager
def capacity_providers_paged_like_aws() -> Iterator[None]:
    from moto.core.responses import ActionResult
    from moto.ecs.exceptions import InvalidParameterException
    from moto.ecs.responses import EC2ContainerServiceResponse

    def describe_capacity_providers(self):
        names = self._get_param("capacityProviders") or []
        size = int(self._get_param("maxResults") or 10)
        if len(names) > 100 or not 1 <= size <= 10:
            raise InvalidParameterException("at most 100 capacityProviders; maxResults 1-10")
        providers, failures = self.ecs_backend.describe_capacity_providers(names)
        start = int(self._get_param("nextToken") or 0)
        result = {"capacityProviders": providers[start : start + size], "failures": failures}
        if start + size < len(providers):
            result["nextToken"] = str(start + size)
        return ActionResult(result)

    with mock.patch.object(
        EC2ContainerServiceResponse, "describe_capacity_providers", describe_capacity_providers
    ):
        yield


class OneOperationStubber(Stubber):
    """botocore's Stubber for one operation of a client; the client's other calls go on (to
    moto). Its handlers sit on the generic events, registered last, so that Aws's call
    counter (registered on the session) still counts the stubbed calls."""

    def __init__(self, client, operation: str):
        super().__init__(client)
        self.operation = operation

    def _only(self, handler):
        def filtered(model, **kwargs):
            mine = model.name == self.operation and model.name not in _FAILING
            return handler(model=model, **kwargs) if mine else None

        return filtered

    def activate(self):
        events = self.client.meta.events
        events.register_first(
            "before-parameter-build",
            self._only(self._assert_expected_params),
            unique_id=self._expected_params_event_id,
        )
        events.register_last("before-call", self._only(self._get_response_handler), unique_id=self._event_id)

    def deactivate(self):
        events = self.client.meta.events
        events.unregister("before-parameter-build", unique_id=self._expected_params_event_id)
        events.unregister("before-call", unique_id=self._event_id)


@contextlib.contextmanager
def imds_defaults_stubbed(defaults: dict[str, dict] | None = None) -> Iterator[dict[str, dict]]:
    """GetInstanceMetadataDefaults, which moto 5.2.5 lacks, answered by botocore's Stubber on
    every EC2 client an Aws makes: {"AccountLevel": defaults[account]}, the account being
    moto's for the session's access key; an account not in defaults has no preference. One
    answer per client (the audit asks once per account): a second call fails the run. Fill
    defaults before the run; the same dict is yielded."""
    from moto.iam.models import get_account_id_from

    defaults = {} if defaults is None else defaults
    made = Aws.client

    def client(self, service, region=None):
        new = (service, region or self.region) not in self._clients
        result = made(self, service, region)
        if service == "ec2" and new:
            account = get_account_id_from(self.session.get_credentials().access_key)
            stubber = OneOperationStubber(result, "GetInstanceMetadataDefaults")
            response = {"AccountLevel": defaults.get(account, {})}
            stubber.add_response("get_instance_metadata_defaults", response, {})
            stubber.activate()
        return result

    with mock.patch.object(Aws, "client", client):
        yield defaults


# What a host does with --verify-hosts' check, for run_command_stubbed().
PASSES = "passes"  # managed, online; the check exits 0
FAILS = "fails"  # managed, online; the check exits 1 (see DRIFT_OUTPUT)
SILENT = "silent"  # managed, online; the invocation never ends
OFFLINE = "offline"  # managed, its agent's PingStatus ConnectionLost
UNMANAGED = "unmanaged"  # not a managed node at all
GONE = "gone"  # online when listed, then SendCommand refuses it (InvalidInstanceId)
# What `ecs-imds-block check` prints, stderr and stdout joined as the remote script joins them:
# nothing with the block live; with IPv4's chain gone, why and the family. tests/test_verify_hosts.py
# runs the real program to the same output.
PASS_OUTPUT = ""
DRIFT_OUTPUT = "ecs-imds-block: IPv4 ECS-IMDS-BLOCK is missing\n4\n"


class RunCommandFleet(Stubber):
    """SSM Run Command against a fleet: {instance ID: PASSES | FAILS | ...}. Each call of the
    three operations is answered from the fleet through the Stubber's own queue, so every
    response is checked against botocore's model (the requests are, by botocore, before they
    get here: 50 instance IDs at most in SendCommand, and so on). The client's other calls
    go on (to moto). `sent` holds each SendCommand's parameters."""

    OPERATIONS = ("DescribeInstanceInformation", "SendCommand", "ListCommandInvocations")

    def __init__(self, client, hosts: dict[str, str]):
        super().__init__(client)
        self.hosts = hosts
        self.sent: list[dict] = []
        self.commands: dict[str, list[str]] = {}

    def activate(self):
        # The call's own parameters are seen before they are serialized; it is answered then.
        events = self.client.meta.events
        events.register_first("before-parameter-build", self._keep, unique_id=self._expected_params_event_id)
        events.register_last("before-call", self._answer, unique_id=self._event_id)

    def deactivate(self):
        events = self.client.meta.events
        events.unregister("before-parameter-build", unique_id=self._expected_params_event_id)
        events.unregister("before-call", unique_id=self._event_id)

    def _keep(self, model, params, **_):
        if model.name in self.OPERATIONS:
            self._params = dict(params)

    def _answer(self, model, **_):
        if model.name not in self.OPERATIONS or model.name in _FAILING:
            return None
        getattr(self, f"_{xform_name(model.name)}")(self._params)
        return self._queue.popleft()["response"]

    @staticmethod
    def _page(items: list, params: dict) -> tuple[list, dict]:
        start, size = int(params.get("NextToken") or 0), params.get("MaxResults", 50)
        more = {"NextToken": str(start + size)} if start + size < len(items) else {}
        return items[start : start + size], more

    def _describe_instance_information(self, params):
        (wanted,) = [f["Values"] for f in params.get("Filters", []) if f["Key"] == "InstanceIds"]
        nodes = [
            {"InstanceId": i, "PingStatus": "ConnectionLost" if self.hosts[i] == OFFLINE else "Online"}
            for i in wanted
            if self.hosts.get(i, UNMANAGED) != UNMANAGED
        ]
        page, more = self._page(nodes, params)
        self.add_response("describe_instance_information", {"InstanceInformationList": page, **more})

    def _send_command(self, params):
        ids = params["InstanceIds"]
        if any(self.hosts.get(i) in (GONE, UNMANAGED, OFFLINE) for i in ids):
            self.add_client_error("send_command", "InvalidInstanceId", "Instances not in a valid state")
            return
        self.sent.append(params)
        command = f"{len(self.commands):08d}-0000-4000-8000-000000000000"
        self.commands[command] = list(ids)
        self.add_response("send_command", {"Command": {"CommandId": command, "InstanceIds": ids}})

    def _list_command_invocations(self, params):
        assert params.get("Details") is True, "ListCommandInvocations without Details has no output"
        ids = self.commands[params["CommandId"]]
        invocations = []
        for instance in ids:
            state = self.hosts[instance]
            status, code, output = {
                PASSES: ("Success", 0, PASS_OUTPUT),
                FAILS: ("Failed", 1, DRIFT_OUTPUT),
                SILENT: ("InProgress", -1, ""),
            }[state]
            plugin = {"Name": "aws:runShellScript", "Status": status, "ResponseCode": code, "Output": output}
            invocations.append(
                {
                    "CommandId": params["CommandId"],
                    "InstanceId": instance,
                    "Status": status,
                    "StatusDetails": status,
                    "CommandPlugins": [plugin],
                }
            )
        page, more = self._page(invocations, params)
        self.add_response("list_command_invocations", {"CommandInvocations": page, **more})


@contextlib.contextmanager
def run_command_stubbed(hosts: dict[str, str] | None = None) -> Iterator[list[RunCommandFleet]]:
    """SSM Run Command answered by a RunCommandFleet of hosts on every SSM client an Aws makes.
    Fill hosts before the run (an instance left out is not managed by SSM); the list yielded
    gets each client's fleet, to read what was sent."""
    hosts = {} if hosts is None else hosts
    fleets: list[RunCommandFleet] = []
    made = Aws.client

    def client(self, service, region=None):
        new = (service, region or self.region) not in self._clients
        result = made(self, service, region)
        if service == "ssm" and new:
            fleet = RunCommandFleet(result, hosts)
            fleet.activate()
            fleets.append(fleet)
        return result

    with mock.patch.object(Aws, "client", client):
        yield fleets


# The protocol of each service the audit calls, by botocore's event name for it.
_PROTOCOLS = {"ec2": "ec2", "ecs": "json", "ssm": "json", "auto-scaling": "query", "sts": "query"}


class _Body(BytesIO):
    def stream(self, **_):
        yield self.read()


def _error_body(protocol: str, code: str, message: str) -> tuple[dict, bytes]:
    """Headers and body of an error answer, as AWS's services of each protocol send them."""
    request_id = "00000000-0000-4000-8000-000000000000"
    if protocol == "json":  # ECS, SSM
        body = json.dumps({"__type": code, "message": message}).encode()
        return {"x-amzn-RequestId": request_id, "Content-Type": "application/x-amz-json-1.1"}, body
    error = f"<Code>{code}</Code><Message>{message}</Message>"
    if protocol == "ec2":
        body = (
            f"<Response><Errors><Error>{error}</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    elif protocol == "query":  # Auto Scaling, STS
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type>{error}</Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    else:
        raise ValueError(f"no error answer for protocol {protocol}")
    return {"x-amzn-RequestId": request_id, "Content-Type": "text/xml"}, body.encode()


@contextlib.contextmanager
def failing(operation: str, code: str, status: int = 400) -> Iterator[list[str]]:
    """Every call of `operation` (e.g. "DescribeInstances") answered with HTTP `status` and the
    error `code`, where moto answers (its handler of botocore's before-send), and not by moto
    nor by the Stubbers here: botocore parses the answer, and retries it if it would retry
    AWS's. Yields the attempts, one per HTTP request."""
    from moto.core.botocore_stubber import BotocoreStubber

    attempts: list[str] = []
    moto_answer = BotocoreStubber.__call__

    def answer(self, event_name: str, request, **kwargs):
        _, service, name = event_name.split(".")
        if name != operation:
            return moto_answer(self, event_name, request, **kwargs)
        attempts.append(name)
        headers, body = _error_body(_PROTOCOLS[service], code, f"{operation} refused by the test")
        return AWSResponse(request.url, status, headers, _Body(body))

    _FAILING.add(operation)
    try:
        with mock.patch.object(BotocoreStubber, "__call__", answer):
            yield attempts
    finally:
        _FAILING.discard(operation)


@contextlib.contextmanager
def retrying_at_once(attempts: int = 2) -> Iterator[int]:
    """botocore's standard retries, `attempts` in all (the first and the retries), without
    waiting between them: what the clients of an Aws made inside get. Yields attempts."""
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts})
    with (
        mock.patch.object(aws, "RETRIES", aws.RETRIES.merge(config)),
        mock.patch.object(ExponentialBackoff, "delay_amount", lambda self, context: 0),
    ):
        yield attempts
