# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`golden-ami audit --verify-hosts`: is the block live on each container instance, now?

The audit reads AMI IDs and metadata options; this runs the host program's own
`ecs-imds-block check` on the hosts themselves, through SSM Run Command (AWS-RunShellScript), so
the same check that guards the agent's start answers here, for every family the host manages.

Each EC2 instance is reported as one of:
  - verified:   the check passed;
  - drifted:    the check failed (its own output is the detail: each family that is off, and
                why), or the host has no block installed, or a release without the host
                program's configuration;
  - unmanaged:  not a managed node of SSM, or its agent is not online, so nothing ran;
  - timed_out:  no answer within --verify-timeout.

API calls, for N instances of which M are online managed nodes: ceil(N/50)
DescribeInstanceInformation (50 IDs a filter and a page); ceil(M/50) SendCommand (its limit of
50 instance IDs); per poll, one ListCommandInvocations page (Details on, up to 50) per command
not yet finished. When every host answers by the first poll that is ceil(M/50) in all.
"""

from __future__ import annotations

import dataclasses
import shlex
import time

import botocore.exceptions

from golden_ami.aws import LOG, batches

SEND_BATCH = 50  # SendCommand: InstanceIds, at most 50
INFO_PAGE = 50  # DescribeInstanceInformation: MaxResults 5-50
LIST_PAGE = 50  # ListCommandInvocations: MaxResults 1-50
DOCUMENT = "AWS-RunShellScript"
TIMEOUT_RANGE = (1, 3600)  # seconds; --verify-timeout
DEFAULT_TIMEOUT = 120
FIRST_POLL = 2.0  # seconds after the last SendCommand; the check itself takes well under one
POLL = 5.0
EXIT_NOT_INSTALLED = 3  # the host has no block: no host program

VERIFIED, DRIFTED, UNMANAGED, TIMED_OUT = "verified", "drifted", "unmanaged", "timed_out"
STATUSES = (VERIFIED, DRIFTED, UNMANAGED, TIMED_OUT)
DONE = {"Success", "Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated"}

# Monkeypatched by the tests, which run polls on a clock of their own.
_clock = time.monotonic
_sleep = time.sleep


@dataclasses.dataclass
class HostCheck:
    """What --verify-hosts found on one instance."""

    status: str
    detail: str = ""
    command_id: str | None = None


def remote_script() -> str:
    """The shell that AWS-RunShellScript runs: the host program's own check, of every family its
    configuration manages, its output on stdout."""
    from golden_ami.boothook import names  # the role's data, read where it lives

    program = shlex.quote(names()["program"])
    config = "/etc/ecs-imds-block/config.json"  # the program's own; a previous release had none
    return "\n".join(
        [
            f"if [ ! -x {program} ]; then",
            f"  echo 'ecs-imds-block is not installed (no {names()['program']})'",
            f"  exit {EXIT_NOT_INSTALLED}",
            f"elif [ ! -e {config} ]; then",
            f"  echo 'a previous release of ecs-imds-block (no {config}): rebuild from a current AMI'",
            f"  exit {EXIT_NOT_INSTALLED}",
            "fi",
            f"exec {program} check 2>&1",
        ]
    )


def _online(ssm, ids: list[str]) -> dict[str, str]:
    """instance ID -> the SSM agent's PingStatus, for the managed nodes among ids."""
    pages = ssm.get_paginator("describe_instance_information")
    status: dict[str, str] = {}
    for batch in batches(ids, INFO_PAGE):
        for page in pages.paginate(
            Filters=[{"Key": "InstanceIds", "Values": batch}], PaginationConfig={"PageSize": INFO_PAGE}
        ):
            for node in page.get("InstanceInformationList", []):
                status[node["InstanceId"]] = node.get("PingStatus", "")
    return status


def _send(ssm, ids: list[str], timeout: int, script: str) -> str:
    response = ssm.send_command(
        InstanceIds=ids,
        DocumentName=DOCUMENT,
        Comment="golden-ami audit --verify-hosts: ecs-imds-block check",
        Parameters={"commands": [script], "executionTimeout": [str(timeout)]},
        TimeoutSeconds=max(30, timeout),  # SendCommand's minimum: the time to deliver it
        MaxConcurrency="100%",  # a read-only check: every host at once
        MaxErrors="100%",  # a failed check is the answer, not a reason to stop
    )
    return response["Command"]["CommandId"]


def _result(invocation: dict) -> HostCheck:
    """A finished invocation as a HostCheck."""
    status, command = invocation.get("Status", ""), invocation.get("CommandId")
    output = "".join(p.get("Output", "") for p in invocation.get("CommandPlugins", []))
    detail = "; ".join(line.strip() for line in output.splitlines() if line.strip())
    if status == "Success":
        return HostCheck(VERIFIED, detail, command)
    if status == "Failed":
        failed = f"the check failed ({invocation.get('StatusDetails', '')})"
        return HostCheck(DRIFTED, detail or failed, command)
    if status in {"Undeliverable", "Terminated"}:
        return HostCheck(UNMANAGED, f"SSM could not run the check ({status})", command)
    return HostCheck(TIMED_OUT, f"SSM ended the check: {status}", command)


def verify(ssm, ids: list[str], timeout: int = DEFAULT_TIMEOUT) -> dict[str, HostCheck]:
    """Run the check on every instance of ids through SSM; instance ID -> HostCheck."""
    results: dict[str, HostCheck] = {}
    if not ids:
        return results
    ping = _online(ssm, ids)
    online = [i for i in ids if ping.get(i) == "Online"]
    for instance in ids:
        if instance not in ping:
            results[instance] = HostCheck(UNMANAGED, "not a managed node of SSM")
        elif instance not in online:
            results[instance] = HostCheck(UNMANAGED, f"SSM agent {ping[instance] or 'not online'}")
    LOG.info("verify-hosts: %d of %d instances are online managed nodes", len(online), len(ids))

    script = remote_script()
    pending: dict[str, set[str]] = {}  # command ID -> its instances without a result yet
    for batch in batches(online, SEND_BATCH):
        try:
            pending[_send(ssm, batch, timeout, script)] = set(batch)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidInstanceId":
                raise
            # A node went offline since it was listed: SendCommand refuses the whole batch,
            # so the batch is sent again one instance at a time.
            for instance in batch:
                try:
                    pending[_send(ssm, [instance], timeout, script)] = {instance}
                except botocore.exceptions.ClientError as one:
                    if one.response.get("Error", {}).get("Code") != "InvalidInstanceId":
                        raise
                    results[instance] = HostCheck(UNMANAGED, "SSM refused it (InvalidInstanceId)")

    deadline = _clock() + timeout
    wait = FIRST_POLL
    pages = ssm.get_paginator("list_command_invocations")
    while pending:
        _sleep(max(0.0, min(wait, deadline - _clock())))
        wait = POLL
        for command, waiting in list(pending.items()):
            for page in pages.paginate(
                CommandId=command, Details=True, PaginationConfig={"PageSize": LIST_PAGE}
            ):
                for invocation in page.get("CommandInvocations", []):
                    instance = invocation.get("InstanceId")
                    if instance in waiting and invocation.get("Status") in DONE:
                        results[instance] = _result(invocation)
                        waiting.discard(instance)
            if not waiting:
                del pending[command]
        if pending and _clock() >= deadline:
            break
    for command, waiting in pending.items():
        for instance in waiting:
            results[instance] = HostCheck(TIMED_OUT, f"no answer within {timeout} s", command)
    counts = {s: sum(r.status == s for r in results.values()) for s in STATUSES}
    LOG.info("verify-hosts: %s", ", ".join(f"{s} {n}" for s, n in counts.items()))
    return results
