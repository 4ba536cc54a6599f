"""The demo DAG end to end: `airflow dags test` against a moto server, the local backend, real
Parquet and a real XGBoost model; then the predictions are checked row by row."""

import io

import boto3
import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import FileStatus, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo import run_demo_pipeline
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset


def read_outputs(s3, prefix: S3Uri) -> dict[str, pa.Table]:
    tables = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix.key) :]
            if relative.endswith(".parquet"):
                body = s3.get_object(Bucket=prefix.bucket, Key=item["Key"])["Body"].read()
                tables[relative] = pq.read_table(pa.BufferReader(body))
    return tables


def test_the_demo_dag_predicts_every_row_exactly_once(aws, tmp_path):
    record = run_demo_pipeline(tmp_path / "state", aws.endpoint_url)

    inputs = demo_dataset()
    expected_rows = sum(t.num_rows for t in inputs.values())
    assert record.status is JobStatus.SUCCEEDED
    assert (record.files_total, record.files_succeeded, record.files_failed) == (len(inputs), len(inputs), 0)
    assert record.rows == expected_rows
    assert record.attempt == 1 and len(record.processing_jobs) == 1

    s3 = boto3.client("s3")
    output = S3Uri.parse(record.output_prefix)
    outputs = read_outputs(s3, output)
    assert set(outputs) == set(inputs)  # one output per input, same relative key
    predicted = pa.concat_tables(outputs.values())
    ids = predicted.column("id").to_numpy()
    assert len(ids) == expected_rows and len(np.unique(ids)) == expected_rows

    model = joblib.load(
        io.BytesIO(s3.get_object(Bucket="shardflow-demo", Key="models/demo/model.joblib")["Body"].read())
    )
    source = pa.concat_tables(inputs.values()).to_pandas().set_index("id").loc[ids]
    np.testing.assert_array_equal(predicted.column("prediction").to_numpy(), model.predict(source[DEMO_FEATURES]))

    listed = {
        o["Key"][len(output.key) :] for o in s3.list_objects_v2(Bucket=output.bucket, Prefix=output.key)["Contents"]
    }
    assert {"_SUCCESS", "_manifest.json"} <= listed
    files = JobStore(boto3.client("dynamodb"), "shardflow-jobs").list_files(record.job_id)
    assert {f.status for f in files} == {FileStatus.SUCCEEDED}
    assert sum(f.rows for f in files) == expected_rows
