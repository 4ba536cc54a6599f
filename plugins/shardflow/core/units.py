"""Dynamic distribution: a job's work cut into units that its instances claim from the job record.

``ShardedByS3Key`` gives each instance about 1/N of the objects by count, whatever their sizes,
and SageMaker bills every instance until the last one ends. With ``compute.distribution:
dynamic`` prepare writes one unit item per input object (or, with ``split_objects``, per range of
a Parquet object's row groups) beside the file items; each instance claims the biggest unit left
with a conditional write that takes a lease, renews its leases with its heartbeat, and records the
unit's result under the attempt's fence and its own claim. A unit whose lease runs out (its
instance died) is claimed again by a live instance in the same attempt. ``auto`` chooses dynamic
when the sharded shares' predicted imbalance passes :data:`AUTO_THRESHOLD`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from shardflow.core.planning import assign_shards
from shardflow.core.ports import ObjectStore
from shardflow.core.record import ErrorKind, FileRecord
from shardflow.core.s3uri import S3Uri
from shardflow.errors import PrepareError

__all__ = [
    "AUTO_THRESHOLD",
    "UNITS_PER_INSTANCE",
    "Claim",
    "UnitStore",
    "RowGroup",
    "UnitState",
    "WorkUnit",
    "choose_distribution",
    "part_output",
    "plan_units",
    "predicted_imbalance",
    "read_row_groups",
]

#: ``auto`` picks dynamic when the sharded shares' max/mean bytes per instance is above this.
#: Measured with ``make bench-distribution`` (bench/RESULTS-distribution.md, 2026-11-30 17:18): on
#: 24 evenly sized files over 2 instances dynamic took 1.11x sharded's time (median of 3 rounds,
#: 0.99x to 1.11x: a claim, a download and an upload per unit, on cores shared with moto), so that
#: overhead + a margin of 0.05. At a predicted imbalance of 1.28 dynamic took 0.87x sharded's time.
AUTO_THRESHOLD = 1.16

#: A split object is cut so that every instance has about this many units of the job's mean share:
#: enough for the biggest-first claims to even the instances out, few enough that a claim (two
#: DynamoDB writes) is nothing next to a unit's work.
UNITS_PER_INSTANCE = 4


class UnitState(enum.StrEnum):
    OPEN = "open"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class RowGroup:
    """One row group of a Parquet object: the bytes its column chunks span."""

    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class WorkUnit:
    """One unit of a dynamic job: a whole input object, or a range of a Parquet object's row groups.

    :param key: the input object, relative to the input prefix (as its file item).
    :param size: the bytes to read: the object's, or its row groups' column chunks.
    :param part: its place among the object's ``parts`` (0 and 1 for a whole object).
    :param first_group: the first of its ``groups`` row groups (``None`` for a whole object).
    :param span: the bytes of the object its row groups lie in, and where the footer starts:
        ``(start, end, footer)``; an instance reads only those.
    :param object_size: the whole object's size.
    :param attempt: the attempt that last claimed it; ``token`` names that claim (its holder's
        writes are accepted only while the unit is still its own).
    :param lease_until: seconds since the epoch when its lease ends, unless renewed.
    :param staged: where its output waits, relative to the job's staging folder.
    :param output: its output's key, relative to the output prefix.
    """

    index: int
    key: str
    size: int
    object_size: int
    part: int = 0
    parts: int = 1
    first_group: int | None = None
    groups: int | None = None
    span: tuple[int, int, int] | None = None
    state: UnitState = UnitState.OPEN
    attempt: int = 0
    token: str | None = None
    host: str | None = None
    lease_until: float | None = None
    claims: int = 0
    staged: str | None = None
    output: str | None = None
    rows: int = 0
    sha256: str | None = None
    seconds: float | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None

    @property
    def label(self) -> str:
        """How logs and errors name it: its key, and for a part, which part and row groups."""
        if self.parts == 1 or self.first_group is None or self.groups is None:
            return self.key
        last = self.first_group + self.groups - 1
        return f"{self.key} (part {self.part + 1} of {self.parts}, row groups {self.first_group}-{last})"

    @property
    def settled(self) -> bool:
        return self.state in (UnitState.DONE, UnitState.FAILED)

    def claimable(self, attempt: int, now: float) -> bool:
        """Whether attempt ``attempt`` may claim it at ``now``: open; leased but the lease has run
        out, or by an earlier attempt; or failed in an earlier attempt in a way another try may
        pass. The store's conditional write says the same (:mod:`shardflow.aws.job_units`)."""
        if self.state is UnitState.OPEN:
            return True
        if self.state is UnitState.LEASED:
            return self.attempt < attempt or (self.lease_until or 0) < now
        if self.state is UnitState.FAILED:
            return self.attempt < attempt and self.error_kind is ErrorKind.TRANSIENT
        return False


def part_output(output: str, part: int, parts: int) -> str:
    """A part's output beside where the whole object's would be: ``a/b.parquet`` ->
    ``a/b.part-00003.parquet``; a whole object keeps its output key."""
    if parts == 1:
        return output
    stem, dot, suffix = output.rpartition(".")
    if not dot or "/" in suffix:
        return f"{output}.part-{part:05d}"
    return f"{stem}.part-{part:05d}.{suffix}"


def _ranges(groups: Sequence[RowGroup], target: int) -> list[tuple[int, int]]:
    """Consecutive row groups cut into ``(first, count)`` ranges of about ``target`` bytes each."""
    ranges: list[tuple[int, int]] = []
    first, size = 0, 0
    for index, group in enumerate(groups):
        if index > first and size + group.size / 2 > target:
            ranges.append((first, index - first))
            first, size = index, 0
        size += group.size
    ranges.append((first, len(groups) - first))
    return ranges


def plan_units(
    files: Iterable[FileRecord],
    instances: int,
    row_groups: Mapping[str, tuple[list[RowGroup], int]] | None = None,
) -> list[WorkUnit]:
    """The units of a dynamic job: one per object; an object with row groups listed in
    ``row_groups`` (key -> its row groups and where its footer starts) and bigger than a unit's
    target size (the job's bytes over ``instances`` x :data:`UNITS_PER_INSTANCE`) is cut into
    ranges of its row groups."""
    files = sorted(files, key=lambda f: f.key)
    target = max(1, sum(f.size for f in files) // max(1, instances * UNITS_PER_INSTANCE))
    units: list[WorkUnit] = []
    for f in files:
        groups, footer = (row_groups or {}).get(f.key, ([], 0))
        if len(groups) < 2 or f.size <= target:
            units.append(WorkUnit(index=len(units), key=f.key, size=f.size, object_size=f.size))
            continue
        ranges = _ranges(groups, target)
        for part, (first, count) in enumerate(ranges):
            chosen = groups[first : first + count]
            units.append(
                WorkUnit(
                    index=len(units),
                    key=f.key,
                    size=sum(g.size for g in chosen),
                    object_size=f.size,
                    part=part,
                    parts=len(ranges),
                    first_group=first,
                    groups=count,
                    span=(min(g.start for g in chosen), max(g.end for g in chosen), footer),
                )
            )
    return units


def predicted_imbalance(sizes: Sequence[int], instances: int, ideal_instances: int | None = None) -> float:
    """Max over mean bytes per instance when the objects (``sizes``, in key order) are dealt out
    the way ShardedByS3Key does (:func:`~shardflow.core.planning.assign_shards`) over
    ``instances``, the mean taken over ``ideal_instances`` (default: the same), the instances
    dynamic distribution could keep busy: 1.0 is perfectly even; 1.5 means one instance has half
    again the mean's work, and the job takes that long."""
    total = sum(sizes)
    if not total or instances < 1:
        return 1.0
    shares = assign_shards(list(sizes), instances)
    return max(sum(share) for share in shares) / (total / (ideal_instances or instances))


def read_row_groups(objects: ObjectStore, uri: S3Uri, size: int) -> tuple[list[RowGroup], int]:
    """A Parquet object's row groups and where its footer starts, from two ranged reads (the
    footer's length, then the footer): nothing else of the object is downloaded.

    :raises PrepareError: the object is not a Parquet file.
    """
    tail = objects.read(uri, max(0, size - 8), size - 1) if size >= 12 else b""
    if tail[4:] != b"PAR1":
        raise PrepareError(f"{uri} is not a Parquet file (no PAR1 footer): remove it or fix input.format")
    footer_start = size - 8 - int.from_bytes(tail[:4], "little")
    footer = objects.read(uri, footer_start, size - 1)
    metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
    groups = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        starts, ends = [], []
        for column in (group.column(c) for c in range(group.num_columns)):
            offsets = [column.data_page_offset]
            if column.has_dictionary_page and column.dictionary_page_offset:
                offsets.append(column.dictionary_page_offset)
            starts.append(min(offsets))
            ends.append(min(offsets) + column.total_compressed_size)
        groups.append(RowGroup(min(starts), max(ends)))
    return groups, footer_start


def choose_distribution(distribution: str, imbalance: float) -> str:
    """``sharded`` or ``dynamic``: what the spec says, or for ``auto``, dynamic above the threshold."""
    if distribution == "auto":
        return "dynamic" if imbalance > AUTO_THRESHOLD else "sharded"
    return distribution


class Claim(enum.StrEnum):
    """What the job store says to a claim, or to a claim's result.

    ``OK``: the unit is this claim's (or its result is recorded). ``TAKEN``: the unit is not
    claimable, or has been claimed again since (a result is refused). ``FENCED``: the job is no
    longer at this attempt, or has settled: the instance has nothing more to do.
    """

    OK = "ok"
    TAKEN = "taken"
    FENCED = "fenced"


class UnitStore(Protocol):
    """The job table, as a dynamic instance uses it (:class:`~shardflow.aws.jobstore.JobStore`)."""

    def list_units(self, job_id: str) -> list[WorkUnit]: ...

    def get_units(self, job_id: str, indices: Iterable[int]) -> list[WorkUnit]: ...

    def claim_unit(
        self, job_id: str, attempt: int, index: int, *, token: str, host: str, lease_until: float, now: float
    ) -> Claim: ...

    def renew_leases(self, job_id: str, leases: Mapping[int, str], lease_until: float) -> list[int]: ...

    def finish_unit(self, job_id: str, attempt: int, unit: WorkUnit, file: FileRecord | None = None) -> Claim: ...

    def record_split_file(self, job_id: str, attempt: int, file: FileRecord) -> Claim: ...
