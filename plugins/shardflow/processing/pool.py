"""The parent side of the processing script's workers: fork them once the model is loaded, hand
out files (largest first) and offered batches, and survive workers that die."""

from __future__ import annotations

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
from typing import Any

from shardflow.processing.messages import FileOutcome, FileTask
from shardflow.processing.tabular import output_name, remove_partials
from shardflow.processing.worker import WorkerSettings, serve

__all__ = ["WorkerPool"]

log = logging.getLogger("batch_predict")


class _Outbox:
    """Sends to one worker from a thread of its own, in order. A worker reads its pipe only between
    batches, and a helper's predictions are bigger than a pipe holds: sent from the pool's loop,
    they held every other worker up until the owner had predicted its own batch."""

    _CLOSE = None

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.messages: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.alive = True
        self.thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self.thread.start()

    def put(self, message: tuple[Any, ...]) -> bool:
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


@dataclass
class _Seat:
    process: BaseProcess
    conn: Connection
    outbox: _Outbox
    task: FileTask | None = None  # the file it owns
    task_id: int = 0
    helping: tuple[int, int, int] | None = None  # (owner seat, task id, slot) of the batch it predicts

    @property
    def idle(self) -> bool:
        return self.task is None and self.helping is None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"killed by {name}" + (" (out of memory, or killed by hand)" if name == "SIGKILL" else "")
    return f"exited with code {exitcode}"


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
        self.offers: deque[tuple[int, int, int, int, str]] = deque()  # (owner seat, task id, slot, rows, dtype)
        self.deaths: dict[str, list[str]] = {}
        self.peaks: list[int] = []  # of the workers, as they stop
        self.cpu_seconds = 0.0  # of the workers, as they stop
        self._next_task = 0

    def _fork(self, index: int) -> _Seat:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=serve, args=(index, child_end, self.settings), name=f"worker-{index}", daemon=True
        )
        process.start()
        child_end.close()
        return _Seat(process, parent_end, _Outbox(parent_end))

    def run(self, tasks: list[FileTask]) -> list[FileOutcome]:
        queue = deque(sorted(tasks, key=lambda t: t.size, reverse=True))  # big files first: no long tail
        outcomes: dict[str, FileOutcome] = {}
        while len(outcomes) < len(tasks):
            self._dispatch(queue)
            by_conn = {s.conn: s for s in self.seats}
            by_sentinel = {s.process.sentinel: s for s in self.seats}
            ready = wait([*by_conn, *by_sentinel])
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
        return [outcomes[t.relative] for t in tasks]

    @staticmethod
    def _send(seat: _Seat, message: tuple[Any, ...]) -> bool:
        """``False`` when the worker is gone; its sentinel tells the loop, which replaces it."""
        return seat.outbox.put(message)

    def _dispatch(self, queue: deque[FileTask]) -> None:
        for seat in self.seats:
            if not seat.idle or not seat.process.is_alive():
                continue
            if queue:
                task = queue.popleft()
                if self._send(seat, ("file", self._next_task, task)):
                    seat.task, seat.task_id = task, self._next_task
                    self._next_task += 1
                else:
                    queue.appendleft(task)
            elif self.offers:
                owner, task_id, slot, rows, dtype = self.offers[0]
                if self._send(seat, ("predict", owner, task_id, slot, rows, dtype)):
                    self.offers.popleft()
                    seat.helping = (owner, task_id, slot)
        self.settings.sharing.value = 0 if queue else 1

    def _owner_of(self, index: int, task_id: int) -> _Seat | None:
        seat = self.seats[index]
        return seat if seat.task is not None and seat.task_id == task_id and seat.process.is_alive() else None

    def _handle(self, seat: _Seat, message: tuple[Any, ...], outcomes: dict[str, FileOutcome]) -> None:
        kind = message[0]
        index = self.seats.index(seat)
        if kind == "done" and seat.task is not None and message[1] == seat.task_id:
            self._finish(message[2], outcomes)
            self.offers = deque(o for o in self.offers if (o[0], o[1]) != (index, seat.task_id))
            seat.task = None
        elif kind == "offer" and message[1] == seat.task_id and seat.task is not None:
            self.offers.append((index, *message[1:]))
        elif kind == "claim":
            _, task_id, slot = message
            mine = next((o for o in self.offers if o[:3] == (index, task_id, slot)), None)
            if mine is not None:
                self.offers.remove(mine)
            self._send(seat, ("claimed", task_id, slot, mine is not None))
        elif kind in ("predicted", "failed"):
            _, owner, task_id, slot, payload = message
            seat.helping = None
            target = self._owner_of(owner, task_id)
            if target is not None:
                self._send(target, (kind, task_id, slot, payload))

    def _finish(self, outcome: FileOutcome, outcomes: dict[str, FileOutcome]) -> None:
        outcomes[outcome.relative] = outcome
        self.on_outcome(outcome)

    def _replace(self, seat: _Seat, queue: deque[FileTask], outcomes: dict[str, FileOutcome]) -> None:
        """Blame the dead worker's file, retry or fail it, and fork a replacement in its seat."""
        index = self.seats.index(seat)
        reason = _death(seat.process.exitcode)
        if seat.task is not None:
            task = seat.task
            self.offers = deque(o for o in self.offers if (o[0], o[1]) != (index, seat.task_id))
            settings = self.settings
            remove_partials(
                settings.output_dir / output_name(task.relative, settings.input_format, settings.output_format)
            )
            if self._blame(task.relative, f"worker {seat.process.pid} {reason} while predicting it", "retrying it"):
                self._finish(self._failed(task), outcomes)
            else:
                queue.appendleft(task)
        elif seat.helping is not None:
            owner, task_id, slot = seat.helping
            target = self._owner_of(owner, task_id)
            if target is not None and target.task is not None:
                relative = target.task.relative
                what = f"worker {seat.process.pid} {reason} while predicting a batch of it"
                if self._blame(relative, what, "its owner predicts that batch again"):
                    self._send(target, ("abort", task_id, slot, self._failed(target.task).error))
                else:
                    self._send(target, ("returned", task_id, slot, None))
        seat.outbox.close()
        seat.conn.close()
        self.seats[index] = self._fork(index)

    def _blame(self, relative: str, what: str, retry: str) -> bool:
        """Count a death against a file; ``True`` once it has killed two workers."""
        log.warning("%s: %s; %s", relative, what, "giving up on it" if relative in self.deaths else retry)
        self.deaths.setdefault(relative, []).append(what)
        return len(self.deaths[relative]) >= 2

    def _failed(self, task: FileTask) -> FileOutcome:
        return FileOutcome(
            task.relative,
            task.size,
            error="two workers died on this file, so it was not predicted: "
            + "; ".join(self.deaths[task.relative])
            + ". Check the instance's memory against the file and model size, then resubmit it",
        )

    def _stop(self) -> None:
        for seat in self.seats:
            self._send(seat, ("stop",))
        for seat in self.seats:
            try:
                while True:
                    message = seat.conn.recv()
                    if message[0] == "stopped":
                        self.peaks.append(message[1])
                        self.cpu_seconds += message[2]
                        break
            except (EOFError, OSError):
                pass
            seat.process.join(timeout=10)
            if seat.process.is_alive():
                seat.process.kill()
            seat.outbox.close()
