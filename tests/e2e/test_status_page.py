"""The Shardflow jobs page inside the Airflow UI of `make up`'s platform, in headless Chromium:
the nav entry, the table, a failed job's page, a DAG run's job, who may stop a job, and that no
route answers an anonymous request."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from support.airflow_api import BASE_PATH, call
from support.records import sample_job

from shardflow.airflow.ui.app import URL_PREFIX, create_app
from shardflow.aws.jobstore import JobStore
from shardflow.core.planning import job_id_for_run
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus, utcnow
from shardflow.local.demo import JOB_TABLE

PATH = [JobStatus.SUBMITTED, JobStatus.RUNNING]


@pytest.fixture(scope="module")
def seeded(platform) -> dict[JobStatus, JobRecord]:
    """One job in every status, on the platform's job table; the FAILED one has a failed file."""
    state = platform.state()
    store = JobStore(platform.aws_clients(state)[1], JOB_TABLE)
    jobs = {}
    for status in JobStatus:
        run_id = f"manual__status-page-{status.lower()}"
        job_id = job_id_for_run("statuspage", "shardflow_statuspage", run_id)
        files = [FileRecord(key=f"part-{i}.parquet", size=100) for i in range(4)]
        record = store.create_job(sample_job(job_id, pipeline="statuspage", run_id=run_id), files)
        if status is not JobStatus.PENDING:
            attempt = {"attempt": 1, "processing_jobs": [f"{job_id}-a1"], "attempt_files": 4, "progress_files": 3}
            record = store.transition(record, JobStatus.SUBMITTED, **attempt)
        if status not in (JobStatus.PENDING, JobStatus.SUBMITTED):
            record = store.transition(record, JobStatus.RUNNING, started_at=utcnow())
        if status is JobStatus.FAILED:
            reason = "ArrowInvalid: not parquet"
            failed = replace(files[2], status=FileStatus.FAILED, error=reason, error_kind=ErrorKind.INPUT)
            done = [
                replace(files[i], status=FileStatus.SUCCEEDED, rows=100, output_key=files[i].key) for i in (0, 1, 3)
            ]
            store.record_file_results(job_id, [failed, *done])
            record = store.transition(
                record, JobStatus.FAILED, files_failed=1, files_succeeded=3, rows=300, error=f"part-2.parquet: {reason}"
            )
        elif status is JobStatus.SUCCEEDED:
            record = store.transition(record, JobStatus.SUCCEEDED, files_succeeded=4, rows=400)
        elif status is JobStatus.CANCELLED:
            record = store.transition(record, JobStatus.CANCELLED, stopped_by="someone")
        jobs[status] = record
    return jobs


def open_jobs_page(browser, platform, user: str) -> None:
    state = platform.state()
    browser.log_in(state.ui_url, user, platform.passwords()[user])
    browser.find("//button[@aria-label='Browse']").click()
    browser.find("//a[contains(normalize-space(), 'Shardflow jobs')]").click()
    frame = browser.find("//iframe")
    browser.driver.switch_to.frame(frame)
    browser.find("//h2[normalize-space()='Shardflow jobs']")


def test_status_page_nav_entry_opens_a_table_of_jobs_in_every_status(platform, browser, seeded):
    open_jobs_page(browser, platform, "admin")
    browser.driver.switch_to.default_content()
    browser.shot("jobs-table")
    frame = browser.find("//iframe")
    # The platform runs under a subpath (tests/e2e/conftest.py): the page and its links follow it.
    ui_url = platform.state().ui_url
    assert ui_url.endswith(BASE_PATH) and frame.get_attribute("src") == f"{ui_url}{URL_PREFIX}/jobs"
    browser.driver.switch_to.frame(frame)
    job = seeded[JobStatus.RUNNING]
    links = browser.find(f"//tr[@data-job='{job.job_id}']").find_elements("xpath", ".//a")
    assert [link.get_attribute("href") for link in links] == [
        f"{ui_url}{URL_PREFIX}/jobs/{job.job_id}",
        f"{ui_url}/dags/{job.job.dag_id}/runs/{job.job.run_id}",
    ]
    for status, job in seeded.items():
        row = browser.find(f"//tr[@data-job='{job.job_id}']")
        assert row.find_element("xpath", ".//span[@class='status']").get_attribute("data-status") == status
        bar = row.find_element("xpath", ".//span[@role='progressbar']")
        expected = {JobStatus.PENDING: 0, JobStatus.SUCCEEDED: 4, JobStatus.FAILED: 3, JobStatus.CANCELLED: 0}
        assert bar.get_attribute("aria-valuenow") == str(expected.get(status, 3))
        assert bar.get_attribute("aria-valuemax") == "4"


def test_status_page_a_failed_jobs_page_shows_the_failed_file_and_its_reason_first(platform, browser, seeded):
    open_jobs_page(browser, platform, "admin")
    failed = seeded[JobStatus.FAILED]
    browser.find(f"//tr[@data-job='{failed.job_id}']//a").click()
    first = browser.find("//table[@id='files']/tbody/tr[1]")
    browser.driver.switch_to.default_content()
    browser.shot("failed-job")
    browser.driver.switch_to.frame(browser.find("//iframe"))
    first = browser.find("//table[@id='files']/tbody/tr[1]")
    assert first.get_attribute("data-file") == "part-2.parquet"
    assert "ArrowInvalid: not parquet" in first.text
    attempt = browser.find("//table[@id='attempts']/tbody/tr[@data-attempt='1']")
    assert f"{failed.job_id}-a1" in attempt.text and "FAILED" in attempt.text and "not parquet" in attempt.text
    bars = browser.driver.find_elements("xpath", "//*[local-name()='svg'][@id='throughput']/*[local-name()='rect']")
    assert bars and max(float(bar.get_attribute("data-rate")) for bar in bars) > 0
    browser.driver.execute_script("document.getElementById('attempts').scrollIntoView()")
    browser.driver.switch_to.default_content()
    browser.shot("failed-job-attempts")


def test_status_page_a_dag_runs_view_opens_its_job(platform, browser):
    state = platform.state()
    # A real run of the demo DAG, held (the DAG paused) so that its job is the one seeded here.
    call(platform, "/api/v2/dags/shardflow_demo", "PATCH", {"is_paused": True})
    run_id = call(platform, "/api/v2/dags/shardflow_demo/dagRuns", "POST", {"logical_date": None})["dag_run_id"]
    try:
        job_id = job_id_for_run("demo", "shardflow_demo", run_id)
        record = sample_job(job_id, pipeline="demo", dag_id="shardflow_demo", run_id=run_id)
        JobStore(platform.aws_clients(state)[1], JOB_TABLE).create_job(record, [FileRecord("a.parquet", 1)])
        browser.log_in(state.ui_url, "admin", platform.passwords()["admin"])
        browser.driver.get(f"{state.ui_url}/dags/shardflow_demo/runs/{run_id}")
        browser.find("//*[self::a or self::button][normalize-space()='Shardflow job']").click()
        frame = browser.find("//iframe")
        assert frame.get_attribute("src").startswith(f"{state.ui_url}{URL_PREFIX}/runs/shardflow_demo/")
        browser.driver.switch_to.frame(frame)
        browser.find(f"//h2[normalize-space()='Job {job_id}']")
        browser.driver.switch_to.default_content()
        browser.shot("dag-run-job")
    finally:
        call(platform, f"/api/v2/dags/shardflow_demo/dagRuns/{run_id}", "DELETE")
        call(platform, "/api/v2/dags/shardflow_demo", "PATCH", {"is_paused": False})


def test_status_page_a_viewer_cannot_stop_a_job_and_an_admin_can(platform, browser, seeded):
    state = platform.state()
    running = seeded[JobStatus.RUNNING]
    page = f"{state.ui_url}{URL_PREFIX}/jobs/{running.job_id}"
    browser.log_in(state.ui_url, "viewer", platform.passwords()["viewer"])
    browser.driver.get(page)
    browser.find(f"//h2[normalize-space()='Job {running.job_id}']")
    assert not browser.driver.find_elements("xpath", "//button[@id='stop']")  # no button for a viewer
    answer = browser.driver.execute_script(
        "return fetch(arguments[0] + '/stop', {method: 'POST'}).then(r => r.status)", page
    )
    assert answer == 403  # nor does the route let a viewer stop it
    browser.shot("viewer-no-stop")

    browser.driver.delete_all_cookies()
    browser.log_in(state.ui_url, "admin", platform.passwords()["admin"])
    browser.driver.get(page)
    browser.find("//button[@id='stop']").click()
    browser.find("//p[@id='message'][contains(., 'stopped by admin')]")
    browser.shot("admin-stopped")
    stopped = JobStore(platform.aws_clients(state)[1], JOB_TABLE).get_job(running.job_id)
    assert (stopped.status, stopped.stopped_by) == (JobStatus.CANCELLED, "admin")


def test_status_page_every_route_refuses_an_anonymous_request(platform, seeded):
    state = platform.state()
    job = seeded[JobStatus.RUNNING]
    values = {"job_id": job.job_id, "dag_id": job.job.dag_id, "run_id": job.job.run_id}
    routes = [(method, route.path) for route in create_app().routes for method in getattr(route, "methods", ())]
    assert {path for _, path in routes} >= {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/stop", "/runs/{dag_id}/{run_id}"}
    for method, path in routes:
        if method == "HEAD":
            continue
        request = urllib.request.Request(f"{state.ui_url}{URL_PREFIX}{path.format(**values)}", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401, (method, path, json.loads(refused.value.read() or b"{}"))


def test_status_page_lists_an_orphaned_job_as_settled_not_running(platform, browser):
    # RUNNING, silent for an hour, and its processing job unknown to the backend: nothing runs it.
    state = platform.state()
    store = JobStore(platform.aws_clients(state)[1], JOB_TABLE)
    run_id = "manual__status-page-orphan"
    job_id = job_id_for_run("statuspage", "shardflow_statuspage", run_id)
    record = store.create_job(sample_job(job_id, pipeline="statuspage", run_id=run_id), [FileRecord("a.parquet", 1)])
    record = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[f"{job_id}-a1"], attempt_files=1)
    silent = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store.transition(record, JobStatus.RUNNING, heartbeat_at=silent)

    open_jobs_page(browser, platform, "viewer")
    row = browser.find(f"//tr[@data-job='{job_id}']")

    assert row.find_element("xpath", ".//span[@class='status']").get_attribute("data-status") == "FAILED"
    settled = store.get_job(job_id)
    assert settled.status is JobStatus.FAILED and f"processing job {job_id}-a1 is unknown" in (settled.error or "")
