"""Mixed-type data as real tables have it (strings with gaps, categories, nullable integers, floats
with NaN, booleans, timestamps with and without a time zone), the files each format writes of it,
and the two models that take it as a DataFrame: a scikit-learn Pipeline and XGBoost on categories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "COUNTRIES",
    "PIPELINE_FEATURES",
    "XGB_FEATURES",
    "mixed_frame",
    "read",
    "train_pipeline",
    "train_xgboost",
    "write",
    "xgboost_features",
]

COUNTRIES = ["FR", "DE", "US", "ES", "IT"]
PIPELINE_FEATURES = ["country", "plan", "age", "score", "active", "signup", "signup_local"]
XGB_FEATURES = ["country", "plan", "age", "score"]
_READERS = {
    "parquet": pd.read_parquet,
    "csv": pd.read_csv,
    "jsonl": lambda path, precise: pd.read_json(path, lines=True, precise_float=precise),
}


def mixed_frame(rows: int, seed: int, unseen: bool = False, categories: bool = False) -> pd.DataFrame:
    """``rows`` rows with an ``id``; ``unseen`` puts a country the training rows never had in one
    row in twenty; ``categories`` makes the country a pandas category (the order of its categories
    differs from seed to seed)."""
    rng = np.random.default_rng(seed)
    countries = np.array([*COUNTRIES, "XX"] if unseen else COUNTRIES, dtype=object)
    country = rng.choice(countries, rows, p=None if not unseen else [0.19] * 5 + [0.05])
    country[rng.random(rows) < 0.08] = None
    age = pd.array(rng.integers(18, 90, rows), dtype="Int64")
    age[rng.random(rows) < 0.1] = pd.NA
    score = rng.standard_normal(rows) * 3
    score[rng.random(rows) < 0.1] = np.nan
    start = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 30 * 24, rows), unit="h")
    order = [str(c) for c in rng.permutation(countries)]
    return pd.DataFrame(
        {
            "id": np.arange(seed * 1_000_000, seed * 1_000_000 + rows, dtype=np.int64),
            "country": pd.Categorical(country, categories=order) if categories else pd.Series(country, dtype="str"),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], rows), categories=["basic", "plus", "pro"]),
            "age": age,
            "score": score,
            "active": rng.random(rows) < 0.4,
            "signup": start.floor("D"),
            "signup_local": start.floor("D").tz_localize("Europe/Paris"),
        }
    )


def write(frame: pd.DataFrame, path: Path, input_format: str, row_group_size: int | None = None) -> Path:
    """The frame as a data team's tools write it: pandas' own writers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if input_format == "parquet":
        frame.to_parquet(path, index=False, row_group_size=row_group_size)
    elif input_format == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso", double_precision=15)
    return path


def read(path: Path, input_format: str, precise: bool = False) -> pd.DataFrame:
    """The file as pandas' reader of its format gives it, the reference the script must equal.

    :param precise: JSON numbers parsed to the nearest float, as Arrow does; pandas.read_json's
        default parser may be a unit in the last place off (the others' defaults are exact).
    """
    if input_format == "jsonl":
        return _READERS[input_format](path, precise)
    return _READERS[input_format](path)


def _label(frame: pd.DataFrame) -> np.ndarray:
    score = frame["score"].fillna(0).to_numpy(dtype=float) + frame["active"].astype(float).to_numpy()
    score += np.where(frame["country"].astype(object).isin(["FR", "DE"]), 1.5, -0.5)
    score += frame["age"].fillna(50).to_numpy(dtype=float) / 30
    return (score + np.random.default_rng(1).standard_normal(len(frame)) > 0.5).astype(np.int64)


def train_pipeline(frame: pd.DataFrame) -> object:
    """The most common tabular model: one-hot strings and categories (an unknown one ignored),
    impute and scale numbers, code the dates, then a logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["country", "plan"]),
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "score"]),
            ("flags", "passthrough", ["active"]),
            (
                "dates",
                make_pipeline(OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), StandardScaler()),
                ["signup", "signup_local"],
            ),
        ]
    )
    model = Pipeline([("columns", columns), ("classify", LogisticRegression(max_iter=500))])
    return model.fit(frame[PIPELINE_FEATURES], _label(frame))


def train_xgboost(frame: pd.DataFrame) -> object:
    """XGBoost on pandas categories (``enable_categorical``), small and quick to train."""
    import xgboost

    model = xgboost.XGBClassifier(
        n_estimators=20, max_depth=4, tree_method="hist", enable_categorical=True, n_jobs=1, random_state=0
    )
    return model.fit(frame[xgboost_features(frame)], _label(frame))


def xgboost_features(frame: pd.DataFrame) -> list[str]:
    """XGBoost takes numbers, booleans and categories, not strings: what pandas read as text
    (every text column of a CSV or JSON Lines file) is left out."""
    return [c for c in XGB_FEATURES if frame[c].dtype != "str"]
