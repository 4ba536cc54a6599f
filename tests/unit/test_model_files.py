"""Loading a verified artifact: a training job's archive is unpacked safely and must hold one
model file; an XGBoost model in its own format becomes a classifier or a regressor by its objective."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import xgboost

from shardflow.core.model_files import extract_model, load_model_file, xgboost_estimator
from shardflow.errors import ModelUnusable
from shardflow.local.demo_data import DEMO_FEATURES


def archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(300, len(DEMO_FEATURES)))


def booster_bytes(rows: np.ndarray, objective: str, suffix: str, **params) -> bytes:
    labels = {
        "binary": (rows[:, 0] > 0).astype(int),
        "multi": np.digitize(rows[:, 0], [-0.5, 0.5]),
        "reg": rows[:, 0] * 2 + rows[:, 1],
        "count": np.round(np.abs(rows[:, 0]) * 3),
        "rank": (rows[:, 0] > 0).astype(int),
    }[objective.partition(":")[0]]
    data = xgboost.DMatrix(rows, label=labels, feature_names=DEMO_FEATURES)
    if objective.startswith("rank"):
        data.set_group([len(rows)])
    booster = xgboost.train({"objective": objective, "max_depth": 3, "nthread": 1, **params}, data, num_boost_round=5)
    return bytes(booster.save_raw(raw_format=suffix))


@pytest.mark.parametrize(
    ("objective", "params", "kind", "suffix"),
    [
        ("binary:logistic", {}, xgboost.XGBClassifier, "ubj"),
        ("multi:softprob", {"num_class": 3}, xgboost.XGBClassifier, "json"),
        ("reg:squarederror", {}, xgboost.XGBRegressor, "json"),
        ("count:poisson", {}, xgboost.XGBRegressor, "ubj"),
    ],
)
def test_a_native_xgboost_model_is_a_classifier_or_a_regressor_by_its_objective(
    tmp_path, rows, objective, params, kind, suffix
):
    body = booster_bytes(rows, objective, suffix, **params)
    path = tmp_path / f"model.{suffix}"
    path.write_bytes(body)

    model = load_model_file(path)

    assert type(model) is kind
    assert list(model.feature_names_in_) == DEMO_FEATURES
    booster = xgboost.Booster(model_file=bytearray(body))
    margin = booster.predict(xgboost.DMatrix(rows, feature_names=DEMO_FEATURES))
    if kind is xgboost.XGBClassifier:
        expected = (margin > 0.5).astype(int) if margin.ndim == 1 else margin.argmax(axis=1)
        np.testing.assert_array_equal(model.predict(rows), expected)
        assert model.n_classes_ == (params.get("num_class") or 2)
    else:
        np.testing.assert_allclose(model.predict(rows), margin, rtol=1e-6)


def test_a_ranking_objective_is_refused_naming_it(tmp_path, rows):
    path = tmp_path / "ranker.json"
    path.write_bytes(booster_bytes(rows, "rank:pairwise", "json"))
    with pytest.raises(ModelUnusable, match=r"ranker\.json has objective rank:pairwise: Shardflow predicts with"):
        xgboost_estimator(path)


def test_sagemakers_xgboost_model_file_is_read_in_its_own_format_or_unpickled(tmp_path, rows):
    native = booster_bytes(rows, "binary:logistic", "ubj")
    pickled = io.BytesIO()
    joblib.dump(xgboost.Booster(model_file=bytearray(native)), pickled)
    for name, body in (("native.tar.gz", native), ("pickled.tar.gz", pickled.getvalue())):
        model = load_model_file(archive(tmp_path / name, {"xgboost-model": body}))
        assert isinstance(model, xgboost.XGBClassifier if name.startswith("native") else xgboost.Booster)


def test_a_training_jobs_archive_is_unpacked_to_its_one_model_file(tmp_path, rows):
    body = booster_bytes(rows, "reg:squarederror", "json")
    path = archive(tmp_path / "model.tar.gz", {"code/inference.py": b"print()", "model/model.json": body})

    extracted = extract_model(path, tmp_path)
    model = load_model_file(path)

    assert extracted == tmp_path / "model.json" and extracted.read_bytes() == body
    assert isinstance(model, xgboost.XGBRegressor)


@pytest.mark.parametrize(
    ("members", "links", "words"),
    [
        ({"/etc/model.joblib": b"x"}, None, "holds '/etc/model.joblib', an absolute path; nothing was extracted"),
        ({"../model.joblib": b"x"}, None, "holds '../model.joblib', a '..' component"),
        ({"a/../../model.joblib": b"x"}, None, "holds 'a/../../model.joblib', a '..' component"),
        ({"model.joblib": b"x"}, {"xgboost-model": "/etc/passwd"}, "holds 'xgboost-model', a link to '/etc/passwd'"),
    ],
    ids=["absolute", "dot-dot", "dot-dot-inside", "symlink"],
)
def test_an_archive_with_an_unsafe_member_is_refused_before_anything_is_extracted(tmp_path, members, links, words):
    path = archive(tmp_path / "model.tar.gz", members, links)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(ModelUnusable, match=words.replace("(", r"\(").replace(".", r"\.")):
        extract_model(path, into)
    assert list(into.iterdir()) == []


@pytest.mark.parametrize(
    ("members", "words"),
    [
        (
            {"code/inference.py": b"", "requirements.txt": b""},
            "it holds 0 (none) among its files: code/inference.py, requirements.txt",
        ),
        (
            {"model.joblib": b"", "xgboost-model": b"", "notes.txt": b""},
            "it holds 2 (model.joblib, xgboost-model) among its files: model.joblib, xgboost-model, notes.txt",
        ),
    ],
    ids=["none", "several"],
)
def test_an_archive_without_exactly_one_model_file_lists_what_it_holds(tmp_path, members, words):
    path = archive(tmp_path / "model.tar.gz", members)
    with pytest.raises(ModelUnusable, match=r"must hold exactly one model file") as refused:
        extract_model(path, tmp_path)
    assert words in str(refused.value)


def test_a_file_that_is_no_archive_is_named(tmp_path):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ModelUnusable, match=r"model archive model\.tar\.gz cannot be read as a tar archive"):
        load_model_file(path)
