"""The predictor's outputs have one schema per job: an input without rows gets the very column
types the model gives the others (XGBoost's float32 probabilities included)."""

import io

import joblib
import numpy as np
import pyarrow as pa
import pytest

from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset
from shardflow.processing.predictor import Predictor


def outputs_for(predictor: Predictor, table: pa.Table) -> pa.Table:
    batch = table.to_batches()[0]
    matrix = np.asarray(table.select(predictor.features).to_pandas(), dtype=np.float32)
    return pa.Table.from_batches([predictor.assemble(batch, predictor.infer(matrix))])


@pytest.mark.parametrize("per_class", [False, True])
def test_bad_input_an_empty_inputs_output_schema_is_the_jobs_one(demo_model, per_class):
    predictor = Predictor(joblib.load(io.BytesIO(demo_model)), None, None, per_class)
    table = demo_dataset((300,))["part-0000.parquet"]

    predicted = outputs_for(predictor, table)
    empty = predictor.empty_output(table.schema)

    assert empty == predicted.schema
    probability = "probability_1" if per_class else "probability"
    assert empty.field(probability).type == pa.float32()


@pytest.mark.parametrize("artifact", [{"weights": [1, 2]}, "a string", [1, 2, 3]])
def test_bad_input_an_artifact_without_predict_is_not_a_model(artifact):
    with pytest.raises(ValueError, match=r"not a model: it has no predict method"):
        Predictor(artifact, DEMO_FEATURES, None)
