"""Pipeline specs (``dags/pipelines/*.yaml``) and the trigger form: parsed, checked, and turned
into the one job description (:func:`shardflow.spec.jobs.job_for_run`). The spec's public names
are :mod:`shardflow.spec.pipeline`'s."""

from shardflow.spec.pipeline import *  # noqa: F403
from shardflow.spec.pipeline import __all__ as __all__
