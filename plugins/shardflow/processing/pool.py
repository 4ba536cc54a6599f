"""The parent side of the processing script's workers: fork them once the model is loaded, hand
out files (largest first) and offered batches, and survive workers that die."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Protocol

from shardflow.core.record import ErrorKind
from shardflow.errors import UnsafeKey
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
    ToParent,
    ToWorker,
)
from shardflow.processing.tabular import output_name, remove_partials
from shardflow.processing.worker import WorkerSettings, serve

__all__ = ["TaskSource", "WorkerPool"]

log = logging.getLogger("batch_predict")


class _Outbox:
    """Sends to one worker from a thread of its own, in order. A worker reads its pipe only between
    batches, and a helper's predictions are bigger than a pipe holds: sent from the pool's loop,
    they held every other worker up until the owner had predicted its own batch."""

    _CLOSE = None

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.messages: queue.SimpleQueue[ToWorker | None] = queue.SimpleQueue()
        self.alive = True
        self.thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self.thread.start()

    def put(self, message: ToWorker) -> bool:
        """``False`` once a send has failed: the worker is gone, and its sentinel says so."""
        if self.alive:
            self.messages.put(message)
        return self.alive

    def close(self) -> None:
        self.messages.put(self._CLOSE)
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while (message := self.messages.get()) is not self._CLOSE:
            try:
                self.conn.send(message)
            except OSError:
                self.alive = False
                return


@dataclass(frozen=True, slots=True)
class _BatchRef:
    """One batch of a file in progress: what a helper is helping with, and what an offer is of."""

    owner: int  # the seat of the worker that owns the file
    task_id: int
    slot: int


@dataclass(frozen=True, slots=True)
class _Offer:
    """A batch its owner lets a helper predict, until the parent hands it out or the owner claims it."""

    batch: _BatchRef
    rows: int
    dtype: str


@dataclass
class _Seat:
    process: BaseProcess
    conn: Connection
    outbox: _Outbox
    task: FileTask | None = None  # the file it owns
    task_id: int = 0
    helping: _BatchRef | None = None  # the batch it predicts

    @property
    def idle(self) -> bool:
        return self.task is None and self.helping is None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"killed by {name}" + (" (out of memory, or killed by hand)" if name == "SIGKILL" else "")
    return f"exited with code {exitcode}"


class TaskSource(Protocol):
    """Tasks that come while the pool runs (:class:`~shardflow.processing.claims.UnitClaims`)."""

    @property
    def finished(self) -> bool:
        """No task will come any more, and every task given has its result recorded."""

    def take(self) -> FileTask | None:
        """The next task, or ``None`` when there is none now (the pool asks again)."""


class WorkerPool:
    """Runs every file through forked workers and returns one outcome per file.

    A worker that dies is replaced; the file it owned, or whose batch it was predicting, is retried
    once, and failed when a second worker dies on it. Files finished before are never redone.

    :param settings: what the workers inherit (the predictor and the shared feature matrices).
    :param workers: how many worker processes (one per core).
    :param on_outcome: called in this process as each file finishes.
    """

    def __init__(self, settings: WorkerSettings, workers: int, on_outcome: Callable[[FileOutcome], None]) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.context = multiprocessing.get_context("fork")
        self.seats = [self._fork(index) for index in range(workers)]
        self.offers: deque[_Offer] = deque()
        self.deaths: dict[str, list[str]] = {}
        self.peaks: list[int] = []  # of the workers, as they stop
        self.cpu_seconds = 0.0  # of the workers, as they stop
        self._next_task = 0
        self._finished = 0

    def _fork(self, index: int) -> _Seat:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=serve, args=(index, child_end, self.settings), name=f"worker-{index}", daemon=True
        )
        process.start()
        child_end.close()
        return _Seat(process, parent_end, _Outbox(parent_end))

    def run(self, tasks: list[FileTask], source: TaskSource | None = None) -> list[FileOutcome]:
        """Predict every task, and with ``source`` every task it gives (a dynamic job's claimed
        units), until it is finished; one outcome per task, in the order they came."""
        queue = deque(sorted(tasks, key=lambda t: t.size, reverse=True))  # big files first: no long tail
        given = [t.relative for t in tasks]
        outcomes: dict[str, FileOutcome] = {}
        self._finished = 0  # outcomes, counted: a source may give the same unit again
        while self._finished < len(given) or (source is not None and not source.finished):
            self._dispatch(queue, source, given)
            by_conn = {s.conn: s for s in self.seats}
            by_sentinel = {s.process.sentinel: s for s in self.seats}
            # A source may have work later (a lease running out elsewhere): ask it again soon.
            ready = wait([*by_conn, *by_sentinel], timeout=None if source is None else 0.05)
            for conn in [r for r in ready if r in by_conn]:
                seat = by_conn[conn]
                while True:
                    try:
                        if not seat.conn.poll():
                            break
                        message = seat.conn.recv()
                    except (EOFError, OSError):  # it died; its sentinel says so
                        break
                    self._handle(seat, message, outcomes)
            for sentinel in [r for r in ready if r in by_sentinel]:
                seat = by_sentinel[sentinel]
                if not seat.process.is_alive():
                    self._replace(seat, queue, outcomes)
        self._stop()
        return [outcomes[relative] for relative in given]

    @staticmethod
    def _send(seat: _Seat, message: ToWorker) -> bool:
        """``False`` when the worker is gone; its sentinel tells the loop, which replaces it."""
        return seat.outbox.put(message)

    def _dispatch(self, queue: deque[FileTask], source: TaskSource | None, given: list[str]) -> None:
        for seat in self.seats:
            if not seat.idle or not seat.process.is_alive():
                continue
            if not queue and source is not None and not source.finished:
                task = source.take()  # a new unit before helping with the batches of others
                if task is not None:
                    queue.append(task)
                    given.append(task.relative)
            if queue:
                task = queue.popleft()
                if self._send(seat, FileAssigned(self._next_task, task)):
                    seat.task, seat.task_id = task, self._next_task
                    self._next_task += 1
                else:
                    queue.appendleft(task)
            elif self.offers:
                offer = self.offers[0]
                batch = offer.batch
                if self._send(seat, BatchAssigned(batch.owner, batch.task_id, batch.slot, offer.rows, offer.dtype)):
                    self.offers.popleft()
                    seat.helping = batch
        self.settings.sharing.value = 0 if queue else 1

    def _owner_of(self, index: int, task_id: int) -> _Seat | None:
        seat = self.seats[index]
        return seat if seat.task is not None and seat.task_id == task_id and seat.process.is_alive() else None

    def _withdraw_offers(self, owner: int, task_id: int) -> None:
        self.offers = deque(o for o in self.offers if (o.batch.owner, o.batch.task_id) != (owner, task_id))

    def _handle(self, seat: _Seat, message: ToParent, outcomes: dict[str, FileOutcome]) -> None:
        index = self.seats.index(seat)
        match message:
            case FileDone(task_id=task_id, outcome=outcome) if seat.task is not None and task_id == seat.task_id:
                self._finish(outcome, outcomes)
                self._withdraw_offers(index, seat.task_id)
                seat.task = None
            case BatchOffered(task_id=task_id, slot=slot, rows=rows, dtype=dtype) if (
                task_id == seat.task_id and seat.task is not None
            ):
                self.offers.append(_Offer(_BatchRef(index, task_id, slot), rows, dtype))
            case ClaimRequest(task_id=task_id, slot=slot):
                wanted = _BatchRef(index, task_id, slot)
                mine = next((o for o in self.offers if o.batch == wanted), None)
                if mine is not None:
                    self.offers.remove(mine)
                self._send(seat, ClaimAnswer(task_id, slot, mine is not None))
            case BatchPredicted() | BatchFailed():
                seat.helping = None
                target = self._owner_of(message.owner, message.task_id)
                if target is not None:
                    self._send(target, message)

    def _finish(self, outcome: FileOutcome, outcomes: dict[str, FileOutcome]) -> None:
        outcomes[outcome.relative] = outcome
        self._finished += 1
        self.on_outcome(outcome)

    def _replace(self, seat: _Seat, queue: deque[FileTask], outcomes: dict[str, FileOutcome]) -> None:
        """Blame the dead worker's file, retry or fail it, and fork a replacement in its seat."""
        index = self.seats.index(seat)
        reason = _death(seat.process.exitcode)
        if seat.task is not None:
            task = seat.task
            self._withdraw_offers(index, seat.task_id)
            settings = self.settings
            with contextlib.suppress(UnsafeKey):  # a name that could lead outside was never written
                remove_partials(
                    settings.output_dir
                    / (task.output or output_name(task.relative, settings.input_format, settings.output_format))
                )
            if self._blame(task.relative, f"worker {seat.process.pid} {reason} while predicting it", "retrying it"):
                self._finish(self._failed(task), outcomes)
            else:
                queue.appendleft(task)
        elif seat.helping is not None:
            batch = seat.helping
            target = self._owner_of(batch.owner, batch.task_id)
            if target is not None and target.task is not None:
                relative = target.task.relative
                what = f"worker {seat.process.pid} {reason} while predicting a batch of it"
                if self._blame(relative, what, "its owner predicts that batch again"):
                    self._send(target, FileAborted(batch.task_id, batch.slot, self._given_up(relative)))
                else:
                    self._send(target, BatchReturned(batch.task_id, batch.slot))
        seat.outbox.close()
        seat.conn.close()
        self.seats[index] = self._fork(index)

    def _blame(self, relative: str, what: str, retry: str) -> bool:
        """Count a death against a file; ``True`` once it has killed two workers."""
        log.warning("%s: %s; %s", relative, what, "giving up on it" if relative in self.deaths else retry)
        self.deaths.setdefault(relative, []).append(what)
        return len(self.deaths[relative]) >= 2

    def _given_up(self, relative: str) -> str:
        return (
            "two workers died on this file, so it was not predicted: "
            + "; ".join(self.deaths[relative])
            + ". Check the instance's memory against the file and model size, then resubmit it"
        )

    def _failed(self, task: FileTask) -> FileOutcome:
        return FileOutcome(
            task.relative, task.size, error=self._given_up(task.relative), error_kind=ErrorKind.TRANSIENT
        )

    def _stop(self) -> None:
        for seat in self.seats:
            self._send(seat, Stop())
        for seat in self.seats:
            try:
                while True:
                    message: ToParent = seat.conn.recv()
                    if isinstance(message, Stopped):
                        self.peaks.append(message.peak_rss)
                        self.cpu_seconds += message.cpu_seconds
                        break
            except (EOFError, OSError):
                pass
            seat.process.join(timeout=10)
            if seat.process.is_alive():
                seat.process.kill()
            seat.outbox.close()
