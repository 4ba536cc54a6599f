"""The lifecycle's world in memory: the ports' fakes, the real demo model and real Parquet inputs,
and a stand-in for the processing script that reports to the job record as the real one does."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

import joblib
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.fakes import FakeBackend, InMemoryJobStore, InMemoryObjectStore
from support.records import sample_job_spec

from shardflow.core.job import JobSpec
from shardflow.core.planning import assign_shards
from shardflow.core.prepare import prepare_job
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus, utcnow
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, train_demo_model

BUCKET = "shardflow-unit"
MODEL_URI = f"s3://{BUCKET}/models/demo.joblib"
INPUT = S3Uri(BUCKET, "in/")
OUTPUT = S3Uri(BUCKET, "out/")
#: Four small files, two of them in a sub-folder: late/part-0001, late/part-0003, part-0000, part-0002.
ROWS = (300, 200, 500, 100)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=5_000)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def demo_model() -> bytes:
    """The demo's real XGBoost model as joblib bytes, trained once (about a second)."""
    return train_demo_model()


@pytest.fixture
def object_store() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def job_store() -> InMemoryJobStore:
    return InMemoryJobStore()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def tables() -> dict[str, pa.Table]:
    """The demo dataset's tables by key relative to the input prefix."""
    return demo_dataset(ROWS)


@pytest.fixture
def upload(object_store: InMemoryObjectStore) -> Callable[..., None]:
    """Write tables as Parquet objects under a prefix (the input prefix by default)."""

    def write(tables: Mapping[str, pa.Table], prefix: S3Uri = INPUT) -> None:
        for relative, table in tables.items():
            object_store.put(prefix.join(relative), parquet_bytes(table))

    return write


@pytest.fixture
def job_spec(demo_model: bytes) -> Callable[..., JobSpec]:
    """A job over ``in/`` into ``out/`` with the demo model, resubmitting without backoff unless
    told; keyword arguments change its settings flatly (``instance_count``, ``max_attempts``, ...),
    as :func:`support.records.sample_job_spec` does."""

    def make(**changes: Any) -> JobSpec:
        settings: dict[str, Any] = {
            "model_uri": MODEL_URI,
            "model_sha256": hashlib.sha256(demo_model).hexdigest(),
            "input_prefix": str(INPUT),
            "output_prefix": str(OUTPUT),
            "backoff_seconds": 0,
            **changes,
        }
        return sample_job_spec("churn-1", BUCKET, **settings)

    return make


@pytest.fixture
def prepared(
    object_store: InMemoryObjectStore,
    job_store: InMemoryJobStore,
    demo_model: bytes,
    tables: dict[str, pa.Table],
    upload: Callable[..., None],
    job_spec: Callable[..., JobSpec],
) -> Callable[..., JobRecord]:
    """Upload the model and the dataset, and prepare a job over them (its settings as ``job_spec``)."""

    def make(**changes: Any) -> JobRecord:
        object_store.put(S3Uri.parse(MODEL_URI), demo_model)
        upload(tables)
        return prepare_job(job_spec(**changes), job_store, object_store)

    return make


class ScriptDouble:
    """The processing script of one attempt, played in this process: each instance reads its shard
    of the request's input files, predicts them with the real model, reports each file to the job
    record, and (unless told not to) uploads its outputs and its manifest, as SageMaker does when a
    job ends.

    :param store: the job table the script reports to.
    :param objects: where inputs are read and outputs uploaded.
    :param backend: holds the requests of the attempts.
    :param model: the joblib bytes of the model.
    """

    def __init__(
        self, store: InMemoryJobStore, objects: InMemoryObjectStore, backend: FakeBackend, model: bytes
    ) -> None:
        self.store, self.objects, self.backend = store, objects, backend
        self.model = joblib.load(io.BytesIO(model))

    def run(
        self,
        job_id: str,
        *,
        fail: Mapping[str, str | tuple[ErrorKind, str]] | None = None,
        unreported: Collection[str] = (),
        upload: bool = True,
    ) -> str:
        """Run the job's current attempt; returns its processing job's name.

        :param fail: input keys (relative) the script fails, with their error, classified as the
            script classifies it (``(ErrorKind.INPUT, "...")``) or not at all (a bare message).
        :param unreported: input keys the script never reports (its instance died first).
        :param upload: whether the outputs and manifests reach the object store.
        """
        record = self.store.get_job(job_id)
        name = record.current_processing_job
        request = next(r for r in self.backend.requests if r.job_name == name)
        if record.status is JobStatus.SUBMITTED:
            started = {} if record.started_at else {"started_at": utcnow()}
            self.store.transition(record, JobStatus.RUNNING, **started)
        prefix, output = S3Uri.parse(record.input_prefix), request.staging_prefix  # uploads go to staging
        for index, shard in enumerate(assign_shards(sorted(request.input_keys), request.instance_count)):
            keys = [k[len(prefix.key) :] for k in shard]
            results = [self._predict(k, prefix, output, name, fail or {}, upload) for k in keys if k not in unreported]
            self.store.record_file_results(job_id, results)
            rows = sum(r.rows for r in results)
            self.store.heartbeat(job_id, request.attempt, files=len(results), rows=rows)
            if upload:
                manifest = {
                    "processing_job": name,
                    "host": f"algo-{index + 1}",
                    "files": [
                        {"input": r.key, "output": r.output_key, "rows": r.rows, "sha256": self._sha256(output, r)}
                        for r in results
                        if r.status is FileStatus.SUCCEEDED
                    ],
                    "failed": [{"input": r.key, "error": r.error} for r in results if r.error],
                }
                self.objects.put(output.join(f"_manifests/{name}-algo-{index + 1}.json"), json.dumps(manifest).encode())
        return str(name)

    def _sha256(self, output: S3Uri, result: FileRecord) -> str:
        return hashlib.sha256(self.objects.read(output.join(str(result.output_key)))).hexdigest()

    def _predict(
        self,
        relative: str,
        prefix: S3Uri,
        output: S3Uri,
        name: str | None,
        fail: Mapping[str, str | tuple[ErrorKind, str]],
        upload: bool,
    ) -> FileRecord:
        size = len(self.objects.read(prefix.join(relative)))
        if relative in fail:
            kind, error = (None, fail[relative]) if isinstance(fail[relative], str) else fail[relative]
            return FileRecord(relative, size, FileStatus.FAILED, error=str(error), processing_job=name, error_kind=kind)
        table = pq.read_table(pa.BufferReader(self.objects.read(prefix.join(relative))))
        predictions = self.model.predict(table.select(DEMO_FEATURES).to_pandas())
        result = table.select(["id"]).append_column("prediction", pa.array(predictions))
        if upload:
            self.objects.put(output.join(relative), parquet_bytes(result))
        return FileRecord(
            relative, size, FileStatus.SUCCEEDED, rows=result.num_rows, output_key=relative, processing_job=name
        )


@pytest.fixture
def script(
    job_store: InMemoryJobStore, object_store: InMemoryObjectStore, backend: FakeBackend, demo_model: bytes
) -> ScriptDouble:
    return ScriptDouble(job_store, object_store, backend, demo_model)
