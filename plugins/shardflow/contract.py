"""The contract between the Airflow side, the compute backends and the processing container,
each part defined once: formats and their file suffixes, the ``/opt/ml`` paths, the
``SHARDFLOW_*`` variables the script reads, the script's exit codes, and SageMaker's limits."""

from __future__ import annotations

import enum
from typing import Literal, get_args

__all__ = [
    "CONFIG_DIR",
    "ENV_ATTEMPT",
    "ENV_CONFIG_DIR",
    "ENV_HEARTBEAT_SECONDS",
    "ENV_JOB_ID",
    "ENV_JOB_TABLE",
    "ENV_LOCAL_KEEP_FILES",
    "ENV_LOCAL_WORKERS",
    "ENV_MODEL_SHA256",
    "ENV_PROCESSING_JOB",
    "INPUT_DIR",
    "INPUT_FORMATS",
    "INPUT_SUFFIXES",
    "MAX_ARGUMENT_CHARS",
    "MAX_ENVIRONMENT_VARIABLES",
    "MAX_INSTANCES",
    "MAX_JOB_NAME",
    "MAX_RUNTIME_SECONDS",
    "MODEL_DIR",
    "OUTPUT_DIR",
    "OUTPUT_FORMATS",
    "OUTPUT_SUFFIXES",
    "RESERVED_ENVIRONMENT",
    "ExitCode",
    "InputFormat",
    "OutputFormat",
]

InputFormat = Literal["parquet", "csv", "csv.gz", "jsonl", "jsonl.gz"]
OutputFormat = Literal["parquet", "csv"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

#: File name endings accepted for each input format; anything else under the prefix is skipped.
INPUT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".parq"),
    "csv": (".csv",),
    "csv.gz": (".csv.gz",),
    "jsonl": (".jsonl", ".json"),
    "jsonl.gz": (".jsonl.gz", ".json.gz"),
}
#: The ending of each output format; an output keeps its input's relative path and base name.
OUTPUT_SUFFIXES: dict[str, str] = {"parquet": ".parquet", "csv": ".csv"}

#: Where SageMaker puts the inputs and the model, and collects the outputs, inside the container.
INPUT_DIR = "/opt/ml/processing/input/data"
MODEL_DIR = "/opt/ml/processing/input/model"
OUTPUT_DIR = "/opt/ml/processing/output"
#: Where SageMaker writes ``resourceconfig.json`` and ``processingjobconfig.json``.
CONFIG_DIR = "/opt/ml/config"

#: The job record the script reports to; set by Shardflow for every attempt.
ENV_JOB_ID = "SHARDFLOW_JOB_ID"
ENV_JOB_TABLE = "SHARDFLOW_JOB_TABLE"
ENV_ATTEMPT = "SHARDFLOW_ATTEMPT"
#: Set by the local backend, which has no ``/opt/ml/config`` of SageMaker's making.
ENV_PROCESSING_JOB = "SHARDFLOW_PROCESSING_JOB"
ENV_CONFIG_DIR = "SHARDFLOW_CONFIG_DIR"
#: The local backend keeps each attempt's copied inputs, model and outputs when this is ``1``.
ENV_LOCAL_KEEP_FILES = "SHARDFLOW_LOCAL_KEEP_FILES"
#: The local backend's worker processes per instance (default: the cores over the instances).
ENV_LOCAL_WORKERS = "SHARDFLOW_LOCAL_WORKERS_PER_INSTANCE"
#: Read by the script when given: its heartbeat period, and the model's sha256 for a run by hand.
ENV_HEARTBEAT_SECONDS = "SHARDFLOW_HEARTBEAT_SECONDS"
ENV_MODEL_SHA256 = "SHARDFLOW_MODEL_SHA256"
#: Set by Shardflow for each job: a spec's ``compute.sagemaker.environment`` may not override them.
RESERVED_ENVIRONMENT = frozenset({ENV_JOB_ID, ENV_JOB_TABLE, ENV_ATTEMPT, ENV_PROCESSING_JOB, ENV_CONFIG_DIR})

#: SageMaker Processing's limits (CreateProcessingJob's API reference).
MAX_JOB_NAME = 63
MAX_INSTANCES = 100
MAX_RUNTIME_SECONDS = 777_600
MAX_ENVIRONMENT_VARIABLES = 100
#: SageMaker passes each container argument and environment value only up to this length.
MAX_ARGUMENT_CHARS = 256


class ExitCode(enum.IntEnum):
    """How the processing script ends: what a backend, or a user running it by hand, reads.

    With a job record to report to, a file that fails is a result like any other: it is in the
    record with its reason, and the lifecycle fails the job for it, so the script exits ``OK``
    once every file has its result there (and the processing job's outputs are uploaded).
    Without one, the exit code is the only report: ``SOME_FILES_FAILED`` or ``ALL_FILES_FAILED``.
    """

    OK = 0
    #: The model was refused (sha256) or is not a usable model; nothing was predicted. A bad
    #: command line exits with the same code (argparse's).
    MODEL_REFUSED = 2
    #: The input folder does not exist, or holds no file of the input format.
    NO_INPUT = 3
    SOME_FILES_FAILED = 4
    ALL_FILES_FAILED = 5

    @property
    def meaning(self) -> str:
        """What the code says, for a backend's failure reason."""
        return _EXIT_MEANINGS[self]


_EXIT_MEANINGS = {
    ExitCode.OK: "every file has its result",
    ExitCode.MODEL_REFUSED: "the model was refused or is not a usable model (or the command line is wrong)",
    ExitCode.NO_INPUT: "no input: the input folder is missing or holds no file of the input format",
    ExitCode.SOME_FILES_FAILED: "some files failed",
    ExitCode.ALL_FILES_FAILED: "every file failed",
}
