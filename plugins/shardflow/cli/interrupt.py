"""A command that owns a job stops it when it is stopped: SIGINT (Ctrl-C) or SIGTERM inside a
:class:`JobGuard` stops the job's processing job, marks the job CANCELLED, and becomes one
:class:`~shardflow.errors.JobInterrupted` with a one-line message instead of a traceback."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any

from shardflow.compute import get_backend
from shardflow.core.lifecycle import stop_job
from shardflow.core.ports import JobStorePort
from shardflow.core.record import JobRecord, JobStatus
from shardflow.errors import JobConflict, JobInterrupted

__all__ = ["JobGuard"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How long an interrupted command waits for its processing job to end before it exits.
_STOP_WAIT_SECONDS = 30.0


class _Signalled(BaseException):
    """Raised by the handler: a BaseException, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signal(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C while the job is being stopped must not cut the stop short.
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Signalled(signum)


class JobGuard:
    """``with JobGuard(store, by) as guard: ... guard.claim(job_id) ...``

    :param store: the job table.
    :param by: who stops the job, as its record will say (``stopped_by``).
    :param backend_config: settings for the job's compute backend.
    """

    def __init__(self, store: JobStorePort, by: str, **backend_config: Any) -> None:
        self.store = store
        self.by = by
        self.backend_config = backend_config
        self.job_id: str | None = None
        self._previous: dict[int, Any] = {}

    def claim(self, job_id: str) -> None:
        """From now on, a signal stops this job."""
        self.job_id = job_id

    def __enter__(self) -> JobGuard:
        if threading.current_thread() is threading.main_thread():  # only it may handle signals
            self._previous = {sig: signal.signal(sig, _raise_signal) for sig in _SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if isinstance(error, _Signalled):
                raise self._interrupted(signal.Signals(error.signum)) from None
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def _interrupted(self, sig: signal.Signals) -> JobInterrupted:
        code = 128 + sig.value
        if self.job_id is None:
            return JobInterrupted(f"interrupted by {sig.name} before a job was recorded: nothing to stop", code)
        record = self._cancel(f"{self.by} ({sig.name})")
        if record.status is JobStatus.CANCELLED:
            name = record.current_processing_job
            what = f"job {record.job_id} stopped and CANCELLED" + (f" with processing job {name}" if name else "")
        else:
            what = f"job {record.job_id} had {record.status} already and is left as it is"
        return JobInterrupted(f"interrupted by {sig.name}: {what} (`shardflow jobs show {record.job_id}`)", code)

    def _cancel(self, by: str) -> JobRecord:
        """Stop the job and wait (a bounded time) until its processing job has ended."""
        assert self.job_id is not None
        record = self.store.get_job(self.job_id)
        backend = get_backend(record.backend, **self.backend_config)
        for tries in range(3):
            try:
                record = stop_job(self.job_id, self.store, backend, by)
                break
            except JobConflict:  # a status change came first (a heartbeat does not): decide again
                if tries == 2:
                    raise
        name = record.current_processing_job
        deadline = time.monotonic() + _STOP_WAIT_SECONDS
        while name and time.monotonic() < deadline:
            status = backend.describe(name)
            if status is None or status.state.is_final:
                break
            time.sleep(0.2)
        return record
