"""Compute backends behind one interface: ``local`` (processes on this machine) and ``sagemaker``."""

from __future__ import annotations

from typing import Any

from shardflow.compute.base import (
    ComputeBackend,
    ProcessingJobExists,
    ProcessingRequest,
    ProcessingRequestRefused,
    ProcessingState,
    ProcessingStatus,
)

__all__ = [
    "ComputeBackend",
    "ProcessingJobExists",
    "ProcessingRequest",
    "ProcessingRequestRefused",
    "ProcessingState",
    "ProcessingStatus",
    "get_backend",
]


def get_backend(name: str, **config: Any) -> ComputeBackend:
    """The backend called ``name``, built from the settings its ``config()`` returned."""
    if name == "local":
        from shardflow.compute.local import LocalBackend

        return LocalBackend(**config)
    if name == "sagemaker":
        from shardflow.compute.sagemaker import SageMakerBackend

        return SageMakerBackend(**config)
    raise ValueError(f"unknown compute backend {name!r}: use 'local' (this machine) or 'sagemaker'")
