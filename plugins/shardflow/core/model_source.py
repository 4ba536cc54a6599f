"""Resolving a spec's ``model`` to the artifact a job loads: :func:`resolve_model`, run once by
the prepare step; a training job and a registry group are looked up through the ``ModelCatalog`` port."""

from __future__ import annotations

import re

from shardflow.core.artifact import ModelArtifact
from shardflow.core.job import ModelSpec
from shardflow.core.ports import ModelCatalog
from shardflow.core.s3uri import check_s3_uri
from shardflow.errors import ModelRefused, PrepareError

__all__ = ["resolve_model"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def resolve_model(spec: ModelSpec, catalog: ModelCatalog | None) -> ModelArtifact:
    """The artifact ``spec`` names: its URI as given, a Completed training job's ``model.tar.gz``,
    or the newest package of a registry group with the approval status asked for.

    :raises ModelRefused: a registry package without a usable sha256.
    :raises ResourceError: no such training job or group, or nothing in it (from ``catalog``).
    """
    if spec.uri is not None:
        return ModelArtifact.of_spec(spec)
    if catalog is None:
        raise ValueError("resolving a training job or a registry model needs a model catalog (SageMaker)")
    if spec.training_job is not None:
        assert spec.sha256 is not None  # ModelSpec requires it with training_job
        uri = catalog.training_job_model(spec.training_job)
        return ModelArtifact(uri=uri, sha256=spec.sha256, training_job=spec.training_job)
    assert spec.registry is not None  # ModelSpec holds exactly one source
    package = catalog.newest_package(spec.registry.group, spec.registry.status)
    where = f"model package {package.arn} (group {package.group}, version {package.version})"
    if package.sha256 is None:
        raise ModelRefused(
            f"{where} records no sha256, so its artifact {package.model_data_url} cannot be verified; it was "
            "not loaded. Add the artifact's sha256 to the package: `aws sagemaker update-model-package "
            f"--model-package-arn {package.arn} --customer-metadata-properties sha256=HASH`, where HASH is "
            f"the output of `aws s3 cp {package.model_data_url} - | sha256sum`"
        )
    sha256 = package.sha256.strip().lower()
    if not _SHA256.fullmatch(sha256):
        raise ModelRefused(
            f"{where}: its CustomerMetadataProperties sha256 {package.sha256!r} is not 64 hexadecimal "
            f"characters: set it to the `sha256sum` of its artifact {package.model_data_url}; nothing was loaded"
        )
    try:
        check_s3_uri(package.model_data_url, prefix=False)
    except ValueError as error:
        raise PrepareError(f"{where}: its ModelDataUrl {package.model_data_url!r} {error}") from None
    return ModelArtifact(
        uri=package.model_data_url,
        sha256=sha256,
        package_group=package.group,
        package_arn=package.arn,
        package_version=package.version,
    )
