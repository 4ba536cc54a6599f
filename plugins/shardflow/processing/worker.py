"""One forked worker of the processing script: it owns files (reads, predicts, writes them in
order) and, when it has no file, predicts batches that the owner of a big file offers. A file
that fails is classified where it fails: reading it is the input's fault, predicting it the
model's, writing it (a full disk) may pass on another attempt."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardflow.core.record import ErrorKind
from shardflow.errors import ShardflowError
from shardflow.processing.messages import (
    BatchAssigned,
    BatchFailed,
    BatchOffered,
    BatchPredicted,
    BatchReturned,
    ClaimAnswer,
    ClaimRequest,
    FileAborted,
    FileAssigned,
    FileDone,
    FileOutcome,
    FileTask,
    Stop,
    Stopped,
    ToOwner,
    ToWorker,
)
from shardflow.processing.predictor import FRAME, Features, Predictor
from shardflow.processing.tabular import AtomicWriter, Prefetch, open_batches, output_name

__all__ = ["SlotArena", "WorkerSettings", "peak_rss_bytes", "serve"]

log = logging.getLogger("batch_predict")

_PR_SET_PDEATHSIG = 1

#: Feature matrices in flight per worker: one predicted by a helper, one by the owner, one read ahead.
SLOTS_PER_WORKER = 4


class SlotArena:
    """Shared memory mapped before the workers fork: ``slots`` feature matrices per worker seat, so
    a helper reads an owner's batch without a copy through a pipe. A DataFrame model's batch is
    held there as an Arrow IPC stream of its feature columns instead.

    :param seats: how many workers.
    :param slot_bytes: the size of one slot (a feature matrix: rows x features x 8).
    """

    def __init__(self, seats: int, slot_bytes: int, slots: int = SLOTS_PER_WORKER) -> None:
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._memory = mmap.mmap(-1, max(1, seats * slots * slot_bytes))

    def matrix(self, seat: int, slot: int, rows: int, columns: int, dtype: np.dtype) -> np.ndarray:
        """A column-major ``rows x columns`` view of one slot."""
        offset = (seat * self.slots + slot) * self.slot_bytes
        flat = np.frombuffer(self._memory, dtype=dtype, count=rows * columns, offset=offset)
        return flat.reshape(columns, rows).T

    def _slot(self, seat: int, slot: int) -> memoryview:
        offset = (seat * self.slots + slot) * self.slot_bytes
        return memoryview(self._memory)[offset : offset + self.slot_bytes]

    def put_batch(self, seat: int, slot: int, batch: pa.RecordBatch) -> bool:
        """Write ``batch`` into a slot as an Arrow IPC stream; ``False`` when it does not fit."""
        if pa.ipc.get_record_batch_size(batch) + (64 << 10) > self.slot_bytes:  # room for the schema
            return False
        with pa.ipc.new_stream(pa.FixedSizeBufferWriter(pa.py_buffer(self._slot(seat, slot))), batch.schema) as out:
            out.write_batch(batch)
        return True

    def get_batch(self, seat: int, slot: int) -> pa.RecordBatch:
        """The batch :meth:`put_batch` wrote, read in place."""
        return pa.ipc.open_stream(pa.py_buffer(self._slot(seat, slot))).read_next_batch()


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs, inherited through the fork.

    :param sharing: a shared ``c_int``, set once the parent has no file left to hand out: from then
        on a worker that finishes helps the others, so owners offer their batches. (Before, offers
        would only come back to their owner.) Unlocked: a worker killed while holding a lock would
        stop the others.
    :param metadata: the key-value metadata of every Parquet output: the model's lineage.
    """

    predictor: Predictor
    arena: SlotArena
    sharing: Any
    output_dir: Path
    input_format: str
    output_format: str
    batch_rows: int
    metadata: dict[str, str] = field(default_factory=dict)


class FileFailure(ShardflowError, RuntimeError):
    """Why the file being streamed failed, and whose fault it is.

    :param kind: a bad input, a model error, or a fault another attempt may not meet.
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@contextlib.contextmanager
def _blame(kind: ErrorKind) -> Iterator[None]:
    """Whatever fails inside is a failure of ``kind``; running out of memory never is the input's
    or the model's fault, since a bigger instance (or another attempt) may pass."""
    try:
        yield
    except FileFailure:
        raise
    except MemoryError as error:
        raise FileFailure(ErrorKind.TRANSIENT, f"MemoryError: {error}") from error
    except Exception as error:
        raise FileFailure(kind, f"{type(error).__name__}: {error}") from error


def _read(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches, with a failure to read or decode one blamed on the input."""
    iterator = iter(batches)
    while True:
        with _blame(ErrorKind.INPUT):
            batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class BatchState(Enum):
    """Where one batch of an owner's file is."""

    LOCAL = "local"  # to predict here
    OFFERED = "offered"  # the parent may hand it to a helper
    TAKEN = "taken"  # a helper predicts it
    DONE = "done"  # its outputs are here


@dataclass
class _Batch:
    batch: pa.RecordBatch
    slot: int
    features: Features
    state: BatchState
    outputs: tuple[np.ndarray, ...] = field(default_factory=tuple)
    claiming: bool = False  # a claim is on its way; the slot is not reused before the answer


class _Owner:
    """Streams one file: fill a slot, offer it once other workers may help, write results in order."""

    def __init__(self, seat: int, conn: Connection, settings: WorkerSettings, task_id: int) -> None:
        self.seat, self.conn, self.settings, self.task_id = seat, conn, settings, task_id
        self.pending: deque[_Batch] = deque()
        self.free = list(range(settings.arena.slots))
        self.helped = 0

    def run(self, task: FileTask) -> FileOutcome:
        started = time.perf_counter()
        settings, predictor = self.settings, self.settings.predictor
        rows = batches = 0
        writer: AtomicWriter | None = None
        try:
            with _blame(ErrorKind.INPUT):
                name = task.output or output_name(task.relative, settings.input_format, settings.output_format)
                writer = AtomicWriter(settings.output_dir / name, settings.output_format, metadata=settings.metadata)
                schema, stream = open_batches(
                    Path(task.path),
                    settings.input_format,
                    settings.batch_rows,
                    predictor.text_columns,
                    row_groups=task.row_groups,
                )
                # An empty text file has no columns to check (and no rows to predict).
                layout = predictor.check_columns(schema, task.relative) if len(schema) else np.dtype(np.float64).str
            with Prefetch(stream) as prefetched:
                for batch in _read(prefetched):
                    while not self.free:
                        self._advance(writer)
                    self._add(batch, layout)
                    rows, batches = rows + batch.num_rows, batches + 1
                    self._receive(block=False)
                    self._write_ready(writer)
            while self.pending:
                self._advance(writer)
            with _blame(ErrorKind.TRANSIENT):
                writer.close(predictor.empty_output(schema))
        except Exception as error:
            if writer is not None:
                writer.abort()
            failure = (
                error
                if isinstance(error, FileFailure)
                else FileFailure(ErrorKind.TRANSIENT, f"{type(error).__name__}: {error}")
            )
            return FileOutcome(
                task.relative,
                task.size,
                error=str(failure),
                error_kind=failure.kind,
                seconds=time.perf_counter() - started,
            )
        return FileOutcome(
            task.relative,
            task.size,
            output=writer.target.relative_to(settings.output_dir).as_posix(),
            rows=rows,
            sha256=writer.sha256,
            seconds=time.perf_counter() - started,
            helped=self.helped,
            batches=batches,
        )

    def _add(self, batch: pa.RecordBatch, layout: str) -> None:
        predictor, arena = self.settings.predictor, self.settings.arena
        slot = self.free.pop()
        features: Features
        if layout == FRAME:
            features = batch.select(predictor.features)
            # A batch too big for its slot (long strings) is predicted here.
            offer = bool(self.settings.sharing.value) and arena.put_batch(self.seat, slot, features)
        else:
            features = arena.matrix(self.seat, slot, batch.num_rows, len(predictor.features), np.dtype(layout))
            with _blame(ErrorKind.INPUT):
                predictor.fill(batch, features)
            offer = bool(self.settings.sharing.value)
        entry = _Batch(batch, slot, features, BatchState.LOCAL)
        if offer:
            entry.state = BatchState.OFFERED
            self.conn.send(BatchOffered(self.task_id, slot, batch.num_rows, layout))
        self.pending.append(entry)

    def _advance(self, writer: AtomicWriter) -> None:
        """Make progress on the oldest batch: predict here what no helper took, else wait for one."""
        self._receive(block=False)
        entry = next((e for e in self.pending if e.state in (BatchState.LOCAL, BatchState.OFFERED)), None)
        if self.pending[0].state is not BatchState.DONE:
            if entry is not None and entry.state is BatchState.OFFERED:
                entry.claiming = True
                self.conn.send(ClaimRequest(self.task_id, entry.slot))
                while entry.claiming:
                    self._receive(block=True)
            if entry is not None and entry.state is BatchState.LOCAL:
                predictor = self.settings.predictor
                with _blame(ErrorKind.INPUT):
                    data = predictor.model_input(entry.features)
                with _blame(ErrorKind.MODEL):
                    entry.outputs = predictor.infer(data)
                entry.state = BatchState.DONE
            elif entry is None:
                self._receive(block=True)
        self._write_ready(writer)

    def _write_ready(self, writer: AtomicWriter) -> None:
        while self.pending and self.pending[0].state is BatchState.DONE and not self.pending[0].claiming:
            entry = self.pending.popleft()
            with _blame(ErrorKind.MODEL):  # the model's outputs do not fit its classes
                assembled = self.settings.predictor.assemble(entry.batch, entry.outputs)
            with _blame(ErrorKind.TRANSIENT):
                writer.write(assembled)
            self.free.append(entry.slot)

    def _receive(self, block: bool) -> None:
        while block or self.conn.poll():
            block = False
            message: ToOwner = self.conn.recv()
            if message.task_id != self.task_id:
                continue  # about a file this worker gave up earlier
            if isinstance(message, FileAborted):
                raise FileFailure(ErrorKind.TRANSIENT, message.error)
            entry = next(e for e in self.pending if e.slot == message.slot)
            match message:
                case ClaimAnswer(granted=granted):
                    entry.claiming = False
                    if entry.state is BatchState.OFFERED:
                        entry.state = BatchState.LOCAL if granted else BatchState.TAKEN
                case BatchReturned():  # its helper died: predict it here
                    entry.state = BatchState.LOCAL
                case BatchPredicted(outputs=outputs):
                    entry.outputs, entry.state = outputs, BatchState.DONE
                    self.helped += 1
                case BatchFailed(error=error, kind=kind):
                    raise FileFailure(kind, error)


def _help(settings: WorkerSettings, batch: BatchAssigned) -> BatchPredicted | BatchFailed:
    predictor, arena = settings.predictor, settings.arena
    features: Features
    try:
        with _blame(ErrorKind.INPUT):
            if batch.dtype == FRAME:
                features = arena.get_batch(batch.owner, batch.slot)
            else:
                shape = (batch.rows, len(predictor.features))
                features = arena.matrix(batch.owner, batch.slot, *shape, np.dtype(batch.dtype))
            data = predictor.model_input(features)
        with _blame(ErrorKind.MODEL):
            return BatchPredicted(batch.owner, batch.task_id, batch.slot, predictor.infer(data))
    except FileFailure as failure:
        return BatchFailed(batch.owner, batch.task_id, batch.slot, str(failure), failure.kind)


def _end_with_parent() -> None:
    """Ask Linux to send SIGTERM to this worker when its parent dies (a stopped job), rather than
    let it finish a big file nobody will collect."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve(seat: int, conn: Connection, settings: WorkerSettings) -> None:
    """The worker's loop, until the parent says stop or goes away."""
    _end_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the job ends
    while True:
        try:
            message: ToWorker = conn.recv()
        except EOFError:
            return
        match message:
            case FileAssigned(task_id=task_id, task=task):
                log.info("%s: started in worker %d", task.relative, os.getpid())
                conn.send(FileDone(task_id, _Owner(seat, conn, settings, task_id).run(task)))
            case BatchAssigned():
                conn.send(_help(settings, message))
            case Stop():
                usage = resource.getrusage(resource.RUSAGE_SELF)
                conn.send(Stopped(peak_rss_bytes(), usage.ru_utime + usage.ru_stime))
                return
            case _:
                pass  # about a file this worker gave up: nothing to do
