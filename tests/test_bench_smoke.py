# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`python -m benchmarks --smoke`: the harness starts, the IMDS client runs on the botocore it
ships to containers, and the moto audit path counts calls as the formula says, in seconds and
without touching benchmarks/results/latest.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LATEST = ROOT / "benchmarks" / "results" / "latest.json"
FORMULA = (
    "calls = ceil(n/100) [list] + ceil(n/100) [describe] + ceil(n/1000) [ec2] + 1 [clusters]"
    " + 1 [imds defaults] + 1 [ssm]"
)


def test_smoke_runs_the_harness_and_the_audit_path(tmp_path):
    before = LATEST.read_bytes() if LATEST.exists() else None
    output = tmp_path / "smoke.json"

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert FORMULA in result.stdout
    # The table rows: n, calls, formula, match, seconds. 150 instances: 2 + 2 + 1 + 1 + 1 + 1.
    rows = dict(re.findall(r"^\s+(\d+)\s+(\d+)\s+\d+\s+yes\s+[\d.]+$", result.stdout, re.MULTILINE))
    assert rows == {"1": "6", "150": "8"}
    assert "smoke: OK" in result.stdout
    assert "bench [" in result.stderr  # progress goes to stderr

    data = json.loads(output.read_text())
    assert data["audit_calls"] == {"1": 6, "150": 8}
    # --verify-hosts adds ceil(n/50) of each SSM Run Command call: 1, 3.
    assert data["audit_verify_hosts_calls"] == {"1": 6 + 3, "150": 8 + 9}
    assert {
        k: v
        for k, v in data["audit"]["sizes"]["150"]["verify_hosts"]["by_call"].items()
        if k != "ssm:GetParametersByPath" and k.startswith("ssm:")
    } == {
        "ssm:DescribeInstanceInformation": 3,
        "ssm:SendCommand": 3,
        "ssm:ListCommandInvocations": 3,
    }
    assert data["audit"]["sizes"]["150"]["by_call"] == {
        "ssm:GetParametersByPath": 1,
        "ecs:DescribeClusters": 1,
        "ecs:ListContainerInstances": 2,
        "ecs:DescribeContainerInstances": 2,
        "ec2:DescribeInstances": 1,
        "ec2:GetInstanceMetadataDefaults": 1,
    }
    client = next(t for t in data["targets"] if t["target"].startswith("imds_client"))
    assert client["pass"], client["detail"]
    assert all(t["pass"] for t in data["targets"])
    assert (LATEST.read_bytes() if LATEST.exists() else None) == before
