"""Models that take a DataFrame, through the processing script as the container runs it: a
scikit-learn Pipeline on strings, categories, nullable integers, floats with NaN, booleans and
timestamps, and XGBoost on pandas categories, each on Parquet, CSV and JSON Lines files. Every
row's prediction must equal ``model.predict(pandas.read_<format>(file)[features])``, bit for bit."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.mixed import PIPELINE_FEATURES, mixed_frame, read, train_pipeline, train_xgboost, write, xgboost_features

SCRIPT = Path(__file__).resolve().parents[2] / "processing_scripts" / "batch_predict.py"
SUFFIX = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
# Uneven files; the Parquet ones in row groups of 400 rows, so batches are cut at 400 as well as 700.
ROWS = {"a/part-0": 1_500, "a/part-1": 2_300, "b/part-2": 900}


def _run(inputs: Path, outputs: Path, model: Path, input_format: str) -> subprocess.CompletedProcess:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    command = [sys.executable, str(SCRIPT), "--input-dir", str(inputs), "--output-dir", str(outputs)]
    command += ["--model-path", str(model), "--model-sha256", sha, "--workers", "2", "--batch-rows", "700"]
    command += ["--input-format", input_format]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env={"PATH": "/usr/bin:/bin"})


def _inputs(folder: Path, input_format: str, categories: bool, unseen: bool) -> dict[str, Path]:
    return {
        name: write(
            mixed_frame(rows, seed, unseen=unseen, categories=categories),
            folder / (name + SUFFIX[input_format]),
            input_format,
            row_group_size=400,
        )
        for seed, (name, rows) in enumerate(ROWS.items(), start=2)
    }


def _train(folder: Path, input_format: str, trainer, categories: bool) -> tuple[Path, object]:
    """Train as a data team does: on the training file as pandas reads it."""
    training = write(
        mixed_frame(3_000, 1, categories=categories), folder / ("train" + SUFFIX[input_format]), input_format
    )
    model = trainer(read(training, input_format))
    path = folder / "model.joblib"
    joblib.dump(model, path)
    return path, model


def _assert_outputs_equal_pandas(out: Path, files: dict[str, Path], input_format: str, model, features: list[str]):
    for name, path in files.items():
        output = pq.read_table(out / f"{name}.parquet")
        expected = read(path, input_format)
        assert output.column("id").to_pylist() == expected["id"].tolist()
        np.testing.assert_array_equal(output.column("prediction").to_numpy(), model.predict(expected[features]))
        # Bit for bit: the same DataFrame makes the same floats. (pandas.read_json's default float
        # parser is not exact; with precise_float it reads the numbers Arrow reads.)
        exact = read(path, input_format, precise=True)
        probability = model.predict_proba(exact[features])[:, 1]
        assert output.column("probability").to_numpy().tobytes() == probability.astype(np.float64).tobytes()


@pytest.mark.parametrize("input_format", ["parquet", "csv", "jsonl"])
def test_a_pipeline_on_mixed_types_predicts_what_it_predicts_on_pandas_own_reading(tmp_path, input_format):
    path, model = _train(tmp_path, input_format, train_pipeline, categories=False)
    files = _inputs(tmp_path / "in", input_format, categories=False, unseen=True)
    result = _run(tmp_path / "in", tmp_path / "out", path, input_format)
    assert result.returncode == 0, result.stderr
    _assert_outputs_equal_pandas(tmp_path / "out", files, input_format, model, PIPELINE_FEATURES)
    output = pq.read_table(tmp_path / "out" / "a/part-0.parquet")
    # The columns pass through with their own types; CSV's dates are the file's text, as pandas reads them.
    assert output.column_names == [*mixed_frame(1, 0).columns, "prediction", "probability"]
    assert "XX" in output.column("country").to_pylist()  # a country the model never saw


@pytest.mark.parametrize("input_format", ["parquet", "csv", "jsonl"])
def test_xgboost_on_categories_predicts_what_it_predicts_on_pandas_own_reading(tmp_path, input_format):
    path, model = _train(tmp_path, input_format, train_xgboost, categories=True)
    files = _inputs(tmp_path / "in", input_format, categories=True, unseen=False)
    features = xgboost_features(read(next(iter(files.values())), input_format))
    if input_format == "parquet":  # pandas categories written as dictionary columns come back as categories
        assert features == ["country", "plan", "age", "score"]
        assert pq.read_schema(files["a/part-0"]).field("country").type.value_type is not None
    result = _run(tmp_path / "in", tmp_path / "out", path, input_format)
    assert result.returncode == 0, result.stderr
    _assert_outputs_equal_pandas(tmp_path / "out", files, input_format, model, features)


def test_one_big_parquet_file_of_strings_is_shared_between_workers(tmp_path):
    """The DataFrame path keeps every core busy on one big file: the owner offers its batches (the
    feature columns through shared memory) and the other worker predicts some."""
    path, model = _train(tmp_path, "parquet", train_pipeline, categories=False)
    big = write(
        mixed_frame(30_000, 7, unseen=True), tmp_path / "in" / "big.parquet", "parquet", row_group_size=5_000
    )  # 8 batches a group
    result = _run(tmp_path / "in", tmp_path / "out", path, "parquet")
    assert result.returncode == 0, result.stderr
    helped = re.search(
        r"big\.parquet: 30000 rows in [0-9.]+ s \((\d+) of (\d+) batches predicted by other", result.stderr
    )
    assert helped and int(helped.group(2)) == 48 and int(helped.group(1)) > 0, result.stderr
    _assert_outputs_equal_pandas(tmp_path / "out", {"big": big}, "parquet", model, PIPELINE_FEATURES)
    manifest = json.loads((tmp_path / "out" / "_manifests" / "local-algo-1.json").read_text())
    assert [(f["input"], f["rows"]) for f in manifest["files"]] == [("big.parquet", 30_000)]


def test_a_column_the_model_cannot_take_fails_the_file_as_the_models_error(tmp_path):
    """XGBoost refuses text: a CSV file's strings fail the file, with XGBoost's own words."""
    path, _ = _train(tmp_path, "parquet", train_xgboost, categories=True)
    frame = mixed_frame(500, 3)
    write(frame, tmp_path / "in" / "strings.csv", "csv")
    result = _run(tmp_path / "in", tmp_path / "out", path, "csv")
    assert result.returncode != 0
    manifest = json.loads((tmp_path / "out" / "_manifests" / "local-algo-1.json").read_text())
    [failed] = manifest["failed"]
    assert failed["input"] == "strings.csv" and failed["kind"] == "model"
    assert "country" in failed["error"], failed["error"]
    assert pd.isna(frame["country"]).any()  # the file had gaps as well as strings
