"""The processing script, run the way a container runs it: a subprocess on real files."""

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, train_demo_model

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "processing_scripts" / "batch_predict.py"


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


def run_script(job, *extra: str, sha: str | None = None) -> subprocess.CompletedProcess:
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
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})


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
    assert result.returncode == 0, result.stderr
    manifest = json.loads((job["outputs"] / "_manifests" / "local-algo-1.json").read_text())
    failed = {f["input"]: f["error"] for f in manifest["failed"]}
    assert set(failed) == {"broken.parquet", "no-f3.parquet"}
    assert "no-f3.parquet: missing column(s) f3" in failed["no-f3.parquet"]
    assert sorted(e["input"] for e in manifest["files"]) == sorted(job["tables"])
    assert not (job["outputs"] / "no-f3.parquet").exists()


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

    def faults(mode: str) -> int:
        command = [sys.executable, "-c", _CHURN, str(SCRIPT.parent), mode, str(source), str(tmp_path / "copy.parquet")]
        return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])

    # Arrow's own default hands each batch's memory back to the kernel, which zeroes it again.
    returned, kept = faults("plain"), faults("script")
    assert kept * 5 < returned, (kept, returned)


def test_a_run_without_a_job_record_does_not_import_boto3():
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import batch_predict; print('boto3' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe, str(SCRIPT.parent)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False"]
