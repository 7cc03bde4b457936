# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami audit --verify-hosts: moto for the fleet (ECS, EC2), botocore's Stubber for SSM
Run Command (scripts/moto_aws.py's run_command_stubbed: moto 5.2.5 has no
DescribeInstanceInformation nor ListCommandInvocations). Each host is verified, drifted,
unmanaged or timed out; the call counts are asserted; the polls run on a clock of the test's.
The script the hosts run is run too: the host program's own check, installed with a configuration
the role's filter renders, in a network namespace where the block is live, off or half off.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess

import pytest
from moto_aws import (
    DRIFT_OUTPUT,
    FAILS,
    GONE,
    OFFLINE,
    PASS_OUTPUT,
    PASSES,
    SILENT,
    paging_like_aws,
    run_command_stubbed,
)
from support.audit import fleet, golden_image, publish, run
from support.program import PROGRAM, render

from golden_ami import audit, cli, verify_hosts
from golden_ami.aws import UsageError

# The audit's own calls for one named cluster of instances without an Auto Scaling group.
WALK = {
    "ssm:GetParametersByPath": 1,
    "ecs:DescribeClusters": 1,
    "ecs:ListContainerInstances": 1,
    "ecs:DescribeContainerInstances": 1,
    "ec2:DescribeInstances": 1,
    "ec2:GetInstanceMetadataDefaults": 1,
}


@pytest.fixture
def clock(monkeypatch):
    """verify_hosts' polls on a clock that moves only when they sleep: [now]."""
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    monkeypatch.setattr(verify_hosts, "_clock", lambda: now[0])
    monkeypatch.setattr(verify_hosts, "_sleep", sleep)
    return now


def counts(**found: int) -> dict[str, int]:
    return {status: found.get(status, 0) for status in verify_hosts.STATUSES}


def _cluster(count: int = 1) -> list[str]:
    golden = golden_image()
    publish(golden)
    return fleet("prod", [(golden, "required", 2, count)])


@pytest.fixture
def stub(mocked, clock):
    hosts: dict[str, str] = {}
    with run_command_stubbed(hosts) as fleets:
        yield hosts, fleets


def test_a_host_whose_check_passes_is_verified_in_the_fewest_calls(stub):
    hosts, fleets = stub
    (instance,) = _cluster()
    hosts[instance] = PASSES

    result, aws = run("--cluster", "prod", "--verify-hosts", "--fail-on-findings")

    (record,) = result.data["instances"]
    assert record["host_check"]["status"] == "verified"
    assert record["host_check"]["detail"] == ""  # the check prints nothing when the block is live
    assert record["findings"] == []
    assert result.code == 0
    assert result.data["summary"]["verify_hosts"] == counts(verified=1)
    assert "hosts (--verify-hosts): verified 1, drifted 0, not managed by SSM 0, timed out 0" in result.lines
    assert dict(aws.calls) == {
        **WALK,
        "ssm:DescribeInstanceInformation": 1,
        "ssm:SendCommand": 1,
        "ssm:ListCommandInvocations": 1,
    }
    (sent,) = fleets[0].sent
    assert sent["DocumentName"] == "AWS-RunShellScript"
    assert sent["InstanceIds"] == [instance]
    assert (sent["MaxConcurrency"], sent["MaxErrors"]) == ("100%", "100%")
    assert sent["Parameters"]["executionTimeout"] == [str(verify_hosts.DEFAULT_TIMEOUT)]
    assert sent["Parameters"]["commands"] == [verify_hosts.remote_script()]


def test_without_the_flag_no_host_is_asked_and_the_keys_stay(stub):
    hosts, _ = stub
    (instance,) = _cluster()
    hosts[instance] = FAILS

    result, aws = run("--cluster", "prod")

    (record,) = result.data["instances"]
    assert record["host_check"] is None
    assert result.data["summary"]["verify_hosts"] is None
    assert not any(call.startswith("ssm:") and call != "ssm:GetParametersByPath" for call in aws.calls)


def test_a_host_whose_check_fails_is_drifted_with_the_checks_line_and_a_finding(stub):
    hosts, _ = stub
    (instance,) = _cluster()
    hosts[instance] = FAILS

    result, _ = run("--cluster", "prod", "--verify-hosts")
    failing, _ = run("--cluster", "prod", "--verify-hosts", "--fail-on-findings")

    (record,) = result.data["instances"]
    assert record["host_check"]["status"] == "drifted"
    # The check's lines: why, then the family it found off.
    assert record["host_check"]["detail"] == "ecs-imds-block: IPv4 ECS-IMDS-BLOCK is missing; 4"
    (finding,) = record["findings"]
    assert finding["key"] == audit.BLOCK_NOT_LIVE
    assert (
        finding["message"]
        == "IMDS block not live on the host: ecs-imds-block: IPv4 ECS-IMDS-BLOCK is missing; 4"
    )
    assert result.data["summary"]["findings_by_key"][audit.BLOCK_NOT_LIVE] == 1
    assert result.data["summary"]["verify_hosts"]["drifted"] == 1
    assert (result.code, failing.code) == (0, 1)


@pytest.mark.parametrize(
    ("state", "detail"),
    [(None, "not a managed node of SSM"), (OFFLINE, "SSM agent ConnectionLost")],
)
def test_a_host_ssm_cannot_reach_is_unmanaged_and_nothing_is_sent_to_it(stub, state, detail):
    hosts, fleets = stub
    (instance,) = _cluster()
    if state:
        hosts[instance] = state

    result, aws = run("--cluster", "prod", "--verify-hosts", "--fail-on-findings")

    (record,) = result.data["instances"]
    assert record["host_check"] == {"status": "unmanaged", "detail": detail, "command_id": None}
    assert [f["key"] for f in record["findings"]] == [audit.HOST_NOT_VERIFIED]
    assert "SSM managed node" in record["findings"][0]["remediation"]
    assert result.code == 1
    assert aws.calls["ssm:DescribeInstanceInformation"] == 1
    assert "ssm:SendCommand" not in aws.calls
    assert fleets[0].sent == []


def test_a_host_that_never_answers_times_out_after_the_timeout_and_no_later(stub, clock):
    hosts, _ = stub
    quiet, fine = _cluster(2)
    hosts.update({quiet: SILENT, fine: PASSES})

    result, aws = run("--cluster", "prod", "--verify-hosts", "--verify-timeout", "10")

    checks = {r["ec2_instance_id"]: r["host_check"] for r in result.data["instances"]}
    assert checks[fine]["status"] == "verified"
    assert checks[quiet]["status"] == "timed_out"
    assert checks[quiet]["detail"] == "no answer within 10 s"
    assert clock[0] == 10  # it waited the timeout, not longer
    # polls at 2 s, 7 s and 10 s: one page each, both hosts in one command
    assert aws.calls["ssm:ListCommandInvocations"] == 3
    assert aws.calls["ssm:SendCommand"] == 1
    assert result.data["summary"]["verify_hosts"] == counts(verified=1, timed_out=1)


def test_more_than_50_instances_go_in_batches_of_50(stub):
    hosts, fleets = stub
    ids = _cluster(120)
    unmanaged = sorted(ids)[60]
    drifted = sorted(ids)[110]
    hosts.update({i: PASSES for i in ids if i != unmanaged})
    hosts[drifted] = FAILS

    with paging_like_aws():
        result, aws = run("--cluster", "prod", "--verify-hosts")

    summary = result.data["summary"]
    assert summary["verify_hosts"] == counts(verified=118, drifted=1, unmanaged=1)
    online = 119
    assert [len(s["InstanceIds"]) for s in fleets[0].sent] == [50, 50, 19]
    assert sorted(i for s in fleets[0].sent for i in s["InstanceIds"]) == sorted(set(ids) - {unmanaged})
    pages = math.ceil(len(ids) / 100)
    assert dict(aws.calls) == {
        **WALK,
        "ecs:ListContainerInstances": pages,
        "ecs:DescribeContainerInstances": pages,
        "ssm:DescribeInstanceInformation": math.ceil(120 / 50),
        "ssm:SendCommand": math.ceil(online / 50),
        "ssm:ListCommandInvocations": math.ceil(online / 50),  # every host answered by the first poll
    }


def test_a_batch_refused_for_one_instance_is_sent_again_one_at_a_time(stub):
    hosts, fleets = stub
    ids = sorted(_cluster(3))
    hosts.update({ids[0]: PASSES, ids[1]: GONE, ids[2]: PASSES})

    result, aws = run("--cluster", "prod", "--verify-hosts")

    checks = {r["ec2_instance_id"]: r["host_check"]["status"] for r in result.data["instances"]}
    assert checks == {ids[0]: "verified", ids[1]: "unmanaged", ids[2]: "verified"}
    assert aws.calls["ssm:SendCommand"] == 1 + 3  # the batch, then each instance
    assert [s["InstanceIds"] for s in fleets[0].sent] == [[ids[0]], [ids[2]]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--verify-hosts", "--verify-timeout", "0"], "--verify-timeout 0 is not between 1 and 3600 seconds"),
        (
            ["--verify-hosts", "--verify-timeout", "3601"],
            "--verify-timeout 3601 is not between 1 and 3600 seconds",
        ),
        (["--verify-timeout", "30"], "--verify-timeout goes with --verify-hosts"),
    ],
)
def test_a_bad_timeout_is_refused_before_any_call(mocked, argv, message):
    args = cli.build_parser().parse_args(["audit", "--region", "eu-west-1", *argv])
    from golden_ami.aws import Aws

    aws = Aws(region="eu-west-1")
    with pytest.raises(UsageError) as refused:
        audit.run(args, aws)
    assert str(refused.value) == message
    assert not aws.calls


# --- the script the hosts run -------------------------------------------------------------


@pytest.fixture
def host_root(tmp_path):
    """Run a script as a host would, in a network namespace of its own (its filter tables empty)
    and a mount namespace where /usr/local/sbin and /etc/ecs-imds-block are folders of the
    test's: the program is installed there with the configuration the role's filter renders (its
    rules files in the test's folder), unless ``installed`` is false. Needs root, as CI runs."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("the remote script's test needs root and unshare (util-linux)")
    sbin, etc = tmp_path / "sbin", tmp_path / "etc"
    sbin.mkdir()
    config = render(tmp_path / "host")
    etc.mkdir()
    shutil.copy(config, etc / "config.json")

    def run_script(script: str, before: str = "", installed: bool = True) -> subprocess.CompletedProcess:
        if installed:
            shutil.copy(PROGRAM, sbin / "ecs-imds-block")
        mounts = f"mount --bind {sbin} /usr/local/sbin && mkdir -p /etc/ecs-imds-block"
        mounts += f" && mount --bind {etc} /etc/ecs-imds-block"
        inner = f'{mounts} && {{ {before or ":"}; }} >/dev/null && sh -c "$0"'
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--net", "sh", "-c", inner, script],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    return run_script


def as_ssm_reports_it(done: subprocess.CompletedProcess) -> verify_hosts.HostCheck:
    """The script's run as AWS-RunShellScript's invocation reports it, read by verify_hosts."""
    status = "Success" if done.returncode == 0 else "Failed"
    return verify_hosts._result(
        {"Status": status, "CommandId": "c", "CommandPlugins": [{"Output": done.stdout}]}
    )


def test_the_script_passes_where_the_block_is_live(host_root):
    done = host_root(verify_hosts.remote_script(), before="/usr/local/sbin/ecs-imds-block load")

    assert (done.returncode, done.stdout, done.stderr) == (0, PASS_OUTPUT, "")
    assert as_ssm_reports_it(done) == verify_hosts.HostCheck(verify_hosts.VERIFIED, "", "c")


def test_the_script_names_each_family_that_is_off(host_root):
    """Without the block (a host whose kernel holds none), both families and our nftables table;
    with IPv4's chain gone, IPv4 alone, as the audit's stand-in fleet (scripts/moto_aws.py)
    reports a drifted host."""
    nothing = host_root(verify_hosts.remote_script())
    ipv4_off = host_root(
        verify_hosts.remote_script(),
        before="/usr/local/sbin/ecs-imds-block load && iptables -w -F ECS-IMDS-BLOCK"
        " && iptables -w -D DOCKER-USER -j ECS-IMDS-BLOCK && iptables -w -X ECS-IMDS-BLOCK",
    )

    assert (nothing.returncode, nothing.stderr) == (1, "")
    assert nothing.stdout == (
        DRIFT_OUTPUT + "ecs-imds-block: IPv6 ECS-IMDS-BLOCK is missing\n6\n"
        "ecs-imds-block: the nftables table inet ecs-imds-block is missing\nnft\n"
    )
    assert (ipv4_off.returncode, ipv4_off.stdout, ipv4_off.stderr) == (1, DRIFT_OUTPUT, "")
    check = as_ssm_reports_it(ipv4_off)
    assert (check.status, check.detail) == (
        verify_hosts.DRIFTED,
        "ecs-imds-block: IPv4 ECS-IMDS-BLOCK is missing; 4",
    )


def test_the_script_says_when_the_host_has_no_block(host_root):
    done = host_root(verify_hosts.remote_script(), installed=False)

    assert done.returncode == verify_hosts.EXIT_NOT_INSTALLED
    assert done.stdout == "ecs-imds-block is not installed (no /usr/local/sbin/ecs-imds-block)\n"


def test_the_script_names_a_previous_release_rather_than_its_usage(host_root):
    """A host on an AMI of the previous release has the program's path, its shell loader, but no
    configuration: it is drifted with that said, not with the old loader's usage line."""
    done = host_root(verify_hosts.remote_script(), before="rm /etc/ecs-imds-block/config.json")

    assert done.returncode == verify_hosts.EXIT_NOT_INSTALLED
    assert done.stdout == (
        "a previous release of ecs-imds-block (no /etc/ecs-imds-block/config.json): "
        "rebuild from a current AMI\n"
    )
    assert as_ssm_reports_it(done).status == verify_hosts.DRIFTED


def test_each_account_is_verified_with_its_own_ssm_client(stub, tmp_path):
    from support.audit import assumed

    hosts, fleets = stub
    golden = golden_image()
    publish(golden)
    prod, dev = "111111111111", "222222222222"
    (prod_id,) = fleet("web", [(golden, "required", 2, 1)], session=assumed(prod))
    (dev_id,) = fleet("web", [(golden, "required", 2, 1)], session=assumed(dev))
    hosts.update({prod_id: PASSES, dev_id: FAILS})
    accounts = tmp_path / "accounts"
    accounts.write_text(f"{prod}\n{dev}\n")

    result, aws = run("--accounts", str(accounts), "--role-name", "audit", "--verify-hosts")

    checks = {
        r["ec2_instance_id"]: (r["account"], r["host_check"]["status"]) for r in result.data["instances"]
    }
    assert checks == {prod_id: (prod, "verified"), dev_id: (dev, "drifted")}
    sent = {s["InstanceIds"][0] for fleet_ in fleets for s in fleet_.sent}
    assert sent == {prod_id, dev_id}
    assert sum(bool(f.sent) for f in fleets) == 2  # one SSM client per member account
    assert aws.calls["ssm:SendCommand"] == 2
