"""S3 behind the lifecycle's :class:`~shardflow.core.ports.ObjectStore` port, on a boto3 client,
and the one listing a trigger does from an event loop (:func:`first_object_async`).

S3's errors for a missing object, a missing bucket or a refused access become named
:class:`~shardflow.errors.ResourceError` s that say which address and what to do; botocore's
traceback goes to the debug log.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from botocore.exceptions import ClientError

from shardflow.core.s3uri import S3Object, S3Uri
from shardflow.errors import AccessDenied, BucketNotFound, ObjectExists, ObjectNotFound, ResourceError

__all__ = ["S3ObjectStore", "first_object_async", "iter_objects", "named_s3_error"]

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


async def first_object_async(client: Any, prefix: S3Uri, accept: Callable[[S3Object], bool]) -> S3Object | None:
    """The first object under ``prefix``, in key order, that ``accept`` takes, listed page by page
    with an async (aiobotocore) S3 client; ``None`` when there is none."""
    paginator = client.get_paginator("list_objects_v2")
    with _named_faults(prefix, "s3:ListBucket"):
        async for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
            for item in page.get("Contents", []):
                found = S3Object(item["Key"], int(item["Size"]))
                if accept(found):
                    return found
    return None


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

    def upload(self, path: str, uri: S3Uri) -> None:
        """Upload a local file (in parts, when it is big)."""
        with _named_faults(uri, "s3:PutObject"):
            self.client.upload_file(path, uri.bucket, uri.key)

    def put(self, uri: S3Uri, body: bytes, *, create_only: bool = False) -> None:
        """Write ``body`` at ``uri``; with ``create_only``, only if no object is there
        (``If-None-Match: *``, which S3 and moto both honour on PutObject)."""
        condition = {"IfNoneMatch": "*"} if create_only else {}
        with _named_faults(uri, "s3:PutObject"), _exists_on_412(uri):
            self.client.put_object(Bucket=uri.bucket, Key=uri.key, Body=body, **condition)

    def copy(self, source: S3Uri, target: S3Uri, *, create_only: bool) -> str:
        """A server-side CopyObject that asks S3 for the new object's SHA-256, so what readers
        will see is verified without a byte passing through here. ``create_only`` sends
        ``If-None-Match: *``: S3 refuses the copy (412) when the target exists. moto (5.2) ignores
        that header on CopyObject; publish guards that case by its listing (docs/outputs.md)."""
        condition = {"IfNoneMatch": "*"} if create_only else {}
        with _named_faults(source, "s3:GetObject and s3:PutObject"), _exists_on_412(target):
            response = self.client.copy_object(
                Bucket=target.bucket,
                Key=target.key,
                CopySource={"Bucket": source.bucket, "Key": source.key},
                ChecksumAlgorithm="SHA256",
                **condition,
            )
        checksum = response.get("CopyObjectResult", {}).get("ChecksumSHA256")
        if checksum:
            return base64.b64decode(checksum).hex()
        return self._sha256(target)  # a store that computes no checksum: read the copy back

    def _sha256(self, uri: S3Uri) -> str:
        digest = hashlib.sha256()
        with _named_faults(uri, "s3:GetObject"):
            body = self.client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def delete_objects(self, uris: Iterable[S3Uri]) -> int:
        """DeleteObjects, 1,000 keys a request; a key S3 could not delete is an error naming it."""
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            by_bucket.setdefault(uri.bucket, []).append(uri.key)
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), 1000):
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                with _named_faults(S3Uri(bucket, batch[0]["Key"]), "s3:DeleteObject"):
                    response = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                errors = response.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise ResourceError(
                        f"S3 did not delete {len(errors)} object(s), e.g. s3://{bucket}/{first.get('Key')} "
                        f"({first.get('Code')}: {first.get('Message')}): check s3:DeleteObject on it"
                    )
        return sum(len(keys) for keys in by_bucket.values())


@contextmanager
def _exists_on_412(uri: S3Uri) -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) not in ("PreconditionFailed", "412"):
            raise
        raise ObjectExists(f"{uri} exists already and this write may only create it") from None
