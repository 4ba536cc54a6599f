"""What the processing script's processes tell each other, as named types: the files a worker is
given and what became of each."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FileOutcome", "FileTask"]


@dataclass(frozen=True)
class FileTask:
    """One input file to predict.

    :param path: where it is on this instance.
    :param relative: its path under the input folder, which the output keeps.
    :param size: its size in bytes: the biggest files are handed out first.
    """

    path: str
    relative: str
    size: int


@dataclass(frozen=True)
class FileOutcome:
    """What became of one input file: its output, or the error that stopped it.

    :param output: the output's path under the output folder; ``None`` when the file failed.
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
