"""The processing script's command line, defined once: the backends derive it from a job
(:meth:`ScriptOptions.for_job` then :meth:`ScriptOptions.to_argv`) and the script parses it back
(:meth:`ScriptOptions.parse`) from the same table of options. Users run the script in their own
images with the same options (``--input-dir``, ``--model-sha256``, ``--passthrough``, ...).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from shardflow.contract import (
    ENV_MODEL_SHA256,
    INPUT_DIR,
    INPUT_FORMATS,
    MODEL_DIR,
    OUTPUT_DIR,
    OUTPUT_FORMATS,
)
from shardflow.core.artifact import ModelArtifact
from shardflow.core.job import JobSpec
from shardflow.core.s3uri import S3Uri

__all__ = ["DEFAULT_BATCH_ROWS", "ScriptOptions", "container_model_path"]

# Measured with the benchmark: below 65,536 rows the per-batch costs (messages to helpers, calls
# into the model) show with a cheap model. The price: the last batch of a big file keeps one core
# busy alone for longer, and a 40-feature matrix takes 21 MB.
DEFAULT_BATCH_ROWS = 65536


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c for c in text.split(",") if c)


def _option(flag: str, help: str, **argparse_settings: Any) -> Any:
    return {"flag": flag, "help": help, **argparse_settings}


@dataclass(frozen=True)
class ScriptOptions:
    """Everything the processing script is told on its command line. Each field's metadata is its
    option: the flag, its help, and how argparse reads it."""

    input_dir: Path = Path(INPUT_DIR)
    output_dir: Path = Path(OUTPUT_DIR)
    model_path: Path = Path(MODEL_DIR) / "model.joblib"
    model_sha256: str | None = None
    model_uri: str | None = None
    model_training_job: str | None = None
    model_package_group: str | None = None
    model_package_arn: str | None = None
    model_package_version: int | None = None
    workers: int | None = None
    input_format: str = "parquet"
    output_format: str = "parquet"
    features: tuple[str, ...] | None = None
    passthrough: tuple[str, ...] | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    probability_per_class: bool = False
    claim_units: bool = False

    @classmethod
    def for_job(
        cls,
        job: JobSpec,
        *,
        input_dir: str | Path,
        output_dir: str | Path,
        model_path: str | Path,
        model: ModelArtifact | None = None,
        **more: Any,
    ) -> ScriptOptions:
        """The options that run ``job``'s files in ``input_dir`` with the model at ``model_path``:
        ``model``, the artifact the job record resolved (default: the spec's ``model.uri``)."""
        artifact = model or ModelArtifact.of_spec(job.model)
        return cls(
            input_dir=Path(input_dir),
            output_dir=Path(output_dir),
            model_path=Path(model_path),
            model_sha256=artifact.sha256,
            model_uri=artifact.uri,
            model_training_job=artifact.training_job,
            model_package_group=artifact.package_group,
            model_package_arn=artifact.package_arn,
            model_package_version=artifact.package_version,
            input_format=job.input.format,
            output_format=job.output.format,
            features=job.features or None,
            passthrough=job.passthrough,
            probability_per_class=job.output.probability == "per_class",
            **more,
        )

    def to_argv(self) -> list[str]:
        """The command line; an option at its default (or unset) is left out."""
        argv: list[str] = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            flag = _OPTIONS[spec.name]["flag"]
            if value is None or (value == spec.default and spec.name not in _ALWAYS):
                continue
            if isinstance(value, bool):
                argv.append(flag)
            elif isinstance(value, tuple):
                argv += [flag, ",".join(value)]
            else:
                argv += [flag, str(value)]
        return argv

    def model_artifact(self) -> ModelArtifact | None:
        """The model's lineage, when the command line names it (the backends always do)."""
        if not self.model_uri or not self.model_sha256:
            return None
        return ModelArtifact(
            uri=self.model_uri,
            sha256=self.model_sha256.lower(),
            training_job=self.model_training_job,
            package_group=self.model_package_group,
            package_arn=self.model_package_arn,
            package_version=self.model_package_version,
        )

    @classmethod
    def parser(cls, description: str | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        for spec in fields(cls):
            option = dict(_OPTIONS[spec.name])
            flag = option.pop("flag")
            if option.pop("store_true", False):
                parser.add_argument(flag, dest=spec.name, action="store_true", **option)
            else:
                parser.add_argument(flag, dest=spec.name, default=spec.default, **option)
        return parser

    @classmethod
    def parse(cls, argv: list[str] | None = None, description: str | None = None) -> ScriptOptions:
        """Read a command line; an error names the option and exits 2, as argparse does."""
        parser = cls.parser(description)
        args = vars(parser.parse_args(argv))
        if args["model_sha256"] is None:
            args["model_sha256"] = os.environ.get(ENV_MODEL_SHA256)
        if args["workers"] is None:
            args["workers"] = os.cpu_count() or 1
        if args["workers"] < 1:
            parser.error("--workers must be 1 or more")
        if args["batch_rows"] < 1:
            parser.error("--batch-rows must be 1 or more")
        return cls(**args)


#: Always written out: the default paths exist only inside the container, and the formats say what the files are.
_ALWAYS = frozenset({"input_dir", "output_dir", "model_path", "input_format", "output_format"})
_OPTIONS: dict[str, dict[str, Any]] = {
    "input_dir": _option("--input-dir", "the input files (searched recursively)", type=Path),
    "output_dir": _option("--output-dir", "where outputs go, under each input's relative path", type=Path),
    "model_path": _option(
        "--model-path", "the model: a joblib file, an XGBoost .json/.ubj, or a model.tar.gz", type=Path
    ),
    "model_sha256": _option("--model-sha256", f"the model's sha256 (default: ${ENV_MODEL_SHA256})"),
    "model_uri": _option("--model-uri", "lineage: the model's S3 URI, written into every output"),
    "model_training_job": _option("--model-training-job", "lineage: the training job that made the model"),
    "model_package_group": _option("--model-package-group", "lineage: the model's Model Registry group"),
    "model_package_arn": _option("--model-package-arn", "lineage: the model package's ARN"),
    "model_package_version": _option("--model-package-version", "lineage: the model package's version", type=int),
    "workers": _option("--workers", "worker processes (default: one per core)", type=int),
    "input_format": _option("--input-format", "the inputs' format", choices=INPUT_FORMATS),
    "output_format": _option("--output-format", "the outputs' format", choices=OUTPUT_FORMATS),
    "features": _option("--features", "the model's columns, comma-separated", type=_columns),
    "passthrough": _option("--passthrough", "input columns copied to the output, comma-separated", type=_columns),
    "batch_rows": _option("--batch-rows", "rows per record batch", type=int),
    "probability_per_class": _option(
        "--probability-per-class",
        "classifiers: one probability_<class> column per class instead of a single probability",
        store_true=True,
    ),
    "claim_units": _option(
        "--claim-units",
        "dynamic distribution: claim work units from the job record and read them from S3 "
        "(--input-dir is then where they are fetched to)",
        store_true=True,
    ),
}


def container_model_path(model: ModelArtifact) -> str:
    """Where the model file (or archive) is inside the container: SageMaker copies it under its own name."""
    return f"{MODEL_DIR}/{S3Uri.parse(model.uri).name}"
