"""The processing script's workers for real: a big file spread over every worker, and workers
killed (SIGKILL, from this test, by PID) in the middle of a file."""

import hashlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.models import PacedModel

from shardflow.contract import ExitCode
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, train_demo_model

SCRIPT = Path(__file__).resolve().parents[2] / "processing_scripts" / "batch_predict.py"
STARTED = re.compile(r"(\S+): started in worker (\d+)")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.joblib"
    path.write_bytes(train_demo_model())
    return path


def _write(folder: Path, tables: dict[str, pa.Table]) -> None:
    for relative, table in tables.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / relative, row_group_size=20_000)


def _kill_owner(of: str, times: int) -> Callable[[str, int, list[int]], None]:
    """SIGKILL the worker that starts the file ``of``, ``times`` times."""

    def react(line: str, script: int, killed: list[int]) -> None:
        started = STARTED.search(line)
        if started and started.group(1) == of and len(killed) < times:
            os.kill(int(started.group(2)), signal.SIGKILL)
            killed.append(int(started.group(2)))

    return react


def _kill_helper(after: float) -> Callable[[str, int, list[int]], None]:
    """SIGKILL, ``after`` seconds into the only file, the worker that does not own it: it is then
    predicting one of the owner's batches."""

    def react(line: str, script: int, killed: list[int]) -> None:
        started = STARTED.search(line)
        if started and not killed:
            time.sleep(after)
            children = Path(f"/proc/{script}/task/{script}/children").read_text().split()
            helper = next(int(pid) for pid in children if pid != started.group(2))
            os.kill(helper, signal.SIGKILL)
            killed.append(helper)

    return react


def _run(
    inputs: Path,
    outputs: Path,
    model: Path,
    react: Callable[[str, int, list[int]], None] | None = None,
    times: int = 0,
    batch_rows: int = 500,
) -> tuple[int, str]:
    """Run the script; ``react`` sees each log line as it comes, and kills ``times`` workers."""
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    command = [sys.executable, str(SCRIPT), "--input-dir", str(inputs), "--output-dir", str(outputs)]
    command += ["--model-path", str(model), "--model-sha256", sha, "--workers", "2", "--batch-rows", str(batch_rows)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ["PYTHONPATH"]}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    killed: list[int] = []

    def follow() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if react is not None:
                react(line, process.pid, killed)

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join()
    assert len(killed) == times, "".join(lines)
    return code, "".join(lines)


def _check_predictions(output: Path, table: pa.Table, model: Path) -> None:
    written = pq.read_table(output)
    assert written.column("id").to_pylist() == table.column("id").to_pylist()
    expected = joblib.load(model).predict(table.select(DEMO_FEATURES).to_pandas())
    np.testing.assert_array_equal(written.column("prediction").to_numpy(), expected)


def test_one_big_file_is_predicted_by_every_worker_into_one_output(tmp_path, model):
    tables = {"big.parquet": demo_dataset((60_000,))["part-0000.parquet"]}
    _write(tmp_path / "in", tables)
    code, log = _run(tmp_path / "in", tmp_path / "out", model)
    assert code == 0, log
    helped = re.search(r"big\.parquet: 60000 rows in [0-9.]+ s \((\d+) of (\d+) batches predicted by other", log)
    assert helped and int(helped.group(2)) == 120 and int(helped.group(1)) > 0, log
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_manifests", "big.parquet"]
    _check_predictions(tmp_path / "out" / "big.parquet", tables["big.parquet"], model)


@pytest.fixture
def victim_job(tmp_path: Path) -> dict[str, pa.Table]:
    # The biggest file starts first; the small ones are done by the other worker meanwhile.
    tables = demo_dataset((250_000, 3_000, 2_000, 4_000))
    tables = {("victim.parquet" if t.num_rows == 250_000 else k): t for k, t in tables.items()}
    _write(tmp_path / "in", tables)
    return tables


def test_a_killed_worker_is_replaced_and_only_its_file_is_done_again(tmp_path, model, victim_job):
    code, log = _run(tmp_path / "in", tmp_path / "out", model, _kill_owner("victim.parquet", 1), times=1)
    assert code == 0, log
    assert "victim.parquet: worker" in log and "killed by SIGKILL" in log and "retrying it" in log
    manifest = json.loads((tmp_path / "out" / "_manifests" / "local-algo-1.json").read_text())
    assert manifest["failed"] == []
    assert sorted(f["input"] for f in manifest["files"]) == sorted(victim_job)
    for relative, table in victim_job.items():
        assert len(re.findall(rf"{re.escape(relative)}: started in worker", log)) == (
            2 if relative == "victim.parquet" else 1
        ), log
        _check_predictions(tmp_path / "out" / relative, table, model)
    assert not list((tmp_path / "out").rglob("*.tmp-*"))


def test_a_file_that_kills_two_workers_is_failed_with_the_reason_and_the_rest_goes_on(tmp_path, model, victim_job):
    code, log = _run(tmp_path / "in", tmp_path / "out", model, _kill_owner("victim.parquet", 2), times=2)
    assert code == ExitCode.SOME_FILES_FAILED, log  # no job record: the exit code says it
    manifest = json.loads((tmp_path / "out" / "_manifests" / "local-algo-1.json").read_text())
    failed = {f["input"]: f["error"] for f in manifest["failed"]}
    assert list(failed) == ["victim.parquet"]
    assert [f["kind"] for f in manifest["failed"]] == ["transient"]  # another attempt may pass
    assert "two workers died on this file" in failed["victim.parquet"]
    assert failed["victim.parquet"].count("killed by SIGKILL") == 2
    assert sorted(f["input"] for f in manifest["files"]) == sorted(set(victim_job) - {"victim.parquet"})
    assert not (tmp_path / "out" / "victim.parquet").exists()
    assert not list((tmp_path / "out").rglob("*.tmp-*"))


def test_a_helper_killed_mid_batch_only_costs_that_batch(tmp_path, model):
    paced = tmp_path / "paced.joblib"
    joblib.dump(PacedModel(joblib.load(model), seconds_per_call=0.05), paced)
    tables = {"big.parquet": demo_dataset((40_000,))["part-0000.parquet"]}
    _write(tmp_path / "in", tables)
    code, log = _run(tmp_path / "in", tmp_path / "out", paced, _kill_helper(after=0.4), times=1, batch_rows=1_000)
    assert code == 0, log
    assert "while predicting a batch of it; its owner predicts that batch again" in log
    assert len(STARTED.findall(log)) == 1, log  # the file was not started again
    manifest = json.loads((tmp_path / "out" / "_manifests" / "local-algo-1.json").read_text())
    assert [(f["input"], f["rows"]) for f in manifest["files"]] == [("big.parquet", 40_000)]
    _check_predictions(tmp_path / "out" / "big.parquet", tables["big.parquet"], model)


def test_the_pool_hands_work_on_while_a_worker_is_too_busy_to_read():
    """A helper's predictions for an owner that is predicting a batch of its own wait in the
    owner's outbox; the pool's loop goes on handing batches to the helper."""
    from shardflow.processing.messages import BatchAssigned, BatchPredicted, ClaimAnswer, Stop
    from shardflow.processing.pool import _Outbox

    pool_end, worker_end = multiprocessing.Pipe()
    outbox = _Outbox(pool_end)
    predictions = np.arange(1 << 20, dtype=np.float64)  # 8 MB: far more than the pipe holds
    accepted: list[bool] = []
    pool_loop = threading.Thread(
        target=lambda: accepted.extend(
            [outbox.put(BatchPredicted(0, 1, 0, (predictions,))), outbox.put(ClaimAnswer(1, 1, True))]
        )
    )
    pool_loop.start()
    pool_loop.join(timeout=2)  # while nothing reads the worker's end
    if pool_loop.is_alive():
        worker_end.close()  # lets the blocked send fail, so the test ends
        pytest.fail("the pool's loop waited for the worker to read")
    assert accepted == [True, True]
    predicted = worker_end.recv()
    assert (type(predicted), predicted.task_id, predicted.slot) == (BatchPredicted, 1, 0)
    np.testing.assert_array_equal(predicted.outputs[0], predictions)
    assert worker_end.recv() == ClaimAnswer(1, 1, True)

    worker_end.close()  # the worker is gone: sending fails, and the outbox says so
    deadline = time.monotonic() + 10
    while outbox.put(BatchAssigned(0, 1, 2, 3, "<f4")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not outbox.put(Stop())
    outbox.close()
    pool_end.close()
    assert not outbox.thread.is_alive()
