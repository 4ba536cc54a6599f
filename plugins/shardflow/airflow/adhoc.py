"""The ad-hoc DAG: one job from Airflow's trigger form, whose Params schema refuses bad values
before a run is created. The same prepare -> submit -> wait -> publish as a pipeline's DAG."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from airflow.sdk import DAG, BaseOperator, Context, Param

from shardflow.airflow.dags import SubmitAndHoldSensor
from shardflow.airflow.hooks import ShardflowHook
from shardflow.airflow.operators import (
    PublishJobOperator,
    SubmitJobOperator,
    final_failures,
    prepare_and_report,
    run_moment,
)
from shardflow.airflow.policy import ADHOC_DAG_ID
from shardflow.airflow.sensors import JobSensor
from shardflow.contract import INPUT_FORMATS, MAX_INSTANCES, MAX_RUNTIME_SECONDS, OUTPUT_FORMATS
from shardflow.core.job import (
    MODEL_PACKAGE_GROUP,
    TRAINING_JOB_NAME,
    ComputeSpec,
    JobSpec,
    RegistryModel,
    RetrySpec,
)
from shardflow.spec.jobs import job_for_run, spec_from_form
from shardflow.spec.quotas import default_instance_type
from shardflow.spec.settings import Settings

__all__ = ["ADHOC_DAG_ID", "PrepareFromParamsOperator", "adhoc_params", "build_adhoc_dag", "job_from_params"]

_JOB_ID = "{{ ti.xcom_pull(task_ids='prepare') }}"
#: As in a pipeline's DAG: a running job's wait goes before another job's submit.
_RANKS: dict[str, dict[str, Any]] = {
    "submit": {"weight_rule": "absolute", "priority_weight": 1},
    "wait": {"weight_rule": "absolute", "priority_weight": 100},
}
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_MAX_ATTEMPTS: int = RetrySpec.model_fields["max_attempts"].metadata[-1].le


def adhoc_params(settings: Settings) -> dict[str, Param]:
    """The trigger form: each field's JSON schema is checked by the UI and the REST API before a
    run exists. With quotas declared, only instance types that have a pool are offered; the
    ``sagemaker`` backend only when the deployment sets its image and role."""
    quotas = settings.instance_quotas
    instance_type: dict[str, Any] = {"enum": sorted(quotas)} if quotas else {"pattern": r"^ml\.[a-z0-9]+\.[a-z0-9]+$"}
    default_type = default_instance_type(quotas)
    prefix = rf"^s3://{_BUCKET}/([^{{}}]*/)?$"
    return {
        # One model source of three (the spec's rule, checked when the run prepares): a URI or a
        # training job, each with its sha256, or a Model Registry group.
        "model_uri": Param(
            None,
            type=["null", "string"],
            title="Model URI",
            description="s3://bucket/key of a joblib model, an XGBoost .json/.ubj, or a model.tar.gz",
            pattern=rf"^s3://{_BUCKET}/.*[^/]$",
        ),
        "model_training_job": Param(
            None,
            type=["null", "string"],
            title="Model: training job",
            description="or a Completed SageMaker training job, whose model.tar.gz is the model",
            pattern=TRAINING_JOB_NAME.pattern,
        ),
        "model_sha256": Param(
            None,
            type=["null", "string"],
            title="Model sha256",
            description="with a URI or a training job: `sha256sum model.joblib`; any other artifact is refused "
            "before it is loaded",
            pattern=r"^[0-9a-f]{64}$",
        ),
        "model_registry_group": Param(
            None,
            type=["null", "string"],
            title="Model: registry group",
            description="or a Model Registry group: its newest package with the status below, checked against "
            "the sha256 in the package's CustomerMetadataProperties",
            pattern=MODEL_PACKAGE_GROUP.pattern,
        ),
        "model_registry_status": Param(
            "Approved",
            type="string",
            title="Model: registry approval status",
            enum=list(get_args(RegistryModel.model_fields["status"].annotation)),
        ),
        "input_prefix": Param(
            type="string", title="Input prefix", description="s3://bucket/path/ ending in '/'", pattern=prefix
        ),
        "output_prefix": Param(
            type="string",
            title="Output prefix",
            description="s3://bucket/path/ ending in '/': one output object per input, same relative key",
            pattern=prefix,
        ),
        "input_format": Param("parquet", type="string", title="Input format", enum=list(INPUT_FORMATS)),
        "output_format": Param("parquet", type="string", title="Output format", enum=list(OUTPUT_FORMATS)),
        "overwrite": Param(
            False,
            type="boolean",
            title="Overwrite",
            description="replace the outputs another job published under the output prefix (otherwise "
            "such a run is refused)",
        ),
        "backend": Param(
            "local",
            type="string",
            title="Compute backend",
            description="sagemaker is offered once the deployment sets SHARDFLOW_SAGEMAKER_IMAGE_URI "
            "and SHARDFLOW_SAGEMAKER_ROLE_ARN",
            enum=list(settings.backends),
        ),
        "instance_type": Param(default_type, type="string", title="Instance type", **instance_type),
        "instance_count": Param(
            1,
            type="integer",
            title="Instance count",
            description="instances; each predicts its share of the input objects",
            minimum=1,
            maximum=max(quotas.values(), default=MAX_INSTANCES),
        ),
        # Checked together by the spec when the run prepares (split_objects needs dynamic or auto):
        # a form's schema checks each field alone.
        "distribution": Param(
            "sharded",
            type="string",
            title="Distribution",
            description="sharded: each instance gets its share of the input objects up front; dynamic: "
            "instances claim objects one at a time, biggest first, until none is left; auto: dynamic when "
            "the shares would be uneven",
            enum=list(get_args(ComputeSpec.model_fields["distribution"].annotation)),
        ),
        "split_objects": Param(
            False,
            type="boolean",
            title="Split Parquet objects",
            description="with distribution dynamic or auto and Parquet input: cut a big object at its row "
            "groups so several instances share it (its output becomes <name>.part-NNNNN.parquet)",
        ),
        "max_runtime_seconds": Param(
            3600, type="integer", title="Max runtime (seconds)", minimum=60, maximum=MAX_RUNTIME_SECONDS
        ),
        "max_attempts": Param(3, type="integer", title="Max attempts", minimum=1, maximum=_MAX_ATTEMPTS),
    }


def job_from_params(params: dict[str, Any], dag_id: str, run_id: str, when: Any, settings: Settings) -> JobSpec:
    """The job a form asks for: the same spec model and the same :func:`job_for_run` as a
    pipeline's. :raises SpecError: naming each bad field."""
    return job_for_run(spec_from_form(params, settings), run_id=run_id, when=when, dag_id=dag_id)


class PrepareFromParamsOperator(BaseOperator):
    """Prepare the job the trigger form describes; returns the job id.

    :param settings: the deployment's settings (job table, AWS connection, quotas).
    """

    def __init__(self, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    def execute(self, context: Context) -> str:
        with final_failures():
            job = job_from_params(
                dict(context["params"]), self.dag_id, context["run_id"], run_moment(context), self.settings
            )
        return prepare_and_report(job, ShardflowHook(self.settings.aws_conn_id, self.settings.job_table), self.log)


class _SubmitOnFormBackend(SubmitJobOperator):
    template_fields: Sequence[str] = (*SubmitJobOperator.template_fields, "backend")


class _SubmitAndHoldOnFormBackend(SubmitAndHoldSensor):
    template_fields: Sequence[str] = (*SubmitAndHoldSensor.template_fields, "backend")


class _WaitOnFormBackend(JobSensor):
    template_fields: Sequence[str] = (*JobSensor.template_fields, "backend")


def build_adhoc_dag(settings: Settings | None = None) -> DAG:
    settings = settings or Settings.from_env()
    common: dict[str, Any] = {"job_table": settings.job_table, "aws_conn_id": settings.aws_conn_id}
    with DAG(
        dag_id=ADHOC_DAG_ID,
        description="Batch inference on demand: fill in the trigger form",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        tags=["shardflow", "adhoc"],
        params=adhoc_params(settings),
        default_args={"owner": "shardflow", "retries": 2, "retry_delay": timedelta(seconds=30)},
        max_active_runs=8,
        doc_md=__doc__,
    ) as dag:
        prepare = PrepareFromParamsOperator(task_id="prepare", settings=settings)
        # The sensors wait as long as the job's own attempts may take (JobSensor reads them from
        # the record); this is only where they start, before the record exists.
        waiting: dict[str, Any] = {
            "timeout": _MAX_ATTEMPTS * (MAX_RUNTIME_SECONDS + 3600) + 600,
            "poke_interval": settings.poll_seconds,
        }
        form_backend = "{{ params.backend }}"
        if settings.instance_quotas:
            # The cluster policy (shardflow.airflow.policy) gives these two tasks their pool per run.
            submit: SubmitJobOperator | SubmitAndHoldSensor = _SubmitAndHoldOnFormBackend(
                task_id="submit", job_id=_JOB_ID, backend=form_backend, **waiting, **_RANKS["submit"], **common
            )
        else:
            submit = _SubmitOnFormBackend(task_id="submit", job_id=_JOB_ID, backend=form_backend, **common)
        wait = _WaitOnFormBackend(
            task_id="wait", job_id=_JOB_ID, backend=form_backend, **waiting, **_RANKS["wait"], **common
        )
        publish = PublishJobOperator(task_id="publish", job_id=_JOB_ID, **common)
        prepare >> submit >> wait >> publish
    return dag
