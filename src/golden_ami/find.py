# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Print the current golden AMI of an OS and architecture (or one build of it)."""

from __future__ import annotations

from golden_ami import layout
from golden_ami.aws import NotFoundError, UsageError
from golden_ami.output import Result


def add_arguments(parser) -> None:
    layout.add_variant_arguments(parser)
    parser.add_argument(
        "--build", default=layout.LATEST, help="a build ID instead of latest, e.g. 20261128T224200Z"
    )
    layout.add_prefix_argument(parser)


def lookup(aws, prefix: str, os_name: str, arch: str, build: str = layout.LATEST) -> tuple[str, dict]:
    """The parameter's name and its SSM description; NotFoundError when nothing is published."""
    name = layout.parameter(layout.check_prefix(prefix), os_name, arch, build)
    ssm = aws.client("ssm")
    try:
        return name, ssm.get_parameter(Name=name)["Parameter"]
    except ssm.exceptions.ParameterNotFound as exc:
        raise NotFoundError(
            f"no golden AMI published at {name} in {aws.region}: run `golden-ami publish` first"
        ) from exc


def run(args, aws) -> Result:
    if args.build != layout.LATEST and not layout.BUILD_ID.match(args.build):
        raise UsageError(f"--build {args.build!r} is not a build ID like 20261128T224200Z, nor `latest`")
    name, parameter = lookup(aws, args.prefix, args.os, args.arch, args.build)
    ami = parameter["Value"]
    if not args.json:
        return Result({"ami": ami}, [ami])
    images = aws.client("ec2").describe_images(ImageIds=[ami])["Images"]
    if not images:
        raise NotFoundError(f"{name} names {ami}, which no longer exists in {aws.region}")
    image = images[0]
    return Result(
        {
            "ami": ami,
            "parameter": name,
            "parameter_version": parameter.get("Version"),
            "region": aws.region,
            "name": image.get("Name"),
            "creation_date": image.get("CreationDate"),
            "deprecation_time": image.get("DeprecationTime"),
            "tags": {tag["Key"]: tag["Value"] for tag in image.get("Tags", [])},
        }
    )
