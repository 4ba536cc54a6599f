"""Reading inputs and writing outputs as streams of Arrow record batches, for every format we take;
a whole file is never held in memory."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from shardflow.contract import INPUT_SUFFIXES, OUTPUT_SUFFIXES
from shardflow.core.keys import check_relative
from shardflow.core.model_input import CSV_NA_VALUES

__all__ = [
    "OUTPUT_SUFFIXES",
    "AtomicWriter",
    "Prefetch",
    "find_inputs",
    "open_batches",
    "output_name",
    "remove_partials",
    "sha256_of",
]

# Text formats are parsed in blocks of this many bytes; Parquet pages are read through a buffer
# of this size, so one huge row group does not have to fit in memory.
_BLOCK_BYTES = 8 << 20
_PAGE_BUFFER = 64 << 10


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_inputs(input_dir: Path, input_format: str) -> list[Path]:
    """Every input file of the format under ``input_dir``, in a stable order."""
    suffixes = INPUT_SUFFIXES[input_format]
    return sorted(p for p in input_dir.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def output_name(relative: str, input_format: str, output_format: str) -> str:
    """``a/part-3.csv.gz`` -> ``a/part-3.parquet``: same folder and base name, the output's suffix.

    :raises UnsafeKey: ``relative`` is not a plain relative path, so its output could land
        outside the output folder.
    """
    check_relative(relative, "input file")
    for suffix in INPUT_SUFFIXES[input_format]:
        if relative.endswith(suffix):
            return relative[: -len(suffix)] + OUTPUT_SUFFIXES[output_format]
    raise ValueError(f"{relative} does not end in one of {INPUT_SUFFIXES[input_format]}")


def _at_most(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    # Text readers cut batches by bytes; the feature matrix has room for ``rows`` rows.
    for batch in batches:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def open_batches(
    path: Path,
    input_format: str,
    rows: int,
    as_text: Callable[[pa.Schema], dict[str, pa.DataType] | None] | None = None,
    row_groups: tuple[int, int] | None = None,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The file's schema and its rows in batches of at most ``rows``, read as they are consumed.

    :param as_text: for a CSV file, given the schema its first block gives: ``None`` to read it as
        it is, or the columns to read as text. Then the file is opened again, those columns typed
        as text and the strings pandas.read_csv takes for missing read as nulls, so the batches
        make the DataFrame pandas would read.
    :param row_groups: a Parquet file's ``(first, count)`` row groups, the only ones read.
    """
    if input_format == "parquet":
        parquet = pq.ParquetFile(path, buffer_size=_PAGE_BUFFER, pre_buffer=False)
        chosen = None if row_groups is None else range(row_groups[0], row_groups[0] + row_groups[1])
        return parquet.schema_arrow, parquet.iter_batches(batch_size=rows, row_groups=chosen, use_threads=False)
    compression = "gzip" if input_format.endswith(".gz") else None
    stream = pa.input_stream(str(path), compression=compression)
    reader: Any
    try:
        if input_format in ("csv", "csv.gz"):
            read_options = pacsv.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False)
            reader = pacsv.open_csv(stream, read_options=read_options)
            retyped = as_text(reader.schema) if as_text else None
            if retyped is not None:
                stream.close()
                stream = pa.input_stream(str(path), compression=compression)
                options = pacsv.ConvertOptions(column_types=retyped, null_values=list(CSV_NA_VALUES))
                reader = pacsv.open_csv(stream, read_options=read_options, convert_options=options)
        elif input_format in ("jsonl", "jsonl.gz"):
            options = pajson.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False)
            reader = pajson.open_json(stream, read_options=options)
        else:
            raise ValueError(f"unknown input format {input_format!r}")
    except pa.ArrowInvalid as error:
        if str(error).startswith("Empty"):  # an empty text file: no rows, and no columns to name
            stream.close()
            return pa.schema([]), iter(())
        raise
    return reader.schema, _at_most(iter(reader), rows)


class Prefetch:
    """Reads the next batch in a background thread while the current one is predicted (Arrow
    releases the GIL while it decodes). Errors of the reader surface in the consumer.

    :param batches: the batches to read ahead of the consumer.
    """

    _END = object()

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="prefetch", daemon=True)

    def __enter__(self) -> Iterator[pa.RecordBatch]:
        self._thread.start()
        return self._consume()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting to hand over a batch
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _read(self) -> None:
        try:
            for batch in self._batches:
                if self._stop.is_set():
                    return
                self._put(batch)
            self._put(self._END)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(error)

    def _consume(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _HashingSink(io.RawIOBase):
    """A file that hashes what is written to it: the manifest's sha256 without reading it back."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "wb")  # noqa: SIM115  (closed by close())
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        self._file.close()
        super().close()


class AtomicWriter:
    """Writes batches to ``<target>.tmp-<pid>`` and renames it to ``target`` only on :meth:`close`,
    so a reader (or the upload) never sees a partial output. Parquet row groups gather at least
    ``group_rows`` rows, however small the batches.

    :param target: the final path of the output.
    :param output_format: ``parquet`` or ``csv``.
    :param metadata: key-value metadata for a Parquet file's footer (the model's lineage).
    """

    def __init__(
        self, target: Path, output_format: str, group_rows: int = 65_536, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.target = target
        self.metadata = dict(metadata or {})
        self.output_format = output_format
        self.group_rows = group_rows
        self.tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        self.sha256: str | None = None
        self._sink: _HashingSink | None = None
        self._writer: Any = None
        self._held: list[pa.RecordBatch] = []
        self._held_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._sink = _HashingSink(self.tmp)
            if self.output_format == "parquet":
                # Dictionary encoding buys nothing on float features and costs most of the write time.
                self._writer = pq.ParquetWriter(self._sink, batch.schema, use_dictionary=False, compression="snappy")
            else:
                self._writer = pacsv.CSVWriter(self._sink, batch.schema)
        if self.output_format != "parquet":
            self._writer.write_batch(batch)
            return
        self._held.append(batch)
        self._held_rows += batch.num_rows
        if self._held_rows >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._held:
            self._writer.write_table(pa.Table.from_batches(self._held), row_group_size=max(1, self._held_rows))
            self._held, self._held_rows = [], 0

    def close(self, schema: pa.Schema) -> None:
        if self._writer is None:  # an input with no rows still gets an (empty) output
            self.write(pa.RecordBatch.from_pylist([], schema=schema))
        self._flush()
        if self.metadata and self.output_format == "parquet":
            self._writer.add_key_value_metadata(self.metadata)
        self._writer.close()
        assert self._sink is not None
        self._sink.close()
        self.sha256 = self._sink.digest.hexdigest()
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        self.tmp.unlink(missing_ok=True)


def remove_partials(target: Path) -> None:
    """Delete what a worker that died left of ``target`` (its temporary files); never the output."""
    for partial in target.parent.glob(f"{target.name}.tmp-*"):
        partial.unlink(missing_ok=True)
