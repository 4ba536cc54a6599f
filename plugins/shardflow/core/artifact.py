"""The model a job runs, once resolved: :class:`ModelArtifact`, its URI, its sha256, and where it
came from (:func:`shardflow.core.model_source.resolve_model` makes one, once, in prepare)."""

from __future__ import annotations

from shardflow.core.job import ModelSpec
from shardflow.core.strict import Strict

__all__ = ["LINEAGE_PREFIX", "ModelArtifact"]

#: The key-value metadata of every Parquet output names the model under keys with this prefix.
LINEAGE_PREFIX = "shardflow:model_"


class ModelArtifact(Strict):
    """The artifact a job loads, and its lineage. The job record keeps it, so every attempt of a
    job (a retry, a resubmission) loads this artifact, never a newer one.

    :param uri: the artifact in S3 (a model file, or a training job's ``model.tar.gz``).
    :param sha256: the hash the artifact must have to be loaded.
    :param training_job: the SageMaker training job that produced it, when the spec named one.
    :param package_group: the Model Registry group, when the spec named one.
    :param package_arn: the model package it was taken from.
    :param package_version: that package's version in its group.
    """

    uri: str
    sha256: str
    training_job: str | None = None
    package_group: str | None = None
    package_arn: str | None = None
    package_version: int | None = None

    @classmethod
    def of_spec(cls, spec: ModelSpec) -> ModelArtifact:
        """The artifact of a spec that names it directly (``model.uri``). A job prepared before
        lineage was recorded has only its spec; its spec names a URI."""
        if spec.uri is None or spec.sha256 is None:
            raise ValueError("model.training_job and model.registry are resolved by the prepare step, not here")
        return cls(uri=spec.uri, sha256=spec.sha256)

    @property
    def source(self) -> str:
        """Where the artifact came from, in a few words."""
        if self.package_arn is not None:
            return f"model registry group {self.package_group}, version {self.package_version} ({self.package_arn})"
        if self.training_job is not None:
            return f"training job {self.training_job}"
        return "model.uri"

    def lineage(self) -> dict[str, str]:
        """The artifact as flat string pairs (Parquet key-value metadata, manifests), without unset fields."""
        values = self.model_dump(exclude_none=True)
        return {LINEAGE_PREFIX + key: str(value) for key, value in values.items()}
