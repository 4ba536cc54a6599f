"""The first step of a job: list its inputs, check the model against them, write the job record."""

from __future__ import annotations

import hashlib
import io
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shardflow.core.job import JobSpec
from shardflow.core.keys import relative_key
from shardflow.core.planning import input_suffixes, job_id_for_run
from shardflow.core.ports import JobStorePort, ObjectStore
from shardflow.core.record import FileRecord, JobRecord
from shardflow.core.s3uri import S3Object, S3Uri
from shardflow.errors import ModelRefused, ObjectNotFound, PrepareError, UnsafeKey

__all__ = ["MAX_REFUSED_LISTED", "is_feature_type", "load_verified_model", "prepare_job"]

#: The job record names at most this many refused keys (and counts them all): a prefix full of
#: hostile keys must not grow the job item past DynamoDB's 400 KB.
MAX_REFUSED_LISTED = 20


class _RangeFile(io.RawIOBase):
    """A seekable read-only view of an object by ranged reads, so a Parquet footer can be read
    without downloading the file."""

    def __init__(self, objects: ObjectStore, uri: S3Uri, size: int) -> None:
        self.objects, self.uri, self.size, self.pos = objects, uri, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.size or not len(buffer):
            return 0
        end = min(self.pos + len(buffer), self.size) - 1
        data = self.objects.read(self.uri, self.pos, end)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def load_verified_model(objects: ObjectStore, uri: S3Uri, expected_sha256: str) -> Any:
    """Download the model, check its sha256, and only then unpickle it.

    :raises PrepareError: the model does not exist, is refused (:class:`ModelRefused`), cannot be
        unpickled, or is not a model (it has no ``predict``); each message names its URI.
    """
    import joblib

    with tempfile.NamedTemporaryFile(suffix=".joblib") as handle:
        try:
            objects.download(uri, handle)
        except ObjectNotFound:
            raise PrepareError(
                f"model {uri} does not exist: check the spec's model.uri (and that the model was uploaded)"
            ) from None
        handle.flush()
        handle.seek(0)
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != expected_sha256:
            raise ModelRefused(
                f"model {uri} has sha256 {actual} but the spec expects {expected_sha256}: "
                "if the new artifact is intended, put its sha256 in the spec's model.sha256; it was not loaded"
            )
        try:
            model = joblib.load(handle.name)
        except Exception as error:
            raise PrepareError(
                f"model {uri} cannot be loaded with joblib ({type(error).__name__}: {error}): "
                "point model.uri at a model saved with joblib.dump"
            ) from None
    if not callable(getattr(model, "predict", None)):
        raise PrepareError(
            f"model {uri} is a {type(model).__name__}, not a model: it has no predict method; "
            "point model.uri at a fitted estimator saved with joblib.dump"
        )
    return model


def is_feature_type(kind: pa.DataType) -> bool:
    """Whether a column of this Arrow type can be a model's feature: a number, a boolean, or a
    column a text reader typed null because the block it looked at had no value."""
    checks = (pa.types.is_floating, pa.types.is_integer, pa.types.is_boolean, pa.types.is_null)
    return any(check(kind) for check in checks)


def _check_features(objects: ObjectStore, job: JobSpec, model: Any, first: S3Uri, size: int) -> None:
    names = getattr(model, "feature_names_in_", None)
    features = [str(n) for n in names] if names is not None else list(job.features or ())
    if not features:
        raise PrepareError(
            f"model {job.model.uri} does not record its feature names: list them in the spec's `features`"
        )
    if job.input.format != "parquet":
        return  # text formats are checked file by file by the processing script
    schema = pq.ParquetFile(_RangeFile(objects, first, size)).schema_arrow
    missing = [name for name in features if name not in schema.names]
    if missing:
        raise PrepareError(
            f"{first} lacks the model's feature column(s) {', '.join(missing)} (it has {', '.join(schema.names)}): "
            "fix the input data or the spec's model"
        )
    mistyped = [
        f"{name} ({schema.field(name).type})" for name in features if not is_feature_type(schema.field(name).type)
    ]
    if mistyped:
        raise PrepareError(
            f"{first}: the model's feature column(s) {', '.join(mistyped)} are not numbers: "
            "fix the input data or the spec's model"
        )


def _split_safe(found: list[S3Object], prefix: S3Uri) -> tuple[list[FileRecord], list[str]]:
    """The files to predict, and the reasons for each key refused as unsafe (never read)."""
    files: list[FileRecord] = []
    refused: list[str] = []
    for item in found:
        try:
            files.append(FileRecord(key=relative_key(prefix.key, item.key), size=item.size))
        except UnsafeKey as error:
            refused.append(str(error))
    return files, refused


def prepare_job(job: JobSpec, store: JobStorePort, objects: ObjectStore) -> JobRecord:
    """List the inputs, check the model against them, and write the job record (once per run).

    A key that is not a plain relative path under the prefix (``..``, ``//``, a control
    character: see :mod:`shardflow.core.keys`) is refused: named in the job record
    (``refused_files``), never downloaded and never given a file item, so the job fails at its
    end for it while the other files go on.

    :raises PrepareError: no inputs, a model that does not match, or inputs the model cannot read.
    """
    job_id = job_id_for_run(job.pipeline, job.dag_id, job.run_id)
    prefix = S3Uri.parse(job.input.prefix).as_prefix()
    suffixes = input_suffixes(job.input.format)
    found = [o for o in objects.list(prefix) if o.key.endswith(suffixes) and o.size > 0]
    if not found:
        raise PrepareError(
            f"no {job.input.format} files ({', '.join(suffixes)}) under {prefix}: "
            "check the spec's input.prefix and the run's date"
        )
    files, refused = _split_safe(found, prefix)
    if not files:
        raise PrepareError(
            f"every one of the {len(refused)} {job.input.format} key(s) under {prefix} is refused, e.g. {refused[0]}: "
            "rename them to plain relative keys"
        )
    model = load_verified_model(objects, S3Uri.parse(job.model.uri), job.model.sha256)
    first = next(o for o in found if o.key == prefix.key + files[0].key)
    _check_features(objects, job, model, S3Uri(prefix.bucket, first.key), first.size)
    record = JobRecord(job_id=job_id, job=job, files_refused=len(refused), refused_files=refused[:MAX_REFUSED_LISTED])
    return store.create_job(record, files)
