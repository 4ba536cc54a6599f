"""The ad-hoc DAG's trigger form, validated by Airflow's own Params: what the UI and the REST API
check before a run is created (the live test sends the same values through the REST API), and
the cluster policy that pools an ad-hoc run's tasks by its form."""

import copy
from types import SimpleNamespace

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from shardflow.airflow.adhoc import build_adhoc_dag, job_from_params
from shardflow.airflow.policy import ADHOC_DAG_ID, task_instance_mutation_hook
from shardflow.core.job import ModelSpec, RegistryModel
from shardflow.errors import PrepareError, SpecError
from shardflow.spec.settings import Settings

SETTINGS = Settings(instance_quotas={"ml.m5.xlarge": 8, "ml.c5.2xlarge": 4})
GOOD = {
    "model_uri": "s3://models-bucket/churn/model.joblib",
    "model_sha256": "a" * 64,
    "input_prefix": "s3://data-bucket/events/dt=2026-01-31/",
    "output_prefix": "s3://data-bucket/scores/adhoc/run-1/",
    "instance_type": "ml.c5.2xlarge",
    "instance_count": 4,
}


def form(**values) -> dict:
    """Resolve a form the way Airflow does when a run is triggered with ``conf``."""
    params: ParamsDict = copy.deepcopy(build_adhoc_dag(SETTINGS).params)
    params.update({**GOOD, **values})
    return params.validate()


def test_a_good_form_resolves_with_defaults_filled_in():
    resolved = form()
    assert resolved["instance_count"] == 4
    assert (resolved["input_format"], resolved["output_format"], resolved["backend"]) == ("parquet", "parquet", "local")
    job = job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS)
    compute = job.compute
    assert (compute.instance_type, compute.instance_count) == ("ml.c5.2xlarge", 4)
    assert job.output.prefix == GOOD["output_prefix"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("instance_count", 0),
        ("instance_count", 9),  # above the largest quota
        ("instance_count", "4"),
        ("instance_type", "ml.p4d.24xlarge"),  # no quota, so no pool
        ("model_sha256", "abc"),
        ("model_uri", "s3://models-bucket/churn/"),
        ("input_prefix", "/local/path/"),
        ("output_prefix", "s3://data-bucket/scores/{{ ds }}/"),
        ("input_format", "xlsx"),
        ("backend", "kubernetes"),
    ],
)
def test_the_form_refuses_a_bad_value_naming_its_field(field, value):
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}"):
        form(**{field: value})


def test_the_form_offers_sagemaker_only_when_the_deployment_sets_its_image_and_role():
    with pytest.raises(ParamValidationError, match="Invalid input for param backend"):
        form(backend="sagemaker")
    deployed = Settings.from_env(
        {
            "SHARDFLOW_INSTANCE_QUOTAS": "ml.m5.xlarge=8,ml.c5.2xlarge=4",
            "SHARDFLOW_SAGEMAKER_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:1.0",
            "SHARDFLOW_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/shardflow-dev-processing",
        }
    )
    params: ParamsDict = copy.deepcopy(build_adhoc_dag(deployed).params)
    params.update({**GOOD, "backend": "sagemaker"})
    resolved = params.validate()
    job = job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", deployed)
    assert job.compute.backend == "sagemaker"
    assert job.compute.sagemaker == deployed.sagemaker


def test_a_form_without_a_model_is_refused_naming_the_three_ways_to_give_one():
    params: ParamsDict = copy.deepcopy(build_adhoc_dag(SETTINGS).params)
    params.update({k: v for k, v in GOOD.items() if k != "model_uri"})
    with pytest.raises(
        SpecError, match=r"model: give exactly one of model\.uri .* model\.training_job .* model\.registry"
    ):
        job_from_params(params.validate(), "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"model_training_job": "churn-xgb-7"},
            ModelSpec(training_job="churn-xgb-7", sha256="a" * 64),
        ),
        (
            {"model_registry_group": "churn", "model_registry_status": "PendingManualApproval", "model_sha256": None},
            ModelSpec(registry=RegistryModel(group="churn", status="PendingManualApproval")),
        ),
    ],
    ids=["training-job", "registry"],
)
def test_the_form_takes_a_training_job_or_a_registry_group_instead_of_a_uri(values, expected):
    resolved = form(model_uri=None, **values)
    job = job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS)
    assert job.model == expected


def test_a_count_within_the_form_but_over_its_types_quota_fails_prepare_clearly():
    resolved = form(instance_count=6)  # the form allows up to 8 (ml.m5.xlarge); ml.c5.2xlarge has 4
    with pytest.raises(PrepareError, match=r"6 instances of ml\.c5\.2xlarge exceed its quota of 4"):
        job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS)


def run_of(**conf):
    return SimpleNamespace(conf=conf)


def task(task_id: str, dag_id: str = ADHOC_DAG_ID):
    return SimpleNamespace(dag_id=dag_id, task_id=task_id, pool="default_pool", pool_slots=1)


def test_the_cluster_policy_pools_an_adhoc_runs_tasks_by_its_form(monkeypatch):
    monkeypatch.setenv("SHARDFLOW_INSTANCE_QUOTAS", "ml.m5.xlarge=8,ml.c5.2xlarge=4")
    submit = task("submit")
    task_instance_mutation_hook(submit, run_of(instance_type="ml.c5.2xlarge", instance_count=3))
    assert (submit.pool, submit.pool_slots) == ("shardflow-ml.c5.2xlarge", 3)
    wait = task("wait")
    task_instance_mutation_hook(wait, run_of())  # the form's defaults: one ml.m5.xlarge
    assert (wait.pool, wait.pool_slots) == ("shardflow-ml.m5.xlarge", 1)


@pytest.mark.parametrize(
    ("ti", "run"),
    [
        (task("prepare"), run_of(instance_count=2)),  # only submit and wait hold instances
        (task("submit", dag_id="shardflow_demo"), run_of(instance_count=2)),  # pipelines pool at parse time
        (task("submit"), None),  # no run yet: Airflow calls again once it has one
        (task("submit"), run_of(instance_type="ml.c5.2xlarge", instance_count=6)),  # over quota: prepare refuses
    ],
)
def test_the_cluster_policy_leaves_other_tasks_alone(monkeypatch, ti, run):
    monkeypatch.setenv("SHARDFLOW_INSTANCE_QUOTAS", "ml.m5.xlarge=8,ml.c5.2xlarge=4")
    task_instance_mutation_hook(ti, run)
    assert (ti.pool, ti.pool_slots) == ("default_pool", 1)
