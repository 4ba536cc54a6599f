"""The ``shardflow`` command line for specs: validate, list, and run one pipeline outside Airflow
against a moto server with the local backend."""

import hashlib
from pathlib import Path

import yaml

from shardflow.cli import main
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri
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
