"""What a run waits for before its job is prepared: a marker object under the input prefix, or
the first input file; how to find it through the object-store port, and how to say what it is."""

from __future__ import annotations

from dataclasses import dataclass

from shardflow.core.planning import input_suffixes, is_input
from shardflow.core.ports import ObjectStore
from shardflow.core.s3uri import S3Object, S3Uri

__all__ = ["Arrival"]


@dataclass(frozen=True)
class Arrival:
    """The object that tells a run its input has arrived.

    :param prefix: the run's input prefix (rendered for its date).
    :param input_format: the input's format: without a marker, the first non-empty object with
        one of its endings arrives the input (the objects the prepare step would take).
    :param marker: a key relative to ``prefix`` that the producer writes last (``_SUCCESS``).
    """

    prefix: S3Uri
    input_format: str
    marker: str | None = None

    @property
    def listing(self) -> S3Uri:
        """The prefix to list: only the marker's own key when there is a marker."""
        prefix = self.prefix.as_prefix()
        return S3Uri(prefix.bucket, prefix.key + self.marker) if self.marker else prefix

    def is_arrival(self, found: S3Object) -> bool:
        """Whether ``found`` (an object under :attr:`listing`) is what the run waits for."""
        if self.marker:
            return found.key == self.listing.key
        return is_input(found, self.input_format)

    def find(self, objects: ObjectStore) -> S3Object | None:
        """The object that shows the input has arrived, or ``None`` yet."""
        return next((o for o in objects.list(self.listing) if self.is_arrival(o)), None)

    def describe(self) -> str:
        """What the run waits for, naming the prefix."""
        prefix = self.prefix.as_prefix()
        if self.marker:
            return f"the marker {self.marker} under {prefix}"
        suffixes = ", ".join(input_suffixes(self.input_format))
        return f"a non-empty {self.input_format} file ({suffixes}) under {prefix}"

    def timeout_message(self, seconds: float) -> str:
        """Why a run failed when nothing arrived in ``seconds``, and what to do."""
        return (
            f"input not ready: waited {seconds:.0f} s (input.wait.timeout_seconds) for {self.describe()}, "
            "and it never arrived. Check that the producer wrote the run's input there (and for which "
            "date), or raise input.wait.timeout_seconds; clear this task to wait again."
        )
