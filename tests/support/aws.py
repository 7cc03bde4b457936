# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Shared moto helpers: fake credentials, golden AMIs and Packer manifests."""

from __future__ import annotations

import datetime
import json
import os
import uuid

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

REGIONS = ("eu-west-1", "us-east-1")


def fake_credentials(monkeypatch) -> None:
    """Fake keys and nothing else: no profile, no config file, no instance metadata."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGIONS[0])
    monkeypatch.setenv("AWS_REGION", REGIONS[0])


def base_image(ec2) -> str:
    return ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def golden_ami(
    region: str, os_name: str = "al2023", arch: str = "x86_64", created: datetime.datetime | None = None
) -> str:
    """An AMI as `make ami` leaves it: made from an instance, tagged, with its snapshot."""
    ec2 = boto3.client("ec2", region_name=region)
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    ami = ec2.create_image(
        InstanceId=instance, Name=f"ecs-imds-golden-{os_name}-{arch}-{uuid.uuid4().hex[:8]}"
    )
    ec2.terminate_instances(InstanceIds=[instance])
    tags = {"Project": "ecs-imds-golden", "OS": os_name, "Architecture": arch}
    ec2.create_tags(Resources=[ami["ImageId"]], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    if created:
        set_image(region, ami["ImageId"], creation_date=created)
    return ami["ImageId"]


def set_image(region: str, ami: str, **attributes) -> None:
    """Change what moto reports for an AMI (its state, its creation date)."""
    image = ec2_backends[DEFAULT_ACCOUNT_ID][region].amis[ami]
    for name, value in attributes.items():
        setattr(image, name, value)


def write_manifest(path, builds: dict[str, dict[str, str]], build_time: int = 1795905441, local=False):
    """builds: {"al2023-x86_64": {region: ami}}; the shape of Packer's manifest post-processor."""
    run = str(uuid.uuid4())
    entries = []
    for name, amis in builds.items():
        os_name, arch = name.split("-", 1)
        entries.append({
            "name": name,
            "builder_type": "docker" if local else "amazon-ebs",
            "build_time": build_time,
            "files": None,
            "artifact_id": "sha256:abc" if local else ",".join(f"{r}:{a}" for r, a in amis.items()),
            "packer_run_uuid": run,
            "custom_data": {"os": os_name, "architecture": arch, **({"local": "true"} if local else {})},
        })  # fmt: skip
    old = {"name": "al2023-x86_64", "builder_type": "amazon-ebs", "build_time": 1, "files": None,
           "artifact_id": "eu-west-1:ami-00000000000000000", "packer_run_uuid": "an-earlier-run",
           "custom_data": {"os": "al2023", "architecture": "x86_64"}}  # fmt: skip
    path.write_text(json.dumps({"builds": [old, *entries], "last_run_uuid": run}))
    return path
