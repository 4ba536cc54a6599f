"""The stand-in for the SageMaker service behind one local processing job.

Run as ``python -m shardflow.compute.local_runner JOB_DIR``. It lays out each instance's
``/opt/ml`` tree (under ``JOB_DIR/<host>``), downloads the instance's ShardedByS3Key share of the
inputs and a copy of the model, runs the processing script once per instance with the container's
command line and environment, uploads what the instances wrote to the attempt's staging (at the
end of the job, only if every instance succeeded, as SageMaker does), records the outcome in
``status.json``, and removes the inputs, model and outputs it copied (unless
``SHARDFLOW_LOCAL_KEEP_FILES=1``).

Every key it turns into a path, and every path into a key, is checked by
:mod:`shardflow.core.keys` first: nothing is written outside the job's folder, and nothing but the
instances' own regular files is uploaded.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from shardflow.aws.s3 import named_s3_error
from shardflow.compute.lifeline import bind_to_parent, child_bound_to, owner_gone, read_owner
from shardflow.compute.local import write_status
from shardflow.contract import ENV_CONFIG_DIR, ENV_LOCAL_KEEP_FILES, ENV_LOCAL_WORKERS, ENV_PROCESSING_JOB, ExitCode
from shardflow.core.invocation import ScriptOptions
from shardflow.core.keys import contained_path, relative_key
from shardflow.core.planning import assign_shards
from shardflow.core.ports import ProcessingRequest, ProcessingState
from shardflow.core.s3uri import S3Uri
from shardflow.errors import UnsafeKey

log = logging.getLogger("shardflow.local_runner")

_PROCESSING = Path("opt/ml/processing")


class _StopRequested(BaseException):
    """Raised by SIGTERM; a BaseException, like KeyboardInterrupt, so that no library's
    ``except Exception`` turns a stop into a failure."""


def _on_sigterm(signum: int, frame: Any) -> None:
    # Once: a second SIGTERM (a stop, then its owner's end) must not cut the first one's cleanup.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _StopRequested()


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class Instance:
    """One "instance" of the job: its own /opt/ml tree, its shard, and its script process."""

    def __init__(self, job_dir: Path, host: str, hosts: list[str]) -> None:
        self.host = host
        self.root = job_dir / host
        self.input_dir = self.root / _PROCESSING / "input" / "data"
        self.model_dir = self.root / _PROCESSING / "input" / "model"
        self.output_dir = self.root / _PROCESSING / "output"
        self.config_dir = self.root / "opt" / "ml" / "config"
        for folder in (self.input_dir, self.model_dir, self.output_dir, self.config_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": hosts}))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "script.log"

    def start(self, request: ProcessingRequest, script: str, model_path: Path, workers: int) -> None:
        options = ScriptOptions.for_job(
            request.job,
            input_dir=self.input_dir,
            output_dir=self.output_dir,
            model_path=model_path,
            model=request.artifact,
            workers=workers,
            claim_units=request.dynamic,
        )
        command = [sys.executable, script, *options.to_argv()]
        env = {
            **os.environ,
            **request.environment(),
            ENV_CONFIG_DIR: str(self.config_dir),
            ENV_PROCESSING_JOB: request.job_name,
        }
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # An instance never outlives its runner, however the runner ends (kill -9 included).
                preexec_fn=functools.partial(child_bound_to, os.getpid()),
            )
        (self.root / "script.pid").write_text(str(self.process.pid))

    def failure(self) -> str | None:
        assert self.process is not None
        code = self.process.returncode
        if code == 0:
            return None
        if code < 0:
            how = f"was killed by signal {-code}"
        elif code in {c.value for c in ExitCode}:
            how = f"exited with code {code} ({ExitCode(code).meaning})"
        else:
            how = f"exited with code {code}"
        return f"instance {self.host} {how}; last lines of its log:\n{_tail(self.log_path)}"


def _download(s3: Any, uri: S3Uri, target: Path) -> None:
    try:
        s3.download_file(uri.bucket, uri.key, str(target))
    except ClientError as error:
        named = named_s3_error(error, uri, "s3:GetObject")
        if named is None:
            raise
        raise named from None


def download_inputs(s3: Any, prefix: S3Uri, keys: list[str], into: Path) -> None:
    """Download each key to its path under ``into``, relative to ``prefix``.

    :raises UnsafeKey: a key that is not a plain relative path under the prefix, before anything
        is written (prepare refuses those keys; a request that holds one was not made by it).
    """
    targets = [contained_path(into, relative_key(prefix.key, key)) for key in keys]
    for key, target in zip(keys, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(s3, S3Uri(prefix.bucket, key), target)


def upload_outputs(s3: Any, outputs: list[Path], prefix: S3Uri) -> int:
    """Upload every regular file under each folder to its relative key under ``prefix``. A link,
    or a name that is not a plain relative key, is left behind with a warning: an instance must
    not be able to upload what lies outside its folder."""
    count = 0
    for output_dir in outputs:
        for path in sorted(output_dir.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                continue
            relative = path.relative_to(output_dir).as_posix()
            try:
                if path.is_symlink() or not path.is_file():
                    raise UnsafeKey(f"{relative!r} is not a regular file")
                contained_path(output_dir, relative)
            except UnsafeKey as error:
                log.warning("not uploading %s: %s", path, error)
                continue
            s3.upload_file(str(path), prefix.bucket, prefix.key + relative)
            count += 1
    return count


def _wait(instances: list[Instance], deadline: float) -> bool:
    """Wait for every instance; ``False`` when the job ran past its deadline."""
    while any(i.process is not None and i.process.poll() is None for i in instances):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _terminate(instances: list[Instance]) -> None:
    for instance in instances:
        if instance.process is not None and instance.process.poll() is None:
            instance.process.terminate()
            # A frozen (SIGSTOPped) instance would hold its SIGTERM until it runs again.
            instance.process.send_signal(signal.SIGCONT)
    for instance in instances:
        if instance.process is not None:
            try:
                instance.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                instance.process.kill()


def run(job_dir: Path) -> ProcessingState:
    request = ProcessingRequest.from_json(json.loads((job_dir / "request.json").read_text()))
    script = (job_dir / "script").read_text()
    job = request.job
    started = time.monotonic()
    deadline = started + job.compute.max_runtime_seconds
    instances: list[Instance] = []
    try:
        s3 = boto3.client("s3")
        count = request.instance_count
        hosts = [f"algo-{i + 1}" for i in range(count)]
        # Dynamic: the instances claim their units from the job record and read them from S3.
        shards = [[] for _ in hosts] if request.dynamic else assign_shards(sorted(request.input_keys), count)
        model_uri = S3Uri.parse(request.artifact.uri)
        model_file = contained_path(job_dir / "model", model_uri.name)
        model_file.parent.mkdir(exist_ok=True)
        _download(s3, model_uri, model_file)
        workers = int(os.environ.get(ENV_LOCAL_WORKERS, "0")) or max(1, (os.cpu_count() or 1) // count)
        input_prefix = S3Uri.parse(job.input.prefix)
        for host, shard in zip(hosts, shards, strict=True):
            instance = Instance(job_dir, host, hosts)
            download_inputs(s3, input_prefix, shard, instance.input_dir)
            model_copy = instance.model_dir / model_file.name
            shutil.copyfile(model_file, model_copy)  # FullyReplicated: every instance has its own
            instances.append(instance)
        for instance in instances:
            instance.start(request, script, instance.model_dir / model_file.name, workers)
        if not _wait(instances, deadline):
            _terminate(instances)
            reason = f"the job ran past MaxRuntimeInSeconds={job.compute.max_runtime_seconds} and was stopped"
            write_status(job_dir, {"state": ProcessingState.FAILED, "failure_reason": reason})
            return ProcessingState.FAILED
        failures = [f for f in (i.failure() for i in instances) if f]
        if failures:
            write_status(job_dir, {"state": ProcessingState.FAILED, "failure_reason": "\n".join(failures)})
            return ProcessingState.FAILED
        # To the attempt's staging only: publish promotes what it verified (core/publish.py).
        uploaded = upload_outputs(s3, [i.output_dir for i in instances], request.staging_prefix)
        log.info("job %s: %d instances done, %d objects uploaded", request.job_name, count, uploaded)
        write_status(job_dir, {"state": ProcessingState.COMPLETED, "seconds": time.monotonic() - started})
        return ProcessingState.COMPLETED
    except _StopRequested:
        _terminate(instances)
        owner = owner_gone(job_dir)
        if owner is not None and not (job_dir / "stop_requested").exists():
            reason = f"its owner, process {owner}, ended without stopping it; the runner ended with it"
            write_status(job_dir, {"state": ProcessingState.FAILED, "failure_reason": reason})
            return ProcessingState.FAILED
        write_status(job_dir, {"state": ProcessingState.STOPPED, "failure_reason": "stopped on request"})
        return ProcessingState.STOPPED
    except Exception as error:
        log.exception("job failed")
        _terminate(instances)
        if (job_dir / "stop_requested").exists():  # the failure is the stop's doing
            write_status(job_dir, {"state": ProcessingState.STOPPED, "failure_reason": "stopped on request"})
            return ProcessingState.STOPPED
        write_status(job_dir, {"state": ProcessingState.FAILED, "failure_reason": f"{type(error).__name__}: {error}"})
        return ProcessingState.FAILED
    finally:
        clear_job_files(job_dir)


def clear_job_files(job_dir: Path) -> None:
    """Remove what the attempt copied and wrote (the model, each instance's inputs, model copy and
    outputs) once it has ended; its status, request and logs stay. ``SHARDFLOW_LOCAL_KEEP_FILES=1``
    keeps everything, for debugging."""
    if os.environ.get(ENV_LOCAL_KEEP_FILES, "").lower() in ("1", "true", "yes"):
        log.info(
            "%s=%s: keeping the job's files under %s", ENV_LOCAL_KEEP_FILES, os.environ[ENV_LOCAL_KEEP_FILES], job_dir
        )
        return
    for folder in [job_dir / "model", *job_dir.glob("algo-*/opt")]:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    job_dir = Path(sys.argv[1])
    owner = read_owner(job_dir)
    try:
        if owner is not None:
            bind_to_parent(owner)
    except _StopRequested:  # the owner was gone before the runner could watch it
        reason = f"its owner, process {owner}, ended before the job started"
        write_status(job_dir, {"state": ProcessingState.FAILED, "failure_reason": reason})
        sys.exit(1)
    state = run(job_dir)
    sys.exit(0 if state is ProcessingState.COMPLETED else 1)


if __name__ == "__main__":
    main()
