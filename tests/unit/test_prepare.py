"""Prepare, with real Parquet inputs and the real demo model in an in-memory object store: one
file item per input, and every reason a job could never work refused before anything is written."""

import hashlib
import io
import os

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from support.fakes import InMemoryObjectStore

from shardflow.core.planning import job_id_for_run
from shardflow.core.prepare import prepare_job
from shardflow.core.record import FileStatus, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.errors import JobNotFound, ModelRefused, PrepareError
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset

MODEL_URI = "s3://shardflow-unit/models/demo.joblib"
INPUT = S3Uri("shardflow-unit", "in/")


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=5_000)
    return buffer.getvalue()


def test_prepare_writes_one_pending_file_item_per_input(object_store, job_store, prepared, tables):
    object_store.put(INPUT.join("_SUCCESS"), b"")  # an upstream job's marker
    object_store.put(INPUT.join("README.txt"), b"not data")
    object_store.put(INPUT.join("empty.parquet"), b"")  # nothing to predict
    object_store.put(S3Uri("shardflow-unit", "in-old/part-0000.parquet"), parquet_bytes(tables["part-0000.parquet"]))

    record = prepared()

    assert record.job_id == job_id_for_run("churn", "shardflow_churn", "manual__1")
    assert (record.status, record.attempt, record.files_total) == (JobStatus.PENDING, 0, 4)
    assert job_store.get_job(record.job_id) == record
    files = job_store.list_files(record.job_id)
    sizes = {o.key.removeprefix("in/"): o.size for o in object_store.list(INPUT)}
    assert [(f.key, f.size) for f in files] == [
        (key, sizes[key])
        for key in ("late/part-0001.parquet", "late/part-0003.parquet", "part-0000.parquet", "part-0002.parquet")
    ]
    assert {f.status for f in files} == {FileStatus.PENDING}


def test_an_empty_prefix_is_refused_and_no_job_is_written(object_store, job_store, job_spec, demo_model):
    object_store.put(S3Uri.parse(MODEL_URI), demo_model)
    object_store.put(INPUT.join("_SUCCESS"), b"")
    object_store.put(INPUT.join("part-0000.parquet"), b"")
    job = job_spec()

    with pytest.raises(PrepareError, match=r"no parquet files \(\.parquet, \.parq\) under s3://shardflow-unit/in/"):
        prepare_job(job, job_store, object_store)

    with pytest.raises(JobNotFound):
        job_store.get_job(job_id_for_run(job.pipeline, job.dag_id, job.run_id))


class Tripwire:
    """An artifact that runs code when unpickled: it makes a directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_model_whose_sha256_differs_is_refused_and_never_loaded(
    object_store, job_store, job_spec, upload, tables, demo_model, tmp_path
):
    tripwire = tmp_path / "the-model-ran"
    replaced = tmp_path / "replaced.joblib"
    joblib.dump(Tripwire(str(tripwire)), replaced)
    object_store.put(S3Uri.parse(MODEL_URI), replaced.read_bytes())
    upload(tables)
    expected = hashlib.sha256(demo_model).hexdigest()

    with pytest.raises(ModelRefused) as refused:
        prepare_job(job_spec(model_sha256=expected), job_store, object_store)

    actual = hashlib.sha256(replaced.read_bytes()).hexdigest()
    assert str(refused.value).startswith(f"model {MODEL_URI} has sha256 {actual} but the spec expects {expected}")
    assert "it was not loaded" in str(refused.value)
    assert not tripwire.exists()
    assert not list(job_store.list_files(job_id_for_run("churn", "shardflow_churn", "manual__1")))
    joblib.load(replaced)  # what loading it would have done
    assert tripwire.is_dir()


def test_inputs_lacking_a_feature_are_refused_naming_the_file_and_the_column(object_store, job_store, prepared, tables):
    tables.update({key: table.drop_columns(["f3"]) for key, table in tables.items()})

    with pytest.raises(PrepareError) as refused:
        prepared()

    assert str(refused.value) == (
        "s3://shardflow-unit/in/late/part-0001.parquet lacks the model's feature column(s) f3 "
        "(it has id, f0, f1, f2, f4, f5, f6, f7, region): fix the input data or the spec's model"
    )


def numpy_model_bytes(tmp_path) -> bytes:
    """A real model fitted on a bare array: it does not record its feature names."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, len(DEMO_FEATURES)))
    path = tmp_path / "numpy.joblib"
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("features", "words"),
    [
        (None, "does not record its feature names: list them in the spec's `features`"),
        (["f0", "score"], "lacks the model's feature column(s) score"),
        (DEMO_FEATURES, None),
    ],
)
def test_a_model_without_feature_names_takes_them_from_the_spec(
    object_store, job_store, job_spec, upload, tables, tmp_path, features, words
):
    model = numpy_model_bytes(tmp_path)
    object_store.put(S3Uri.parse(MODEL_URI), model)
    upload(tables)
    job = job_spec(model_sha256=hashlib.sha256(model).hexdigest(), features=features)

    if words is None:
        assert prepare_job(job, job_store, object_store).files_total == 4
    else:
        with pytest.raises(PrepareError, match=words.replace("(", r"\(").replace(")", r"\)")):
            prepare_job(job, job_store, object_store)


class CountingObjectStore(InMemoryObjectStore):
    """Counts the bytes read from each object."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read: dict[S3Uri, int] = {}

    def read(self, uri, start=None, end=None):
        body = super().read(uri, start, end)
        self.bytes_read[uri] = self.bytes_read.get(uri, 0) + len(body)
        return body


def test_prepare_reads_the_schema_from_the_footer_not_the_whole_input(job_store, job_spec, demo_model):
    objects = CountingObjectStore()
    objects.put(S3Uri.parse(MODEL_URI), demo_model)
    big = INPUT.join("part-0000.parquet")
    objects.put(big, parquet_bytes(demo_dataset((200_000,))["part-0000.parquet"]))

    prepare_job(job_spec(), job_store, objects)

    size = len(objects.objects[big])
    assert size > 5_000_000
    assert 0 < objects.bytes_read[big] < size // 20


HOSTILE_KEYS = {
    "in/../../../../../../../../../../../tmp/x/pwned.parquet": "'..' segment",
    "in//tmp/x/pwned.parquet": "starts with '/'",
    "in/a/../b.parquet": "'..' segment",
    "in/late\n/part.parquet": "control character",
    "in/..\\evil.parquet": "backslash",
}


def test_hostile_keys_are_bad_inputs_named_in_the_record_and_never_given_a_file_item(
    object_store, job_store, prepared, tables
):
    body = parquet_bytes(tables["part-0000.parquet"])
    for key in HOSTILE_KEYS:
        object_store.put(S3Uri("shardflow-unit", key), body)

    record = prepared()

    assert record.files_total == 4 and record.files_refused == len(HOSTILE_KEYS)
    assert len(record.refused_files) == len(HOSTILE_KEYS)
    for key, reason in HOSTILE_KEYS.items():
        (line,) = [r for r in record.refused_files if repr(key) in r]
        assert reason in line
    assert job_store.get_job(record.job_id) == record
    keys = [f.key for f in job_store.list_files(record.job_id)]
    assert keys == ["late/part-0001.parquet", "late/part-0003.parquet", "part-0000.parquet", "part-0002.parquet"]


def test_hostile_keys_beyond_twenty_are_counted_not_listed(object_store, job_store, prepared, tables):
    body = parquet_bytes(tables["part-0000.parquet"])
    for index in range(50):
        object_store.put(S3Uri("shardflow-unit", f"in/x//{index}.parquet"), body)

    record = prepared()

    assert (record.files_refused, len(record.refused_files), record.files_total) == (50, 20, 4)


def test_hostile_keys_only_are_refused_before_any_job_is_written(object_store, job_store, job_spec, demo_model, tables):
    object_store.put(S3Uri.parse(MODEL_URI), demo_model)
    object_store.put(S3Uri("shardflow-unit", "in/a/../b.parquet"), parquet_bytes(tables["part-0000.parquet"]))
    job = job_spec()

    with pytest.raises(PrepareError, match=r"every one of the 1 parquet key\(s\) under s3://shardflow-unit/in/"):
        prepare_job(job, job_store, object_store)

    with pytest.raises(JobNotFound):
        job_store.get_job(job_id_for_run(job.pipeline, job.dag_id, job.run_id))


@pytest.mark.parametrize(
    ("artifact", "words"),
    [
        ({"weights": [1, 2, 3]}, "is a dict, not a model: it has no predict method"),
        ("a string", "is a str, not a model: it has no predict method"),
        (None, "cannot be loaded with joblib"),
    ],
)
def test_bad_input_a_joblib_that_is_not_a_model_is_refused_naming_it(
    object_store, job_store, job_spec, upload, tables, tmp_path, artifact, words
):
    path = tmp_path / "artifact.joblib"
    if artifact is None:
        path.write_bytes(b"not a joblib file at all")
    else:
        joblib.dump(artifact, path)
    object_store.put(S3Uri.parse(MODEL_URI), path.read_bytes())
    upload(tables)

    with pytest.raises(PrepareError) as refused:
        prepare_job(job_spec(model_sha256=hashlib.sha256(path.read_bytes()).hexdigest()), job_store, object_store)

    assert str(refused.value).startswith(f"model {MODEL_URI} ")
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_bad_input_a_missing_model_uri_is_one_line_naming_it(object_store, job_store, job_spec, upload, tables):
    upload(tables)

    with pytest.raises(PrepareError) as refused:
        prepare_job(job_spec(), job_store, object_store)

    assert str(refused.value) == (
        f"model {MODEL_URI} does not exist: check the spec's model.uri (and that the model was uploaded)"
    )


def test_bad_input_a_feature_column_that_is_not_a_number_is_refused_at_prepare(
    object_store, job_store, prepared, tables
):
    tables.update(
        {key: table.set_column(3, "f2", table.column("f2").cast(pa.string())) for key, table in tables.items()}
    )

    with pytest.raises(PrepareError) as refused:
        prepared()

    # The demo model is XGBoost without categories: the smoke prediction hands it a DataFrame and
    # the message carries XGBoost's own words.
    message = str(refused.value)
    assert message.startswith(
        "s3://shardflow-unit/in/late/part-0001.parquet: the model cannot take column(s) f2 (string) "
        "of its first 5 rows: ValueError: DataFrame.dtypes for data must be int, float, bool or category"
    ), message
    assert message.endswith("Invalid columns:f2: str. Fix the input data or the spec's model; no instance was started")
