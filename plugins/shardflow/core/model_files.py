"""Reading a verified model artifact, wherever it runs (prepare, the processing script): a joblib
or pickle file, an XGBoost model in its own format, or a training job's ``model.tar.gz``.

Call :func:`load_model_file` only on an artifact whose sha256 was checked: a joblib or pickle
file runs code when it is loaded. An XGBoost ``.json``/``.ubj`` model is read without unpickling.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from shardflow.errors import ModelUnusable

__all__ = [
    "ARCHIVE_SUFFIXES",
    "archive_candidates",
    "extract_model",
    "load_model_file",
    "xgboost_estimator",
]

#: Names of archives: a training job writes ``model.tar.gz``.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
#: The names a model file inside an archive may have: scikit-learn's usual name, the name
#: SageMaker's XGBoost algorithm writes, and XGBoost's own formats.
_MODEL_NAMES = frozenset({"model.joblib", "xgboost-model"})
_XGBOOST_SUFFIXES = (".json", ".ubj")


def _is_candidate(name: str) -> bool:
    base = PurePosixPath(name).name
    return base in _MODEL_NAMES or base.endswith(_XGBOOST_SUFFIXES)


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why extracting this member could write outside the folder, or something not a file."""
    path = PurePosixPath(member.name)
    if path.is_absolute():
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    if member.issym() or member.islnk():
        return f"a link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    return None


def archive_candidates(archive: Path) -> tuple[list[tarfile.TarInfo], list[str]]:
    """The archive's model files, and every name it holds; refuses the whole archive if any
    member is unsafe.

    :raises ModelUnusable: not a tar archive, or a member with an absolute path, a ``..``
        component, a link, or a device.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ModelUnusable(f"model archive {archive.name} cannot be read as a tar archive: {error}") from None
    for member in members:
        reason = _unsafe(member)
        if reason:
            raise ModelUnusable(
                f"model archive {archive.name} holds {member.name!r}, {reason}; nothing was extracted: "
                "rebuild the archive with plain relative names (tar -czf model.tar.gz -C DIR .)"
            )
    names = [m.name for m in members if m.isfile()]
    return [m for m in members if m.isfile() and _is_candidate(m.name)], names


def extract_model(archive: Path, into: Path) -> Path:
    """Extract the archive's one model file into ``into``; returns its path.

    :raises ModelUnusable: an unsafe member (see :func:`archive_candidates`), or zero or several
        model files; the message lists what the archive holds.
    """
    candidates, names = archive_candidates(archive)
    if len(candidates) != 1:
        found = ", ".join(m.name for m in candidates) if candidates else "none"
        raise ModelUnusable(
            f"model archive {archive.name} must hold exactly one model file (model.joblib, xgboost-model, "
            f"*.json or *.ubj); it holds {len(candidates)} ({found}) among its files: "
            f"{', '.join(names) or 'none'}. Put one model file in the archive"
        )
    (member,) = candidates
    target = into / PurePosixPath(member.name).name
    with tarfile.open(archive, "r:*") as tar:
        source = tar.extractfile(member)
        assert source is not None  # a regular file
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    return target


def xgboost_estimator(path: Path) -> Any:
    """An XGBoost model file as a scikit-learn estimator, without unpickling: a classifier or a
    regressor as its objective says.

    :raises ModelUnusable: an objective that is neither (ranking, for example).
    """
    import xgboost

    raw = bytearray(path.read_bytes())
    booster = xgboost.Booster(model_file=raw)
    objective = str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    family = objective.partition(":")[0]
    estimator: Any
    if family in ("binary", "multi"):
        estimator = xgboost.XGBClassifier()
    elif family in ("reg", "count", "survival"):
        estimator = xgboost.XGBRegressor()
    else:
        raise ModelUnusable(
            f"XGBoost model {path.name} has objective {objective}: Shardflow predicts with classifiers "
            "(binary:*, multi:*) and regressors (reg:*, count:*, survival:*)"
        )
    estimator.load_model(raw)
    return estimator


def _load_single(path: Path) -> Any:
    import joblib

    if path.name.endswith(_XGBOOST_SUFFIXES):
        return xgboost_estimator(path)
    if path.name == "xgboost-model":
        # SageMaker's XGBoost algorithm saves its own format from version 1.3 (a JSON or UBJSON
        # object, starting with '{'), and a pickled Booster before.
        with open(path, "rb") as handle:
            if handle.read(1) == b"{":
                return xgboost_estimator(path)
    return joblib.load(path)


def load_model_file(path: Path) -> Any:
    """Load the model an artifact holds: an archive's one model file, an XGBoost model file, or
    a joblib/pickle file. Only for an artifact whose sha256 was checked.

    :raises ModelUnusable: see :func:`extract_model` and :func:`xgboost_estimator`; the loaders'
        own errors pass through.
    """
    if not path.name.endswith(ARCHIVE_SUFFIXES):
        return _load_single(path)
    with tempfile.TemporaryDirectory(prefix="shardflow-model-") as folder:
        return _load_single(extract_model(path, Path(folder)))
