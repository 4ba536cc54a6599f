"""The ``sagemaker`` backend: each attempt is one SageMaker Processing job, built from a checked request.

Nothing is sent until the whole request passes SageMaker's rules; throttled calls back off and retry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from shardflow.compute.sagemaker_request import build_create_request, input_manifest, validate_request
from shardflow.core.ports import ProcessingRequest, ProcessingState, ProcessingStatus
from shardflow.core.s3uri import S3Uri
from shardflow.errors import ProcessingJobExists

__all__ = ["Backoff", "SageMakerBackend"]

log = logging.getLogger(__name__)

_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)


@dataclass(frozen=True)
class Backoff:
    """Retries of a throttled call: exponential delays with full jitter, so callers spread out.

    :param attempts: calls in all, the first one included.
    :param base_seconds: the first delay's upper bound; it doubles on each retry.
    :param cap_seconds: no delay is longer than this.
    """

    attempts: int = 8
    base_seconds: float = 0.5
    cap_seconds: float = 20.0

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap_seconds, self.base_seconds * 2**retry))


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _is_throttling(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(error) in _THROTTLING or status == 429


def _is_not_found(error: ClientError) -> bool:
    # SageMaker answers a describe of an unknown name with a ValidationException ("Could not find").
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    code = _error_code(error)
    return code == "ResourceNotFound" or (code == "ValidationException" and "could not find" in message)


class SageMakerBackend:
    """Runs each attempt as a SageMaker Processing job.

    Clients come from ``client_factory`` when one is given (the Airflow layer builds it from the
    connection ``aws_conn_id``), else from boto3's default chain with ``region_name`` and
    ``endpoint_url``. :meth:`config` holds only those names, never credentials, so the triggerer
    rebuilds the backend from it and finds the credentials itself.

    :param aws_conn_id: the Airflow connection the client factory reads; kept for :meth:`config`.
    :param region_name: the region, when no connection is named (or to override the connection's).
    :param endpoint_url: an endpoint for SageMaker and S3, when no connection is named.
    :param client_factory: builds the boto3 client of a service (``"sagemaker"``, ``"s3"``).
    :param sagemaker_client: a ready client (tests); built from the settings above otherwise.
    :param s3_client: likewise, for listing the input prefix and writing input manifests.
    :param backoff: how throttled calls are retried.
    :param sleep: how to wait between retries.
    """

    name = "sagemaker"

    def __init__(
        self,
        aws_conn_id: str | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        *,
        client_factory: Callable[[str], Any] | None = None,
        sagemaker_client: Any = None,
        s3_client: Any = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.client_factory = client_factory
        if sagemaker_client is not None:
            self.sagemaker = sagemaker_client
        if s3_client is not None:
            self.s3 = s3_client
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = random.Random()

    @cached_property
    def sagemaker(self) -> Any:
        return self._client("sagemaker")

    @cached_property
    def s3(self) -> Any:
        return self._client("s3")

    def _client(self, service: str) -> Any:
        if self.client_factory is not None:
            return self.client_factory(service)
        import boto3

        return boto3.client(service, region_name=self.region_name, endpoint_url=self.endpoint_url)

    def config(self) -> dict[str, Any]:
        settings = {"aws_conn_id": self.aws_conn_id, "region_name": self.region_name, "endpoint_url": self.endpoint_url}
        return {key: value for key, value in settings.items() if value is not None}

    def submit(self, request: ProcessingRequest) -> None:
        region = self.sagemaker.meta.region_name
        settings = validate_request(request, region)
        # Checked first: SageMaker refuses a taken name, but a stand-in such as moto replaces the job.
        if self.describe(request.job_name) is not None:
            raise ProcessingJobExists(f"processing job {request.job_name!r} exists already in {region}")
        manifest = None
        # A dynamic job has no data input: its instances claim units and read them themselves.
        if not request.dynamic and not self._prefix_holds_exactly(request):
            manifest, body = input_manifest(request)
            self._call(self.s3.put_object, Bucket=manifest.bucket, Key=manifest.key, Body=body)
        create = build_create_request(request, settings, region, manifest)
        try:
            self._call(self.sagemaker.create_processing_job, **create)
        except ClientError as error:
            if _error_code(error) == "ResourceInUse":
                raise ProcessingJobExists(f"processing job {request.job_name!r} exists already in {region}") from None
            raise
        log.info(
            "created processing job %s: %d x %s over %d object(s) from %s",
            request.job_name,
            request.instance_count,
            request.job.compute.instance_type,
            len(request.input_keys),
            f"{request.units} units claimed from the job record"
            if request.dynamic
            else f"manifest {manifest}"
            if manifest
            else request.job.input.prefix,
        )

    def _prefix_holds_exactly(self, request: ProcessingRequest) -> bool:
        """Whether the input prefix holds just the objects to process, so SageMaker can read the
        prefix itself; otherwise (a resubmission, or other objects beside the inputs) a manifest
        names exactly the objects of this attempt."""
        prefix = S3Uri.parse(request.job.input.prefix)
        wanted = set(request.input_keys)
        listed = 0
        token: dict[str, str] = {}
        while True:
            page = self._call(self.s3.list_objects_v2, Bucket=prefix.bucket, Prefix=prefix.key, **token)
            for item in page.get("Contents", []):
                if item["Key"] not in wanted:
                    return False
                listed += 1
            if not page.get("IsTruncated"):
                return listed == len(wanted)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def describe(self, job_name: str) -> ProcessingStatus | None:
        try:
            job = self._call(self.sagemaker.describe_processing_job, ProcessingJobName=job_name)
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise
        status = job["ProcessingJobStatus"]
        try:
            state = ProcessingState(status)
        except ValueError:
            raise RuntimeError(
                f"SageMaker reports processing job {job_name} as {status!r}, a state Shardflow does not know: "
                "upgrade Shardflow, or stop the job in the SageMaker console"
            ) from None
        reasons = [job.get("FailureReason"), job.get("ExitMessage")]
        return ProcessingStatus(state, "; ".join(r for r in reasons if r) or None)

    def stop(self, job_name: str) -> None:
        status = self.describe(job_name)
        if status is None or status.state is not ProcessingState.IN_PROGRESS:
            return
        try:
            self._call(self.sagemaker.stop_processing_job, ProcessingJobName=job_name)
        except ClientError as error:
            if _error_code(error) != "ValidationException":
                raise
            # Refused because the job ended between the describe and the stop: nothing to stop.
            latest = self.describe(job_name)
            if latest is not None and latest.state is ProcessingState.IN_PROGRESS:
                raise
            return
        log.info("asked SageMaker to stop processing job %s", job_name)

    def _call(self, operation: Callable[..., Any], **kwargs: Any) -> Any:
        """Call ``operation``; a throttled call is retried after a growing, jittered delay, and the
        last attempt's error is raised as it is."""
        for retry in range(self.backoff.attempts - 1):
            try:
                return operation(**kwargs)
            except ClientError as error:
                if not _is_throttling(error):
                    raise
                delay = self.backoff.delay(retry, self._rng)
                log.warning("%s was throttled (%s); retrying in %.1f s", operation.__name__, _error_code(error), delay)
                self._sleep(delay)
        return operation(**kwargs)
