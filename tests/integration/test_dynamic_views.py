"""A real dynamic job (a moto server, the local backend's instances claiming units, real Parquet and
a real model), read the way a person reads it: ``shardflow jobs show`` and ``--json``, and the job's
page served by the Shardflow FastAPI app, its units read from the job table."""

from __future__ import annotations

import io
import json
import re

import pyarrow.parquet as pq
import pytest
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.jobs import launch, wait_until_decided

from shardflow.airflow.ui import app as ui_app
from shardflow.aws.s3 import S3ObjectStore
from shardflow.cli import main
from shardflow.core.publish import publish_job
from shardflow.core.record import JobStatus
from shardflow.core.units import AUTO_THRESHOLD, UnitState
from shardflow.local.demo_data import demo_dataset, upload_dataset

#: Small files and one big one of 12 row groups: dealt out over 2 instances, one gets most bytes.
SMALL = (300, 200, 400, 250)
BIG_ROWS = 6_000


@pytest.fixture
def dynamic_job(s3, store, bucket, local_env):
    """An ``auto`` job with ``split_objects`` over uneven files, run to the end and published."""
    tables = demo_dataset((*SMALL, BIG_ROWS))
    big_key = sorted(tables)[-1]
    upload_dataset(s3, f"s3://{bucket}/in/", {k: v for k, v in tables.items() if k != big_key})
    buffer = io.BytesIO()
    pq.write_table(tables[big_key], buffer, row_group_size=500)
    s3.put_object(Bucket=bucket, Key=f"in/{big_key}", Body=buffer.getvalue())
    record, _, _ = launch(
        s3, store, bucket, tables=tables, seconds_per_call=0.01, instances=2, distribution="auto", split_objects=True
    )
    assert record.distribution == "dynamic" and record.predicted_imbalance > AUTO_THRESHOLD
    wait_until_decided(record.job_id, store)
    publish_job(record.job_id, store, S3ObjectStore(s3))
    final = store.get_job(record.job_id)
    assert final.status is JobStatus.SUCCEEDED
    return final, big_key


def test_dynamic_job_show_prints_the_choice_the_units_per_host_and_the_split_file(store, dynamic_job, capsys):
    record, big_key = dynamic_job
    units = store.list_units(record.job_id)
    assert all(u.state is UnitState.DONE for u in units)

    assert main(["jobs", "show", record.job_id, "--table", store.table]) == 0
    out = capsys.readouterr().out

    imbalance = f"{record.predicted_imbalance:.2f} > {AUTO_THRESHOLD:.2f}"
    expected = f"distribution  dynamic (auto chose it: sharded shares' predicted imbalance {imbalance})"
    assert expected in out
    assert f"{len(units)} units: {len(units)} done; 0 reclaimed (claimed more than once)" in out
    hosts = {line.split()[0]: line.split()[1:] for line in out.splitlines() if re.match(r"algo-\d ", line)}
    assert set(hosts) == {u.host for u in units}
    assert sum(int(done) for done, *_ in hosts.values()) == len(units)
    assert sum(int(rows.replace(",", "")) for _, rows, *_ in hosts.values()) == sum(SMALL) + BIG_ROWS
    (file,) = [f for f in store.list_files(record.job_id) if f.key == big_key]
    assert file.parts > 1 and f"{big_key} ({file.parts} parts)" in out

    assert main(["jobs", "show", record.job_id, "--json", "--table", store.table]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["job"]["distribution"], shown["job"]["predicted_imbalance"]) == (
        "dynamic",
        record.predicted_imbalance,
    )
    assert shown["units"]["total"] == len(units) and shown["units"]["states"]["done"] == len(units)
    assert {h["host"]: h["done"] for h in shown["units"]["hosts"]} == {h: int(v[0]) for h, v in hosts.items()}
    assert next(f for f in shown["files"] if f["key"] == big_key)["parts"] == file.parts


@pytest.fixture
def page_client(store, monkeypatch):
    """The Shardflow pages' app on the test's job table: Airflow's simple auth manager decides who
    may read a DAG; the request's user is a viewer (the token check is the browser tests' part)."""
    from airflow.api_fastapi.app import init_auth_manager

    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("SHARDFLOW_JOB_TABLE", store.table)
    init_auth_manager(FastAPI())
    ui_app._hook.cache_clear()
    app = ui_app.create_app()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="viewer", role="viewer")
    yield TestClient(app)
    ui_app._hook.cache_clear()


def test_dynamic_job_page_shows_the_distribution_and_the_units_per_host(store, dynamic_job, page_client):
    record, big_key = dynamic_job
    units = store.list_units(record.job_id)

    page = page_client.get(f"/jobs/{record.job_id}")

    assert page.status_code == 200, page.text
    html = page.text
    assert f"predicted imbalance {record.predicted_imbalance:.2f} &gt; {AUTO_THRESHOLD:.2f})</span>" in html
    assert f"<p id='units-summary'>{len(units)} units: {len(units)} done;" in html
    rows = dict(re.findall(r"<tr data-host='([^']+)'>((?:<td>[^<]*</td>)+)</tr>", html))
    assert set(rows) == {u.host for u in units}
    for host, row in rows.items():
        cells = re.findall(r"<td>([^<]*)</td>", row)
        held = [u for u in units if u.host == host]
        assert cells[:3] == [host, str(len(held)), f"{sum(u.rows for u in held):,}"]
        assert cells[3] == f"{sum(u.seconds or 0.0 for u in held):,.1f}"
    (file,) = [f for f in store.list_files(record.job_id) if f.key == big_key]
    assert f"{big_key} <span class='parts'>({file.parts} parts)</span>" in html
