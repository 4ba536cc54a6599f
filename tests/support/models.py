"""A real model that is slow on purpose, so a test can act while a job is visibly running."""

from __future__ import annotations

import io
import time
from typing import Any

from shardflow.local.demo_data import train_demo_model

__all__ = ["PacedModel", "RaisingModel", "paced_model_bytes", "raising_model_bytes"]


class PacedModel:
    """A real model that takes at least ``seconds_per_call`` per prediction call, so a test can
    kill, freeze or retry things while a job is visibly running. Everything else (feature names,
    classes) is the wrapped model's.

    :param model: the fitted model to wrap.
    :param seconds_per_call: the least time one ``predict``/``predict_proba`` call takes.
    """

    def __init__(self, model: Any, seconds_per_call: float) -> None:
        self.model = model
        self.seconds_per_call = seconds_per_call

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "seconds_per_call"):  # not set yet while unpickling
            raise AttributeError(name)
        return getattr(self.model, name)

    def predict(self, x: Any) -> Any:
        time.sleep(self.seconds_per_call)
        return self.model.predict(x)

    def predict_proba(self, x: Any) -> Any:
        time.sleep(self.seconds_per_call)
        return self.model.predict_proba(x)


def paced_model_bytes(seconds_per_call: float) -> bytes:
    """The demo model wrapped in :class:`PacedModel`, as joblib bytes."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(PacedModel(joblib.load(io.BytesIO(train_demo_model())), seconds_per_call), buffer)
    return buffer.getvalue()


class RaisingModel(PacedModel):
    """A real model whose ``predict`` and ``predict_proba`` raise: a model error, which no attempt
    can fix. With ``above``, only on more rows than that at once (it passes prepare's smoke
    prediction on a file's first rows, and fails in the processing script)."""

    def __init__(self, model: Any, above: int = 0) -> None:
        super().__init__(model, 0.0)
        self.above = above

    def _refuse(self, x: Any) -> None:
        if len(x) > self.above:
            raise ValueError("this model refuses every row: it was saved half-trained")

    def predict(self, x: Any) -> Any:
        self._refuse(x)
        return super().predict(x)

    def predict_proba(self, x: Any) -> Any:
        self._refuse(x)
        return super().predict_proba(x)


def raising_model_bytes(above: int = 0) -> bytes:
    """The demo model wrapped in :class:`RaisingModel`, as joblib bytes."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(RaisingModel(joblib.load(io.BytesIO(train_demo_model())), above), buffer)
    return buffer.getvalue()
