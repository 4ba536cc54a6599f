"""The ``shardflow`` command line for specs: validate, list, and run one pipeline outside Airflow
against a moto server with the local backend."""

import hashlib
from pathlib import Path

import pytest
import yaml

from shardflow.cli import main
from shardflow.compute import get_backend
from shardflow.core.ports import ProcessingState
from shardflow.core.record import ErrorKind, FileStatus, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.smoke import SAMPLE_ROWS
from shardflow.core.staging import is_visible
from shardflow.local.demo_data import demo_dataset, train_demo_model, upload_dataset

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "dags" / "pipelines" / "demo.yaml"


def write_spec(folder: Path, name: str, **changes) -> Path:
    spec = yaml.safe_load(DEMO.read_text()) | {"name": name} | changes
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_validate_passes_the_repos_specs(capsys):
    assert main(["pipelines", "validate", str(REPO / "dags" / "pipelines")]) == 0
    assert "ok     " in capsys.readouterr().out


def test_validate_exits_1_naming_each_bad_file_and_field(tmp_path, capsys):
    write_spec(tmp_path, "good")
    write_spec(tmp_path, "typo", shedule="@daily")
    write_spec(tmp_path, "cron", schedule="0 25 * * *")
    assert main(["pipelines", "validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert f"ok     {tmp_path / 'good.yaml'}" in captured.out
    assert f"{tmp_path / 'typo.yaml'}: invalid pipeline spec\n  shedule: unknown field" in captured.err
    assert f"{tmp_path / 'cron.yaml'}: invalid pipeline spec\n  schedule: hour '25' is out of range" in captured.err
    assert "1 valid, 2 broken" in captured.err


def test_validate_checks_quotas_from_the_environment(tmp_path, capsys, monkeypatch):
    write_spec(tmp_path, "big")
    monkeypatch.setenv("SHARDFLOW_INSTANCE_QUOTAS", "ml.c5.xlarge=8")
    assert main(["pipelines", "validate", str(tmp_path)]) == 1
    assert "compute.instance_type: ml.m5.xlarge has no quota" in capsys.readouterr().err
    assert main(["pipelines", "validate", str(tmp_path / "big.yaml")]) == 1  # one file: the same checks
    assert "compute.instance_type: ml.m5.xlarge has no quota" in capsys.readouterr().err


def test_list_shows_each_pipelines_schedule_and_compute(tmp_path, capsys):
    write_spec(tmp_path, "nightly")
    write_spec(tmp_path, "broken", model={"uri": "nope"})
    assert main(["pipelines", "list", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["pipeline", "dag", "id", "schedule", "formats", "compute", "owner", "output", "prefix"]
    assert lines[2].split()[0] == "broken" and "BROKEN" in lines[2]
    assert lines[3].split()[:4] == ["nightly", "shardflow_nightly", "@daily", "parquet"]
    assert "local 2 x ml.m5.xlarge" in lines[3]


def test_run_predicts_one_date_outside_airflow(aws, s3, bucket, store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    model = train_demo_model()
    s3.put_object(Bucket=bucket, Key="models/m.joblib", Body=model)
    tables = demo_dataset((700, 300, 500))
    upload_dataset(s3, f"s3://{bucket}/events/dt=2026-03-09/", tables)
    spec = write_spec(
        tmp_path,
        "cli",
        model={"uri": f"s3://{bucket}/models/m.joblib", "sha256": hashlib.sha256(model).hexdigest()},
        input={"prefix": f"s3://{bucket}/events/dt={{{{ ds }}}}/", "format": "parquet"},
        output={"prefix": f"s3://{bucket}/scores/dt={{{{ ds_nodash }}}}/", "format": "csv", "probability": "per_class"},
    )

    assert main(["run", str(spec), "--date", "2026-03-09", "--table", store.table]) == 0

    out = capsys.readouterr().out
    assert f"published 1,500 rows from 3 file(s) to s3://{bucket}/scores/dt=20260309/" in out
    (record,) = store.list_jobs(pipeline="cli")
    assert (record.status, record.rows, record.output_prefix) == (
        JobStatus.SUCCEEDED,
        1500,
        f"s3://{bucket}/scores/dt=20260309/",
    )
    output = S3Uri.parse(record.output_prefix)
    keys = {o["Key"][len(output.key) :] for o in s3.list_objects_v2(Bucket=bucket, Prefix=output.key)["Contents"]}
    assert {"_SUCCESS", "_manifest.json"} <= keys
    assert {k.removesuffix(".csv") for k in keys if k.endswith(".csv")} == {k.removesuffix(".parquet") for k in tables}
    body = s3.get_object(Bucket=bucket, Key=output.key + "part-0000.csv")["Body"].read().decode()
    header = body.splitlines()[0].replace('"', "").split(",")
    assert header[-3:] == ["prediction", "probability_0", "probability_1"]  # the spec's per_class, honoured


def test_run_refuses_a_model_whose_sha256_differs(aws, s3, bucket, store, tmp_path, capsys):
    s3.put_object(Bucket=bucket, Key="models/m.joblib", Body=train_demo_model())
    upload_dataset(s3, f"s3://{bucket}/events/dt=2026-03-09/", demo_dataset((200,)))
    spec = write_spec(
        tmp_path,
        "cli",
        model={"uri": f"s3://{bucket}/models/m.joblib", "sha256": "0" * 64},
        input={"prefix": f"s3://{bucket}/events/dt={{{{ ds }}}}/"},
        output={"prefix": f"s3://{bucket}/scores/dt={{{{ ds }}}}/"},
    )
    assert main(["run", str(spec), "--date", "2026-03-09", "--table", store.table]) == 1
    assert f"FAILED: model s3://{bucket}/models/m.joblib has sha256" in capsys.readouterr().err


def seed(s3, bucket: str, model: bytes, tables: dict, *, extra: dict | None = None) -> None:
    """The model at models/m.joblib and the tables (plus raw ``extra`` objects) under events/dt=2026-03-09/."""
    s3.put_object(Bucket=bucket, Key="models/m.joblib", Body=model)
    upload_dataset(s3, f"s3://{bucket}/events/dt=2026-03-09/", tables)
    for relative, body in (extra or {}).items():
        s3.put_object(Bucket=bucket, Key=f"events/dt=2026-03-09/{relative}", Body=body)


def cli_spec(folder: Path, bucket: str, artifact: bytes, **changes) -> Path:
    """A spec over what :func:`seed` uploaded; ``changes`` replace its fields."""
    fields = {
        "model": {"uri": f"s3://{bucket}/models/m.joblib", "sha256": hashlib.sha256(artifact).hexdigest()},
        "input": {"prefix": f"s3://{bucket}/events/dt={{{{ ds }}}}/", "format": "parquet"},
        "output": {"prefix": f"s3://{bucket}/scores/dt={{{{ ds }}}}/", "format": "parquet"},
    }
    return write_spec(folder, "cli", **(fields | changes))


def output_keys(s3, bucket: str) -> set[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="scores/dt=2026-03-09/").get("Contents", [])
    return {o["Key"].removeprefix("scores/dt=2026-03-09/") for o in listed}


def staged_outputs(s3, bucket: str, job_id: str, attempt: int = 1) -> set[str]:
    """The Parquet outputs an attempt uploaded to its staging, relative to it."""
    staging = f"_staging/{job_id}/attempt-{attempt}/"
    return {
        k.removeprefix(staging) for k in output_keys(s3, bucket) if k.startswith(staging) and k.endswith(".parquet")
    }


def test_run_hostile_keys_write_nothing_outside_the_local_root_and_fail_naming_them(
    aws, s3, bucket, store, tmp_path, monkeypatch, capsys
):
    root, outside = tmp_path / "local", tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(root))
    monkeypatch.setenv("SHARDFLOW_LOCAL_KEEP_FILES", "1")  # to see what the job downloaded
    model, tables = train_demo_model(), demo_dataset((700, 300, 500))
    seed(s3, bucket, model, tables)
    body = s3.get_object(Bucket=bucket, Key="events/dt=2026-03-09/part-0000.parquet")["Body"].read()
    hostile = [
        "../" * 40 + outside.as_posix().lstrip("/") + "/pwned.parquet",
        "/" + outside.as_posix().lstrip("/") + "/absolute.parquet",
        "a/../b.parquet",
        "ctl\x01.parquet",
    ]
    seed(s3, bucket, model, {}, extra=dict.fromkeys(hostile, body))

    assert main(["run", str(cli_spec(tmp_path, bucket, model)), "--date", "2026-03-09", "--table", store.table]) == 1

    out, err = capsys.readouterr()
    assert "4 key(s) refused and never read, e.g. key 'events/dt=2026-03-09/" in out
    assert "FAILED after 1 of 3 attempt(s); 0 of 3 file(s) failed" in err
    assert "4 input key(s) refused and never read" in err and "'..' segment" in err and "control character" in err
    assert "fix the inputs named above and start a new run, as a bad input is never retried" in err
    (record,) = store.list_jobs(pipeline="cli")
    assert (record.status, record.attempt, len(record.processing_jobs)) == (JobStatus.FAILED, 1, 1)
    assert record.files_refused == 4 and len(record.refused_files) == 4
    assert sorted(f.key for f in store.list_files(record.job_id)) == sorted(tables)  # no item for a hostile key
    # Nothing outside the local root; inside it, only the good files were ever downloaded.
    assert list(outside.iterdir()) == []
    downloaded = {p.name for p in root.rglob("*.parquet")}
    assert not downloaded & {"pwned.parquet", "absolute.parquet", "b.parquet", "ctl\x01.parquet"}
    # The good files' outputs are kept in the attempt's staging; nothing is published.
    assert staged_outputs(s3, bucket, record.job_id) == set(tables)
    assert not {k for k in output_keys(s3, bucket) if is_visible(k)}
    assert "_SUCCESS" not in output_keys(s3, bucket)


def test_run_bad_input_an_unreadable_file_fails_once_naming_it_and_keeps_the_rest(
    aws, s3, bucket, store, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    model, tables = train_demo_model(), demo_dataset((700, 300, 500))
    seed(s3, bucket, model, tables, extra={"zz-broken.parquet": b"PAR1 this is not parquet"})

    assert main(["run", str(cli_spec(tmp_path, bucket, model)), "--date", "2026-03-09", "--table", store.table]) == 1

    err = capsys.readouterr().err
    assert "FAILED after 1 of 3 attempt(s); 1 of 4 file(s) failed" in err
    assert "zz-broken.parquet: ArrowInvalid" in err
    assert "fix the inputs named above and start a new run, as a bad input is never retried" in err
    (record,) = store.list_jobs(pipeline="cli")
    assert (record.attempt, len(record.processing_jobs), record.files_succeeded) == (1, 1, 3)
    files = {f.key: f for f in store.list_files(record.job_id)}
    assert (files["zz-broken.parquet"].status, files["zz-broken.parquet"].error_kind) == (
        FileStatus.FAILED,
        ErrorKind.INPUT,
    )
    # Under a job record the script exits 0 once every file has its result there, so the
    # processing job completes and uploads the other files' outputs.
    backend = get_backend("local", root=str(tmp_path / "local"))
    assert backend.describe(record.processing_jobs[0]).state is ProcessingState.COMPLETED
    assert staged_outputs(s3, bucket, record.job_id) == set(tables)


def test_run_bad_input_a_model_that_cannot_predict_the_first_rows_fails_prepare_before_any_instance(
    aws, s3, bucket, store, tmp_path, monkeypatch, capsys
):
    from support.models import raising_model_bytes

    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    model = raising_model_bytes()
    seed(s3, bucket, model, demo_dataset((700, 300)))

    assert main(["run", str(cli_spec(tmp_path, bucket, model)), "--date", "2026-03-09", "--table", store.table]) == 1

    err = capsys.readouterr().err
    assert f"the model cannot predict its first {SAMPLE_ROWS} rows" in err
    assert "ValueError: this model refuses every row" in err and "no instance was started" in err
    assert store.list_jobs(pipeline="cli") == []


def test_run_bad_input_a_model_whose_predict_raises_fails_at_once_naming_the_model(
    aws, s3, bucket, store, tmp_path, monkeypatch, capsys
):
    from support.models import raising_model_bytes

    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    # It predicts the few rows of prepare's smoke prediction, and refuses the script's batches.
    model, tables = raising_model_bytes(above=SAMPLE_ROWS), demo_dataset((700, 300))
    seed(s3, bucket, model, tables)

    assert main(["run", str(cli_spec(tmp_path, bucket, model)), "--date", "2026-03-09", "--table", store.table]) == 1

    err = capsys.readouterr().err
    assert "FAILED after 1 of 3 attempt(s); 2 of 2 file(s) failed" in err
    assert "ValueError: this model refuses every row" in err
    assert f"the model s3://{bucket}/models/m.joblib failed on the files named above: fix the model" in err
    assert "fix the inputs" not in err
    (record,) = store.list_jobs(pipeline="cli")
    assert (record.attempt, len(record.processing_jobs)) == (1, 1)
    assert {f.error_kind for f in store.list_files(record.job_id)} == {ErrorKind.MODEL}


@pytest.mark.parametrize("fault", ["model", "bucket", "table"])
def test_run_bad_input_a_missing_resource_is_one_line_naming_it(
    aws, s3, bucket, store, tmp_path, monkeypatch, capsys, fault
):
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    model = train_demo_model()
    seed(s3, bucket, model, demo_dataset((200,)))
    changes: dict = {}
    table = store.table
    if fault == "model":
        changes["model"] = {"uri": f"s3://{bucket}/models/nope.joblib", "sha256": hashlib.sha256(model).hexdigest()}
        expected = f"FAILED: model s3://{bucket}/models/nope.joblib does not exist: check the spec's model.uri"
    elif fault == "bucket":
        changes["input"] = {"prefix": "s3://no-such-bucket-4711/events/dt={{ ds }}/", "format": "parquet"}
        expected = "FAILED: bucket 'no-such-bucket-4711' does not exist (s3:ListBucket on s3://no-such-bucket-4711/"
    else:
        table = "no-such-table"
        expected = "FAILED: job table 'no-such-table' does not exist in us-east-1: create it"

    assert (
        main(["run", str(cli_spec(tmp_path, bucket, model, **changes)), "--date", "2026-03-09", "--table", table]) == 1
    )

    err = capsys.readouterr().err
    assert err.startswith(expected), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_bad_input_an_empty_input_gets_an_output_of_the_jobs_one_schema(
    aws, s3, bucket, store, tmp_path, monkeypatch
):
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyarrow.fs import S3FileSystem

    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    model, tables = train_demo_model(), demo_dataset((700, 0, 500))
    seed(s3, bucket, model, tables)

    assert main(["run", str(cli_spec(tmp_path, bucket, model)), "--date", "2026-03-09", "--table", store.table]) == 0

    filesystem = S3FileSystem(
        endpoint_override=aws.endpoint_url, access_key="testing", secret_key="testing", region="us-east-1"
    )
    dataset = ds.dataset(f"{bucket}/scores/dt=2026-03-09/", format="parquet", filesystem=filesystem)
    assert len(dataset.files) == 3
    assert dataset.schema.field("probability").type == pa.float32()
    assert dataset.to_table().num_rows == 1200
