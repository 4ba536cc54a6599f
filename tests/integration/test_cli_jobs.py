"""``shardflow jobs list | show | watch | stop`` against a moto server, read the way a person reads
them: the tables as printed, ``watch`` in a real terminal (tmux), ``--json`` parsed."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.models import paced_model_bytes
from support.records import sample_job, sample_job_spec

from shardflow.aws.jobstore import JobStore
from shardflow.aws.s3 import S3ObjectStore
from shardflow.cli import main
from shardflow.compute.local import LocalBackend, pid_alive
from shardflow.core.lifecycle import submit_job
from shardflow.core.ports import ProcessingState
from shardflow.core.prepare import prepare_job
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus
from shardflow.local.demo_data import demo_dataset, upload_dataset

SHARDFLOW = Path(sys.executable).parent / "shardflow"
KEYS = [f"part-{n:04d}.parquet" for n in range(6)]
ROWS = 1_000


def seed(store: JobStore, job_id: str, status: JobStatus, *, done: int = 0, failed: int = 0, **changes) -> JobRecord:
    """A six-file job moved through the store's transitions to ``status``: ``done`` files finished
    (for an active job, reported by heartbeats), ``failed`` of them as bad inputs."""
    record = store.create_job(
        sample_job(job_id, pipeline=job_id.rsplit("-", 1)[0], **changes), [FileRecord(k, 100) for k in KEYS]
    )
    if status is JobStatus.PENDING:
        return record
    name = f"{job_id}-a1"
    record = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[name], attempt_files=6)
    if status is JobStatus.CANCELLED:
        return store.transition(record, JobStatus.CANCELLED, stopped_by="cli:someone", error="stopped by cli:someone")
    if status is JobStatus.SUBMITTED:
        return record
    record = store.transition(record, JobStatus.RUNNING, started_at=record.updated_at)
    results = [
        FileRecord(k, 100, FileStatus.SUCCEEDED, rows=ROWS, output_key=k, processing_job=name, seconds=1.5)
        for k in KEYS[: done - failed]
    ] + [
        FileRecord(
            k,
            100,
            FileStatus.FAILED,
            error=f"{k}: feature column 'amount' is missing",
            processing_job=name,
            error_kind=ErrorKind.INPUT,
        )
        for k in KEYS[done - failed : done]
    ]
    store.record_file_results(job_id, results)
    store.heartbeat(job_id, 1, files=done, rows=ROWS * (done - failed))
    if status is JobStatus.RUNNING:
        return store.get_job(job_id)
    counts = {"files_succeeded": done - failed, "files_failed": failed, "rows": ROWS * (done - failed)}
    error = "\n".join(r.error or "" for r in results if r.error) or None
    return store.transition(store.get_job(job_id), status, error=error, **counts)


@pytest.fixture
def jobs(store: JobStore) -> dict[JobStatus, JobRecord]:
    """One job in each status, created in this order (so listed in the reverse)."""
    return {
        JobStatus.SUCCEEDED: seed(store, "nightly-000000000001", JobStatus.SUCCEEDED, done=6),
        JobStatus.FAILED: seed(store, "nightly-000000000002", JobStatus.FAILED, done=6, failed=2, max_attempts=1),
        JobStatus.CANCELLED: seed(store, "adhoc-000000000003", JobStatus.CANCELLED),
        JobStatus.PENDING: seed(store, "adhoc-000000000004", JobStatus.PENDING),
        JobStatus.SUBMITTED: seed(store, "nightly-000000000005", JobStatus.SUBMITTED, instance_count=4),
        JobStatus.RUNNING: seed(store, "nightly-000000000006", JobStatus.RUNNING, done=3),
    }


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def row_of(output: str, job_id: str) -> list[str]:
    return next(line for line in output.splitlines() if line.startswith(job_id)).split()


def test_list_shows_every_job_newest_first_with_its_progress(store, jobs, capsys):
    code, out, _ = run(capsys, "jobs", "list", "--table", store.table)

    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if re.match(r"\w+-\d{12} ", line)]
    assert listed == [r.job_id for r in reversed(jobs.values())]
    running = row_of(out, jobs[JobStatus.RUNNING].job_id)
    assert running[1:4] == ["nightly", "RUNNING", "1/3"] and "3/6" in running and "3,000" in running
    failed = row_of(out, jobs[JobStatus.FAILED].job_id)
    assert failed[2:4] == ["FAILED", "1/1"] and " ".join(failed).count("4/6 (2 failed)") == 1
    assert "6/6" in row_of(out, jobs[JobStatus.SUCCEEDED].job_id)
    assert "4 x ml.m5.xlarge" in " ".join(row_of(out, jobs[JobStatus.SUBMITTED].job_id))


def test_list_filters_and_the_old_form_still_works(store, jobs, capsys):
    code, out, _ = run(capsys, "jobs", "list", "--pipeline", "adhoc", "--table", store.table)
    assert code == 0 and re.findall(r"^adhoc-\d+", out, re.M) == ["adhoc-000000000004", "adhoc-000000000003"]
    code, out, _ = run(capsys, "jobs", "--pipeline", "adhoc", "--status", "pending", "--table", store.table)
    assert code == 0 and re.findall(r"^\w+-\d{12}", out, re.M) == ["adhoc-000000000004"]
    code, out, _ = run(capsys, "jobs", "--status", "FAILED", "--table", store.table)
    assert code == 0 and re.findall(r"^\w+-\d{12}", out, re.M) == ["nightly-000000000002"]
    code, out, _ = run(capsys, "jobs", "list", "--since", "2020-01-01", "--until", "2020-01-31", "--table", store.table)
    assert code == 0 and out.strip() == f"no jobs in table {store.table}"


def test_list_pages_with_the_cursor_it_prints(store, jobs, capsys):
    code, out, _ = run(capsys, "jobs", "list", "--limit", "4", "--table", store.table)
    assert code == 0
    hint = next(line for line in out.splitlines() if line.startswith("more jobs: "))
    words = shlex.split(hint.removeprefix("more jobs: "))
    assert words[:3] == ["shardflow", "jobs", "list"] and "--cursor" in words

    code, out, _ = run(capsys, *words[1:])
    assert code == 0 and re.findall(r"^\w+-\d{12}", out, re.M) == ["nightly-000000000002", "nightly-000000000001"]


def test_list_json_parses_and_follows_the_cursor(store, jobs, capsys):
    code, out, _ = run(capsys, "jobs", "list", "--json", "--limit", "5", "--table", store.table)
    first = json.loads(out)
    code, out, _ = run(
        capsys, "jobs", "list", "--json", "--limit", "5", "--cursor", first["cursor"], "--table", store.table
    )
    second = json.loads(out)

    assert code == 0 and second["cursor"] is None
    assert [j["job_id"] for j in first["jobs"] + second["jobs"]] == [r.job_id for r in reversed(jobs.values())]
    running = first["jobs"][0]
    assert running["status"] == "RUNNING" and running["job"]["compute"]["instance_type"] == "ml.m5.xlarge"
    assert running["progress"]["files_done"] == 3 and running["progress"]["files_total"] == 6
    assert running["progress"]["rows"] == 3 * ROWS and running["progress"]["running"] is True


def test_show_prints_the_job_and_its_failed_files_first_with_their_errors(store, jobs, capsys):
    record = jobs[JobStatus.FAILED]

    code, out, _ = run(capsys, "jobs", "show", record.job_id, "--table", store.table)

    assert code == 0
    assert out.splitlines()[0].split() == [record.job_id, "FAILED", "attempt", "1/1", f"{record.job_id}-a1"]
    assert re.search(rf"^model +{re.escape(record.job.model.uri)}", out, re.M)
    assert f"sha256 {record.job.model.sha256}" in out
    assert (
        re.search(rf"^input +{re.escape(record.input_prefix)} \(parquet\)", out, re.M) and record.output_prefix in out
    )
    assert re.search(r"^compute +local: 2 x ml.m5.xlarge, at most 1 h 00 min an attempt", out, re.M)
    assert re.search(r"^distribution +sharded *$", out, re.M)  # a record from before it was chosen
    # The attempt: its instances, the 6 files it finished of the 6 it was given, its rows, how it ended.
    assert re.search(rf"1\s+{record.job_id}-a1\s+2 x ml.m5.xlarge\s+6/6\s+4,000\s.*FAILED", out)
    files = [line.split()[:2] for line in out.splitlines() if re.match(r"(FAILED|SUCCEEDED|PENDING)\s+part-", line)]
    assert files == [["FAILED", KEYS[4]], ["FAILED", KEYS[5]]] + [["SUCCEEDED", k] for k in KEYS[:4]]
    assert re.search(rf"FAILED\s+{KEYS[4]}\s+-\s+-\s+input\s+{KEYS[4]}: feature column 'amount' is missing", out)


def test_show_json_and_a_cancelled_job_says_who_stopped_it(store, jobs, capsys):
    code, out, _ = run(capsys, "jobs", "show", jobs[JobStatus.FAILED].job_id, "--json", "--table", store.table)
    shown = json.loads(out)
    assert code == 0 and shown["job"]["files_failed"] == 2
    assert [f["status"] for f in shown["files"]] == ["FAILED"] * 2 + ["SUCCEEDED"] * 4
    assert shown["files"][0]["error_kind"] == "input" and shown["files"][0]["retryable"] is False

    code, out, _ = run(capsys, "jobs", "show", jobs[JobStatus.CANCELLED].job_id, "--table", store.table)
    assert code == 0 and re.search(r"^stopped by +cli:someone", out, re.M)


@pytest.mark.parametrize("command", ["show", "watch", "stop"])
def test_an_unknown_job_is_one_line_naming_it_and_the_table(store, capsys, command):
    code, out, err = run(capsys, "jobs", command, "nightly-0000000000ff", "--table", store.table)

    assert code == 1 and out == ""
    assert err == (
        f"shardflow jobs: no job 'nightly-0000000000ff' in table '{store.table}': "
        f"`shardflow jobs list --table {store.table}` lists its newest jobs\n"
    )


def test_stop_a_job_that_never_started_then_again(store, jobs, capsys):
    record = jobs[JobStatus.PENDING]

    code, out, _ = run(capsys, "jobs", "stop", record.job_id, "--json", "--table", store.table)
    stopped = json.loads(out)
    assert code == 0 and stopped["stopped"] is True and stopped["was"] == "PENDING"
    assert stopped["job"]["status"] == "CANCELLED" and stopped["job"]["stopped_by"] == f"cli:{getpass.getuser()}"

    code, out, _ = run(capsys, "jobs", "stop", record.job_id, "--table", store.table)
    assert code == 0 and out == f"job {record.job_id} was cancelled already, by cli:{getpass.getuser()}\n"
    code, out, _ = run(capsys, "jobs", "stop", jobs[JobStatus.SUCCEEDED].job_id, "--table", store.table)
    assert code == 0 and out == f"job {jobs[JobStatus.SUCCEEDED].job_id} has SUCCEEDED already: nothing to stop\n"


def test_stop_a_running_local_job_stops_its_processing_job(store, s3, bucket, local_env, capsys):
    model = paced_model_bytes(2.0)
    s3.put_object(Bucket=bucket, Key="models/paced.joblib", Body=model)
    upload_dataset(s3, f"s3://{bucket}/in/", demo_dataset((500, 500)))
    job = sample_job_spec(
        "slow-000000000001",
        bucket,
        model_uri=f"s3://{bucket}/models/paced.joblib",
        model_sha256=hashlib.sha256(model).hexdigest(),
        input_prefix=f"s3://{bucket}/in/",
        output_prefix=f"s3://{bucket}/out/",
        instance_count=1,
    )
    backend = LocalBackend(root=local_env)
    record = submit_job(prepare_job(job, store, S3ObjectStore(s3)).job_id, store, backend)
    name = record.current_processing_job
    runner = int((backend.job_dir(name) / "runner.pid").read_text())
    deadline = time.monotonic() + 60
    while store.get_job(record.job_id).status is not JobStatus.RUNNING:
        assert time.monotonic() < deadline, "the processing script never marked the job running"
        time.sleep(0.1)

    code, out, _ = run(capsys, "jobs", "stop", record.job_id, "--table", store.table)

    assert code == 0
    assert out.splitlines() == [
        f"job {record.job_id} is CANCELLED (it was RUNNING)",
        f"stopped by cli:{getpass.getuser()}; processing job {name} was asked to stop",
    ]
    stopped = store.get_job(record.job_id)
    assert stopped.status is JobStatus.CANCELLED and stopped.stopped_by == f"cli:{getpass.getuser()}"
    assert (backend.job_dir(name) / "stop_requested").exists()
    while pid_alive(runner):
        assert time.monotonic() < deadline, "the local runner outlived the stop"
        time.sleep(0.1)
    assert backend.describe(name).state is ProcessingState.STOPPED


def test_watch_piped_prints_a_line_per_change_and_exits_1_on_failure(store, capsys):
    record = seed(store, "nightly-000000000007", JobStatus.FAILED, done=6, failed=1, max_attempts=1)

    code, out, _ = run(capsys, "jobs", "watch", record.job_id, "--table", store.table)

    assert code == 1
    counts = r"5/6 \(1 failed\) files, 5,000 rows, [\d,]+ rows/s, [\d.]+ s"
    lines = out.splitlines()
    assert re.fullmatch(rf"{record.job_id} FAILED: {counts}", lines[0])  # the log line of each change
    assert re.fullmatch(rf"{record.job_id}  FAILED  {counts}", lines[1])  # how it ended
    assert lines[2:] == [
        f"{KEYS[5]}: feature column 'amount' is missing",
        f"shardflow jobs show {record.job_id}: every file and its error",
    ]
    code, out, _ = run(capsys, "jobs", "watch", record.job_id, "--json", "--table", store.table)
    assert code == 1 and [json.loads(line)["status"] for line in out.splitlines()] == ["FAILED"]


# -- in a real terminal ---------------------------------------------------------------------------

_SGR = re.compile(r"\x1b\[[0-9;]*m")


class Terminal:
    """A 120 x 30 tmux pane running one command, on a tmux server of its own (its socket in the
    test's folder)."""

    def __init__(self, command: list[str], env: dict[str, str], tmp: Path) -> None:
        self.socket, self.rc = tmp / "tmux.sock", tmp / "rc"
        # The shell traps Ctrl-C (rather than ignoring it, which the command would inherit) to
        # outlive it and write the command's exit code.
        line = f"trap : INT; {shlex.join(command)}; echo $? > {shlex.quote(str(self.rc))}; sleep 600"
        self.tmux("new-session", "-d", "-x", "120", "-y", "30", "sh", "-c", line, env=env)

    def tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        base = ["tmux", "-S", str(self.socket), "-f", "/dev/null"]
        return subprocess.run([*base, *args], env=env, check=True, capture_output=True, text=True).stdout

    def screen(self, colours: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if colours else []))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in (screen := self.screen()):
            assert time.monotonic() < deadline, f"{text!r} never appeared; the screen:\n{screen}"
            time.sleep(0.1)
        return screen

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while not self.rc.exists() or not self.rc.read_text().strip():
            assert time.monotonic() < deadline, f"the command did not exit; the screen:\n{self.screen()}"
            time.sleep(0.1)
        return int(self.rc.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True)


def bar_fraction(screen: str) -> float:
    """The share of the bar drawn in its done colour, on the line that has one."""
    line = next(line for line in screen.splitlines() if "━" in line)
    runs = [run for run in _SGR.split(line) if run and set(run) <= set("━╸╺")]
    done, rest = runs[0], "".join(runs[1:])
    return len(done.replace("╸", "")) / (len(done) + len(rest))


@pytest.fixture
def terminal_for(store, tmp_path) -> Iterator:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    opened: list[Terminal] = []

    def open_watch(job_id: str) -> Terminal:
        # A colour terminal as most people have, whatever this test runs under.
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        command = [str(SHARDFLOW), "jobs", "watch", job_id, "--interval", "0.2", "--table", store.table]
        folder = tmp_path / f"terminal-{len(opened)}"
        folder.mkdir()
        opened.append(Terminal(command, env, folder))
        return opened[-1]

    yield open_watch
    for terminal in opened:
        terminal.close()


def test_watch_in_a_terminal_draws_the_bar_until_the_job_succeeds(store, terminal_for):
    record = seed(store, "live-000000000001", JobStatus.RUNNING)
    name = record.current_processing_job

    pane = terminal_for(record.job_id)
    screen = pane.wait_for("0/6 files")
    assert f"{record.job_id}  RUNNING  attempt 1/3  {name}" in screen
    for done in (1, 2, 3):
        store.record_file_results(record.job_id, [FileRecord(KEYS[done - 1], 100, FileStatus.SUCCEEDED, rows=ROWS)])
        store.heartbeat(record.job_id, 1, files=1, rows=ROWS)
        screen = pane.wait_for(f"{done}/6 files")
    assert re.search(r"3/6 files\s+50%\s+3,000 rows\s+[\d,]+ rows/s", screen)
    assert bar_fraction(pane.screen(colours=True)) == pytest.approx(0.5, abs=0.03)

    store.heartbeat(record.job_id, 1, files=3, rows=3 * ROWS)
    counts = {"files_succeeded": 6, "files_failed": 0, "rows": 6 * ROWS}
    store.transition(store.get_job(record.job_id), JobStatus.SUCCEEDED, **counts)

    assert pane.exit_code() == 0
    screen = pane.screen()
    assert f"{record.job_id}  SUCCEEDED  attempt 1/3" in screen
    assert re.search(rf"{record.job_id}  SUCCEEDED  6/6 files, 6,000 rows, [\d,]+ rows/s", screen)
    assert bar_fraction(pane.screen(colours=True)) == 1.0
    assert "Traceback" not in screen


def test_watch_in_a_terminal_exits_1_when_the_job_fails(store, terminal_for):
    record = seed(store, "live-000000000002", JobStatus.RUNNING, done=2, max_attempts=1)

    pane = terminal_for(record.job_id)
    pane.wait_for("2/6 files")
    store.transition(
        store.get_job(record.job_id),
        JobStatus.FAILED,
        error=f"processing job {record.current_processing_job} Failed: out of memory",
        files_succeeded=2,
        rows=2 * ROWS,
    )

    assert pane.exit_code() == 1
    screen = pane.screen()
    assert f"{record.job_id}  FAILED  2/6 files, 2,000 rows" in screen
    assert f"processing job {record.current_processing_job} Failed: out of memory" in screen
    assert f"shardflow jobs show {record.job_id}: every file and its error" in screen


def test_ctrl_c_stops_watching_with_130_and_no_traceback(store, terminal_for):
    record = seed(store, "live-000000000003", JobStatus.RUNNING, done=1)

    pane = terminal_for(record.job_id)
    pane.wait_for("1/6 files")
    pane.tmux("send-keys", "C-c")

    assert pane.exit_code() == 130
    screen = pane.screen()
    assert f"stopped watching {record.job_id}; the job goes on" in screen and "Traceback" not in screen
    assert store.get_job(record.job_id).status is JobStatus.RUNNING
