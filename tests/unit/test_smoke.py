"""The smoke prediction of prepare: the model predicts the first rows of the first input, so a
column it cannot take fails the job before anything starts, naming the file, the column and the
model's own error. Real files of every format, real models, the object store in memory."""

import gzip
import hashlib
import io
from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from support.fakes import InMemoryJobStore, InMemoryObjectStore
from support.mixed import mixed_frame, read, train_pipeline, write
from support.records import sample_job_spec

from shardflow.core.prepare import prepare_job
from shardflow.core.s3uri import S3Uri
from shardflow.errors import DeterministicError, PrepareError

BUCKET = "shardflow-unit"
INPUT = S3Uri(BUCKET, "in/")
MODEL = S3Uri(BUCKET, "models/model.joblib")
SUFFIX = {"parquet": ".parquet", "csv": ".csv", "csv.gz": ".csv.gz", "jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz"}


class CountingObjectStore(InMemoryObjectStore):
    def __init__(self) -> None:
        super().__init__()
        self.bytes_read: dict[S3Uri, int] = {}

    def read(self, uri: S3Uri, start: int | None = None, end: int | None = None) -> bytes:
        body = super().read(uri, start, end)
        self.bytes_read[uri] = self.bytes_read.get(uri, 0) + len(body)
        return body


def _bytes_of(frame: pd.DataFrame, input_format: str, tmp_path: Path) -> bytes:
    plain = input_format.removesuffix(".gz")
    body = write(frame, tmp_path / f"file.{plain}", plain).read_bytes()
    return gzip.compress(body) if input_format.endswith(".gz") else body


def _prepare(tmp_path: Path, model: object, frame: pd.DataFrame | bytes, input_format: str, objects=None):
    objects = objects if objects is not None else InMemoryObjectStore()
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    body = buffer.getvalue()
    objects.put(MODEL, body)
    first = INPUT.join("part-0000" + SUFFIX[input_format])
    objects.put(first, frame if isinstance(frame, bytes) else _bytes_of(frame, input_format, tmp_path))
    objects.put(INPUT.join("part-0001" + SUFFIX[input_format]), b"not even data")  # never read
    job = sample_job_spec(
        "mixed-1",
        BUCKET,
        model_uri=str(MODEL),
        model_sha256=hashlib.sha256(body).hexdigest(),
        input_prefix=str(INPUT),
        output_prefix=f"s3://{BUCKET}/out/",
        input_format=input_format,
    )
    return prepare_job(job, InMemoryJobStore(), objects), first


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """The Pipeline trained on a small file as pandas reads each format, once per format."""
    folder, models = tmp_path_factory.mktemp("train"), {}

    def on(input_format: str) -> object:
        plain = input_format.removesuffix(".gz")
        if plain not in models:
            models[plain] = train_pipeline(read(write(mixed_frame(300, 1), folder / f"train.{plain}", plain), plain))
        return models[plain]

    return on


@pytest.mark.parametrize("input_format", ["parquet", "csv.gz", "jsonl"])
def test_a_pipeline_on_mixed_types_passes_the_smoke_prediction(tmp_path, trained, input_format):
    record, _ = _prepare(tmp_path, trained(input_format), mixed_frame(50, 2, unseen=True), input_format)
    assert record.files_total == 2


def test_a_category_the_model_refuses_fails_prepare_naming_file_column_and_the_models_error(tmp_path):
    model = train_pipeline(mixed_frame(300, 1))
    model.named_steps["columns"].named_transformers_["onehot"].handle_unknown = "error"
    frame = mixed_frame(50, 2)
    frame.loc[1, "country"] = "Atlantis"

    with pytest.raises(PrepareError) as refused:
        _prepare(tmp_path, model, frame, "parquet")

    message = str(refused.value)
    assert isinstance(refused.value, DeterministicError)
    assert message.startswith(
        "s3://shardflow-unit/in/part-0000.parquet: the model cannot take column(s) country (large_string) "
        "of its first 5 rows: ValueError: Found unknown categories ['Atlantis'] in column 0 during transform"
    ), message
    assert message.endswith("Fix the input data or the spec's model; no instance was started")


def test_a_model_of_numbers_given_text_fails_prepare_naming_the_column(tmp_path):
    training = mixed_frame(200, 1)
    training["region"] = training["country"].fillna("FR")
    model = LogisticRegression().fit(training[["score"]].fillna(0).assign(region=1.0), training["active"])
    frame = mixed_frame(20, 2).assign(score=1.5, region="eu")

    with pytest.raises(PrepareError) as refused:
        _prepare(tmp_path, model, frame, "csv")

    message = str(refused.value)
    assert message.startswith(
        "s3://shardflow-unit/in/part-0000.csv: the model cannot take column(s) region (string) of its first 5 rows: "
        "ValueError: could not convert string to float: 'eu'"
    ), message


def test_a_text_input_lacking_a_feature_is_refused_before_the_smoke_prediction(tmp_path, trained):
    model = trained("jsonl")
    with pytest.raises(PrepareError, match=r"in/part-0000\.jsonl lacks the model's feature column\(s\) plan \(it has"):
        _prepare(tmp_path, model, mixed_frame(20, 2).drop(columns="plan"), "jsonl")


def test_only_the_head_of_a_big_text_input_is_read(tmp_path, trained):
    objects = CountingObjectStore()
    header, rows = _bytes_of(mixed_frame(1_000, 2), "csv", tmp_path).split(b"\n", 1)
    _prepare(tmp_path, trained("csv"), header + b"\n" + rows * 40, "csv", objects)
    first = INPUT.join("part-0000.csv")
    size = len(objects.objects[first])
    assert size > 2_500_000
    assert 0 < objects.bytes_read[first] < size // 10
