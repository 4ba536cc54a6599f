"""The first step of a job: list its inputs, check the model against them, write the job record."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from shardflow.core.artifact import ModelArtifact
from shardflow.core.job import JobSpec
from shardflow.core.keys import relative_key
from shardflow.core.model_files import load_model_file
from shardflow.core.model_source import resolve_model
from shardflow.core.planning import input_suffixes, is_input
from shardflow.core.ports import JobStorePort, ModelCatalog, ObjectStore
from shardflow.core.record import FileRecord, JobRecord
from shardflow.core.reruns import check_output_free, plan_for_run
from shardflow.core.s3uri import S3Object, S3Uri
from shardflow.core.smoke import check_model_on_input
from shardflow.core.units import (
    UNITS_PER_INSTANCE,
    RowGroup,
    WorkUnit,
    choose_distribution,
    plan_units,
    predicted_imbalance,
    read_row_groups,
)
from shardflow.errors import ModelRefused, ModelUnusable, ObjectNotFound, PrepareError, UnsafeKey

__all__ = ["MAX_REFUSED_LISTED", "load_verified_model", "prepare_job"]

#: The job record names at most this many refused keys (and counts them all): a prefix full of
#: hostile keys must not grow the job item past DynamoDB's 400 KB.
MAX_REFUSED_LISTED = 20


def load_verified_model(objects: ObjectStore, artifact: ModelArtifact) -> Any:
    """Download the artifact, check its sha256, and only then load it (see
    :func:`~shardflow.core.model_files.load_model_file`).

    :raises PrepareError: the artifact does not exist, is refused (:class:`ModelRefused`), cannot be
        loaded, or is not a model (it has no ``predict``); each message names its URI and source.
    """
    uri = S3Uri.parse(artifact.uri)
    named = f"model {uri}" if artifact.source == "model.uri" else f"model {uri} (from {artifact.source})"
    field = "model.registry" if artifact.package_arn else "model.training_job" if artifact.training_job else "model.uri"
    with tempfile.TemporaryDirectory(prefix="shardflow-prepare-") as folder:
        path = Path(folder) / uri.name
        with open(path, "wb") as handle:
            try:
                objects.download(uri, handle)
            except ObjectNotFound:
                raise PrepareError(
                    f"{named} does not exist: check the spec's {field} (and that the model was uploaded)"
                ) from None
        with open(path, "rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != artifact.sha256:
            expects, fix = (
                ("its model package records", "the package's CustomerMetadataProperties sha256")
                if artifact.package_arn
                else ("the spec expects", "the spec's model.sha256")
            )
            raise ModelRefused(
                f"{named} has sha256 {actual} but {expects} {artifact.sha256}: if the new artifact is "
                f"intended, put its sha256 in {fix}; it was not loaded"
            )
        try:
            model = load_model_file(path)
        except ModelUnusable:
            raise
        except Exception as error:
            raise PrepareError(
                f"{named} cannot be loaded with joblib or XGBoost ({type(error).__name__}: {error}): point "
                f"{field} at a model saved with joblib.dump, an XGBoost model (.json, .ubj) or a model.tar.gz"
            ) from None
    if not callable(getattr(model, "predict", None)):
        raise PrepareError(
            f"{named} is a {type(model).__name__}, not a model: it has no predict method; "
            "point the spec's model at a fitted estimator"
        )
    return model


def _split_safe(found: list[S3Object], prefix: S3Uri) -> tuple[list[FileRecord], list[str]]:
    """The files to predict, and the reasons for each key refused as unsafe (never read)."""
    files: list[FileRecord] = []
    refused: list[str] = []
    for item in found:
        try:
            files.append(FileRecord(key=relative_key(prefix.key, item.key), size=item.size))
        except UnsafeKey as error:
            refused.append(str(error))
    return files, refused


def prepare_job(
    job: JobSpec, store: JobStorePort, objects: ObjectStore, models: ModelCatalog | None = None
) -> JobRecord:
    """List the inputs, check the model against them, and write the job record (once per run).

    The spec's model is resolved here, once (``models`` finds training jobs and registry
    packages): the record keeps the artifact, so every attempt loads the same one. A job that
    has a record already is returned as it is, its model not resolved again; when the run's spec
    has changed since, the run gets a new job (:func:`~shardflow.core.reruns.plan_for_run`). A job
    whose output prefix holds another job's published outputs is refused unless it says
    ``output.overwrite``.

    A key that is not a plain relative path under the prefix (``..``, ``//``, a control
    character: see :mod:`shardflow.core.keys`) is refused: named in the job record
    (``refused_files``), never downloaded and never given a file item, so the job fails at its
    end for it while the other files go on.

    :raises PrepareError: no inputs, a model that does not match, or inputs the model cannot read.
    """
    job_id, existing = plan_for_run(job, store)  # a rerun: the record's plan, or a new job
    if existing is not None:
        return existing
    check_output_free(job_id, job, objects)
    prefix = S3Uri.parse(job.input.prefix).as_prefix()
    suffixes = input_suffixes(job.input.format)
    found = [o for o in objects.list(prefix) if is_input(o, job.input.format)]
    if not found:
        raise PrepareError(
            f"no {job.input.format} files ({', '.join(suffixes)}) under {prefix}: "
            "check the spec's input.prefix and the run's date"
        )
    files, refused = _split_safe(found, prefix)
    if not files:
        raise PrepareError(
            f"every one of the {len(refused)} {job.input.format} key(s) under {prefix} is refused, e.g. {refused[0]}: "
            "rename them to plain relative keys"
        )
    artifact = resolve_model(job.model, models)
    model = load_verified_model(objects, artifact)
    first = next(o for o in found if o.key == prefix.key + files[0].key)
    check_model_on_input(objects, job, model, S3Uri(prefix.bucket, first.key), first.size)
    distribution, imbalance, units = _distribution(job, files, objects, prefix)
    parts = {u.key: u.parts for u in units}
    files = [replace(f, parts=parts.get(f.key, 1)) for f in files]
    record = JobRecord(
        job_id=job_id,
        job=job,
        model=artifact,
        files_refused=len(refused),
        refused_files=refused[:MAX_REFUSED_LISTED],
        distribution=distribution,
        predicted_imbalance=imbalance,
    )
    return store.create_job(record, files, units)


def _distribution(
    job: JobSpec, files: list[FileRecord], objects: ObjectStore, prefix: S3Uri
) -> tuple[str, float, list[WorkUnit]]:
    """How the files reach the instances (``compute.distribution``, ``auto`` decided here), the
    sharded shares' predicted imbalance, and the work units when dynamic (docs/distribution.md).
    Only the objects big enough to be cut have their footers read (two ranged reads each)."""
    compute = job.compute
    files = sorted(files, key=lambda f: f.key)
    row_groups: dict[str, tuple[list[RowGroup], int]] = {}
    if compute.split_objects:
        target = sum(f.size for f in files) // max(1, compute.instance_count * UNITS_PER_INSTANCE)
        for f in files:
            if f.size > target:
                row_groups[f.key] = read_row_groups(objects, prefix.join(f.key), f.size)
    units = plan_units(files, compute.instance_count, row_groups)
    imbalance = predicted_imbalance(
        [f.size for f in files], compute.instances_for(len(files)), compute.instances_for(len(units))
    )
    chosen = choose_distribution(compute.distribution, imbalance)
    return chosen, round(imbalance, 3), units if chosen == "dynamic" else []
