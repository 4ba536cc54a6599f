"""The first step of a job: list its inputs, check the model against them, write the job record."""

from __future__ import annotations

import hashlib
import io
import tempfile
from typing import Any

import pyarrow.parquet as pq

from shardflow.core.job import JobSpec
from shardflow.core.planning import input_suffixes, job_id_for_run
from shardflow.core.ports import JobStorePort, ObjectStore
from shardflow.core.record import FileRecord, JobRecord
from shardflow.core.s3uri import S3Uri
from shardflow.errors import ModelRefused, PrepareError

__all__ = ["load_verified_model", "prepare_job"]


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
    """Download the model, check its sha256, and only then unpickle it."""
    import joblib

    with tempfile.NamedTemporaryFile(suffix=".joblib") as handle:
        objects.download(uri, handle)
        handle.flush()
        handle.seek(0)
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != expected_sha256:
            raise ModelRefused(
                f"model {uri} has sha256 {actual} but the spec expects {expected_sha256}: "
                "if the new artifact is intended, put its sha256 in the spec's model.sha256; it was not loaded"
            )
        return joblib.load(handle.name)


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


def prepare_job(job: JobSpec, store: JobStorePort, objects: ObjectStore) -> JobRecord:
    """List the inputs, check the model against them, and write the job record (once per run).

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
    model = load_verified_model(objects, S3Uri.parse(job.model.uri), job.model.sha256)
    _check_features(objects, job, model, S3Uri(prefix.bucket, found[0].key), found[0].size)
    files = [FileRecord(key=o.key[len(prefix.key) :], size=o.size) for o in found]
    return store.create_job(JobRecord(job_id=job_id, job=job), files)
