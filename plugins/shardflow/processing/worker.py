"""One forked worker of the processing script: it owns files (reads, predicts, writes them in
order) and, when it has no file, predicts batches that the owner of a big file offers."""

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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardflow.processing.messages import FileOutcome, FileTask
from shardflow.processing.predictor import Predictor
from shardflow.processing.tabular import AtomicWriter, Prefetch, open_batches, output_name

__all__ = ["SlotArena", "WorkerSettings", "peak_rss_bytes", "serve"]

log = logging.getLogger("batch_predict")

_PR_SET_PDEATHSIG = 1

#: Feature matrices in flight per worker: one predicted by a helper, one by the owner, one read ahead.
SLOTS_PER_WORKER = 4


class SlotArena:
    """Shared memory mapped before the workers fork: ``slots`` feature matrices per worker seat, so
    a helper reads an owner's batch without a copy through a pipe.

    :param seats: how many workers.
    :param slot_bytes: the size of one feature matrix (rows x features x 8).
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


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs, inherited through the fork.

    :param sharing: a shared ``c_int``, set once the parent has no file left to hand out: from then
        on a worker that finishes helps the others, so owners offer their batches. (Before, offers
        would only come back to their owner.) Unlocked: a worker killed while holding a lock would
        stop the others.
    """

    predictor: Predictor
    arena: SlotArena
    sharing: Any
    output_dir: Path
    input_format: str
    output_format: str
    batch_rows: int


class FileAbandoned(RuntimeError):
    pass


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class _Batch:
    batch: pa.RecordBatch
    slot: int
    matrix: np.ndarray
    state: str  # "local": to predict here; "offered": the parent may hand it to a helper; "taken"; "done"
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
        target = settings.output_dir / output_name(task.relative, settings.input_format, settings.output_format)
        writer = AtomicWriter(target, settings.output_format)
        rows = batches = 0
        try:
            schema, stream = open_batches(Path(task.path), settings.input_format, settings.batch_rows)
            # An empty text file has no columns to check (and no rows to predict).
            dtype = predictor.check_columns(schema, task.relative) if len(schema) else np.dtype(np.float64)
            with Prefetch(stream) as prefetched:
                for batch in prefetched:
                    while not self.free:
                        self._advance(writer)
                    self._add(batch, dtype)
                    rows, batches = rows + batch.num_rows, batches + 1
                    self._receive(block=False)
                    self._write_ready(writer)
            while self.pending:
                self._advance(writer)
            writer.close(predictor.empty_output(schema))
        except Exception as error:
            writer.abort()
            message = str(error) if isinstance(error, FileAbandoned) else f"{type(error).__name__}: {error}"
            return FileOutcome(task.relative, task.size, error=message, seconds=time.perf_counter() - started)
        return FileOutcome(
            task.relative,
            task.size,
            output=target.relative_to(settings.output_dir).as_posix(),
            rows=rows,
            sha256=writer.sha256,
            seconds=time.perf_counter() - started,
            helped=self.helped,
            batches=batches,
        )

    def _add(self, batch: pa.RecordBatch, dtype: np.dtype) -> None:
        predictor = self.settings.predictor
        slot = self.free.pop()
        matrix = self.settings.arena.matrix(self.seat, slot, batch.num_rows, len(predictor.features), dtype)
        predictor.fill(batch, matrix)
        entry = _Batch(batch, slot, matrix, "local")
        if self.settings.sharing.value:
            entry.state = "offered"
            self.conn.send(("offer", self.task_id, slot, batch.num_rows, dtype.str))
        self.pending.append(entry)

    def _advance(self, writer: AtomicWriter) -> None:
        """Make progress on the oldest batch: predict here what no helper took, else wait for one."""
        self._receive(block=False)
        entry = next((e for e in self.pending if e.state in ("local", "offered")), None)
        if self.pending[0].state != "done":
            if entry is not None and entry.state == "offered":
                entry.claiming = True
                self.conn.send(("claim", self.task_id, entry.slot))
                while entry.claiming:
                    self._receive(block=True)
            if entry is not None and entry.state == "local":
                entry.outputs = self.settings.predictor.infer(entry.matrix)
                entry.state = "done"
            elif entry is None:
                self._receive(block=True)
        self._write_ready(writer)

    def _write_ready(self, writer: AtomicWriter) -> None:
        while self.pending and self.pending[0].state == "done" and not self.pending[0].claiming:
            entry = self.pending.popleft()
            writer.write(self.settings.predictor.assemble(entry.batch, entry.outputs))
            self.free.append(entry.slot)

    def _receive(self, block: bool) -> None:
        while block or self.conn.poll():
            block = False
            kind, task_id, slot, payload = self.conn.recv()
            if task_id != self.task_id:
                continue  # about a file this worker gave up earlier
            if kind == "abort":
                raise FileAbandoned(payload)
            entry = next(e for e in self.pending if e.slot == slot)
            if kind == "claimed":  # payload: True when no helper had it yet
                entry.claiming = False
                if entry.state == "offered":
                    entry.state = "local" if payload else "taken"
            elif kind == "returned":  # its helper died: predict it here
                entry.state = "local"
            elif kind == "predicted":
                entry.outputs, entry.state = payload, "done"
                self.helped += 1
            elif kind == "failed":
                raise RuntimeError(payload)


def _help(settings: WorkerSettings, message: tuple[Any, ...]) -> tuple[Any, ...]:
    _, owner, task_id, slot, rows, dtype = message
    predictor = settings.predictor
    matrix = settings.arena.matrix(owner, slot, rows, len(predictor.features), np.dtype(dtype))
    try:
        return ("predicted", owner, task_id, slot, predictor.infer(matrix))
    except Exception as error:
        return ("failed", owner, task_id, slot, f"{type(error).__name__}: {error}")


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
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "file":
            _, task_id, task = message
            log.info("%s: started in worker %d", task.relative, os.getpid())
            conn.send(("done", task_id, _Owner(seat, conn, settings, task_id).run(task)))
        elif message[0] == "predict":
            conn.send(_help(settings, message))
        elif message[0] == "stop":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            conn.send(("stopped", peak_rss_bytes(), usage.ru_utime + usage.ru_stime))
            return
        # anything else is about a file this worker gave up: nothing to do
