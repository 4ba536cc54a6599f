"""The prepare step's check of the model against its input: the first input's columns, then a
prediction of its first rows, so a column the model cannot take fails the job before any instance
starts, naming the file, the column and the model's own error."""

from __future__ import annotations

import io
import re
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from shardflow.core.job import JobSpec
from shardflow.core.model_input import CSV_NA_VALUES, frame_of, needs_frame, text_column_types
from shardflow.core.ports import ObjectStore
from shardflow.core.s3uri import S3Uri
from shardflow.errors import PrepareError

__all__ = ["SAMPLE_ROWS", "check_model_on_input", "first_rows"]

#: How many rows of the first input the model predicts in prepare.
SAMPLE_ROWS = 5

# A text file's first rows are read in ranges that start this big and double until they hold the
# rows (or the file, or the limit, ends).
_FIRST_RANGE = 256 << 10
_LAST_RANGE = 64 << 20


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


def _text_head(objects: ObjectStore, uri: S3Uri, size: int, gzipped: bool, rows: int) -> bytes:
    """The first ``rows`` lines of a text object (after a CSV's header), whole lines only."""
    length = _FIRST_RANGE
    while True:
        raw = objects.read(uri, 0, min(size, length) - 1)
        text = zlib.decompressobj(wbits=31).decompress(raw) if gzipped else raw
        whole = len(raw) >= size
        if text.count(b"\n") > rows or whole or length >= _LAST_RANGE:
            return text if whole else text[: text.rfind(b"\n") + 1]
        length *= 2


def first_rows(
    objects: ObjectStore, uri: S3Uri, size: int, input_format: str, model: Any, features: list[str]
) -> pa.RecordBatch:
    """The first :data:`SAMPLE_ROWS` rows of an input, typed as the processing script types them
    for this model (for the DataFrame path, a CSV file's dates stay text, as pandas reads them)."""
    if input_format == "parquet":
        parquet = pq.ParquetFile(_RangeFile(objects, uri, size), buffer_size=64 << 10, pre_buffer=False)
        batch = next(parquet.iter_batches(batch_size=SAMPLE_ROWS, use_threads=False), None)
        return batch if batch is not None else pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow)
    head = _text_head(objects, uri, size, input_format.endswith(".gz"), SAMPLE_ROWS + 1)
    if not head.strip():
        return pa.RecordBatch.from_pylist([])
    if input_format.startswith("jsonl"):
        table = pajson.read_json(io.BytesIO(head))
    else:
        table = pacsv.read_csv(io.BytesIO(head))
        if needs_frame(model, table.schema, features):
            options = pacsv.ConvertOptions(
                column_types=text_column_types(table.schema, features), null_values=list(CSV_NA_VALUES)
            )
            table = pacsv.read_csv(io.BytesIO(head), convert_options=options)
    batches = table.slice(0, SAMPLE_ROWS).combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def _model_input(model: Any, batch: pa.RecordBatch, features: list[str], input_format: str) -> Any:
    """What the processing script would hand the model for these rows."""
    chosen = batch.select(features)
    if needs_frame(model, batch.schema, features):
        return frame_of(chosen, input_format)
    columns = [c.cast(pa.float64()) if pa.types.is_null(c.type) else c for c in chosen.columns]
    return np.column_stack([c.to_numpy(zero_copy_only=False) for c in columns]).astype(np.float64)


def _first_lines(error: BaseException) -> str:
    """The model's message without a native library's stack trace."""
    text = str(error).split("\nStack trace:")[0].strip()
    return text if len(text) <= 600 else text[:600] + " ..."


def _columns_named(message: str, batch: pa.RecordBatch, features: list[str]) -> list[str]:
    """The feature columns the model's message is about: named in it, or holding a value it quotes."""
    named = [name for name in features if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message)]
    if named:
        return named
    quoted = set(re.findall(r"'([^']*)'", message)) | set(re.findall(r'"([^"]*)"', message))
    return [
        name
        for name in features
        if quoted & {str(v) for v in batch.column(name).to_pylist() if v is not None and str(v)}
    ]


def _describe(batch: pa.RecordBatch, names: list[str]) -> str:
    return ", ".join(f"{name} ({batch.schema.field(name).type})" for name in names)


def check_model_on_input(objects: ObjectStore, job: JobSpec, model: Any, first: S3Uri, size: int) -> None:
    """Check the first input has the model's features, then predict its first rows.

    :raises PrepareError: the model records no feature names and the spec lists none, the input
        lacks a feature, or the model cannot predict the rows (naming the file, the column and
        the model's error).
    """
    names = getattr(model, "feature_names_in_", None)
    features = [str(n) for n in names] if names is not None else list(job.features or ())
    if not features:
        raise PrepareError(
            f"model {job.model.label} does not record its feature names: list them in the spec's `features`"
        )
    try:
        batch = first_rows(objects, first, size, job.input.format, model, features)
    except (pa.ArrowException, OSError, zlib.error):
        return  # an unreadable file: the processing script reports it, and the other files go on
    if not batch.num_columns:
        return  # a text file with no line: no column to check
    missing = [name for name in features if name not in batch.schema.names]
    if missing:
        has = ", ".join(batch.schema.names)
        raise PrepareError(
            f"{first} lacks the model's feature column(s) {', '.join(missing)} (it has {has}): "
            "fix the input data or the spec's model"
        )
    if not batch.num_rows:
        return
    try:
        data = _model_input(model, batch, features, job.input.format)
        model.predict(data)
        if callable(getattr(model, "predict_proba", None)):
            model.predict_proba(data)
    except Exception as error:
        message = _first_lines(error)
        culprits = _columns_named(message, batch, features)
        what = (
            f"the model cannot take column(s) {_describe(batch, culprits)} of its first {batch.num_rows} rows"
            if culprits
            else f"the model cannot predict its first {batch.num_rows} rows (features {_describe(batch, features)})"
        )
        raise PrepareError(
            f"{first}: {what}: {type(error).__name__}: {message}. "
            "Fix the input data or the spec's model; no instance was started"
        ) from None
