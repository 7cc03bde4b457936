"""Make moto page and refuse the way AWS does, so that API call counts mean something.

Used by the audit benchmark and by the `aws_paging` fixture of tests/test_audit.py.

moto 5.2.5 returns every container instance in one ListContainerInstances page (AWS: at most
maxResults, 100 by default and at most) and an empty list for a missing cluster (AWS:
ClusterNotFoundException); it accepts any number of container instances in
DescribeContainerInstances (AWS: 100) and of InstanceIds in DescribeInstances (1000).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock


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
