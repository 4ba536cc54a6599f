"""The trigger form's ``distribution`` and ``split_objects``: offered with their defaults, checked
by Airflow's Params one field at a time, and checked together by the spec, whose message the
prepare task fails with."""

import copy

import pytest
from airflow.exceptions import AirflowFailException
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from shardflow.airflow.adhoc import PrepareFromParamsOperator, build_adhoc_dag, job_from_params
from shardflow.errors import SpecError
from shardflow.spec.settings import Settings

SETTINGS = Settings(instance_quotas={"ml.m5.xlarge": 8})
GOOD = {
    "model_uri": "s3://models-bucket/churn/model.joblib",
    "model_sha256": "a" * 64,
    "input_prefix": "s3://data-bucket/events/dt=2026-01-31/",
    "output_prefix": "s3://data-bucket/scores/adhoc/run-1/",
    "instance_count": 4,
}
SPLIT_NEEDS_DYNAMIC = "split_objects needs distribution dynamic or auto: ShardedByS3Key hands out whole objects"


def form(**values) -> dict:
    """Resolve a form the way Airflow does when a run is triggered with ``conf``."""
    params: ParamsDict = copy.deepcopy(build_adhoc_dag(SETTINGS).params)
    params.update({**GOOD, **values})
    return params.validate()


def test_the_form_defaults_to_sharded_distribution_without_splitting():
    resolved = form()
    assert (resolved["distribution"], resolved["split_objects"]) == ("sharded", False)
    compute = job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS).compute
    assert (compute.distribution, compute.split_objects) == ("sharded", False)


@pytest.mark.parametrize(
    ("distribution", "split"), [("dynamic", False), ("dynamic", True), ("auto", True), ("auto", False)]
)
def test_the_form_asks_for_dynamic_or_auto_distribution_and_splitting(distribution, split):
    resolved = form(distribution=distribution, split_objects=split)
    compute = job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS).compute
    assert (compute.distribution, compute.split_objects) == (distribution, split)


@pytest.mark.parametrize(("field", "value"), [("distribution", "round-robin"), ("split_objects", "yes")])
def test_the_form_refuses_a_bad_distribution_value_naming_its_field(field, value):
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}"):
        form(**{field: value})


def test_split_objects_with_sharded_distribution_is_refused_with_the_specs_message():
    resolved = form(split_objects=True)  # each field is fine alone: the spec checks them together
    with pytest.raises(SpecError, match=f"the trigger form: (?s:.*)compute: {SPLIT_NEEDS_DYNAMIC}"):
        job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS)


def test_the_prepare_task_fails_for_good_with_the_specs_message_on_split_objects_with_sharded():
    operator = PrepareFromParamsOperator(task_id="prepare", settings=SETTINGS)
    context = {"params": form(split_objects=True), "run_id": "manual__1", "logical_date": None}
    context["dag_run"] = type("Run", (), {"run_after": "2026-01-31"})()
    with pytest.raises(AirflowFailException) as failed:  # not retried: the form must change
        operator.execute(context)  # type: ignore[arg-type]
    assert SPLIT_NEEDS_DYNAMIC in str(failed.value) and "the trigger form" in str(failed.value)


def test_split_objects_on_csv_input_is_refused_naming_the_format():
    resolved = form(distribution="dynamic", split_objects=True, input_format="csv")
    with pytest.raises(SpecError, match=r"input\.format is csv: set split_objects to false"):
        job_from_params(resolved, "shardflow_adhoc", "manual__1", "2026-01-31", SETTINGS)
