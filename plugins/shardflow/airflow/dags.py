"""Builds one Airflow DAG per pipeline spec ([wait_for_input ->] prepare -> submit -> wait ->
publish), and collects the specs that cannot become a DAG, each with its file and what is wrong
with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Context
from airflow.sdk.definitions.asset import BaseAsset

from shardflow.airflow.operators import PrepareJobOperator, PublishJobOperator, SubmitJobOperator, final_failures
from shardflow.airflow.sensors import InputSensor, JobSensor
from shardflow.core.lifecycle import submit_job, wait_timeout_seconds
from shardflow.errors import SpecError
from shardflow.spec.pipeline import AssetSchedule, PipelineSpec, check_specs
from shardflow.spec.quotas import pool_name
from shardflow.spec.settings import Settings

__all__ = [
    "BrokenPipelineSpecs",
    "PipelineDags",
    "SubmitAndHoldSensor",
    "build_pipeline_dag",
    "build_pipeline_dags",
    "check_pipeline_specs",
    "output_asset",
    "predictions_asset_name",
]

_JOB_ID = "{{ ti.xcom_pull(task_ids='prepare') }}"


class BrokenPipelineSpecs(SpecError):
    """Raised by the DAG file that reports broken specs: one Airflow import error naming each."""


@dataclass(frozen=True)
class PipelineDags:
    """:param dags: a DAG per good spec, by DAG id.
    :param errors: per broken spec file, what is wrong and what to do."""

    dags: Mapping[str, DAG]
    errors: Mapping[Path, str]


class SubmitAndHoldSensor(JobSensor):
    """Start the job, then wait for it as :class:`JobSensor` does: the submit task of a pooled DAG.

    A pool slot belongs to a task, so a job started by one task and watched by the next holds
    no slot in between, and another job's submit takes it (the live test saw three 2-instance
    jobs under a quota of 4). Starting and watching in one task holds the slots throughout.
    """

    def execute(self, context: Context) -> Any:
        with final_failures():
            record = submit_job(self.job_id, self.hook.store, self.hook.backend(self.backend))
        self.log.info(
            "job %s attempt %d: processing job %s", self.job_id, record.attempt, record.current_processing_job
        )
        return super().execute(context)


def predictions_asset_name(pipeline: str) -> str:
    return f"shardflow/{pipeline}/predictions"


def output_asset(spec: PipelineSpec) -> Asset:
    """The Asset a pipeline's publish step updates: its output prefix up to the first template."""
    static = spec.output.prefix.split("{{", 1)[0]
    return Asset(name=predictions_asset_name(spec.name), uri=static[: static.rfind("/") + 1])


def _schedule(spec: PipelineSpec) -> str | BaseAsset | None:
    if not isinstance(spec.schedule, AssetSchedule):
        return spec.schedule
    if spec.schedule.pipeline is not None:
        # By name: the other pipeline's DAG declares the Asset, whichever file it is in.
        return Asset.ref(name=predictions_asset_name(spec.schedule.pipeline))
    assert spec.schedule.asset is not None
    return Asset(uri=spec.schedule.asset)


def build_pipeline_dag(spec: PipelineSpec, settings: Settings | None = None) -> DAG:
    """The spec's DAG; :func:`build_pipeline_dags` checks first that it fits the quotas."""
    settings = settings or Settings.from_env()
    common: dict[str, Any] = {"job_table": settings.job_table, "aws_conn_id": settings.aws_conn_id}
    compute = spec.compute
    # With quotas declared, a job holds one slot per instance of its type while it submits and runs.
    pooled: dict[str, Any] = (
        {"pool": pool_name(compute.instance_type), "pool_slots": compute.instance_count}
        if settings.instance_quotas
        else {}
    )
    # A job's wait, which may resubmit its failed files, goes before another job's submit.
    ranks: dict[str, dict[str, Any]] = {
        task: {"weight_rule": "absolute", "priority_weight": weight} if pooled else {}
        for task, weight in (("submit", 1), ("wait", 100))
    }
    wait_timeout = wait_timeout_seconds(
        spec.retries.max_attempts, compute.max_runtime_seconds, spec.retries.backoff_seconds
    )
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description or f"Batch inference: {spec.name}",
        schedule=_schedule(spec),
        start_date=datetime.combine(spec.start_date, datetime.min.time(), tzinfo=UTC),
        catchup=spec.catchup,
        tags=["shardflow", *spec.tags],
        default_args={"owner": spec.owner, "retries": 2, "retry_delay": timedelta(seconds=30)},
        max_active_runs=4,
        # Only the DAG files' globals define DAGs: the error report builds them too, and must not.
        auto_register=False,
    ) as dag:
        prepare = PrepareJobOperator(task_id="prepare", spec=spec, **common)
        if pooled:
            submit: SubmitJobOperator | SubmitAndHoldSensor = SubmitAndHoldSensor(
                task_id="submit",
                job_id=_JOB_ID,
                backend=compute.backend,
                timeout=wait_timeout,
                poke_interval=settings.poll_seconds,
                **pooled,
                **ranks["submit"],
                **common,
            )
        else:
            submit = SubmitJobOperator(task_id="submit", job_id=_JOB_ID, backend=compute.backend, **common)
        wait = JobSensor(
            task_id="wait",
            job_id=_JOB_ID,
            backend=compute.backend,
            timeout=wait_timeout,
            poke_interval=settings.poll_seconds,
            **pooled,
            **ranks["wait"],
            **common,
        )
        publish = PublishJobOperator(task_id="publish", job_id=_JOB_ID, outlets=[output_asset(spec)], **common)
        prepare >> submit >> wait >> publish
        if spec.input.wait is not None:
            arrived = InputSensor(
                task_id="wait_for_input",
                prefix=spec.input.prefix,
                input_format=spec.input.format,
                marker=spec.input.wait.marker,
                timeout=spec.input.wait.timeout_seconds,
                poke_interval=settings.poll_seconds,
                aws_conn_id=settings.aws_conn_id,
            )
            arrived >> prepare
    return dag


def build_pipeline_dags(folder: str | Path, settings: Settings | None = None) -> PipelineDags:
    """A DAG for every good spec in ``folder``, and the error of every other one. Never raises for
    a spec: one broken file must not cost the others their DAGs."""
    settings = settings or Settings.from_env()
    dags: dict[str, DAG] = {}
    errors: dict[Path, str] = {}
    for path, result in check_specs(folder, settings.instance_quotas).items():
        if isinstance(result, SpecError):
            errors[path] = str(result)
            continue
        try:
            dags[result.dag_id] = build_pipeline_dag(result, settings)
        except Exception as error:  # whatever stops this DAG is reported against its own file
            errors[path] = f"{path}: cannot build DAG {result.dag_id}\n  {error}"
    return PipelineDags(dags=dags, errors=errors)


def check_pipeline_specs(folder: str | Path, settings: Settings | None = None) -> int:
    """The number of good specs in ``folder``. :raises BrokenPipelineSpecs: naming every broken one."""
    built = build_pipeline_dags(folder, settings)
    if built.errors:
        count = len(built.errors)
        raise BrokenPipelineSpecs(
            f"{count} pipeline spec(s) cannot become a DAG; their DAGs are not loaded, "
            f"the other {len(built.dags)} are. Fix each file below (`shardflow pipelines validate` checks them):\n\n"
            + "\n\n".join(built.errors.values())
        )
    return len(built.dags)
