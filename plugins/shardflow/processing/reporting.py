"""Progress from the processing script to the job record: per-file results and a heartbeat,
flushed in batches from a background thread so the prediction loop never waits on DynamoDB."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

from shardflow.contract import ENV_ATTEMPT, ENV_HEARTBEAT_SECONDS, ENV_JOB_ID, ENV_JOB_TABLE
from shardflow.core.ports import JobStorePort
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus, utcnow
from shardflow.errors import JobConflict

__all__ = ["JobReporter", "NullReporter", "Outcome", "StoreFactory"]

#: Opens the job table of the given name. The DynamoDB store imports boto3 and botocore, a tenth of
#: a second or more of every start, so the entry point passes a factory that imports them only
#: when a job record is named: a run by hand or in a benchmark never does.
StoreFactory = Callable[[str], JobStorePort]

log = logging.getLogger("batch_predict.reporting")


class Outcome(Protocol):
    @property
    def relative(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def output(self) -> str | None: ...
    @property
    def rows(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def error(self) -> str | None: ...
    @property
    def error_kind(self) -> ErrorKind | None: ...


class NullReporter:
    """Used when the script runs outside a tracked job (by hand, or in a benchmark)."""

    def start(self) -> None: ...

    def file_done(self, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


class JobReporter:
    """Reports to the job named by ``SHARDFLOW_JOB_ID`` in ``SHARDFLOW_JOB_TABLE``.

    :param interval: seconds between flushes; also the heartbeat period.
    """

    def __init__(
        self, store: JobStorePort, job_id: str, processing_job: str, attempt: int | None = None, interval: float = 10.0
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.processing_job = processing_job
        self.attempt = attempt
        self.interval = interval
        self._pending: list[FileRecord] = []
        self._unbeaten = (0, 0)  # files and rows finished since the last heartbeat
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-reporter", daemon=True)
        self.record: JobRecord | None = None  # as read when the reporter started

    @classmethod
    def from_environment(cls, processing_job: str, open_store: StoreFactory) -> JobReporter | None:
        """The reporter of the job the environment names (``SHARDFLOW_JOB_ID`` in
        ``SHARDFLOW_JOB_TABLE``), or ``None`` when it names none."""
        job_id = os.environ.get(ENV_JOB_ID)
        table = os.environ.get(ENV_JOB_TABLE)
        if not (job_id and table):
            return None
        interval = float(os.environ.get(ENV_HEARTBEAT_SECONDS, "10"))
        attempt = os.environ.get(ENV_ATTEMPT)
        return cls(open_store(table), job_id, processing_job, int(attempt) if attempt else None, interval)

    def start(self) -> None:
        """Mark the job RUNNING (the first instance to start does; the others find it done), and
        keep the record it read (:attr:`record`)."""
        record = self.record = self.store.get_job(self.job_id)
        if self.attempt is None:
            self.attempt = record.attempt
        if record.status is JobStatus.SUBMITTED and record.attempt == self.attempt:
            started = {} if record.started_at else {"started_at": utcnow()}
            with contextlib.suppress(JobConflict):  # another instance marked it first
                self.store.transition(record, JobStatus.RUNNING, **started)
        self._beat()
        self._thread.start()

    def file_done(self, outcome: Outcome) -> None:
        record = FileRecord(
            key=outcome.relative,
            size=outcome.size,
            status=FileStatus.FAILED if outcome.error else FileStatus.SUCCEEDED,
            rows=outcome.rows,
            output_key=outcome.output,
            error=outcome.error,
            processing_job=self.processing_job,
            seconds=outcome.seconds,
            error_kind=outcome.error_kind if outcome.error else None,
        )
        with self._lock:
            self._pending.append(record)
            files, rows = self._unbeaten
            self._unbeaten = (files + 1, rows + (0 if outcome.error else outcome.rows))

    def file_recorded(self, record: FileRecord) -> None:
        """Count a result written to the job record by someone else (a dynamic job's unit claims)
        in the next heartbeat's progress."""
        with self._lock:
            files, rows = self._unbeaten
            self._unbeaten = (files + 1, rows + record.rows)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._flush()
        self._beat()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._flush()
                self._beat()
            except Exception:  # progress reporting must never stop the predictions
                log.exception("could not report progress to job %s; will try again", self.job_id)

    def _beat(self) -> None:
        """Heartbeat with the progress since the last one; results go first, so the counts
        never run ahead of the file items."""
        with self._lock:
            files, rows = self._unbeaten
            self._unbeaten = (0, 0)
        assert self.attempt is not None
        if not self.store.heartbeat(self.job_id, self.attempt, files, rows):
            log.warning(
                "job %s has moved past attempt %d; its progress is no longer counted", self.job_id, self.attempt
            )

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        assert self.attempt is not None
        # Fenced: a superseded (or already settled) attempt's results are refused, never applied.
        if not self.store.record_file_results(self.job_id, batch, attempt=self.attempt):
            log.warning(
                "job %s has moved past attempt %d: its results for %d file(s) were refused, not recorded (%s, ...)",
                self.job_id,
                self.attempt,
                len(batch),
                batch[0].key,
            )
