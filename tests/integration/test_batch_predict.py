"""The processing script, run the way a container runs it: a subprocess on real files."""

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardflow.contract import ExitCode
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, train_demo_model

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "processing_scripts" / "batch_predict.py"
#: Lets the script unpickle the test models of tests/support.
TESTS_ON_PATH = {"PYTHONPATH": str(REPO / "tests")}


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return train_demo_model()


@pytest.fixture
def job(tmp_path, model_bytes):
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    tables = demo_dataset((3_000, 500, 7_000))
    for relative, table in tables.items():
        (inputs / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, inputs / relative)
    model_path = tmp_path / "model.joblib"
    model_path.write_bytes(model_bytes)
    return {
        "inputs": inputs,
        "outputs": outputs,
        "model": model_path,
        "tables": tables,
        "sha": hashlib.sha256(model_bytes).hexdigest(),
    }


def run_script(job, *extra: str, sha: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(SCRIPT),
        "--input-dir",
        str(job["inputs"]),
        "--output-dir",
        str(job["outputs"]),
        "--model-path",
        str(job["model"]),
        "--model-sha256",
        sha or job["sha"],
        "--workers",
        "2",
        "--batch-rows",
        "1000",
        *extra,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", **(env or {})}
    )


def test_every_row_gets_the_models_prediction_in_an_output_of_the_same_name(job):
    result = run_script(job)
    assert result.returncode == 0, result.stderr
    model = joblib.load(io.BytesIO(job["model"].read_bytes()))
    for relative, table in job["tables"].items():
        output = pq.read_table(job["outputs"] / relative)
        assert output.column_names == [*table.column_names, "prediction", "probability"]
        assert output.column("id").to_pylist() == table.column("id").to_pylist()
        features = table.select(DEMO_FEATURES).to_pandas()
        np.testing.assert_array_equal(output.column("prediction").to_numpy(), model.predict(features))
        np.testing.assert_allclose(
            output.column("probability").to_numpy(), model.predict_proba(features)[:, 1], rtol=1e-6
        )
    assert "part-0001.parquet: 500 rows" in result.stderr


def test_the_manifest_lists_each_output_with_rows_and_sha256(job):
    assert run_script(job).returncode == 0
    manifest = json.loads((job["outputs"] / "_manifests" / "local-algo-1.json").read_text())
    assert sorted(e["input"] for e in manifest["files"]) == sorted(job["tables"])
    for entry in manifest["files"]:
        written = (job["outputs"] / entry["output"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(written).hexdigest()
        assert entry["rows"] == job["tables"][entry["input"]].num_rows
    assert manifest["failed"] == []
    assert not list(job["outputs"].rglob("*.tmp-*"))


def test_a_model_with_another_sha256_is_refused_before_it_is_loaded(job):
    result = run_script(job, sha="f" * 64)
    assert result.returncode == 2
    assert f"has sha256 {job['sha']} but the spec expects {'f' * 64}" in result.stderr
    assert "it was not loaded" in result.stderr
    assert not job["outputs"].exists()


def test_a_bad_file_is_reported_and_the_others_still_predicted(job):
    (job["inputs"] / "broken.parquet").write_bytes(b"not parquet at all")
    table = job["tables"]["part-0000.parquet"].drop_columns(["f3"])
    pq.write_table(table, job["inputs"] / "no-f3.parquet")
    result = run_script(job)
    # Without a job record, the exit code is the only report: some files failed.
    assert result.returncode == ExitCode.SOME_FILES_FAILED == 4, result.stderr
    manifest = json.loads((job["outputs"] / "_manifests" / "local-algo-1.json").read_text())
    failed = {f["input"]: f["error"] for f in manifest["failed"]}
    assert set(failed) == {"broken.parquet", "no-f3.parquet"}
    assert "no-f3.parquet: missing column(s) f3" in failed["no-f3.parquet"]
    assert {f["kind"] for f in manifest["failed"]} == {"input"}  # never worth another attempt
    assert sorted(e["input"] for e in manifest["files"]) == sorted(job["tables"])
    assert not (job["outputs"] / "no-f3.parquet").exists()
    assert "2 of 5 files failed: exit code 4 (some files failed)" in result.stderr


def test_exit_code_5_when_every_file_failed_and_the_manifest_still_says_why(job):
    for relative in job["tables"]:
        (job["inputs"] / relative).write_bytes(b"PAR1 truncated")
    result = run_script(job)
    assert result.returncode == ExitCode.ALL_FILES_FAILED == 5, result.stderr
    manifest = json.loads((job["outputs"] / "_manifests" / "local-algo-1.json").read_text())
    assert manifest["files"] == []
    assert sorted(f["input"] for f in manifest["failed"]) == sorted(job["tables"])
    assert {f["kind"] for f in manifest["failed"]} == {"input"}
    assert "3 of 3 files failed: exit code 5 (every file failed)" in result.stderr


@pytest.mark.parametrize("folder", ["missing", "without-inputs"])
def test_exit_code_3_when_there_is_no_input(job, tmp_path, folder):
    job["inputs"] = tmp_path / folder
    if folder == "without-inputs":
        job["inputs"].mkdir()
        (job["inputs"] / "README.txt").write_text("not an input")
    result = run_script(job)
    assert result.returncode == ExitCode.NO_INPUT == 3, result.stderr
    words = "does not exist" if folder == "missing" else "no parquet files under"
    assert f"{job['inputs']}" in result.stderr and words in result.stderr
    manifest = json.loads((job["outputs"] / "_manifests" / "local-algo-1.json").read_text())
    assert (manifest["files"], manifest["failed"]) == ([], [])


@pytest.mark.parametrize(
    ("artifact", "words"), [({"weights": [0.1, 0.2]}, "is a dict, not a model"), (b"garbage", "cannot be used")]
)
def test_exit_code_2_when_the_artifact_is_not_a_model(job, artifact, words):
    if isinstance(artifact, bytes):
        job["model"].write_bytes(artifact)
    else:
        joblib.dump(artifact, job["model"])
    result = run_script(job, sha=hashlib.sha256(job["model"].read_bytes()).hexdigest())
    assert result.returncode == ExitCode.MODEL_REFUSED == 2, result.stderr
    assert f"model {job['model']}" in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr
    assert not job["outputs"].exists()


def test_bad_input_a_model_whose_predict_raises_fails_every_file_as_a_model_error(job):
    from support.models import raising_model_bytes

    job["model"].write_bytes(raising_model_bytes())
    result = run_script(job, sha=hashlib.sha256(job["model"].read_bytes()).hexdigest(), env=TESTS_ON_PATH)
    assert result.returncode == ExitCode.ALL_FILES_FAILED, result.stderr
    manifest = json.loads((job["outputs"] / "_manifests" / "local-algo-1.json").read_text())
    assert {f["kind"] for f in manifest["failed"]} == {"model"}
    assert all("ValueError: this model refuses every row" in f["error"] for f in manifest["failed"])
    assert not list(job["outputs"].glob("*.parquet"))


def test_hostile_input_file_names_are_refused_and_nothing_lands_outside_the_output_folder(job, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    body = (job["inputs"] / "part-0000.parquet").read_bytes()
    hostile = ["..\\outside\\pwned.parquet", "bell\x07.parquet", "esc\x1b[2J.parquet"]
    for name in hostile:
        (job["inputs"] / name).write_bytes(body)
    result = run_script(job)
    assert result.returncode == ExitCode.SOME_FILES_FAILED, result.stderr
    manifest = json.loads((job["outputs"] / "_manifests" / "local-algo-1.json").read_text())
    failed = {f["input"]: f for f in manifest["failed"]}
    assert sorted(failed) == sorted(hostile)
    assert all(f["kind"] == "input" and "is refused" in f["error"] for f in failed.values())
    assert sorted(e["input"] for e in manifest["files"]) == sorted(job["tables"])
    written = sorted(p.relative_to(job["outputs"]).as_posix() for p in job["outputs"].rglob("*.parquet"))
    assert written == sorted(job["tables"])
    assert list(outside.iterdir()) == []


# Copies a Parquet file batch by batch, five times, pausing between batches as long as a model
# would take (longer than the allocator's default purge delay, 10 ms), and prints how many pages
# the process faulted in after the first copy.
_CHURN = """
import resource, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "script":
    import batch_predict  # noqa: F401  (what the container runs; Arrow is loaded after it)
import pyarrow as pa
import pyarrow.parquet as pq

def copy(source, target):
    reader = pq.ParquetFile(source)
    with pq.ParquetWriter(target, reader.schema_arrow, use_dictionary=False) as writer:
        for batch in reader.iter_batches(batch_size=65_536):
            time.sleep(0.03)
            writer.write_table(pa.Table.from_batches([batch]))

copy(sys.argv[3], sys.argv[4])
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    copy(sys.argv[3], sys.argv[4])
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_the_script_keeps_freed_arrow_memory_for_the_next_batch(tmp_path):
    rng = np.random.default_rng(7)
    source = tmp_path / "wide.parquet"
    pq.write_table(pa.table({f"f{i}": rng.standard_normal(200_000).astype(np.float32) for i in range(40)}), source)

    # Arrow's default, whatever this process imported before (the script's module sets the variable).
    env = {name: value for name, value in os.environ.items() if name != "MIMALLOC_PURGE_DELAY"}

    def faults(mode: str) -> int:
        command = [sys.executable, "-c", _CHURN, str(SCRIPT.parent), mode, str(source), str(tmp_path / "copy.parquet")]
        return int(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout.split()[-1])

    # Arrow's own default hands each batch's memory back to the kernel, which zeroes it again.
    returned, kept = faults("plain"), faults("script")
    assert kept * 5 < returned, (kept, returned)


def test_a_run_without_a_job_record_does_not_import_boto3():
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import batch_predict; print('boto3' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe, str(SCRIPT.parent)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False"]
