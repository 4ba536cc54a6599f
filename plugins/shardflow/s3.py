"""S3 addressing and the few object operations Shardflow needs, on a plain boto3 S3 client.

Kept free of Airflow so the processing image and the local backend share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["S3Object", "S3Uri", "iter_objects"]


@dataclass(frozen=True)
class S3Uri:
    """An ``s3://bucket/key`` address; a prefix is a key that ends with ``/``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an S3 URI: write it as s3://bucket/key")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} has no bucket: write it as s3://bucket/key")
        return cls(bucket, key)

    def as_prefix(self) -> S3Uri:
        """The same address with exactly one trailing ``/``, so ``a/b`` never matches ``a/bc``."""
        return S3Uri(self.bucket, self.key.rstrip("/") + "/" if self.key else "")

    def join(self, *parts: str) -> S3Uri:
        key = "/".join([self.key.rstrip("/"), *(p.strip("/") for p in parts)]).lstrip("/")
        return S3Uri(self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int


def iter_objects(s3: Any, prefix: S3Uri) -> Iterator[S3Object]:
    """Every object under ``prefix`` in key order (S3 lists keys in UTF-8 binary order)."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
        for item in page.get("Contents", []):
            yield S3Object(item["Key"], int(item["Size"]))
