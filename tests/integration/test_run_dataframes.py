"""The user's first try, end to end: a scikit-learn Pipeline trained on a pandas DataFrame of
strings, categories and numbers with gaps, run by ``shardflow run`` over CSV files in S3 (a moto
server) with the local backend; and a model that cannot take a column, refused before anything starts."""

import hashlib
import io
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import yaml
from support.mixed import PIPELINE_FEATURES, mixed_frame, train_pipeline, train_xgboost

from shardflow.cli import main
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "dags" / "pipelines" / "demo.yaml"
INPUT = "events/dt=2026-03-09/"


def _spec(folder: Path, bucket: str, model: bytes) -> Path:
    spec = yaml.safe_load(DEMO.read_text()) | {
        "name": "mixed",
        "model": {"uri": f"s3://{bucket}/models/m.joblib", "sha256": hashlib.sha256(model).hexdigest()},
        "input": {"prefix": f"s3://{bucket}/events/dt={{{{ ds }}}}/", "format": "csv"},
        "output": {"prefix": f"s3://{bucket}/scores/dt={{{{ ds_nodash }}}}/", "format": "parquet"},
    }
    path = folder / "mixed.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _seed(s3, bucket: str, model: object, files: dict[str, pd.DataFrame]) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    s3.put_object(Bucket=bucket, Key="models/m.joblib", Body=buffer.getvalue())
    for name, frame in files.items():
        s3.put_object(Bucket=bucket, Key=INPUT + name, Body=frame.to_csv(index=False).encode())
    return buffer.getvalue()


def test_a_pipeline_on_strings_and_gaps_runs_over_csv_in_s3(aws, s3, bucket, store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    training = mixed_frame(1_000, 1)
    training[["signup", "signup_local"]] = training[["signup", "signup_local"]].astype(str)  # as read_csv has them
    model = train_pipeline(training)
    files = {"part-0.csv": mixed_frame(800, 2, unseen=True), "part-1.csv": mixed_frame(600, 3)}
    spec = _spec(tmp_path, bucket, _seed(s3, bucket, model, files))

    assert main(["run", str(spec), "--date", "2026-03-09", "--table", store.table]) == 0

    (record,) = store.list_jobs(pipeline="mixed")
    assert (record.status, record.rows) == (JobStatus.SUCCEEDED, 1_400)
    output = S3Uri.parse(record.output_prefix)
    for name in files:
        written = s3.get_object(Bucket=bucket, Key=INPUT + name)["Body"].read()
        expected = pd.read_csv(io.BytesIO(written))[PIPELINE_FEATURES]
        key = output.key + name.replace(".csv", ".parquet")
        result = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        np.testing.assert_array_equal(result["prediction"].to_numpy(), model.predict(expected))
        assert result["probability"].to_numpy().tobytes() == model.predict_proba(expected)[:, 1].tobytes()
    assert "published 1,400 rows from 2 file(s)" in capsys.readouterr().out


def test_a_model_that_cannot_take_a_column_fails_before_any_instance_starts(aws, s3, bucket, store, tmp_path, capsys):
    model = train_xgboost(mixed_frame(500, 1, categories=True))  # categories; a CSV has text
    spec = _spec(tmp_path, bucket, _seed(s3, bucket, model, {"part-0.csv": mixed_frame(100, 2)}))

    assert main(["run", str(spec), "--date", "2026-03-09", "--table", store.table]) == 1

    err = capsys.readouterr().err
    assert f"s3://{bucket}/{INPUT}part-0.csv: the model cannot take column(s) country (string)" in err, err
    assert "Fix the input data or the spec's model; no instance was started" in err
    assert store.list_jobs(pipeline="mixed") == []
