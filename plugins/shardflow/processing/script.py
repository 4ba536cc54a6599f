"""The processing script: predict every input file of this instance's shard.

Run as ``python processing_scripts/batch_predict.py`` (the container's entry point) with the
options of :class:`shardflow.core.invocation.ScriptOptions`:

    batch_predict.py --input-dir DIR --output-dir DIR --model-path FILE --model-sha256 HEX [--workers N]

The model (a joblib file, an XGBoost .json/.ubj, or a training job's model.tar.gz, unpacked here) is
checked against its sha256 before it is loaded, loaded once in this process, and
shared with forked workers (one per core, one library thread each). Each worker streams a file in
record batches and writes its one output in order; when workers run out of files, they predict
batches of the files still in progress, so a single big file keeps every core busy. Every input
gets one output under the same relative path, written under a temporary name and renamed when
complete; a manifest of what was written is written last. The manifest and every Parquet output
name the model (--model-uri and the other lineage options). When the job's environment names a job
record (SHARDFLOW_JOB_ID, SHARDFLOW_JOB_TABLE), per-file results and a heartbeat go to it.
Imports nothing from Airflow.

Exit codes (shardflow.contract.ExitCode): 0 every file has its result (with a job record, failed
files included: the record holds them), 2 the model was refused or is not a model, 3 no input
folder or no input file in it, 4 some files failed, 5 every file failed.
"""

from __future__ import annotations

import os

# Arrow's allocator hands freed memory back to the kernel after 10 ms, so every record batch
# faulted its buffers in again and the kernel zeroed them: a tenth of the workers' CPU time, as
# profiled on the benchmark. Keep it (the peak is a few batches); set before Arrow is loaded.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "-1")

import gc
import json
import logging
import multiprocessing
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from shardflow.contract import CONFIG_DIR, ENV_CONFIG_DIR, ENV_PROCESSING_JOB, ExitCode
from shardflow.core.artifact import ModelArtifact
from shardflow.core.invocation import ScriptOptions
from shardflow.core.keys import check_relative
from shardflow.core.model_files import load_model_file
from shardflow.core.record import ErrorKind
from shardflow.core.units import UnitStore
from shardflow.errors import ModelRefused, UnsafeKey
from shardflow.processing.claims import UnitClaims, UnitObjects
from shardflow.processing.messages import FileOutcome, FileTask
from shardflow.processing.pool import WorkerPool
from shardflow.processing.predictor import Predictor, limit_library_threads
from shardflow.processing.reporting import JobReporter, NullReporter, StoreFactory
from shardflow.processing.tabular import find_inputs, sha256_of
from shardflow.processing.worker import SlotArena, WorkerSettings

__all__ = [
    "ModelRefused",
    "current_host",
    "exit_code",
    "load_model",
    "main",
    "processing_job_name",
    "write_manifest",
]

log = logging.getLogger("batch_predict")

# One feature matrix at most this big: wide inputs get batches of fewer rows.
_SLOT_BYTES = 64 << 20


def load_model(path: Path, expected_sha256: str | None) -> Any:
    """Unpickling runs code: refuse any artifact whose sha256 is not the one the spec names. The
    artifact may be a training job's ``model.tar.gz``: the hash covers the archive, which is then
    unpacked (see :func:`~shardflow.core.model_files.load_model_file`)."""
    if not expected_sha256:
        raise ModelRefused(
            f"no sha256 given for {path}: pass --model-sha256 (or SHARDFLOW_MODEL_SHA256) "
            "with the value from the pipeline spec"
        )
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise ModelRefused(
            f"model {path} has sha256 {actual} but the spec expects {expected_sha256}: "
            "the artifact was replaced or the spec is stale; it was not loaded"
        )
    return load_model_file(path)


def _log_outcome(outcome: FileOutcome) -> None:
    if outcome.error:
        log.error("%s failed: %s", outcome.relative, outcome.error)
    else:
        log.info(
            "%s: %d rows in %.2f s (%d of %d batches predicted by other workers)",
            outcome.relative,
            outcome.rows,
            outcome.seconds,
            outcome.helped,
            outcome.batches,
        )


def write_manifest(
    output_dir: Path, outcomes: list[FileOutcome], job_name: str, host: str, model: ModelArtifact | None = None
) -> Path:
    manifest = {
        "processing_job": job_name,
        "host": host,
        "model": None if model is None else model.model_dump(exclude_none=True),
        "files": [
            {"input": o.relative, "output": o.output, "rows": o.rows, "sha256": o.sha256}
            for o in outcomes
            if not o.error
        ],
        "failed": [{"input": o.relative, "error": o.error, "kind": o.error_kind} for o in outcomes if o.error],
    }
    path = output_dir / "_manifests" / f"{job_name}-{host}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return path


def current_host() -> str:
    config = Path(os.environ.get(ENV_CONFIG_DIR, CONFIG_DIR)) / "resourceconfig.json"
    try:
        return str(json.loads(config.read_text())["current_host"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return "algo-1"


def instance_count() -> int:
    """The job's instances, from the ``hosts`` of /opt/ml/config/resourceconfig.json (1 without it)."""
    config = Path(os.environ.get(ENV_CONFIG_DIR, CONFIG_DIR)) / "resourceconfig.json"
    try:
        return max(1, len(json.loads(config.read_text())["hosts"]))
    except (FileNotFoundError, KeyError, TypeError, json.JSONDecodeError):
        return 1


def processing_job_name() -> str:
    """SHARDFLOW_PROCESSING_JOB where set (the local backend), else the name SageMaker wrote to
    /opt/ml/config/processingjobconfig.json."""
    configured = os.environ.get(ENV_PROCESSING_JOB)
    if configured:
        return configured
    config = Path(os.environ.get(ENV_CONFIG_DIR, CONFIG_DIR)) / "processingjobconfig.json"
    try:
        return str(json.loads(config.read_text())["ProcessingJobName"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return "local"


def _log_claims(host: str, claims: UnitClaims) -> None:
    stats = claims.stats
    log.info(
        "%s: %d units, %d rows, busy %.3f s; DynamoDB requests: %d claims (%d taken by others), %d lists, "
        "%d renewals, %d results, %d reads (%.2f per unit)",
        host,
        stats.units,
        stats.rows,
        stats.busy_seconds,
        stats.claims,
        stats.taken,
        stats.lists,
        stats.renewals,
        stats.results,
        stats.reads,
        stats.requests / max(1, stats.units),
    )
    if stats.refused:
        log.warning("%s: %d result(s) refused, e.g. %s", host, len(stats.refused), stats.refused[0])


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):.0f} MB"


def exit_code(outcomes: list[FileOutcome], recorded: bool) -> ExitCode:
    """The script's exit code once every file has an outcome. With a job record (``recorded``),
    failed files are results the record holds, and the lifecycle fails the job for them; the
    processing job must still complete, so that the outputs of the other files are uploaded."""
    failed = sum(1 for o in outcomes if o.error)
    if not failed or recorded:
        return ExitCode.OK
    return ExitCode.ALL_FILES_FAILED if failed == len(outcomes) else ExitCode.SOME_FILES_FAILED


def _tasks(args: ScriptOptions) -> tuple[list[FileTask], list[FileOutcome]]:
    """The input files to predict, and an outcome for each whose name could lead its output
    outside the output folder (never read)."""
    tasks: list[FileTask] = []
    refused: list[FileOutcome] = []
    for path in find_inputs(args.input_dir, args.input_format):
        relative = path.relative_to(args.input_dir).as_posix()
        try:
            tasks.append(FileTask(str(path), check_relative(relative, "input file"), path.stat().st_size))
        except UnsafeKey as error:
            refused.append(FileOutcome(relative, path.stat().st_size, error=str(error), error_kind=ErrorKind.INPUT))
    return tasks, refused


def _claims(
    reporter: JobReporter, open_objects: Callable[[], UnitObjects], args: ScriptOptions, host: str
) -> UnitClaims:
    """The unit claims of a dynamic job's instance, for the job the reporter reports to."""
    record = reporter.record  # read by reporter.start()
    assert record is not None and reporter.attempt is not None
    return UnitClaims(
        cast(UnitStore, reporter.store),
        open_objects(),
        job_id=record.job_id,
        attempt=reporter.attempt,
        processing_job=reporter.processing_job,
        host=host,
        work_dir=args.input_dir,
        output_dir=args.output_dir,
        input_prefix=record.input_prefix,
        output_prefix=record.output_prefix,
        input_format=args.input_format,
        output_format=args.output_format,
        lease_seconds=record.job.compute.lease_seconds,
        instances=instance_count(),
    )


def main(
    argv: list[str] | None = None,
    open_store: StoreFactory | None = None,
    open_objects: Callable[[], UnitObjects] | None = None,
) -> int:
    """Run the script; returns its exit code (:class:`~shardflow.contract.ExitCode`).

    :param open_store: opens the job table by name, when the environment names a job record to
        report to (the entry point passes the DynamoDB one; this package imports no AWS client).
    :param open_objects: opens S3, for ``--claim-units`` (dynamic distribution).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = ScriptOptions.parse(argv, __doc__)
    assert args.workers is not None  # parse() fills it in
    job_name = processing_job_name()
    host = current_host()
    lineage = args.model_artifact()
    reporter = (JobReporter.from_environment(job_name, open_store) if open_store else None) or NullReporter()
    recorded = isinstance(reporter, JobReporter)
    if args.claim_units and not (recorded and open_objects):
        log.error(
            "--claim-units takes its work from a job record: run it with SHARDFLOW_JOB_ID and SHARDFLOW_JOB_TABLE set"
        )
        return ExitCode.NO_INPUT
    if args.claim_units:
        tasks: list[FileTask] = []
        refused: list[FileOutcome] = []
        args.input_dir.mkdir(parents=True, exist_ok=True)
    elif not args.input_dir.is_dir():
        log.error("input folder %s does not exist: nothing to predict", args.input_dir)
        write_manifest(args.output_dir, [], job_name, host)
        return ExitCode.NO_INPUT
    else:
        tasks, refused = _tasks(args)
        if not tasks and not refused:
            log.error("no %s files under %s: nothing to predict", args.input_format, args.input_dir)
            write_manifest(args.output_dir, [], job_name, host)
            return ExitCode.NO_INPUT
    claims: UnitClaims | None = None

    def done(outcome: FileOutcome) -> None:
        if claims is not None:
            claims.finish(outcome)
        else:
            reporter.file_done(outcome)
        _log_outcome(outcome)

    loading = time.perf_counter()
    # Unpickling imports scikit-learn, SciPy and pandas: hundreds of thousands of objects that
    # live as long as the process. Collecting while they are made only wastes a tenth of a second.
    gc.disable()
    try:
        model = load_model(args.model_path, args.model_sha256)
        limit_library_threads(model)
        predictor = Predictor(
            model, args.features, args.passthrough, args.probability_per_class, input_format=args.input_format
        )
    except Exception as error:
        gc.enable()
        message = (
            str(error)
            if isinstance(error, ModelRefused)
            else f"model {args.model_path} cannot be used: {type(error).__name__}: {error}"
        )
        log.error("%s", message)
        kind = ErrorKind.TRANSIENT if isinstance(error, MemoryError) else ErrorKind.MODEL
        reporter.start()
        for task in tasks:
            done(FileOutcome(task.relative, task.size, error=message, error_kind=kind))
        reporter.close()
        return ExitCode.MODEL_REFUSED
    log.info("model loaded in %.2f s", time.perf_counter() - loading)
    if args.claim_units:
        log.info("%s: claiming units of the job, %d workers", host, args.workers)
    else:
        log.info("%s: %d %s files, %d workers", host, len(tasks), args.input_format, args.workers)
    started, cpu_started = time.perf_counter(), time.process_time()
    columns = len(predictor.features)
    rows = max(1, min(args.batch_rows, _SLOT_BYTES // (8 * columns)))
    # A DataFrame model's batch is held as Arrow columns, strings included: the whole slot (mapped
    # memory is only committed as it is written).
    slot_bytes = _SLOT_BYTES if predictor.frame_model else rows * columns * 8
    settings = WorkerSettings(
        predictor=predictor,
        arena=SlotArena(args.workers, slot_bytes),
        sharing=multiprocessing.RawValue("i", 0),
        output_dir=args.output_dir,
        input_format=args.input_format,
        output_format=args.output_format,
        batch_rows=rows,
        metadata=lineage.lineage() if lineage else {},
    )
    gc.freeze()  # the model's objects stay shared with the workers: the collector won't touch them
    gc.enable()
    pool = WorkerPool(settings, args.workers, done)  # fork before the reporter's thread starts
    reporter.start()
    try:
        if args.claim_units:
            assert isinstance(reporter, JobReporter) and open_objects is not None
            claims = _claims(reporter, open_objects, args, host)
        for outcome in refused:
            done(outcome)
        outcomes = refused + pool.run(tasks, claims)
    finally:
        if claims is not None:
            claims.close()
            _log_claims(host, claims)
        reporter.close()
    manifest = write_manifest(args.output_dir, outcomes, job_name, host, lineage)
    failed = sum(1 for o in outcomes if o.error)
    log.info(
        "%s: %d files (%d failed), %d rows in %.3f s; manifest %s",
        host,
        len(outcomes),
        failed,
        sum(o.rows for o in outcomes),
        time.perf_counter() - started,
        manifest.name,
    )
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    log.info(
        "peak RSS: parent %s, workers %s; CPU over the files: %.3f s (parent %.3f s, workers %.3f s)",
        _megabytes(parent),
        ", ".join(_megabytes(p) for p in sorted(pool.peaks)),
        time.process_time() - cpu_started + pool.cpu_seconds,
        time.process_time() - cpu_started,
        pool.cpu_seconds,
    )
    code = exit_code(outcomes, recorded)
    if code is not ExitCode.OK:
        log.error("%d of %d files failed: exit code %d (%s)", failed, len(outcomes), code, code.meaning)
    return code
