"""What the processing script's processes tell each other, as named types: the files a worker is
given and what became of each, and the messages the parent and the workers exchange through pipes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from shardflow.core.record import ErrorKind

__all__ = [
    "BatchAssigned",
    "BatchFailed",
    "BatchOffered",
    "BatchPredicted",
    "BatchReturned",
    "ClaimAnswer",
    "ClaimRequest",
    "FileAborted",
    "FileAssigned",
    "FileDone",
    "FileOutcome",
    "FileTask",
    "Stop",
    "Stopped",
    "ToOwner",
    "ToParent",
    "ToWorker",
]


@dataclass(frozen=True)
class FileTask:
    """One input file to predict.

    :param path: where it is on this instance.
    :param relative: its path under the input folder, which the output keeps.
    :param size: its size in bytes: the biggest files are handed out first.
    :param output: its output's path under the output folder (default: the input's relative path
        with the output's suffix); a dynamic job's part of a split object names its own.
    :param row_groups: only these row groups of a Parquet file: ``(first, count)``.
    """

    path: str
    relative: str
    size: int
    output: str | None = None
    row_groups: tuple[int, int] | None = None


@dataclass(frozen=True)
class FileOutcome:
    """What became of one input file: its output, or the error that stopped it.

    :param output: the output's path under the output folder; ``None`` when the file failed.
    :param error_kind: why it failed: a bad input, a model error, or something another attempt
        may not meet (see :class:`~shardflow.core.record.ErrorKind`).
    :param sha256: of the output, computed while it was written.
    :param helped: how many of its batches other workers predicted, out of ``batches``.
    """

    relative: str
    size: int
    output: str | None = None
    rows: int = 0
    sha256: str | None = None
    seconds: float = 0.0
    error: str | None = None
    helped: int = 0
    batches: int = 0
    error_kind: ErrorKind | None = None


# The messages below go through a pipe once per file or per batch (65,536 rows), never per row.
# ``task_id`` numbers the files in the order the parent hands them out; ``owner`` is the seat of the
# worker that owns the file; ``slot`` is the batch's feature matrix in that seat's shared memory.


@dataclass(frozen=True, slots=True)
class FileAssigned:
    """The parent, to an idle worker: own this file (read, predict and write all of it)."""

    task_id: int
    task: FileTask


@dataclass(frozen=True, slots=True)
class BatchAssigned:
    """The parent, to an idle worker: predict this offered batch, read from the owner's slot."""

    owner: int
    task_id: int
    slot: int
    rows: int
    dtype: str  # of the feature matrix, as ``np.dtype.str``; or ``"arrow"``: the feature columns


@dataclass(frozen=True, slots=True)
class Stop:
    """The parent, to every worker once every file has an outcome: report usage and exit."""


@dataclass(frozen=True, slots=True)
class FileDone:
    """An owner, to the parent: what became of its file; the worker is idle again."""

    task_id: int
    outcome: FileOutcome


@dataclass(frozen=True, slots=True)
class BatchOffered:
    """An owner, to the parent once workers share: a helper may predict this batch."""

    task_id: int
    slot: int
    rows: int
    dtype: str  # of the feature matrix, as ``np.dtype.str``; or ``"arrow"``: the feature columns


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """An owner, to the parent: take back this offered batch unless a helper already has it."""

    task_id: int
    slot: int


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """The parent, to an owner: ``granted`` when no helper had the batch, so the owner predicts it."""

    task_id: int
    slot: int
    granted: bool


@dataclass(frozen=True, slots=True)
class BatchPredicted:
    """A helper, to the parent, which forwards it unchanged to the owner: the batch's outputs."""

    owner: int
    task_id: int
    slot: int
    outputs: tuple[np.ndarray, ...]


@dataclass(frozen=True, slots=True)
class BatchFailed:
    """A helper, to the parent, which forwards it unchanged to the owner: the model raised on it
    (``kind`` is ``TRANSIENT`` when the helper ran out of memory instead)."""

    owner: int
    task_id: int
    slot: int
    error: str
    kind: ErrorKind = ErrorKind.MODEL


@dataclass(frozen=True, slots=True)
class FileAborted:
    """The parent, to an owner: a second helper died on a batch of this file; give the file up."""

    task_id: int
    slot: int
    error: str


@dataclass(frozen=True, slots=True)
class BatchReturned:
    """The parent, to an owner: the helper of this batch died; predict the batch itself."""

    task_id: int
    slot: int


@dataclass(frozen=True, slots=True)
class Stopped:
    """A worker, to the parent in answer to :class:`Stop`: its peak RSS in bytes and CPU time."""

    peak_rss: int
    cpu_seconds: float


#: What an owner hears about its batches while it streams a file.
ToOwner: TypeAlias = ClaimAnswer | BatchPredicted | BatchFailed | FileAborted | BatchReturned
#: What the parent sends a worker.
ToWorker: TypeAlias = FileAssigned | BatchAssigned | Stop | ToOwner
#: What a worker sends the parent.
ToParent: TypeAlias = FileDone | BatchOffered | ClaimRequest | BatchPredicted | BatchFailed | Stopped
