"""What the model is given: the matrix or the DataFrame path, chosen from the model and the
schema; DataFrames typed as pandas' own readers type the same file, batch by batch."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from support.mixed import PIPELINE_FEATURES, mixed_frame, read, train_pipeline, write

from shardflow.core.model_input import frame_of, needs_frame, text_column_types, wants_frame
from shardflow.processing.predictor import FRAME, Predictor
from shardflow.processing.tabular import open_batches
from shardflow.processing.worker import SlotArena

COLUMNS = [*PIPELINE_FEATURES, "empty", "maybe", "created_at"]


def _file(tmp_path: Path, input_format: str) -> Path:
    frame = mixed_frame(1_000, 3, unseen=True, categories=input_format == "parquet")
    frame["empty"] = np.nan  # a column with no value at all
    maybe = pd.Series(frame["active"], dtype=object)
    maybe[::7] = None
    frame["maybe"] = maybe  # booleans with gaps
    frame["created_at"] = frame["signup"].dt.tz_localize("UTC")  # a name pandas.read_json takes for a date
    return write(frame, tmp_path / f"mixed.{input_format}", input_format, row_group_size=300)


@pytest.mark.parametrize("input_format", ["parquet", "csv", "jsonl"])
def test_batches_become_the_dataframe_pandas_reads_from_the_same_file(tmp_path, input_format):
    path = _file(tmp_path, input_format)
    _, batches = open_batches(path, input_format, 256, lambda schema: text_column_types(schema, COLUMNS))
    frames = [frame_of(batch.select(COLUMNS), input_format) for batch in batches]
    assert len(frames) > 3
    got = pd.concat(frames, ignore_index=True)
    expected = read(path, input_format, precise=True)[COLUMNS]
    assert dict(got.dtypes) == dict(expected.dtypes)
    # Category columns: each batch has its file's categories in its own order; the values match.
    pd.testing.assert_frame_equal(got, expected, check_categorical=False)
    if input_format == "parquet":
        assert str(got["age"].dtype) == "Int64" and str(got["signup_local"].dtype).endswith("Europe/Paris]")
    if input_format == "csv":  # pandas.read_csv parses no dates: the file's own text
        assert got["signup"].iloc[0] == path.read_text().splitlines()[1].split(",")[6]


def test_the_dataframe_path_is_chosen_from_the_model_and_the_schema():
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0] * 5, "b": ["u", "v", "u", "w"] * 5})
    y = np.array([0, 1] * 10)
    columns = ColumnTransformer([("onehot", OneHotEncoder(), ["b"]), ("scale", StandardScaler(), ["a"])])
    pipeline = make_pipeline(columns, LogisticRegression()).fit(x, y)
    numbers_only = LogisticRegression().fit(x[["a"]], y)
    categorical = xgboost.XGBClassifier(n_estimators=2, enable_categorical=True).fit(x.astype({"b": "category"}), y)
    plain_xgboost = xgboost.XGBClassifier(n_estimators=2).fit(x[["a"]], y)
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression()), {"logisticregression__C": [1.0]}, cv=2)

    assert wants_frame(pipeline) and wants_frame(columns.fit(x)) and wants_frame(categorical)
    assert wants_frame(search.fit(x[["a"]], y))
    assert not wants_frame(numbers_only) and not wants_frame(plain_xgboost)
    numeric = pa.schema([("a", pa.float32()), ("b", pa.int64()), ("c", pa.bool_()), ("d", pa.null())])
    assert not needs_frame(numbers_only, numeric, ["a", "b", "c", "d"])
    assert needs_frame(pipeline, numeric, ["a", "b"])  # a Pipeline gets a DataFrame even of numbers
    for kind in (pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string()), pa.timestamp("us")):
        assert needs_frame(numbers_only, numeric.append(pa.field("e", kind)), ["a", "e"])
    # The matrix path keeps float32 as float32; any other number becomes float64.
    assert Predictor(numbers_only, None, None).check_columns(numeric, "f") == "<f4"
    assert Predictor(numbers_only, None, None).check_columns(pa.schema([("a", pa.int32())]), "f") == "<f8"
    mixed = pa.schema([("a", pa.float64()), ("b", pa.string())])
    assert Predictor(pipeline, None, None).check_columns(mixed, "f") == FRAME


def test_a_frame_batch_goes_through_shared_memory_or_stays_with_its_owner():
    arena = SlotArena(seats=2, slot_bytes=1 << 20, slots=2)
    batch = pa.RecordBatch.from_pandas(mixed_frame(500, 4)[PIPELINE_FEATURES], preserve_index=False)
    assert arena.put_batch(1, 1, batch)
    assert arena.get_batch(1, 1).equals(batch)
    assert not arena.put_batch(0, 0, pa.RecordBatch.from_pydict({"s": ["x" * 1000] * 2_000}))
    assert arena.get_batch(1, 1).equals(batch)  # a refused batch wrote nothing


def test_a_pipeline_classifier_transforms_each_batch_once_for_both_its_outputs():
    frame = mixed_frame(400, 5, unseen=True)
    model = train_pipeline(mixed_frame(400, 1))
    predictor = Predictor(model, None, None)
    assert (predictor.rule, predictor.estimator) == ("both", model.named_steps["classify"])
    batch = pa.RecordBatch.from_pandas(frame[PIPELINE_FEATURES], preserve_index=False)
    proba, prediction = predictor.infer(predictor.model_input(batch))
    expected = frame[PIPELINE_FEATURES]
    assert proba.tobytes() == model.predict_proba(expected).tobytes()
    assert prediction.tolist() == model.predict(expected).tolist()
