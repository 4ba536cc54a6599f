"""What the processing script does to one record batch: pick the features into a matrix (or a
DataFrame, for models that need one), run the model, and append ``prediction`` (and the
probabilities) to the columns that pass through."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from shardflow.core.model_input import frame_of, needs_frame, text_column_types, wants_frame

__all__ = ["FRAME", "Features", "Predictor", "limit_library_threads"]

#: The layout of a batch whose features the model takes as a DataFrame: the feature columns as a
#: record batch (in shared memory, an Arrow IPC stream). Any other layout is a matrix's dtype.
FRAME = "arrow"

#: One batch's features as the worker holds them: a float matrix, or the feature columns.
Features: TypeAlias = np.ndarray | pa.RecordBatch

# Types whose ``predict`` is, by their own code, the class of the highest ``predict_proba``
# (binary: positive class above 0.5), so one pass gives both. Other classifiers (linear models
# decide on the decision function, which rounding in the probability can disagree with) run both.
_PROBA_DECIDES = (
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRFClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
)


def _qualified_name(model: Any) -> str:
    kind = type(model)
    return f"{kind.__module__}.{kind.__qualname__}"


def _split_pipeline(model: Any) -> tuple[Any, Any]:
    """A scikit-learn Pipeline's transforms and its final estimator, so that a classifier's two
    outputs (probabilities and classes) transform a batch once, as ``Pipeline.predict`` would
    have; ``(None, model)`` for any other model."""
    steps = getattr(model, "steps", None)
    if _qualified_name(model) != "sklearn.pipeline.Pipeline" or not steps or len(steps) < 2:
        return None, model
    return model[:-1], steps[-1][1]


def limit_library_threads(model: Any) -> None:
    """One library thread per worker: the pool already puts a worker on every core."""
    if hasattr(model, "get_params") and "n_jobs" in model.get_params():
        model.set_params(n_jobs=1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # only BLAS-backed models need it, and scikit-learn brings it
        pass


class Predictor:
    """Turns a record batch into the output batch: passthrough columns, ``prediction``, and for
    classifiers ``probability`` (binary: of the positive class; multiclass: of the predicted class)
    or, with ``per_class``, one ``probability_<class>`` column per class. The model gets a float
    matrix, or a DataFrame when it needs one (see :mod:`shardflow.core.model_input`), per file.

    :param model: the loaded model (scikit-learn API).
    :param features: feature columns, used when the model does not record ``feature_names_in_``.
    :param passthrough: input columns copied to the output; ``None`` copies every input column.
    :param per_class: one probability column per class instead of a single ``probability``.
    :param input_format: the inputs' format: a DataFrame is typed as pandas reads that format.
    :raises ValueError: ``model`` has no ``predict`` (it is not a model), or no feature names.
    """

    def __init__(
        self,
        model: Any,
        features: Sequence[str] | None,
        passthrough: Sequence[str] | None,
        per_class: bool = False,
        input_format: str = "parquet",
    ) -> None:
        if not callable(getattr(model, "predict", None)):
            raise ValueError(f"the model is a {type(model).__name__}, not a model: it has no predict method")
        self.model = model
        names = getattr(model, "feature_names_in_", None)
        chosen = [str(n) for n in names] if names is not None else list(features or ())
        if not chosen:
            raise ValueError(
                "the model does not record its feature names (it was trained on a bare array): "
                "list them in the spec's `features` (or --features a,b,c)"
            )
        self.features: list[str] = chosen
        self.passthrough = list(passthrough) if passthrough is not None else None
        self.per_class = per_class
        self.input_format = input_format
        self.frame_model = wants_frame(model)
        self.classes: np.ndarray | None = (
            np.asarray(model.classes_) if hasattr(model, "predict_proba") and hasattr(model, "classes_") else None
        )
        self.transforms, self.estimator = _split_pipeline(model)
        if self.classes is None:
            self.rule = "predict"
        elif _qualified_name(self.estimator) in _PROBA_DECIDES:
            self.rule = "proba"
        else:
            self.rule = "both"

    def text_columns(self, schema: pa.Schema) -> dict[str, pa.DataType] | None:
        """For a CSV file whose first block has ``schema``: ``None`` on the matrix path, else the
        columns the DataFrame path reads as text, as pandas.read_csv does (see ``open_batches``)."""
        if not needs_frame(self.model, schema, self.features):
            return None
        return text_column_types(schema, self.features)

    def check_columns(self, schema: pa.Schema, source: str) -> str:
        """Fail on a missing column; return the layout of the file's batches: :data:`FRAME` when
        the model wants a DataFrame or a feature is not a number, else the dtype of the matrix the
        model would get from the same columns (float32 stays float32, integers become float64)."""
        missing = [c for c in self.features if c not in schema.names]
        missing += [c for c in self.passthrough or () if c not in schema.names and c not in missing]
        if missing:
            raise ValueError(f"{source}: missing column(s) {', '.join(missing)}; it has {', '.join(schema.names)}")
        if needs_frame(self.model, schema, self.features):
            return FRAME
        dtypes = []
        for name in self.features:
            kind = schema.field(name).type
            # A null column: no value in the block a text reader typed it from.
            dtypes.append(np.dtype(np.float64) if pa.types.is_null(kind) else np.dtype(kind.to_pandas_dtype()))
        common = np.result_type(*dtypes)
        return (np.dtype(common) if np.issubdtype(common, np.floating) else np.dtype(np.float64)).str

    def fill(self, batch: pa.RecordBatch, matrix: np.ndarray) -> None:
        """Copy the feature columns into ``matrix`` (column-major, so each copy is contiguous)."""
        for j, name in enumerate(self.features):
            column = batch.column(name)
            if pa.types.is_null(column.type):
                column = column.cast(pa.float64())
            matrix[:, j] = column.to_numpy(zero_copy_only=False)

    def model_input(self, features: Features) -> Any:
        """What the model takes: the matrix as it is, or the feature columns as a DataFrame."""
        return frame_of(features, self.input_format) if isinstance(features, pa.RecordBatch) else features

    def infer(self, data: Any) -> tuple[np.ndarray, ...]:
        """The model's raw outputs for one batch (a matrix or a DataFrame, see :meth:`model_input`):
        probabilities, predictions, or both."""
        if self.rule == "predict":
            return (np.asarray(self.model.predict(data)),)
        if self.rule == "proba":
            return (np.asarray(self.model.predict_proba(data)),)
        # Both outputs: a Pipeline's transforms run once (they cost most of its time), and its
        # final estimator gives both from what they make, as the Pipeline's own methods would.
        model = self.model
        if self.transforms is not None:
            data, model = self.transforms.transform(data), self.estimator
        return (np.asarray(model.predict_proba(data)), np.asarray(model.predict(data)))

    @cached_property
    def output_types(self) -> tuple[pa.DataType, pa.DataType]:
        """The types of ``prediction`` and of the probability columns, the same for every output
        of a job, an empty input's included: what the model gives for one row of zeros (float64
        where it refuses that row). Found in each worker when first needed: the parent never
        runs the model, so no library starts its threads before the fork."""
        prediction = pa.array(self.classes).type if self.classes is not None else pa.float64()
        probability = pa.float64()
        if self.frame_model:  # it selects columns by name: a row of zeros tells nothing
            return prediction, probability
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs = self.infer(np.zeros((1, len(self.features))))
        except Exception:
            return prediction, probability
        if self.classes is None:
            found = pa.array(np.asarray(outputs[0]).reshape(-1)).type
            return (prediction if pa.types.is_null(found) else found), probability
        return prediction, pa.array(np.asarray(outputs[0])[:, 0]).type

    def assemble(self, batch: pa.RecordBatch, outputs: tuple[np.ndarray, ...]) -> pa.RecordBatch:
        names = self.passthrough if self.passthrough is not None else batch.schema.names
        columns = {name: batch.column(name) for name in names}
        prediction_type, probability_type = self.output_types
        if self.classes is None:
            columns["prediction"] = _typed(outputs[0], prediction_type)
            return pa.RecordBatch.from_pydict(columns)
        proba = outputs[0]
        if self.rule == "both":
            prediction = outputs[1]
        elif proba.shape[1] == 2:  # the classifiers' own rule: the positive class above 0.5
            prediction = self.classes[(proba[:, 1] > 0.5).astype(np.intp)]
        else:
            prediction = self.classes[proba.argmax(axis=1)]
        columns["prediction"] = _typed(prediction, prediction_type)
        if self.per_class:
            for index, label in enumerate(self.classes):
                columns[f"probability_{label}"] = _typed(proba[:, index], probability_type)
        else:
            columns["probability"] = _typed(proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1), probability_type)
        return pa.RecordBatch.from_pydict(columns)

    def empty_output(self, schema: pa.Schema) -> pa.Schema:
        """The output schema of an input without rows (the model is not run on nothing)."""
        names = self.passthrough if self.passthrough is not None else schema.names
        fields = [schema.field(name) if name in schema.names else pa.field(name, pa.null()) for name in names]
        prediction_type, probability_type = self.output_types
        fields.append(pa.field("prediction", prediction_type))
        if self.classes is None:
            return pa.schema(fields)
        if self.per_class:
            fields += [pa.field(f"probability_{label}", probability_type) for label in self.classes]
        else:
            fields.append(pa.field("probability", probability_type))
        return pa.schema(fields)


def _typed(values: Any, kind: pa.DataType) -> pa.Array:
    array = pa.array(values)
    return array if array.type == kind else array.cast(kind)
