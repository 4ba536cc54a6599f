"""`shardflow head`: the first rows of an object in S3 (moto), as a user looks at predictions."""

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from shardflow.cli import main


def put(s3, bucket: str, key: str, table: pa.Table, fmt: str) -> str:
    buffer = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buffer, row_group_size=5)
    else:
        pacsv.write_csv(table, buffer)
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"s3://{bucket}/{key}"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_head_prints_the_first_rows_of_an_output(s3, bucket, capsys, fmt):
    table = pa.table({"id": list(range(20)), "prediction": [i % 2 for i in range(20)]})
    uri = put(s3, bucket, f"predictions/part-0000.{fmt}", table, fmt)

    assert main(["head", uri, "-n", "3"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{uri}: 3 of its first rows"
    assert lines[1].split() == ["id", "prediction"]
    assert [line.split() for line in lines[2:]] == [["0", "0"], ["1", "1"], ["2", "0"]]


def test_head_names_an_object_it_cannot_show(s3, bucket, capsys):
    s3.put_object(Bucket=bucket, Key="model.joblib", Body=b"\x80")
    assert main(["head", f"s3://{bucket}/model.joblib"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("shardflow head: ")
    assert "model.joblib: not a .parquet, .csv or .jsonl object" in error
