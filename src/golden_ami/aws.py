# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""Shared AWS plumbing: one session and client factory with adaptive retries, API call
counting, and ClientError codes mapped to one-line messages.

Credentials come from the standard chain; AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>)
is honoured by botocore itself, so every command runs against any endpoint, moto included.
"""

from __future__ import annotations

import collections
import json
import logging
import threading

import boto3
import botocore.exceptions
from botocore.config import Config

LOG = logging.getLogger("golden_ami")
RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 10}, user_agent_extra="ecs-imds-golden")


class GoldenAmiError(Exception):
    """An expected failure: printed as one line, no stack trace, with its exit code."""

    exit_code = 1


class UsageError(GoldenAmiError):
    exit_code = 2


class AwsError(GoldenAmiError):
    exit_code = 3


class NotFoundError(GoldenAmiError):
    exit_code = 4


# ClientError codes that users meet, and what to tell them.
_MESSAGES = {
    "AccessDenied": "not allowed to call {operation}: {message}",
    "AccessDeniedException": "not allowed to call {operation}: {message}",
    "UnauthorizedOperation": "not allowed to call {operation}: {message}",
    "AuthFailure": "AWS rejected the credentials ({operation}): {message}",
    "InvalidClientTokenId": "AWS rejected the credentials ({operation}): {message}",
    "UnrecognizedClientException": "AWS rejected the credentials ({operation}): {message}",
    "ExpiredToken": "the AWS credentials have expired ({operation})",
    "ExpiredTokenException": "the AWS credentials have expired ({operation})",
    "RequestExpired": "the AWS credentials have expired ({operation})",
    "InvalidAMIID.NotFound": "AMI not found ({operation}): {message}",
    "InvalidAMIID.Malformed": "not an AMI ID ({operation}): {message}",
    "InvalidAMIID.Unavailable": "AMI is not available ({operation}): {message}",
    "ParameterNotFound": "no SSM parameter ({operation}): {message}",
    "ParameterAlreadyExists": "SSM parameter already exists ({operation}): {message}",
    "ClusterNotFoundException": "no such ECS cluster ({operation}): {message}",
    "RequestLimitExceeded": "AWS kept throttling {operation}; try again later",
    "ThrottlingException": "AWS kept throttling {operation}; try again later",
    "Throttling": "AWS kept throttling {operation}; try again later",
}


def batches(items: list, size: int):
    """``items`` in lists of at most ``size``: what one API call takes."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def describe(error: botocore.exceptions.ClientError) -> str:
    """One line for a ClientError: the mapped message, or the code and AWS's own message."""
    code = error.response.get("Error", {}).get("Code", "Unknown")
    message = error.response.get("Error", {}).get("Message", "")
    template = _MESSAGES.get(code, "{operation} failed with {code}: {message}")
    return template.format(operation=error.operation_name, code=code, message=message)


def translate(error: Exception) -> GoldenAmiError:
    """Turn the exceptions boto3 raises for expected conditions into GoldenAmiError."""
    if isinstance(error, botocore.exceptions.ProfileNotFound):
        profile = error.kwargs.get("profile")
        return UsageError(f"no AWS profile {profile!r} (--profile or AWS_PROFILE) in the AWS config files")
    if isinstance(error, botocore.exceptions.InvalidRegionError):
        return UsageError(f"{error.kwargs.get('region_name')!r} is not an AWS region name")
    if isinstance(error, botocore.exceptions.ConfigParseError):
        return UsageError(f"cannot parse the AWS config file {error.kwargs.get('path')}: fix or move it")
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        kind = NotFoundError if code.endswith(("NotFound", "NotFoundException")) else AwsError
        return kind(describe(error))
    if isinstance(error, botocore.exceptions.CredentialRetrievalError):
        detail = str(error.kwargs.get("error_msg") or "").strip() or "no message"
        return AwsError(f"could not get AWS credentials from {error.kwargs.get('provider')}: {detail}")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return AwsError(
            "no AWS credentials found (environment, AWS_PROFILE, SSO, web identity or instance role)"
        )
    if isinstance(error, botocore.exceptions.NoRegionError):
        return UsageError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    if isinstance(error, botocore.exceptions.EndpointConnectionError):
        return AwsError(f"cannot reach AWS: {error}")
    if isinstance(error, botocore.exceptions.WaiterError):
        return AwsError(f"gave up waiting: {error}")
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return AwsError(str(error))
    raise error


class Aws:
    """A boto3 session, its clients (one per service and region), and a count of API calls.

    The session is made on first use, so a command that calls no AWS API (user-data) runs
    whatever the AWS configuration is: a missing profile or a broken config file is an error
    only for the commands that need them.
    """

    def __init__(self, region: str | None = None, profile: str | None = None, session=None):
        self._region, self._profile = region, profile
        self._session = None
        self.calls: collections.Counter[str] = collections.Counter()
        self._clients: dict[tuple[str, str | None], object] = {}
        self._lock = threading.RLock()
        if session is not None:
            self._use(session)

    def _use(self, session) -> None:
        self._session = session
        # Counted once per API call, however many retries it takes.
        session.events.register("before-call", self._count)

    @property
    def session(self):
        """The boto3 session; ProfileNotFound or ConfigParseError here, for translate()."""
        with self._lock:
            if self._session is None:
                self._use(boto3.session.Session(profile_name=self._profile, region_name=self._region))
            return self._session

    @property
    def region(self) -> str:
        if not self.session.region_name:
            raise UsageError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
        return self.session.region_name

    def _count(self, model, **_):
        with self._lock:
            self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def client(self, service: str, region: str | None = None):
        key = (service, region or self.region)
        with self._lock:
            if key not in self._clients:
                try:
                    self._clients[key] = self.session.client(service, region_name=key[1], config=RETRIES)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    # botocore parses a credential_process's output without wrapping its errors.
                    raise AwsError(
                        f"the AWS profile's credential_process printed no JSON credentials ({exc})"
                    ) from exc
            return self._clients[key]

    def assume(self, role_arn: str, label: str) -> Aws:
        """An Aws for another account, through STS AssumeRole."""
        response = self.client("sts").assume_role(
            RoleArn=role_arn, RoleSessionName=f"golden-ami-{label}"[:64]
        )
        credentials = response["Credentials"]
        session = boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self.session.region_name,
        )
        other = Aws(session=session)
        other.calls = self.calls  # one count for the whole run
        other._lock = self._lock
        return other

    def total_calls(self) -> int:
        return sum(self.calls.values())
