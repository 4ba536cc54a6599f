"""The Airflow UI of `make up`'s platform, used the way a person uses it, in headless Chromium:
log in, open shardflow_adhoc, fill the trigger form, trigger, watch the run succeed; a bad form
creates no run; a viewer cannot trigger. Screenshots go to .shardflow/screenshots/ (ignored)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from support.airflow_api import call, token
from support.browser import Browser

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import JobStatus
from shardflow.local.demo import JOB_TABLE, REPO
from shardflow.local.platform import Platform
from shardflow.spec import load_spec

DEMO = load_spec(REPO / "dags" / "pipelines" / "demo.yaml")


def _token(platform: Platform, user: str) -> str:
    return token(platform, user)


def api(platform: Platform, path: str) -> dict:
    """GET an Airflow REST endpoint as the admin."""
    return call(platform, path)


def adhoc_runs(platform: Platform) -> list[str]:
    return [run["dag_run_id"] for run in api(platform, "/api/v2/dags/shardflow_adhoc/dagRuns")["dag_runs"]]


def open_trigger_form(browser: Browser, platform: Platform) -> None:
    state = platform.state()
    assert state is not None
    browser.driver.get(f"{state.ui_url}/dags/shardflow_adhoc")
    browser.find("//button[@aria-label='Trigger Dag']").click()
    browser.find("//*[@role='dialog']//*[contains(., 'Run Parameters')]")
    browser.shot("trigger-form")


def fill_form(browser: Browser, output_prefix: str) -> None:
    today = datetime.now(UTC).date()
    values = {
        "model_uri": DEMO.model.uri,
        "model_sha256": DEMO.model.sha256,
        "input_prefix": f"s3://shardflow-demo/events/dt={today}/",
        "output_prefix": output_prefix,
    }
    for name, value in values.items():
        browser.type_into(browser.field(name), value)
    browser.type_into(browser.field("instance_count"), "2")


#: Records the status of each POST the UI sends, as [url, status] pairs.
RECORD_REQUESTS = """
window.shardflowAnswers = [];
const open = XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open = function (method, url) {
  if (method === "POST") {
    this.addEventListener("loadend", () => window.shardflowAnswers.push([String(url), this.status]));
  }
  return open.apply(this, arguments);
};
"""


def trigger(browser: Browser) -> None:
    browser.find("//div[@role='dialog']//button[normalize-space()='Trigger']").click()


def test_browser_admin_triggers_an_adhoc_job_that_runs_to_success(platform, browser):
    state = platform.state()
    browser.log_in(state.ui_url, "admin", platform.passwords()["admin"])
    open_trigger_form(browser, platform)
    output = f"s3://shardflow-demo/predictions/adhoc/browser-{int(time.time())}/"
    fill_form(browser, output)
    browser.shot("form-filled")
    trigger(browser)

    run_url = browser.wait_for(
        lambda: "/runs/" in browser.driver.current_url and browser.driver.current_url, "the run's page to open"
    )
    run_id = urllib.request.unquote(run_url.rsplit("/runs/", 1)[1])
    browser.shot("run-started")

    def succeeded() -> bool:
        browser.driver.refresh()
        time.sleep(2)
        header = [e for e in browser.driver.find_elements("xpath", "//*[normalize-space()='Success']")]
        return any(e.location["y"] < 150 for e in header)

    browser.wait_for(succeeded, f"run {run_id} to show Success", timeout=240)
    browser.shot("run-succeeded")

    s3, dynamodb = platform.aws_clients(state)
    (job,) = [j for j in JobStore(dynamodb, JOB_TABLE).list_jobs(pipeline="adhoc") if j.job.run_id == run_id]
    assert (job.status, job.files_succeeded, job.files_total, job.rows) == (JobStatus.SUCCEEDED, 6, 6, 66_800)
    assert job.output_prefix == output
    assert job.job.compute.instance_count == 2
    bucket, key = output.removeprefix("s3://").split("/", 1)
    assert s3.head_object(Bucket=bucket, Key=key + "_SUCCESS")


def test_browser_a_bad_form_is_refused_and_creates_no_run(platform, browser):
    state = platform.state()
    before = adhoc_runs(platform)
    browser.log_in(state.ui_url, "admin", platform.passwords()["admin"])
    open_trigger_form(browser, platform)
    fill_form(browser, "s3://shardflow-demo/predictions/adhoc/never/")

    # The count field does not keep 0: it goes back to its minimum as soon as it loses focus.
    count = browser.field("instance_count")
    browser.type_into(count, "0")
    browser.field("max_attempts").click()
    browser.wait_for(lambda: count.get_attribute("value") == "1", "the count to return to 1")
    browser.shot("count-zero-refused")

    browser.type_into(browser.field("output_prefix"), "s3://Bad_Bucket/out/")
    trigger(browser)
    browser.wait_for(lambda: "Failed to Trigger Dag" in browser.text(), "the form to show the refusal")
    browser.shot("bad-prefix-refused")
    assert "/runs/" not in browser.driver.current_url
    assert adhoc_runs(platform) == before


def test_browser_a_viewer_can_look_but_not_trigger(platform, browser):
    state = platform.state()
    before = adhoc_runs(platform)
    browser.log_in(state.ui_url, "viewer", platform.passwords()["viewer"])
    open_trigger_form(browser, platform)
    fill_form(browser, "s3://shardflow-demo/predictions/adhoc/viewer/")
    browser.driver.execute_script(RECORD_REQUESTS)
    trigger(browser)
    answers = browser.wait_for(
        lambda: [a for a in browser.driver.execute_script("return window.shardflowAnswers") if "dagRuns" in a[0]],
        "the UI's trigger request to be answered",
    )
    browser.shot("viewer-refused")
    assert [status for _, status in answers] == [403]
    assert "/runs/" not in browser.driver.current_url

    # The API refuses it as well, whatever the client.
    with pytest.raises(urllib.error.HTTPError) as refused:
        token = _token(platform, "viewer")
        body = json.dumps({"logical_date": None, "conf": {}}).encode()
        request = urllib.request.Request(
            f"{state.ui_url}/api/v2/dags/shardflow_adhoc/dagRuns",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert adhoc_runs(platform) == before
