"""S3 behind the lifecycle's :class:`~shardflow.core.ports.ObjectStore` port, on a boto3 client.

S3's errors for a missing object, a missing bucket or a refused access become named
:class:`~shardflow.errors.ResourceError` s that say which address and what to do; botocore's
traceback goes to the debug log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from botocore.exceptions import ClientError

from shardflow.core.s3uri import S3Object, S3Uri
from shardflow.errors import AccessDenied, BucketNotFound, ObjectNotFound, ResourceError

__all__ = ["S3ObjectStore", "iter_objects", "named_s3_error"]

log = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def named_s3_error(error: ClientError, uri: S3Uri, action: str) -> ResourceError | None:
    """The named error for S3's ``error`` on ``uri`` while doing ``action`` (``s3:GetObject``, ...),
    or ``None`` when it is none of the named faults (a throttle, an outage: let it propagate)."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code == "NoSuchBucket":
        return BucketNotFound(
            f"bucket {uri.bucket!r} does not exist ({action} on {uri}): check the address, or create the bucket"
        )
    if code in _NOT_FOUND:
        return ObjectNotFound(f"no object at {uri}: check the address (and that it was uploaded)")
    if code in _DENIED:
        return AccessDenied(
            f"access denied to {uri} ({code}): give the credentials in use {action} on it, or check which "
            "credentials are in use"
        )
    return None


@contextmanager
def _named_faults(uri: S3Uri, action: str) -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        named = named_s3_error(error, uri, action)
        if named is None:
            raise
        log.debug("S3 refused %s on %s", action, uri, exc_info=error)
        raise named from None


def iter_objects(s3: Any, prefix: S3Uri) -> Iterator[S3Object]:
    """Every object under ``prefix`` in key order (S3 lists keys in UTF-8 binary order)."""
    paginator = s3.get_paginator("list_objects_v2")
    with _named_faults(prefix, "s3:ListBucket"):
        for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
            for item in page.get("Contents", []):
                yield S3Object(item["Key"], int(item["Size"]))


class S3ObjectStore:
    """:param client: a boto3 S3 client (or an Airflow ``S3Hook``'s connection)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list(self, prefix: S3Uri) -> Iterator[S3Object]:
        return iter_objects(self.client, prefix)

    def read(self, uri: S3Uri, start: int | None = None, end: int | None = None) -> bytes:
        ranged = {"Range": f"bytes={start}-{end}"} if start is not None and end is not None else {}
        with _named_faults(uri, "s3:GetObject"):
            return bytes(self.client.get_object(Bucket=uri.bucket, Key=uri.key, **ranged)["Body"].read())

    def download(self, uri: S3Uri, into: IO[bytes]) -> None:
        with _named_faults(uri, "s3:GetObject"):
            self.client.download_fileobj(uri.bucket, uri.key, into)

    def put(self, uri: S3Uri, body: bytes) -> None:
        with _named_faults(uri, "s3:PutObject"):
            self.client.put_object(Bucket=uri.bucket, Key=uri.key, Body=body)
