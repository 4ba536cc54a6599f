"""Compute backends behind one seam (:class:`~shardflow.core.ports.ComputeBackend`): ``local``
(processes on this machine) and ``sagemaker`` (SageMaker Processing)."""

from __future__ import annotations

from typing import Any

from shardflow.core.ports import ComputeBackend

__all__ = ["BACKENDS", "get_backend"]

BACKENDS = ("local", "sagemaker")


def get_backend(name: str, **config: Any) -> ComputeBackend:
    """The backend called ``name``, built from the settings its ``config()`` returned."""
    if name == "local":
        from shardflow.compute.local import LocalBackend

        return LocalBackend(**config)
    if name == "sagemaker":
        from shardflow.compute.sagemaker import SageMakerBackend

        return SageMakerBackend(**config)
    raise ValueError(f"unknown compute backend {name!r}: use 'local' (this machine) or 'sagemaker'")
