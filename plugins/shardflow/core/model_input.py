"""What a model is given: a float matrix (the fast path, for models of numbers) or a pandas DataFrame
typed the way pandas' own reader types the file, chosen from the model and the input's schema."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CSV_NA_VALUES", "frame_of", "is_number_type", "needs_frame", "text_column_types", "wants_frame"]

# Models that select and encode columns by name and type: they need a DataFrame, even when every
# feature happens to be a number.
_FRAME_MODELS = frozenset(
    {
        "sklearn.pipeline.Pipeline",
        "sklearn.compose._column_transformer.ColumnTransformer",
    }
)

#: The strings pandas.read_csv reads as missing (its documented ``na_values`` default).
CSV_NA_VALUES = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)

# Names that pandas.read_json turns into dates (its ``keep_default_dates``).
_JSON_DATE_NAMES = frozenset({"modified", "date", "datetime"})


def is_number_type(kind: pa.DataType) -> bool:
    """A column the fast path copies into a float matrix: a number, a boolean, or a column a text
    reader typed null because the block it looked at had no value."""
    checks = (pa.types.is_floating, pa.types.is_integer, pa.types.is_boolean, pa.types.is_null)
    return any(check(kind) for check in checks)


def _qualified_name(model: Any) -> str:
    kind = type(model)
    return f"{kind.__module__}.{kind.__qualname__}"


def _wrapped(model: Any) -> Iterator[Any]:
    """The model and the estimators a search or a calibration wraps, outermost first."""
    seen = 0
    while model is not None and seen < 8:
        yield model
        seen += 1
        model = getattr(model, "best_estimator_", None) or getattr(model, "estimator", None)


def wants_frame(model: Any) -> bool:
    """Whether the model itself needs a DataFrame: a scikit-learn ``Pipeline`` or
    ``ColumnTransformer`` (or a search over one), or XGBoost trained with ``enable_categorical``."""
    for inner in _wrapped(model):
        if _qualified_name(inner) in _FRAME_MODELS:
            return True
        params = inner.get_params(deep=False) if callable(getattr(inner, "get_params", None)) else {}
        if params.get("enable_categorical") or "c" in (_xgboost_feature_types(inner) or ()):
            return True
    return False


def _xgboost_feature_types(model: Any) -> list[str] | None:
    """An XGBoost model's feature types (``"c"`` for a category), however it was loaded."""
    get_booster = getattr(model, "get_booster", None)
    try:
        return get_booster().feature_types if callable(get_booster) else None
    except Exception:  # an XGBoost wrapper not fitted yet
        return None


def needs_frame(model: Any, schema: pa.Schema, features: Sequence[str]) -> bool:
    """The DataFrame path, for a model that wants one or for any feature that is not a number."""
    return wants_frame(model) or any(
        not is_number_type(schema.field(name).type) for name in features if name in schema.names
    )


def text_column_types(schema: pa.Schema, columns: Sequence[str]) -> dict[str, pa.DataType]:
    """The CSV columns to read again as text: pandas.read_csv parses no dates, so the DataFrame
    gets the strings of the file where Arrow's reader inferred a date, a time or a timestamp."""
    temporal = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_time)
    return {
        name: pa.string()
        for name in columns
        if name in schema.names and any(check(schema.field(name).type) for check in temporal)
    }


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_json_date_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(("_at", "_time")) or lower.startswith("timestamp") or lower in _JSON_DATE_NAMES


def _as_json_date(column: pd.Series) -> pd.Series:
    """pandas.read_json's dates of a column of strings: the first of its parses that takes every value."""
    import pandas as pd

    for form in (None, "ISO8601", "mixed"):
        try:
            return pd.to_datetime(column, errors="raise", format=form)
        except (ValueError, TypeError, OverflowError):
            continue
    return column


def frame_of(batch: pa.RecordBatch, input_format: str) -> pd.DataFrame:
    """The batch as the DataFrame pandas.read_parquet, read_csv or read_json(lines=True) gives for
    the same rows of the file: ``to_pandas`` with the file's pandas metadata (nullable integers,
    categories from dictionary columns, time zones), then the text readers' own rules: a boolean
    with gaps is an object column of ``NaN`` and booleans (CSV) or floats (JSON), a column with
    no value is float ``NaN``, CSV strings pandas takes for missing (``CSV_NA_VALUES``) are
    ``NaN``, and JSON strings in a column named like a date are dates."""
    import pandas as pd

    frame = pa.Table.from_batches([batch]).to_pandas()
    if input_format == "parquet":
        return frame
    for name in batch.schema.names:
        kind = batch.schema.field(name).type
        if pa.types.is_null(kind):
            frame[name] = np.full(len(frame), np.nan)
        elif pa.types.is_boolean(kind) and batch.column(name).null_count:
            values = batch.column(name).to_numpy(zero_copy_only=False)
            if input_format.startswith("csv"):
                frame[name] = pd.Series(np.where(pd.isna(values), np.nan, values), dtype=object, index=frame.index)
            else:
                frame[name] = np.where(pd.isna(values), np.nan, values).astype(np.float64)
        elif _is_text(kind) and input_format.startswith("csv"):
            frame[name] = frame[name].where(~frame[name].isin(CSV_NA_VALUES))
        elif _is_text(kind) and _is_json_date_name(name):
            frame[name] = _as_json_date(frame[name])
    return frame
