"""``shardflow head``: the first rows of one object in S3, read the way the processing script reads
its inputs and writes its outputs."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from shardflow.core.s3uri import S3Uri
from shardflow.errors import ShardflowError

__all__ = ["head"]


def head(s3: Any, uri: str, rows: int = 10) -> str:
    """The first ``rows`` rows of the object at ``uri``, as a table of text.

    :raises ShardflowError: the URI is not an object, or not a format Shardflow reads.
    """
    try:
        where = S3Uri.parse(uri)
    except ValueError as error:
        raise ShardflowError(str(error)) from None
    body = s3.get_object(Bucket=where.bucket, Key=where.key)["Body"].read()
    name = where.name.removesuffix(".gz")
    source = pa.input_stream(pa.BufferReader(body), compression="gzip" if where.name.endswith(".gz") else None)
    if name.endswith((".parquet", ".parq")):
        table = pq.ParquetFile(io.BytesIO(body)).read_row_group(0) if body else pa.table({})
    elif name.endswith(".csv"):
        table = pacsv.read_csv(source)
    elif name.endswith((".jsonl", ".json")):
        table = pajson.read_json(source)
    else:
        raise ShardflowError(f"{uri}: not a .parquet, .csv or .jsonl object (optionally .gz): nothing to show")
    shown = table.slice(0, rows).to_pandas()
    return f"{uri}: {len(shown)} of its first rows\n{shown.to_string(index=False)}"
