"""Dynamic distribution, the instance's side: claim the biggest unit left from the job record,
fetch it from S3, hand it to the worker pool, then upload its output to the attempt's staging and
record its result, until no unit is left (:mod:`shardflow.core.units` has the rules).

A claim is a lease the instance renews every third of its length while it holds the unit; an
instance that dies stops renewing, and once the lease has run out a live instance claims the unit
again in the same attempt. A result is recorded only while the claim that made it still holds
the unit and the attempt is current: an instance that was presumed dead and comes back has its
late results refused. An output is uploaded before its unit is recorded done, under a folder of
its own claim, so whatever is recorded is in staging and no late writer can overwrite it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Protocol

from shardflow.core.record import ErrorKind, FileRecord, FileStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.staging import job_staging
from shardflow.core.units import Claim, UnitState, UnitStore, WorkUnit, part_output
from shardflow.errors import ObjectNotFound
from shardflow.processing.messages import FileOutcome, FileTask
from shardflow.processing.tabular import output_name

__all__ = ["ClaimStats", "UnitClaims", "UnitObjects"]

log = logging.getLogger("batch_predict.claims")

#: Ranged reads of a split object's row groups come in pieces of this size.
_READ_BYTES = 64 << 20


class UnitObjects(Protocol):
    """What an instance does with S3 (:class:`shardflow.aws.s3.S3ObjectStore`)."""

    def read(self, uri: S3Uri, start: int | None = None, end: int | None = None) -> bytes: ...

    def download(self, uri: S3Uri, into: IO[bytes]) -> None: ...

    def upload(self, path: str, uri: S3Uri) -> None: ...


@dataclass
class ClaimStats:
    """What claiming cost this instance: DynamoDB requests, and the units it finished."""

    claims: int = 0  # conditional claim writes, taken or not
    taken: int = 0  # claims that lost to another instance
    lists: int = 0  # queries of the unit list
    renewals: int = 0
    results: int = 0  # result writes (a unit's, and a split file's)
    reads: int = 0  # sibling reads of split files
    units: int = 0
    rows: int = 0
    busy_seconds: float = 0.0
    refused: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.claims + self.lists + self.renewals + self.results + self.reads


class UnitClaims:
    """The worker pool's task source for a dynamic job (see :class:`~shardflow.processing.pool.TaskSource`).

    :param store: the job table.
    :param objects: S3.
    :param job_id: the job; ``attempt`` its current attempt (every write is fenced on it).
    :param host: this instance, named in its claims.
    :param work_dir: where fetched inputs wait for the workers (the instance's volume).
    :param output_dir: where the workers write outputs (each is deleted once uploaded).
    :param input_prefix: the job's input prefix; ``output_prefix`` its output prefix.
    :param instances: how many instances the job has (``hosts`` of the resource config).
    """

    def __init__(
        self,
        store: UnitStore,
        objects: UnitObjects,
        *,
        job_id: str,
        attempt: int,
        processing_job: str,
        host: str,
        work_dir: Path,
        output_dir: Path,
        input_prefix: str,
        output_prefix: str,
        input_format: str,
        output_format: str,
        lease_seconds: float,
        instances: int = 1,
    ) -> None:
        self.store, self.objects = store, objects
        self.job_id, self.attempt, self.processing_job, self.host = job_id, attempt, processing_job, host
        # Every instance reads the same list, biggest first; of N instances, instance k tries
        # the units k, k + N, k + 2N, ... of it first, then the rest, so that they do not all
        # race for the same units (algo-1 takes the biggest).
        number = host.rsplit("-", 1)[-1]
        self._instances = max(1, instances)
        self._offset = (int(number) - 1 if number.isdigit() and int(number) > 0 else 0) % self._instances
        self.work_dir, self.output_dir = work_dir, output_dir
        self.input_prefix = S3Uri.parse(input_prefix).as_prefix()
        self.staging = job_staging(output_prefix, job_id)
        self.input_format, self.output_format = input_format, output_format
        self.lease_seconds = lease_seconds
        self.stats = ClaimStats()
        self._candidates: list[WorkUnit] = []
        self._settled = False
        self._fenced = False
        self._next_list = 0.0
        self._missed = 0  # claims lost in a row since the unit list was read
        self._held: dict[str, WorkUnit] = {}  # by task label
        self._lock = threading.Lock()
        self._results = ThreadPoolExecutor(max_workers=2, thread_name_prefix="unit-result")
        self._pending: list[Future[None]] = []
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()
        # One unit claimed and fetched ahead, while the workers predict: a worker that ends its
        # unit starts the next at once instead of waiting for a claim and a download.
        self._ready: deque[FileTask] = deque()
        self._wake = threading.Event()
        self._prefetcher = threading.Thread(target=self._prefetch_loop, name="unit-prefetch", daemon=True)
        self._prefetcher.start()

    # -- the pool's side -------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Nothing is left to claim in this attempt, and every unit this instance took has its result."""
        with self._lock:
            held = bool(self._held)
        return (self._fenced or self._settled) and not held and all(f.done() for f in self._pending)

    def take(self) -> FileTask | None:
        """The next unit to predict, claimed and fetched ahead; ``None`` when none is ready now (ask again)."""
        with self._lock:
            task = self._ready.popleft() if self._ready else None
        self._wake.set()
        if task is not None and self._fenced:  # claimed for an attempt that is over: let it go
            self._drop(task)
            return None
        return task

    def _drop(self, task: FileTask) -> None:
        with self._lock:
            unit = self._held.pop(task.relative, None)
        if unit is not None:
            shutil.rmtree(self.work_dir / f"unit-{unit.index:06d}", ignore_errors=True)

    def _prefetch_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                room = not self._ready
            if room and not self._fenced and not self._settled:
                try:
                    task = self._claim_next()
                except Exception:  # the job table or S3 failed: try again in a moment
                    log.exception("could not claim a unit of job %s; trying again", self.job_id)
                    task = None
                if task is not None:
                    with self._lock:
                        self._ready.append(task)
                    continue
            self._wake.wait(timeout=0.2)
            self._wake.clear()

    def _claim_next(self) -> FileTask | None:
        """Claim and fetch the biggest claimable unit; ``None`` when there is none now."""
        for _ in range(2):
            # Down the list, biggest first, until two claims in a row were lost to other instances:
            # then the list is stale and is read again rather than tried unit by unit.
            while self._candidates and not self._fenced and self._missed < 2:
                task = self._claim(self._candidates.pop(0))
                if task is not None:
                    return task
            if self._fenced or (self._missed < 2 and time.time() < self._next_list):
                return None
            self._list()
        return None

    def _list(self) -> None:
        units = self.store.list_units(self.job_id)
        self.stats.lists += 1
        self._missed = 0
        now = time.time()
        claimable = sorted((u for u in units if u.claimable(self.attempt, now)), key=lambda u: -u.size)
        mine = claimable[self._offset :: self._instances]
        first = {u.index for u in mine}
        self._candidates = mine + [u for u in claimable if u.index not in first]
        # Settled: no unit may be claimed again in this attempt (none open, none leased).
        self._settled = all(_settled(u, self.attempt, now) for u in units)
        # Look again in a second (an idle instance ends only once it sees every unit settled, and
        # the job ends with its last instance), or when the first lease held elsewhere runs out.
        wait = 1.0
        leases = [u.lease_until for u in units if u.state is UnitState.LEASED and u.lease_until]
        if leases:
            wait = min(wait, max(0.5, min(leases) - now + 0.1))
        self._next_list = now + wait

    def _claim(self, unit: WorkUnit) -> FileTask | None:
        now = time.time()
        if not unit.claimable(self.attempt, now):
            return None
        token = uuid.uuid4().hex
        self.stats.claims += 1
        answer = self.store.claim_unit(
            self.job_id,
            self.attempt,
            unit.index,
            token=token,
            host=self.host,
            lease_until=now + self.lease_seconds,
            now=now,
        )
        if answer is Claim.FENCED:
            log.warning("job %s has moved past attempt %d: claiming no more units", self.job_id, self.attempt)
            self._fenced = True
            return None
        if answer is Claim.TAKEN:
            self.stats.taken += 1
            self._missed += 1
            return None
        self._missed = 0
        unit = replace(unit, state=UnitState.LEASED, attempt=self.attempt, token=token, host=self.host)
        output = part_output(output_name(unit.key, self.input_format, self.output_format), unit.part, unit.parts)
        unit = replace(unit, output=output)
        with self._lock:
            self._held[unit.label] = unit
        try:
            path = self._fetch(unit)
        except Exception as error:
            kind = ErrorKind.INPUT if isinstance(error, ObjectNotFound) else ErrorKind.TRANSIENT
            log.error("%s could not be read from S3: %s", unit.label, error)
            self.finish(
                FileOutcome(unit.label, unit.size, error=f"could not be read from S3: {error}", error_kind=kind)
            )
            return None
        groups = (unit.first_group, unit.groups) if unit.first_group is not None and unit.groups else None
        return FileTask(str(path), unit.label, unit.size, output=output, row_groups=groups)

    def _fetch(self, unit: WorkUnit) -> Path:
        """Download a whole object, or for a part only its row groups' bytes and the footer into a
        sparse file of the object's size (the reader never touches the rest)."""
        folder = self.work_dir / f"unit-{unit.index:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / Path(unit.key).name
        uri = self.input_prefix.join(unit.key)
        with open(path, "wb") as handle:
            if unit.span is None:
                self.objects.download(uri, handle)
                return path
            start, end, footer = unit.span
            handle.truncate(unit.object_size)
            for begin, stop in ((start, end), (footer, unit.object_size)):
                for offset in range(begin, stop, _READ_BYTES):
                    handle.seek(offset)
                    handle.write(self.objects.read(uri, offset, min(stop, offset + _READ_BYTES) - 1))
        return path

    def finish(self, outcome: FileOutcome) -> None:
        """The pool's ``on_outcome``: upload and record in the background, so the pool goes on."""
        self._pending.append(self._results.submit(self._record, outcome))

    # -- results -------------------------------------------------------------------------------

    def _record(self, outcome: FileOutcome) -> None:
        with self._lock:
            unit = self._held.get(outcome.relative)
        if unit is None:
            return
        try:
            self._record_unit(unit, outcome)
        except Exception:
            log.exception("could not record %s; its lease will run out and another claim will redo it", unit.label)
        finally:
            with self._lock:
                self._held.pop(outcome.relative, None)
            shutil.rmtree(self.work_dir / f"unit-{unit.index:06d}", ignore_errors=True)

    def _record_unit(self, unit: WorkUnit, outcome: FileOutcome) -> None:
        if outcome.error is None and outcome.output is not None:
            staged = f"attempt-{self.attempt}/_units/{unit.token}/{outcome.output}"
            local = self.output_dir / outcome.output
            self.objects.upload(str(local), self.staging.join(staged))
            local.unlink(missing_ok=True)
            done = replace(
                unit,
                state=UnitState.DONE,
                staged=staged,
                rows=outcome.rows,
                sha256=outcome.sha256,
                seconds=outcome.seconds,
            )
        else:
            done = replace(
                unit,
                state=UnitState.FAILED,
                error=outcome.error,
                error_kind=outcome.error_kind,
                seconds=outcome.seconds,
            )
        whole = unit.parts == 1
        file = self._file_result([done]) if whole else None
        self.stats.results += 1
        answer = self.store.finish_unit(self.job_id, self.attempt, done, file)
        if answer is not Claim.OK:
            why = (
                "the attempt is over" if answer is Claim.FENCED else "its lease ran out and another instance claimed it"
            )
            log.warning("%s: result refused (%s)", unit.label, why)
            self.stats.refused.append(unit.label)
            if answer is Claim.FENCED:
                self._fenced = True
            return
        self._next_list = 0.0  # the unit list has changed: look again at once
        self._wake.set()
        self.stats.units += 1
        self.stats.rows += done.rows
        self.stats.busy_seconds += done.seconds or 0.0
        if not whole:
            self._settle_split(done)

    def _settle_split(self, done: WorkUnit) -> None:
        """Once every part of a split input has settled, record the input's result (the last
        finisher sees every part settled, since it reads after its own write)."""
        first = done.index - done.part
        self.stats.reads += 1
        parts = self.store.get_units(self.job_id, range(first, first + done.parts))
        now = time.time()
        if len(parts) != done.parts or not all(_settled(p, self.attempt, now) for p in parts):
            return
        file = self._file_result(parts)
        self.stats.results += 1
        self.store.record_split_file(self.job_id, self.attempt, file)  # a second finisher is refused

    def _file_result(self, parts: list[WorkUnit]) -> FileRecord:
        """An input's result from its units: succeeded when every part did (its rows added up,
        its first part's output named), else failed with the first failed part's error."""
        first = parts[0]
        base = FileRecord(
            key=first.key,
            size=first.object_size,
            processing_job=self.processing_job,
            seconds=sum(p.seconds or 0.0 for p in parts),
            parts=first.parts,
        )
        failed = [p for p in parts if p.state is UnitState.FAILED]
        if not failed:
            return replace(base, status=FileStatus.SUCCEEDED, rows=sum(p.rows for p in parts), output_key=first.output)
        kinds = {p.error_kind for p in failed}
        # One part that fails the same way every time fails the input for good.
        kind = next((k for k in (ErrorKind.MODEL, ErrorKind.INPUT) if k in kinds), ErrorKind.TRANSIENT)
        error = failed[0].error if first.parts == 1 else f"{failed[0].label}: {failed[0].error}"
        return replace(base, status=FileStatus.FAILED, error=error, error_kind=kind)

    # -- leases --------------------------------------------------------------------------------

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(1.0, self.lease_seconds / 3)):
            with self._lock:
                leases = {u.index: u.token for u in self._held.values() if u.token}
            if not leases:
                continue
            try:
                self.stats.renewals += len(leases)
                lost = self.store.renew_leases(self.job_id, leases, time.time() + self.lease_seconds)
            except Exception:  # a failed renewal is retried; the lease is long enough for a few
                log.exception("could not renew the leases of job %s", self.job_id)
                continue
            for index in lost:
                log.warning(
                    "unit %d of job %s: lease lost to another claim; its result will be refused", index, self.job_id
                )

    def close(self) -> None:
        """Stop claiming, wait for the results in flight, then stop renewing."""
        self._stop.set()
        self._wake.set()
        self._prefetcher.join(timeout=30)
        for task in list(self._ready):  # claimed ahead but never started: its lease runs out
            self._drop(task)
        self._results.shutdown(wait=True)
        self._renewer.join(timeout=5)


def _settled(unit: WorkUnit, attempt: int, now: float) -> bool:
    """Done, or failed in a way this attempt may not try again."""
    return unit.state is UnitState.DONE or (unit.state is UnitState.FAILED and not unit.claimable(attempt, now))
