"""S3 addresses: parsing, checking and joining ``s3://bucket/key`` strings, without a client."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["S3Object", "S3Uri", "check_s3_uri"]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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

    @property
    def name(self) -> str:
        """The last segment of the key: the object's file name."""
        return self.key.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int


def check_s3_uri(value: str, *, prefix: bool) -> str:
    """Return ``value`` if it is an ``s3://`` prefix (``prefix=True``) or object URI; else raise
    ``ValueError`` saying what to write instead."""
    if not value.startswith("s3://"):
        raise ValueError("must start with s3:// (for example s3://my-bucket/path/)")
    if len(value) > 1024:
        raise ValueError(f"is {len(value)} characters long; S3 and SageMaker accept at most 1024")
    bucket, _, key = value[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(
            f"bucket {bucket!r} is not a valid S3 bucket name "
            "(3-63 characters: lower-case letters, digits, dots and hyphens)"
        )
    if prefix and key and not key.endswith("/"):
        raise ValueError("a prefix must end with '/' so that it never matches a sibling folder")
    if not prefix and (not key or key.endswith("/")):
        raise ValueError("must name an object, not a folder")
    return value
