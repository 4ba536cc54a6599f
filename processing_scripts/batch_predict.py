"""The processing container's entry point: predict every input file of this instance's shard.

    python batch_predict.py --input-dir DIR --output-dir DIR --model-path FILE --model-sha256 HEX

Every option: ``python batch_predict.py --help``, or :class:`shardflow.core.invocation.ScriptOptions`.
The code is the package's (:mod:`shardflow.processing.script`); this file only wires the job
table in, so that a run outside a job record never imports an AWS client.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# First: the script sets Arrow's allocator up before anything loads Arrow.
from shardflow.processing.script import main


def open_job_store(table: str) -> Any:
    """The DynamoDB job table, reached with the job's own credentials and region."""
    import boto3

    from shardflow.aws.jobstore import JobStore

    return JobStore(boto3.client("dynamodb"), table)


def open_objects() -> Any:
    """S3, for a dynamic job's instance (it reads its units and uploads their outputs itself)."""
    import boto3

    from shardflow.aws.s3 import S3ObjectStore

    return S3ObjectStore(boto3.client("s3"))


if __name__ == "__main__":
    code = main(open_store=open_job_store, open_objects=open_objects)
    # Everything is written and closed by now; tearing down an interpreter that holds scikit-learn,
    # SciPy and the model would take another tenth of a second and do nothing for the job.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
