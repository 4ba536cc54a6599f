"""S3 behind the lifecycle's :class:`~shardflow.core.ports.ObjectStore` port, on a boto3 client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from shardflow.core.s3uri import S3Object, S3Uri

__all__ = ["S3ObjectStore", "iter_objects"]


def iter_objects(s3: Any, prefix: S3Uri) -> Iterator[S3Object]:
    """Every object under ``prefix`` in key order (S3 lists keys in UTF-8 binary order)."""
    paginator = s3.get_paginator("list_objects_v2")
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
        return bytes(self.client.get_object(Bucket=uri.bucket, Key=uri.key, **ranged)["Body"].read())

    def download(self, uri: S3Uri, into: IO[bytes]) -> None:
        self.client.download_fileobj(uri.bucket, uri.key, into)

    def put(self, uri: S3Uri, body: bytes) -> None:
        self.client.put_object(Bucket=uri.bucket, Key=uri.key, Body=body)
