"""The Shardflow pages' FastAPI app, mounted by the plugin under ``/shardflow`` in Airflow's API server.

Airflow does not protect a plugin's routes: every route here resolves the user with Airflow's own
``get_user`` (the UI's ``_token`` cookie or a bearer token), so an anonymous request gets 401, and
asks the auth manager for access to the job's DAG: read to look, edit to stop. Links are relative,
so the pages work under a ``base_url`` subpath.
"""

from __future__ import annotations

import logging
from datetime import date
from functools import cache
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod
from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from shardflow.airflow.hooks import ShardflowHook
from shardflow.airflow.ui.pages import job_page, jobs_page
from shardflow.aws.job_queries import JobQuery
from shardflow.core.lifecycle import stop_job
from shardflow.core.orphans import settle_orphans
from shardflow.core.record import JobRecord, JobStatus
from shardflow.core.reruns import newest_job_of_run
from shardflow.core.units import WorkUnit
from shardflow.errors import JobNotFound, ShardflowError
from shardflow.spec.jobs import ADHOC_PIPELINE
from shardflow.spec.settings import Settings

__all__ = ["URL_PREFIX", "create_app"]

log = logging.getLogger(__name__)

URL_PREFIX = "/shardflow"
_LINKS = {"job": "jobs/{job_id}", "run": "../dags/{dag_id}/runs/{run_id}"}
#: A job in these states has nothing left to stop.
_ENDED = (JobStatus.SUCCEEDED, JobStatus.CANCELLED)


@cache
def _hook() -> ShardflowHook:
    settings = Settings.from_env()
    return ShardflowHook(settings.aws_conn_id, settings.job_table)


def _allowed(user: Any, method: ResourceMethod, dag_id: str | None) -> bool:
    return bool(get_auth_manager().is_authorized_dag(method=method, details=DagDetails(id=dag_id), user=user))


def _require(user: Any, method: ResourceMethod, dag_id: str | None) -> None:
    if not _allowed(user, method, dag_id):
        what = "stop jobs of" if method == "PUT" else "see"
        raise HTTPException(status_code=403, detail=f"you may not {what} DAG {dag_id or '(any)'}")


def _job(job_id: str) -> JobRecord:
    try:
        return _hook().store.get_job(job_id)
    except JobNotFound:
        raise HTTPException(status_code=404, detail=f"no Shardflow job {job_id}") from None


def _units(job: JobRecord) -> list[WorkUnit]:
    """A dynamic job's units, for its page; a sharded job has none."""
    return _hook().store.list_units(job.job_id) if job.dynamic else []


def _settled(jobs: list[JobRecord]) -> list[JobRecord]:
    """The jobs, each orphan among them (active, silent past its heartbeat timeout, its processing
    job gone) settled first, so that no page shows a job RUNNING that nothing runs. A backend that
    cannot answer leaves the jobs as they were read: the page is shown all the same."""
    hook = _hook()
    try:
        return settle_orphans(jobs, hook.store, hook.backend, hook.objects)
    except Exception:  # the page matters more than the housekeeping
        log.warning("could not settle orphaned jobs on this page", exc_info=True)
        return jobs


def _same_origin(request: Request) -> None:
    """A form posted from another site carries the user's cookie too: refuse it."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None or urlsplit(source).netloc != request.headers.get("host"):
        raise HTTPException(status_code=403, detail="a Shardflow job is stopped only from Shardflow's own page")


router = APIRouter(dependencies=[Depends(get_user)])


@router.get("/jobs", response_class=HTMLResponse)
def list_jobs(
    user: GetUserDep,
    pipeline: Annotated[str | None, Query()] = None,
    status: Annotated[str | None, Query()] = None,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> str:
    """The jobs table, newest first: one Query on one of the job table's indexes per page."""
    _require(user, "GET", None)
    try:
        chosen = JobStatus(status) if status else None
    except ValueError:
        raise HTTPException(status_code=400, detail=f"status {status!r}: use one of {', '.join(JobStatus)}") from None
    query = JobQuery(pipeline=pipeline or None, status=chosen, since=since, until=until, limit=limit, cursor=cursor)
    try:
        page = _hook().store.query_jobs(query)
    except ShardflowError as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    jobs = _settled([job for job in page.jobs if _allowed(user, "GET", job.job.dag_id)])
    filters = {
        name: str(value)
        for name, value in {"pipeline": pipeline, "status": status, "since": since, "until": until}.items()
        if value
    }
    return jobs_page(jobs, filters, page.cursor, _LINKS)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def show_job(job_id: str, user: GetUserDep) -> str:
    job = _job(job_id)
    _require(user, "GET", job.job.dag_id)
    (job,) = _settled([job])
    stoppable = job.status not in _ENDED
    stop_url = f"{quote(job_id)}/stop" if stoppable and _allowed(user, "PUT", job.job.dag_id) else None
    store = _hook().store
    return job_page(job, store.list_files(job_id), stop_url, units=_units(job))


@router.post("/jobs/{job_id}/stop", response_class=HTMLResponse)
def stop(job_id: str, user: GetUserDep, request: Request) -> HTMLResponse:
    """Stop the job's processing job and mark it CANCELLED, recording who did: needs edit access
    to the job's DAG."""
    _same_origin(request)
    job = _job(job_id)
    _require(user, "PUT", job.job.dag_id)
    name = user.get_name() if hasattr(user, "get_name") else str(user)
    hook = _hook()
    stopped = stop_job(job_id, hook.store, hook.backend(job.backend), by=name)
    log.info("job %s stopped by %s", job_id, name)
    page = job_page(stopped, hook.store.list_files(job_id), None, f"stopped by {name}", units=_units(stopped))
    return HTMLResponse(page)


@router.get("/runs/{dag_id}/{run_id}")
def run_job(dag_id: str, run_id: str, user: GetUserDep) -> RedirectResponse:
    """The job of a DAG run (the DAG-run view's link): a pipeline's DAG is ``shardflow_<name>``; a
    run cleared after its spec changed has a newer job (``-r2``...), and that one is shown."""
    _require(user, "GET", dag_id)
    pipeline = ADHOC_PIPELINE if dag_id == "shardflow_adhoc" else dag_id.removeprefix("shardflow_")
    job = newest_job_of_run(pipeline, dag_id, run_id, _hook().store)
    if job is None:
        raise HTTPException(status_code=404, detail=f"DAG run {dag_id} / {run_id} has no Shardflow job (yet)")
    return RedirectResponse(f"../../jobs/{quote(job.job_id)}", status_code=307)


def create_app() -> FastAPI:
    app = FastAPI(title="Shardflow jobs", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    return app
