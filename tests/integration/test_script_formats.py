"""The processing script on text inputs, CSV outputs, chosen columns, multiclass models and empty
files: real files in, a subprocess as the container runs it, outputs compared to the model's own."""

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, train_demo_model

SCRIPT = Path(__file__).resolve().parents[2] / "processing_scripts" / "batch_predict.py"


def _run(inputs: Path, outputs: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    command = [sys.executable, str(SCRIPT), "--input-dir", str(inputs), "--output-dir", str(outputs)]
    command += ["--model-path", str(model), "--model-sha256", sha, "--workers", "2", "--batch-rows", "700", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return demo_dataset((2_500, 0, 4_100))


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory, tables: dict[str, pa.Table]) -> Path:
    """A logistic regression over three string classes: it decides on its decision function, so
    the script must run ``predict`` and ``predict_proba`` both."""
    frame = pa.concat_tables(tables.values()).select(DEMO_FEATURES).to_pandas()
    labels = np.array(["low", "mid", "high"])[np.digitize(frame["f0"] + frame["f1"], [-0.5, 0.5])]
    path = tmp_path_factory.mktemp("model") / "multiclass.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(frame, labels), path)
    return path


def test_gzipped_csv_in_csv_out_with_chosen_columns_and_one_probability_per_class(tmp_path, tables, multiclass):
    inputs = tmp_path / "in"
    for relative, table in tables.items():
        target = inputs / relative.replace(".parquet", ".csv.gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(target, "wb") as handle:
            pacsv.write_csv(table, handle)
    args = ["--input-format", "csv.gz", "--output-format", "csv", "--passthrough", "id", "--probability-per-class"]
    result = _run(inputs, tmp_path / "out", multiclass, *args)
    assert result.returncode == 0, result.stderr
    model = joblib.load(multiclass)
    for relative, table in tables.items():
        output = pacsv.read_csv(tmp_path / "out" / relative.replace(".parquet", ".csv"))
        names = ["id", "prediction", *(f"probability_{c}" for c in model.classes_)]
        assert output.column_names == names
        if table.num_rows == 0:
            continue
        # The reference reads the features from the same text, as float64.
        written = pacsv.read_csv(inputs / relative.replace(".parquet", ".csv.gz"))
        features = written.select(DEMO_FEATURES).to_pandas()
        assert output.column("id").to_pylist() == table.column("id").to_pylist()
        assert output.column("prediction").to_pylist() == list(model.predict(features))
        proba = model.predict_proba(features)
        for index, label in enumerate(model.classes_):
            np.testing.assert_allclose(output.column(f"probability_{label}").to_numpy(), proba[:, index], rtol=1e-12)


def test_json_lines_and_an_empty_parquet_file_get_outputs_of_the_same_name(tmp_path, tables):
    model = tmp_path / "model.joblib"
    model.write_bytes(train_demo_model())
    inputs = tmp_path / "in"
    for relative, table in tables.items():
        target = inputs / relative.replace(".parquet", ".jsonl")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    result = _run(inputs, tmp_path / "out", model, "--input-format", "jsonl")
    assert result.returncode == 0, result.stderr
    loaded = joblib.load(model)
    for relative, table in tables.items():
        output = pq.read_table(tmp_path / "out" / relative)
        if table.num_rows == 0:  # an empty JSON Lines file cannot say what columns it has
            assert (output.num_rows, output.column_names) == (0, ["prediction", "probability"])
            continue
        assert output.column_names == [*table.column_names, "prediction", "probability"]
        features = pd.DataFrame({c: output.column(c).to_numpy() for c in DEMO_FEATURES})
        np.testing.assert_array_equal(output.column("prediction").to_numpy(), loaded.predict(features))

    parquet_in, parquet_out = tmp_path / "pq-in", tmp_path / "pq-out"
    parquet_in.mkdir()
    empty = next(t for t in tables.values() if t.num_rows == 0)
    pq.write_table(empty, parquet_in / "empty.parquet")
    result = _run(parquet_in, parquet_out, model)
    assert result.returncode == 0, result.stderr
    output = pq.read_table(parquet_out / "empty.parquet")
    assert output.num_rows == 0
    assert output.column_names == [*empty.column_names, "prediction", "probability"]
    manifest = json.loads((parquet_out / "_manifests" / "local-algo-1.json").read_text())
    assert [(f["input"], f["rows"]) for f in manifest["files"]] == [("empty.parquet", 0)]


def test_bad_input_an_empty_inputs_output_has_the_jobs_one_schema(tmp_path, tables):
    """XGBoost's probabilities are float32: the output of an input without rows (where the model
    is not run on data) must say float32 too, so the prefix reads as one dataset."""
    import pyarrow.dataset as ds

    model = tmp_path / "model.joblib"
    model.write_bytes(train_demo_model())
    inputs = tmp_path / "in"
    for relative, table in tables.items():
        (inputs / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, inputs / relative)
    result = _run(inputs, tmp_path / "out", model)
    assert result.returncode == 0, result.stderr

    dataset = ds.dataset(tmp_path / "out", format="parquet")  # _manifests/ is skipped, as a '_' folder
    assert dataset.schema.field("probability").type == pa.float32()
    assert {pq.read_schema(path) for path in dataset.files} == {dataset.schema}
    assert dataset.to_table().num_rows == sum(t.num_rows for t in tables.values())
    assert sorted(Path(path).relative_to(tmp_path / "out").as_posix() for path in dataset.files) == sorted(tables)
